"""Every model, the inference-time frame and the bundle read/verify code (torch + diffusers only)."""

"""Trainers: every stage runs on accelerate through :func:`.common.run_stage`; the generator stages are in diffusion.py."""

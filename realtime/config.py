"""The ``realtime`` section: backend, device, precision, engine, input health and sessions."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field

from neuroimagen.stream.config import FrozenConfig, load_section


class HealthConfig(FrozenConfig):
    """Input-health checks on the conformed signal (model channels, volts)."""

    check_interval_s: float = Field(0.5, gt=0, description="how often the newest samples are checked")
    flat_std_v: float = Field(1e-7, ge=0, description="a channel whose std is below this is flat (0.1 uV)")
    rail_abs_v: float = Field(
        5e-3, gt=0, description="a channel whose |value| stays at or above this is railing (5 mV)"
    )
    rail_fraction: float = Field(0.9, gt=0, le=1, description="fraction of samples at the rail that makes it railing")
    nan_burst_samples: int = Field(1, ge=1, description="non-finite samples per check reported as a NaN burst")


class SessionConfig(FrozenConfig):
    """What a session folder keeps."""

    record_eeg: bool = Field(True, description="raw EEG + markers through the stream recorder")
    save_frames: bool = Field(True, description="every reconstruction as PNG")
    save_saliency: bool = Field(False, description="every saliency image as PNG too")
    metrics_interval_s: float = Field(1.0, gt=0, le=1.0, description="metrics.json rewritten this often")


class RealtimeConfig(FrozenConfig):
    backend: Literal["auto", "torch", "onnxruntime", "tensorrt"] = Field(
        "auto", description="auto: onnxruntime on the CPU when the bundle carries ONNX graphs of every part at "
        "this precision and onnxruntime is installed (the fastest CPU backend), else torch; logged and shown "
        "in the status line. tensorrt is never picked by auto",
    )
    fallback_backend: Literal["torch", "onnxruntime"] | None = Field(
        None, description="used only if the configured backend cannot load, loudly"
    )
    device: Literal["cpu", "cuda"] = "cpu"
    precision: Literal["fp32", "fp16"] = "fp32"
    bundle: Path | None = Field(None, description="model bundle directory (None: the shipped one)")
    mode: Literal["sliding", "marker"] | None = Field(
        None, description="windowing mode (None: the bundle's)"
    )
    hop_s: float | None = Field(None, gt=0, description="sliding hop in seconds (None: the bundle's)")
    top_k: int = Field(5, ge=1, description="decoded classes shown and written per frame")
    warmup_frames: int = Field(3, ge=1, description="frames run on zeros before the loop starts")
    torch_threads: int | None = Field(
        1, ge=1, description="torch intra-op threads of the torch backend (None: torch's default); "
        "1 by default: the engine's own threads share the cores, and on a small CPU one "
        "intra-op thread is the fastest",
    )
    recent_eeg_s: float = Field(2.0, gt=0, description="seconds of recent EEG in each snapshot")
    strength: float | None = Field(
        None, gt=0, le=1, description="img2img noise strength (None: the bundle's generator setting)"
    )
    num_inference_steps: int | None = Field(
        None, ge=1, description="denoising schedule steps (None: the bundle's generator setting)"
    )
    health: HealthConfig = HealthConfig()
    session: SessionConfig = SessionConfig()


def load_realtime_config(
    config: str | Path | None = None, overrides: Iterable[str] = ()
) -> RealtimeConfig:
    return load_section(RealtimeConfig, "realtime", config, overrides)

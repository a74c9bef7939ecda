"""The ``realtime`` section: backend, device and precision of the live process."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field

from neuroimagen.stream.config import FrozenConfig, load_section


class RealtimeConfig(FrozenConfig):
    backend: Literal["torch", "onnxruntime", "tensorrt"] = "torch"
    fallback_backend: Literal["torch", "onnxruntime"] | None = Field(
        None, description="used only if the configured backend cannot load, loudly"
    )
    device: Literal["cpu", "cuda"] = "cpu"
    precision: Literal["fp32", "fp16"] = "fp32"
    bundle: Path | None = Field(None, description="model bundle directory (None: the shipped one)")


def load_realtime_config(
    config: str | Path | None = None, overrides: Iterable[str] = ()
) -> RealtimeConfig:
    return load_section(RealtimeConfig, "realtime", config, overrides)

"""The ``export`` section: ONNX / TensorRT build settings."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field

from neuroimagen.stream.config import FrozenConfig, load_section


class ExportConfig(FrozenConfig):
    opset: int = Field(18, ge=13)
    precision: Literal["fp32", "fp16"] = "fp32"
    parity_atol: float = Field(1e-4, gt=0)


def load_export_config(
    config: str | Path | None = None, overrides: Iterable[str] = ()
) -> ExportConfig:
    return load_section(ExportConfig, "export", config, overrides)

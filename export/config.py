"""The ``export`` section: ONNX / TensorRT build settings."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field

from neuroimagen.stream.config import FrozenConfig, load_section


class TensorRTConfig(FrozenConfig):
    """TensorRT engines built from the ONNX files (needs tensorrt; not yet verified on a GPU)."""

    enabled: bool = Field(False, description="build engines after the ONNX export (needs tensorrt and a GPU)")
    precision: Literal["fp32", "fp16"] = "fp16"
    max_batch: int = Field(1, ge=1, description="optimisation profile: batch 1 (min/opt) .. max_batch")
    workspace_mb: int = Field(4096, ge=64, description="builder memory pool limit for the workspace")
    timing_cache: Path | None = Field(
        None, description="timing cache file (None: <out>/tensorrt/timing.cache); reused across builds"
    )


class ExportConfig(FrozenConfig):
    opset: int = Field(18, ge=17, description="ONNX opset (>= 17: LayerNormalization, GroupNorm decompose)")
    exporter: Literal["dynamo", "legacy"] = Field(
        "dynamo", description="torch.onnx.export(dynamo=True) (torch.export + onnxscript) or the deprecated TorchScript one"
    )
    precision: Literal["fp32", "fp16"] = Field("fp32", description="fp16 graphs need a GPU provider for parity")
    parity_atol: float = Field(1e-4, gt=0, description="max abs error on outputs of unit scale, fp32")
    parity_atol_fp16: float = Field(1e-2, gt=0, description="the same for fp16 graphs")
    external_data_mb: float = Field(
        64.0, ge=0, description="weights of a part above this size go to <part>.onnx.data (external data)"
    )
    dynamic_batch: bool = Field(True, description="extractor and projection graphs take any batch size")
    tensorrt: TensorRTConfig = TensorRTConfig()


def load_export_config(
    config: str | Path | None = None, overrides: Iterable[str] = ()
) -> ExportConfig:
    return load_section(ExportConfig, "export", config, overrides)

"""TensorRT engine manifests: what an engine was built for, and whether it fits this machine.

A TensorRT engine is tied to the GPU (compute capability), the TensorRT version
and the exact ONNX graph it was built from. Each engine file ``<part>.plan`` sits
beside ``<part>.json`` (:class:`EngineManifest`); :func:`engine_mismatches` lists
every difference from the current environment, and the loader refuses the engine
with that list (rebuild with ``neuroimagen export --tensorrt --rebuild-engines``).

Pure Python (no tensorrt import): the export layer writes these, the realtime
TensorRT backend checks them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from neuroimagen.stream.config import FrozenConfig

__all__ = [
    "ENGINE_SUFFIX",
    "EngineEnvironment",
    "EngineManifest",
    "EngineManifestError",
    "ShapeProfile",
    "default_engine_dir",
    "current_environment",
    "engine_mismatches",
    "read_engine_manifest",
]

ENGINE_SUFFIX = ".plan"
MANIFEST_SUFFIX = ".json"


class EngineManifestError(ValueError):
    """An engine manifest is missing or unreadable."""


class ShapeProfile(FrozenConfig):
    """One input's optimisation profile: min / opt / max shapes."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


class EngineEnvironment(FrozenConfig):
    """What an engine depends on: the GPU and the libraries."""

    tensorrt_version: str
    compute_capability: str = Field(description="'major.minor' of the GPU, e.g. '8.9'")
    gpu_name: str = ""
    cuda_version: str | None = None


class EngineManifest(FrozenConfig):
    """Written beside every engine."""

    part: str
    bundle_name: str
    onnx_path: str = Field(description="bundle-relative ONNX file the engine was built from")
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    engine_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    precision: Literal["fp32", "fp16"]
    environment: EngineEnvironment
    profiles: dict[str, ShapeProfile]
    outputs: tuple[str, ...]
    created_utc: str = ""


def engine_mismatches(manifest: EngineManifest, env: EngineEnvironment, *, onnx_sha256: str,
                      bundle_name: str, precision: str, engine_sha256: str | None = None,
                      shapes: dict[str, tuple[int, ...]] | None = None) -> list[str]:
    """Every reason ``manifest``'s engine cannot run here; empty when it can.

    Parameters
    ----------
    env : this machine's GPU and libraries
    onnx_sha256, bundle_name : the graph in the bundle now (a re-export changes it)
    precision : the precision asked for
    engine_sha256 : the engine file's digest now (None: not checked)
    shapes : {input: shape} the backend will bind; each must lie inside its profile
    """
    reasons = []
    built = manifest.environment
    if built.tensorrt_version != env.tensorrt_version:
        reasons.append(f"TensorRT {built.tensorrt_version} built it, {env.tensorrt_version} is installed")
    if built.compute_capability != env.compute_capability:
        reasons.append(f"built for compute capability {built.compute_capability} ({built.gpu_name or '?'}), "
                       f"this GPU is {env.compute_capability} ({env.gpu_name or '?'})")
    if built.cuda_version and env.cuda_version and built.cuda_version.split(".")[0] != env.cuda_version.split(".")[0]:
        reasons.append(f"built with CUDA {built.cuda_version}, this runtime is CUDA {env.cuda_version}")
    if manifest.bundle_name != bundle_name:
        reasons.append(f"built from bundle {manifest.bundle_name!r}, the bundle is {bundle_name!r}")
    if manifest.onnx_sha256 != onnx_sha256:
        reasons.append(f"built from another {manifest.onnx_path} (sha256 {manifest.onnx_sha256[:12]}..., "
                       f"the bundle's is {onnx_sha256[:12]}...)")
    if manifest.precision != precision:
        reasons.append(f"built for {manifest.precision}, {precision} asked for")
    if engine_sha256 is not None and engine_sha256 != manifest.engine_sha256:
        reasons.append("the engine file was modified after it was built (sha256 differs from its manifest)")
    for name, shape in (shapes or {}).items():
        prof = manifest.profiles.get(name)
        if prof is None:
            reasons.append(f"input {name!r} has no optimisation profile (profiles: {sorted(manifest.profiles)})")
        elif len(shape) != len(prof.min) or any(not lo <= s <= hi for s, lo, hi in zip(shape, prof.min, prof.max, strict=False)):
            reasons.append(f"input {name!r} shape {shape} is outside its profile {prof.min}..{prof.max}")
    return reasons


def read_engine_manifest(path: str | Path) -> EngineManifest:
    """``<part>.json`` beside ``<part>.plan``."""
    path = Path(path)
    if not path.is_file():
        raise EngineManifestError(f"{path}: no engine manifest")
    try:
        return EngineManifest.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise EngineManifestError(f"{path}: invalid engine manifest: {exc}") from None


def default_engine_dir(bundle_path: str | Path) -> Path:
    """Engines are machine-specific and live beside the (portable) bundle: ``<bundle>.tensorrt/``."""
    p = Path(bundle_path).resolve()
    return p.with_name(p.name + ".tensorrt")


def current_environment(tensorrt_version: str, device: int = 0) -> EngineEnvironment:
    """This machine's environment for engines (the GPU through torch.cuda)."""
    import torch

    if not torch.cuda.is_available():
        raise EngineManifestError("TensorRT engines need a CUDA GPU; torch sees none")
    major, minor = torch.cuda.get_device_capability(device)
    return EngineEnvironment(tensorrt_version=tensorrt_version, compute_capability=f"{major}.{minor}",
                             gpu_name=torch.cuda.get_device_name(device), cuda_version=torch.version.cuda)

"""TensorRT engines from a bundle's ONNX graphs (tensorrt Python API; NOT YET VERIFIED ON A GPU).

For each ONNX artifact: parse it (``trt.OnnxParser.parse_from_file``, which reads
external data), build with fp16 (``BuilderFlag.FP16``), one optimisation profile
per dynamic input (batch 1 .. ``max_batch``; static inputs get their own shape),
a workspace limit and a timing cache shared by all parts and kept between builds,
then write ``<part>.plan`` and its :class:`~neuroimagen.training.models.engines.EngineManifest`
``<part>.json`` into the engine folder (default ``<bundle>.tensorrt/``, beside the
bundle: engines are machine-specific and the bundle stays portable).

An existing engine is kept when its manifest matches this machine and the bundle,
and refused with the reasons otherwise; ``rebuild=True`` rebuilds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from neuroimagen.training.models.bundle import load_bundle
from neuroimagen.training.models.engines import (
    ENGINE_SUFFIX,
    MANIFEST_SUFFIX,
    EngineManifest,
    EngineManifestError,
    ShapeProfile,
    current_environment,
    default_engine_dir,
    engine_mismatches,
    read_engine_manifest,
)
from neuroimagen.training.models.format import file_sha256

from .config import TensorRTConfig

logger = logging.getLogger(__name__)

__all__ = ["EngineResult", "build_engines", "profiles_for"]


@dataclass(frozen=True)
class EngineResult:
    part: str
    path: Path
    action: str  # "built", "kept", "rebuilt"
    reasons: tuple[str, ...] = ()


def profiles_for(inputs: dict[str, tuple[int, ...]], max_batch: int) -> dict[str, ShapeProfile]:
    """min/opt/max per input: a dynamic (-1) batch axis spans 1..max_batch (opt 1), others are fixed."""
    out = {}
    for name, shape in inputs.items():
        if shape and shape[0] == -1:
            rest = tuple(shape[1:])
            out[name] = ShapeProfile(min=(1, *rest), opt=(1, *rest), max=(max_batch, *rest))
        else:
            if any(s < 0 for s in shape):
                raise ValueError(f"input {name!r} {shape}: only the batch axis may be dynamic")
            out[name] = ShapeProfile(min=tuple(shape), opt=tuple(shape), max=tuple(shape))
    return out


def build_engines(bundle_path: str | Path, cfg: TensorRTConfig | None = None, *, engine_dir: str | Path | None = None,
                  rebuild: bool = False, progress: Callable[[str], None] | None = None) -> list[EngineResult]:
    """Build (or keep) one engine per ONNX artifact of the bundle.

    Raises
    ------
    ImportError
        tensorrt is not installed (``pip install tensorrt`` on a CUDA machine).
    RuntimeError
        An engine exists and does not match (with every reason) and ``rebuild`` is False,
        the ONNX parser fails (its errors), or the build fails.
    """
    import tensorrt as trt

    cfg = cfg or TensorRTConfig()
    bundle = load_bundle(bundle_path)
    onnx = bundle.artifacts("onnx")
    if not onnx:
        raise RuntimeError(f"{bundle_path}: no ONNX artifacts; run neuroimagen export first")
    out_dir = Path(engine_dir) if engine_dir is not None else default_engine_dir(bundle.path)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = current_environment(trt.__version__)
    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    # 1. one timing cache for every part, loaded from and saved to disk (kernel timings are reused)
    cache_path = Path(cfg.timing_cache) if cfg.timing_cache is not None else out_dir / "timing.cache"
    results = []
    for part, entry in onnx.items():
        onnx_file = bundle.path / entry.files[0].path
        onnx_sha = entry.files[0].sha256
        plan = out_dir / f"{part}{ENGINE_SUFFIX}"
        mpath = out_dir / f"{part}{MANIFEST_SUFFIX}"
        reasons: list[str] = []
        if plan.exists():
            try:
                reasons = engine_mismatches(read_engine_manifest(mpath), env, onnx_sha256=onnx_sha,
                                            bundle_name=bundle.manifest.name, precision=cfg.precision,
                                            engine_sha256=file_sha256(plan))
            except EngineManifestError as exc:
                reasons = [str(exc)]
            if not reasons:
                results.append(EngineResult(part, plan, "kept"))
                continue
            if not rebuild:
                raise RuntimeError(f"{plan}: engine does not match (rebuild with --rebuild-engines): "
                                   + "; ".join(reasons))
        if progress is not None:
            progress(part)
        # 2. parse the graph (external data is read from beside the file)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, trt_logger)
        if not parser.parse_from_file(str(onnx_file)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise RuntimeError(f"{onnx_file}: TensorRT's ONNX parser failed: {errors}")
        # 3. builder config: precision, workspace, profile, timing cache
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mb * 2**20)
        if cfg.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        shapes = {n: tuple(s.shape) for n, s in entry.inputs.items()}
        profiles = profiles_for(shapes, cfg.max_batch)
        profile = builder.create_optimization_profile()
        for name, prof in profiles.items():
            profile.set_shape(name, prof.min, prof.opt, prof.max)
        config.add_optimization_profile(profile)
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"{onnx_file}: TensorRT engine build failed (see the TensorRT log above)")
        plan.write_bytes(bytes(serialized))
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
        manifest = EngineManifest(
            part=part, bundle_name=bundle.manifest.name, onnx_path=entry.files[0].path, onnx_sha256=onnx_sha,
            engine_sha256=file_sha256(plan), precision=cfg.precision, environment=env, profiles=profiles,
            outputs=tuple(entry.outputs), created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        mpath.write_text(manifest.model_dump_json(indent=1))
        results.append(EngineResult(part, plan, "rebuilt" if reasons else "built", tuple(reasons)))
    return results

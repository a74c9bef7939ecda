"""The frame on TensorRT engines (NOT YET VERIFIED ON A GPU).

Engines are built by ``neuroimagen export --tensorrt`` into ``<bundle>.tensorrt/``;
each is refused, with every reason, when its manifest does not match this GPU,
the installed TensorRT/CUDA, the bundle's ONNX graph or the precision asked for.
No silent fallback: the engine's mismatch is a :class:`~..backend.BackendError`
(``realtime.fallback_backend`` decides, loudly, whether something else runs).

Each engine runs with ``execute_async_v3`` on one CUDA stream; its I/O are torch
CUDA tensors allocated once (static addresses, as CUDA graphs will need). The
scheduler, the noise and the class scores are the torch frame's own steps.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from neuroimagen.training.models.bundle import Bundle
from neuroimagen.training.models.engines import (
    ENGINE_SUFFIX,
    MANIFEST_SUFFIX,
    EngineManifestError,
    current_environment,
    default_engine_dir,
    engine_mismatches,
    read_engine_manifest,
)
from neuroimagen.training.models.format import file_sha256

from ..backend import CLASS_EMBEDDINGS, BackendError, BackendOutput, BackendSpec
from ..config import RealtimeConfig
from ._frame import EXTRACTOR_PARTS, FRAME_PARTS, ExportedFrame, unit_rows

__all__ = ["TensorRTBackend"]


class _Engine:
    """One deserialised engine with its I/O buffers (batch 1) bound once."""

    def __init__(self, trt: Any, runtime: Any, plan: bytes, shapes: Mapping[str, tuple[int, ...]],
                 stream: torch.cuda.Stream) -> None:
        self.engine = runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BackendError("TensorRT could not deserialise the engine")
        self.context = self.engine.create_execution_context()
        self.stream = stream
        self.inputs: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        for name in names:
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                dtype = dtypes[self.engine.get_tensor_dtype(name)]
                self.inputs[name] = torch.empty(shapes[name], dtype=dtype, device="cuda")
                self.context.set_input_shape(name, shapes[name])
        for name in names:
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                dtype = dtypes[self.engine.get_tensor_dtype(name)]
                shape = tuple(self.context.get_tensor_shape(name))
                self.outputs[name] = torch.empty(shape, dtype=dtype, device="cuda")
        for name, t in {**self.inputs, **self.outputs}.items():
            self.context.set_tensor_address(name, t.data_ptr())

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.cuda.stream(self.stream):
            for name, arr in feeds.items():
                self.inputs[name].copy_(torch.from_numpy(np.ascontiguousarray(arr)), non_blocking=False)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError("TensorRT execute_async_v3 failed")
            self.stream.synchronize()
            return {n: t.float().cpu().numpy() for n, t in self.outputs.items()}


class TensorRTBackend:
    """The frame on TensorRT engines; same named inputs/outputs as the torch backend."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle, cfg: RealtimeConfig) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendError("realtime.backend 'tensorrt' needs the tensorrt package on a CUDA machine "
                               "(pip install tensorrt)") from exc
        if cfg.device != "cuda" or not torch.cuda.is_available():
            raise BackendError("realtime.backend 'tensorrt' needs realtime.device 'cuda' and a CUDA GPU")
        manifest = bundle.manifest
        entries = bundle.artifacts("onnx")
        needed = [*EXTRACTOR_PARTS, *FRAME_PARTS] + (["projection"] if manifest.generator.projection else [])
        engine_dir = default_engine_dir(bundle.path)
        env = current_environment(trt.__version__)
        # 1. every engine must match this machine and the bundle, or be refused with the reasons
        problems = []
        plans = {}
        for part in needed:
            plan, mpath = engine_dir / f"{part}{ENGINE_SUFFIX}", engine_dir / f"{part}{MANIFEST_SUFFIX}"
            if part not in entries or not plan.is_file():
                problems.append(f"{part}: no engine in {engine_dir}")
                continue
            shapes = {n: tuple(1 if s == -1 else s for s in spec.shape) for n, spec in entries[part].inputs.items()}
            try:
                reasons = engine_mismatches(read_engine_manifest(mpath), env, onnx_sha256=entries[part].files[0].sha256,
                                            bundle_name=manifest.name, precision=cfg.precision,
                                            engine_sha256=file_sha256(plan), shapes=shapes)
            except EngineManifestError as exc:
                reasons = [str(exc)]
            problems += [f"{part}: {r}" for r in reasons]
            plans[part] = (plan, shapes)
        if problems:
            raise BackendError("TensorRT engines refused (rebuild: neuroimagen export --bundle "
                               f"{bundle.path} --tensorrt --rebuild-engines):\n  " + "\n  ".join(problems))
        # 2. load them with their buffers
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        self._stream = torch.cuda.Stream()
        try:
            self._engines = {p: _Engine(trt, runtime, plan.read_bytes(), shapes, self._stream)
                             for p, (plan, shapes) in plans.items()}
            from neuroimagen.training.models.img2img import load_scheduler

            scheduler = load_scheduler(bundle.path / manifest.generator.scheduler, subfolder=None)
            self.frame = ExportedFrame(self._engines, entries, scheduler, manifest.generator)
            pooled = bundle.data(CLASS_EMBEDDINGS)["pooled"].float().numpy()
        except BackendError:
            raise
        except Exception as exc:
            raise BackendError(f"bundle {manifest.name!r}: cannot load the TensorRT frame: {exc}") from exc
        self._class_unit = unit_rows(pooled)
        self.device = "cuda"
        n_channels, n_times = len(manifest.stream.ch_names), manifest.n_times
        self._eeg = np.zeros((1, n_channels, n_times), np.float32)
        out = self._run(self._eeg)
        self.spec = BackendSpec(
            n_channels=n_channels, n_times=n_times, saliency_size=int(out.saliency.shape[-1]),
            image_hw=(int(out.image.shape[-2]), int(out.image.shape[-1])), class_names=tuple(manifest.class_names),
        )
        self.status = f"tensorrt {trt.__version__} on {env.gpu_name} (sm {env.compute_capability}, {cfg.precision})"

    @classmethod
    def from_bundle(cls, bundle: Bundle, cfg: RealtimeConfig) -> TensorRTBackend:
        return cls(bundle, cfg)

    def _run(self, eeg: np.ndarray) -> BackendOutput:
        e = self._engines
        with torch.inference_mode():
            t0 = time.perf_counter()
            features = e["pixel_encoder"]({"eeg": eeg})["features"]
            saliency = e["saliency"]({"features": features})["saliency"]
            sem = e["semantic"]({"eeg": eeg})
            scores = unit_rows(sem["pooled"]) @ self._class_unit.T
            t1 = time.perf_counter()
            image = self.frame(torch.from_numpy(saliency), torch.from_numpy(sem["tokens"])).numpy()
            t2 = time.perf_counter()
        return BackendOutput(saliency=saliency, image=image, class_scores=scores.astype(np.float32),
                             timings_ms={"extractors": (t1 - t0) * 1e3, "diffusion": (t2 - t1) * 1e3})

    def warmup(self, n_frames: int = 3) -> float:
        t0 = time.perf_counter()
        for _ in range(n_frames):
            self._run(np.zeros_like(self._eeg))
        return time.perf_counter() - t0

    def __call__(self, eeg: np.ndarray) -> BackendOutput:
        self.spec.check_eeg(eeg)
        return self._run(np.ascontiguousarray(eeg, dtype=np.float32))

    def close(self) -> None:
        self._engines = {}
        self.frame = None
        torch.cuda.empty_cache()

"""The frame on onnxruntime: a bundle's ONNX artifacts (written by ``neuroimagen export``).

Providers are explicit: ``CPUExecutionProvider`` for ``realtime.device: cpu``,
``CUDAExecutionProvider`` (then CPU for the few ops it lacks) for ``cuda``, which
needs the ``onnxruntime-gpu`` distribution (and not ``onnxruntime`` beside it: both
install the same ``onnxruntime`` module). A provider that is asked for and missing
is an error, never a silent CPU run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from neuroimagen.training.models.bundle import ArtifactEntry, Bundle

from ..backend import CLASS_EMBEDDINGS, BackendError, BackendOutput, BackendSpec
from ..config import RealtimeConfig
from ._frame import ExportedFrame, exported_parts, onnx_gaps, unit_rows

logger = logging.getLogger(__name__)

__all__ = ["OnnxRuntimeBackend", "providers_for"]

_NP = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def providers_for(device: str) -> list[str]:
    """The explicit provider list for a device (``cpu`` or ``cuda``/``cuda:N``)."""
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]


class _Session:
    """One graph: inputs bound per call, outputs into buffers allocated once per shape (CPU).

    Returned arrays are those buffers: the next call overwrites them.
    """

    def __init__(self, ort: Any, path: str, providers: list[str], options: Any) -> None:
        self.sess = ort.InferenceSession(path, sess_options=options, providers=providers)
        self.output_names = [o.name for o in self.sess.get_outputs()]
        self._dtypes = {i.name: _NP.get(i.type, np.float32) for i in self.sess.get_inputs()}
        self._cpu = self.sess.get_providers()[0] == "CPUExecutionProvider"
        self._binding = self.sess.io_binding()
        self._buffers: dict[tuple[Any, ...], dict[str, np.ndarray]] = {}

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: np.ascontiguousarray(v, dtype=self._dtypes[k]) for k, v in feeds.items()}
        if not self._cpu:
            return dict(zip(self.output_names, self.sess.run(self.output_names, feeds), strict=True))
        key = tuple((k, v.shape) for k, v in feeds.items())
        b = self._binding
        for name, arr in feeds.items():
            b.bind_cpu_input(name, arr)
        bufs = self._buffers.get(key)
        if bufs is None:
            # 1. first call for these input shapes: let onnxruntime allocate, keep the arrays
            for name in self.output_names:
                b.bind_output(name, "cpu")
            self.sess.run_with_iobinding(b)
            bufs = self._buffers[key] = dict(zip(self.output_names, b.copy_outputs_to_cpu(), strict=True))
            return bufs
        # 2. later calls write into those arrays (no allocation per frame)
        for name, arr in bufs.items():
            b.bind_output(name, "cpu", 0, arr.dtype, list(arr.shape), arr.ctypes.data)
        self.sess.run_with_iobinding(b)
        return bufs


class OnnxRuntimeBackend:
    """The frame on onnxruntime (same named inputs/outputs as :class:`~..backend.TorchBackend`).

    Parameters
    ----------
    bundle : Bundle
        With ``onnx`` artifacts for every part (``neuroimagen export``).
    cfg : RealtimeConfig
        ``device`` picks the providers; ``precision`` must match the exported graphs;
        ``torch_threads`` also sets onnxruntime's intra-op threads (one knob: the frame's threads).

    Raises
    ------
    BackendError
        onnxruntime missing, the provider missing, a part not exported, a precision mismatch,
        or a graph that does not load (the cause is chained).
    """

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, cfg: RealtimeConfig) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendError("realtime.backend 'onnxruntime' needs the onnxruntime package "
                               "(pip install onnxruntime, or onnxruntime-gpu for CUDA)") from exc
        manifest = bundle.manifest
        entries = bundle.artifacts("onnx")
        needed = exported_parts(manifest)
        missing, wrong = onnx_gaps(manifest, entries, cfg.precision)
        if missing:
            raise BackendError(f"bundle {manifest.name!r} ({bundle.path}) has no ONNX graph for {missing}: "
                               f"export it first (neuroimagen export --bundle {bundle.path} --out NEW)")
        if wrong:
            raise BackendError(f"bundle {manifest.name!r}: ONNX graphs are {wrong}, realtime.precision is "
                               f"{cfg.precision!r}; export with export.precision={cfg.precision}")
        providers = providers_for(cfg.device)
        available = ort.get_available_providers()
        if providers[0] not in available:
            raise BackendError(f"onnxruntime {ort.__version__} has no {providers[0]} (available: {available}); "
                               "for CUDA install onnxruntime-gpu alone (see README: GPU install)")
        options = ort.SessionOptions()
        if cfg.torch_threads is not None:
            options.intra_op_num_threads = cfg.torch_threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._sessions = {p: _Session(ort, str(bundle.path / entries[p].files[0].path), providers, options)
                              for p in needed}
            scheduler = _load_scheduler(bundle)
            self.frame = ExportedFrame(self._sessions, entries, scheduler, manifest.generator)
            pooled = bundle.data(CLASS_EMBEDDINGS)["pooled"].float().numpy()
        except Exception as exc:
            raise BackendError(f"bundle {manifest.name!r} ({bundle.path}): cannot load the ONNX frame: {exc}") from exc
        if pooled.shape[0] != len(manifest.class_names):
            raise BackendError(f"class embeddings: pooled {pooled.shape} for {len(manifest.class_names)} class names")
        self._class_unit = unit_rows(pooled)
        self.device = cfg.device
        self.entries: dict[str, ArtifactEntry] = entries
        eeg_shape = entries["pixel_encoder"].inputs["eeg"].shape
        n_channels, n_times = len(manifest.stream.ch_names), manifest.n_times
        if tuple(eeg_shape[1:]) != (n_channels, n_times):
            raise BackendError(f"ONNX pixel encoder takes {eeg_shape}, the bundle's windows are "
                               f"(1, {n_channels}, {n_times})")
        self._eeg = np.zeros((1, n_channels, n_times), np.float32)
        out = self._run(self._eeg)
        self.spec = BackendSpec(
            n_channels=n_channels, n_times=n_times, saliency_size=int(out.saliency.shape[-1]),
            image_hw=(int(out.image.shape[-2]), int(out.image.shape[-1])), class_names=tuple(manifest.class_names),
        )
        self.status = f"onnxruntime {ort.__version__} ({providers[0]}, {cfg.precision})"

    @classmethod
    def from_bundle(cls, bundle: Bundle, cfg: RealtimeConfig) -> OnnxRuntimeBackend:
        return cls(bundle, cfg)

    def _run(self, eeg: np.ndarray) -> BackendOutput:
        s = self._sessions
        with torch.inference_mode():
            # 1. extractors
            t0 = time.perf_counter()
            features = s["pixel_encoder"]({"eeg": eeg})["features"]
            saliency = s["saliency"]({"features": features})["saliency"].copy()
            sem = s["semantic"]({"eeg": eeg})
            tokens, pooled = sem["tokens"].copy(), sem["pooled"]
            scores = unit_rows(pooled) @ self._class_unit.T
            t1 = time.perf_counter()
            # 2. img2img (the torch frame's own steps around the graphs)
            image = self.frame(torch.from_numpy(saliency), torch.from_numpy(tokens)).numpy().copy()
            t2 = time.perf_counter()
        return BackendOutput(
            saliency=saliency.astype(np.float32, copy=False), image=image.astype(np.float32, copy=False),
            class_scores=scores.astype(np.float32, copy=False),
            timings_ms={"extractors": (t1 - t0) * 1e3, "diffusion": (t2 - t1) * 1e3},
        )

    def warmup(self, n_frames: int = 3) -> float:
        t0 = time.perf_counter()
        self._eeg[...] = 0
        for _ in range(n_frames):
            self._run(self._eeg)
        return time.perf_counter() - t0

    def __call__(self, eeg: np.ndarray) -> BackendOutput:
        self.spec.check_eeg(eeg)
        self._eeg[...] = eeg
        return self._run(self._eeg)

    def close(self) -> None:
        self._sessions = {}
        self.frame = None


def _load_scheduler(bundle: Bundle) -> Any:
    from neuroimagen.training.models.img2img import load_scheduler

    return load_scheduler(bundle.path / bundle.manifest.generator.scheduler, subfolder=None)

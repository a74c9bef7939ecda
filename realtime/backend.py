"""Inference backends: one protocol, one frame (EEG window in, reconstruction out).

Every backend (torch here; onnxruntime and TensorRT with the export issue)
runs the same *frame* on one preprocessed window and honours the same named
inputs and outputs:

======================  ======================  ==========================================
name                    dtype, shape            meaning
======================  ======================  ==========================================
``eeg`` (input)         float32 (1, C, T)       one window after the stream layer's per-window
                                                stage (C = 128 channels, T = 440 samples by
                                                default: the bundle's ``n_times``)
``saliency`` (output)   float32 (1, 3, S, S)    the saliency generator's image, in [0, 1]
``image`` (output)      float32 (1, 3, H, W)    the reconstruction (img2img frame), in [0, 1]
``class_scores``        float32 (1, K)          cosine similarity of the semantic extractor's
(output)                                        pooled vector to each class embedding
======================  ======================  ==========================================

The frame's stages, each timed (``timings_ms``):

1. ``extractors``: pixel encoder (features), saliency generator (image), semantic
   extractor (tokens, pooled), class scores;
2. ``diffusion``: img2img from the saliency under the semantic tokens.

:func:`load_backend` builds the configured backend and fails loudly with the
cause; it falls back to ``realtime.fallback_backend`` only when that is set,
and then logs an error and says so in :attr:`Backend.status`. ``realtime.backend:
auto`` (the default) is a choice, not a fallback: :func:`resolve_backend` names the
backend it picks and why (logged; the status line ends in ``[auto]``); the picked
backend then loads or fails like a configured one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from .config import RealtimeConfig

if TYPE_CHECKING:  # the bundle module imports torch: only backends load it, at run time
    from neuroimagen.training.models.bundle import Bundle

logger = logging.getLogger(__name__)

__all__ = [
    "INPUT_NAMES",
    "OUTPUT_NAMES",
    "Backend",
    "BackendError",
    "BackendOutput",
    "BackendSpec",
    "TorchBackend",
    "load_backend",
    "resolve_backend",
]

INPUT_NAMES = ("eeg",)
OUTPUT_NAMES = ("saliency", "image", "class_scores")
#: bundle member roles the frame needs
ROLES = ("pixel_encoder", "saliency", "semantic")
CLASS_EMBEDDINGS = "class_embeddings"


class BackendError(RuntimeError):
    """A backend could not be built or run; the message says why (the cause is chained)."""


@dataclass(frozen=True)
class BackendSpec:
    """The named inputs and outputs of a backend's frame (the same for every backend).

    Attributes
    ----------
    n_channels, n_times : int
        ``eeg`` is float32 (1, n_channels, n_times).
    saliency_size : int
        ``saliency`` is float32 (1, 3, saliency_size, saliency_size).
    image_hw : (int, int)
        ``image`` is float32 (1, 3, H, W).
    class_names : tuple of str
        ``class_scores`` is float32 (1, len(class_names)), in this order.
    """

    n_channels: int
    n_times: int
    saliency_size: int
    image_hw: tuple[int, int]
    class_names: tuple[str, ...]

    def check_eeg(self, eeg: np.ndarray) -> None:
        """Raise ValueError unless ``eeg`` has the frame's input shape (1, n_channels, n_times)."""
        expected = (1, self.n_channels, self.n_times)
        if eeg.shape != expected:
            raise ValueError(f"eeg must be {expected} float32, got {eeg.shape} {eeg.dtype}")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every named input/output with its shape (batch 1)."""
        h, w = self.image_hw
        s = self.saliency_size
        return {
            "eeg": (1, self.n_channels, self.n_times),
            "saliency": (1, 3, s, s),
            "image": (1, 3, h, w),
            "class_scores": (1, len(self.class_names)),
        }


@dataclass(frozen=True)
class BackendOutput:
    """One frame's outputs (numpy, float32, batch 1) and per-stage timings.

    Attributes
    ----------
    saliency : ndarray, float32 (1, 3, S, S) in [0, 1]
    image : ndarray, float32 (1, 3, H, W) in [0, 1]
    class_scores : ndarray, float32 (1, K)
    timings_ms : dict
        ``extractors`` and ``diffusion``, milliseconds.
    """

    saliency: np.ndarray
    image: np.ndarray
    class_scores: np.ndarray
    timings_ms: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """What the engine needs from a backend.

    Attributes
    ----------
    name : str
        ``torch``, ``onnxruntime``, ``tensorrt``.
    device : str
        ``cpu``, ``cuda``, ``cuda:0``, ...
    spec : BackendSpec
        Input/output names, dtypes and shapes.
    status : str
        One line for logs and the GUI; says ``FALLBACK`` when a fallback is in use.

    Notes
    -----
    Threading: one backend is called by one thread (the inference worker);
    ``warmup`` runs in the engine's controlling thread before that worker starts.
    """

    name: str
    device: str
    spec: BackendSpec
    status: str

    def warmup(self, n_frames: int = 3) -> float:
        """Run ``n_frames`` frames on zeros (allocation, kernel selection); return seconds taken."""
        ...

    def __call__(self, eeg: np.ndarray) -> BackendOutput:
        """Run one frame on ``eeg``, float32 (1, n_channels, n_times)."""
        ...

    def close(self) -> None:
        """Release the models and buffers."""
        ...


# --------------------------------------------------------------------------- torch


class TorchBackend:
    """The frame on torch, CPU or CUDA, float32 (fp16 opt-in on CUDA).

    Parameters
    ----------
    pixel_encoder : module
        ``eeg`` (B, C, T) -> features (B, F), L2-normalised.
    saliency_generator : module
        features (B, F) -> image (B, 3, S, S) in [0, 1], deterministic in eval mode.
    semantic : module
        ``eeg`` (B, C, T) -> (tokens (B, N, W), pooled (B, W)).
    class_pooled : tensor, float32 (K, W)
        The class embeddings' pooled vectors (the top-k semantics).
    class_names : sequence of str, length K
    frame : Img2ImgFrame
        saliency + tokens -> image.
    n_channels, n_times : int
        The window the models take.
    device : str
    dtype : torch.dtype
    """

    name = "torch"

    def __init__(self, pixel_encoder: Any, saliency_generator: Any, semantic: Any, class_pooled: Any,
                 class_names: tuple[str, ...] | list[str], frame: Any, *, n_channels: int, n_times: int,
                 device: str = "cpu", dtype: Any = None) -> None:
        import torch

        self._torch = torch
        self.device = str(device)
        self.dtype = dtype or torch.float32
        self.pixel_encoder = self._place(pixel_encoder)
        self.saliency_generator = self._place(saliency_generator)
        self.semantic = self._place(semantic)
        pooled = torch.as_tensor(class_pooled, dtype=torch.float32)
        if pooled.ndim != 2 or pooled.shape[0] != len(class_names):
            raise BackendError(
                f"class embeddings: pooled {tuple(pooled.shape)} for {len(class_names)} class names"
            )
        # cosine similarity = normalised dot product (training.models.semantic.class_scores)
        self._class_unit = torch.nn.functional.normalize(pooled, dim=-1).to(self.device, self.dtype)
        self.frame = frame
        self._cuda = self.device.startswith("cuda")
        self._eeg = torch.zeros((1, n_channels, n_times), device=self.device, dtype=self.dtype)
        # 1. one dry run on zeros: the spec's output shapes come from the models themselves
        out = self._run(self._eeg)
        self.spec = BackendSpec(
            n_channels=n_channels, n_times=n_times, saliency_size=int(out.saliency.shape[-1]),
            image_hw=(int(out.image.shape[-2]), int(out.image.shape[-1])), class_names=tuple(class_names),
        )
        self.status = f"torch on {self.device} ({'fp16' if self.dtype == torch.float16 else 'fp32'})"

    def _place(self, module: Any) -> Any:
        # cast only when needed: diffusers warns on every .to(dtype=...)
        if getattr(module, "dtype", None) != self.dtype:
            module = module.to(dtype=self.dtype)
        return module.to(self.device).eval().requires_grad_(False)

    @classmethod
    def from_bundle(cls, bundle: Bundle, cfg: RealtimeConfig) -> TorchBackend:
        """Load the bundle's extractors, class embeddings and generator onto ``cfg.device``.

        Raises
        ------
        BackendError
            CUDA asked for but not available, fp16 on CPU, a missing member or data file,
            or a model that fails to load (the cause is chained and named).
        """
        import torch

        if cfg.torch_threads is not None:
            torch.set_num_threads(cfg.torch_threads)
        device = cfg.device
        if device == "cuda" and not torch.cuda.is_available():
            raise BackendError("realtime.device is 'cuda' but torch sees no CUDA device "
                               f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")
        if cfg.precision == "fp16" and device != "cuda":
            raise BackendError("realtime.precision 'fp16' needs realtime.device 'cuda' (CPU runs fp32)")
        # fp32: load as stored (a cast to the same dtype still makes diffusers warn)
        dtype = torch.float16 if cfg.precision == "fp16" else None
        manifest = bundle.manifest
        try:
            models = {role: bundle.load_role(role, device=device, dtype=dtype) for role in ROLES}
            embeddings = bundle.data(CLASS_EMBEDDINGS)
            overrides = {k: v for k, v in (("strength", cfg.strength),
                                            ("num_inference_steps", cfg.num_inference_steps)) if v is not None}
            frame = bundle.frame(device=device, dtype=dtype, **overrides)
        except Exception as exc:
            raise BackendError(f"bundle {manifest.name!r} ({bundle.path}): cannot load the frame: {exc}") from exc
        if "pooled" not in embeddings:
            raise BackendError(f"bundle {manifest.name!r}: {CLASS_EMBEDDINGS}.safetensors has no 'pooled' "
                               f"tensor (has {sorted(embeddings)})")
        return cls(
            models["pixel_encoder"], models["saliency"], models["semantic"], embeddings["pooled"],
            tuple(manifest.class_names), frame, n_channels=len(manifest.stream.ch_names),
            n_times=manifest.n_times, device=device, dtype=dtype,
        )

    def _sync(self) -> None:
        if self._cuda:
            self._torch.cuda.synchronize(self.device)

    def _run(self, eeg: Any) -> BackendOutput:
        torch = self._torch
        with torch.inference_mode():
            # 1. extractors
            t0 = time.perf_counter()
            features = self.pixel_encoder(eeg)
            saliency = self.saliency_generator(features)
            tokens, pooled = self.semantic(eeg)
            unit = torch.nn.functional.normalize(pooled.to(self._class_unit.dtype), dim=-1)
            scores = unit @ self._class_unit.T
            self._sync()
            t1 = time.perf_counter()
            # 2. img2img
            image = self.frame(saliency, tokens)
            self._sync()
            t2 = time.perf_counter()
        return BackendOutput(
            saliency=saliency.float().cpu().numpy(),
            image=image.float().cpu().numpy(),
            class_scores=scores.float().cpu().numpy(),
            timings_ms={"extractors": (t1 - t0) * 1e3, "diffusion": (t2 - t1) * 1e3},
        )

    def warmup(self, n_frames: int = 3) -> float:
        t0 = time.perf_counter()
        self._eeg.zero_()
        for _ in range(n_frames):
            self._run(self._eeg)
        return time.perf_counter() - t0

    def __call__(self, eeg: np.ndarray) -> BackendOutput:
        self.spec.check_eeg(eeg)
        # into the buffer allocated once (static address: what CUDA graphs will need)
        self._eeg.copy_(self._torch.from_numpy(np.ascontiguousarray(eeg, dtype=np.float32)))
        return self._run(self._eeg)

    def close(self) -> None:
        self.pixel_encoder = self.saliency_generator = self.semantic = self.frame = None
        if self._cuda:
            self._torch.cuda.empty_cache()


# --------------------------------------------------------------------------- loading


def _build(name: str, bundle: Bundle, cfg: RealtimeConfig) -> Backend:
    if name == "torch":
        return TorchBackend.from_bundle(bundle, cfg)
    # the exported-model backends import their runtime inside their own module
    if name == "onnxruntime":
        from .backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend.from_bundle(bundle, cfg)
    if name == "tensorrt":
        from .backends.tensorrt import TensorRTBackend

        return TensorRTBackend.from_bundle(bundle, cfg)
    raise BackendError(f"unknown backend {name!r} (torch, onnxruntime, tensorrt)")


def resolve_backend(bundle: Bundle, cfg: RealtimeConfig) -> tuple[str, str]:
    """The backend ``realtime.backend`` names, and why: ``auto`` resolves here.

    ``auto`` is onnxruntime when the device is the CPU, the bundle carries ONNX graphs of
    every part of the frame at ``realtime.precision`` (``neuroimagen export``; the embedded
    default ships them) and the ``onnxruntime`` module is installed; torch otherwise (on
    CUDA: torch, whose CUDA graphs are the tested GPU path; ask for onnxruntime or
    tensorrt by name). Any other value is returned as it is.
    """
    if cfg.backend != "auto":
        return cfg.backend, "configured"
    import importlib.util

    from .backends._frame import onnx_gaps

    if cfg.device != "cpu":
        return "torch", f"device {cfg.device}: torch (name onnxruntime or tensorrt to use them)"
    missing, wrong = onnx_gaps(bundle.manifest, bundle.artifacts("onnx"), cfg.precision)
    if missing:
        return "torch", (f"the bundle has no ONNX graphs for {', '.join(missing)} "
                         "(neuroimagen export adds them)")
    if wrong:
        return "torch", f"the bundle's ONNX graphs are {wrong}, realtime.precision is {cfg.precision}"
    if importlib.util.find_spec("onnxruntime") is None:
        return "torch", ("onnxruntime is not installed (pip install 'neuroimagen[cpu]' for the fastest "
                         "CPU backend)")
    return "onnxruntime", "the bundle carries ONNX graphs of every part and onnxruntime is installed"


def load_backend(bundle: Bundle, cfg: RealtimeConfig) -> Backend:
    """The configured backend on the bundle, or the configured fallback, loudly.

    Parameters
    ----------
    bundle : Bundle
        A verified bundle (``training.models.bundle.load_bundle``).
    cfg : RealtimeConfig
        ``backend``, ``fallback_backend``, ``device``, ``precision``.

    Returns
    -------
    Backend
        Its ``status`` starts with ``FALLBACK`` when the fallback is in use.

    Raises
    ------
    BackendError
        The configured backend cannot load and no fallback is configured (or the
        fallback fails too); the message and the chained cause say why.
    """
    name, why = resolve_backend(bundle, cfg)
    if cfg.backend == "auto":
        logger.info("realtime.backend auto: %s (%s)", name, why)
    try:
        backend = _build(name, bundle, cfg)
    except BackendError as exc:
        if cfg.fallback_backend is None or cfg.fallback_backend == name:
            raise
        logger.error("BACKEND %r FAILED TO LOAD: %s -- FALLING BACK TO %r (realtime.fallback_backend)",
                     name, exc, cfg.fallback_backend)
        try:
            backend = _build(cfg.fallback_backend, bundle, cfg)
        except BackendError as fallback_exc:
            raise BackendError(
                f"backend {name!r} failed ({exc}) and the fallback {cfg.fallback_backend!r} "
                f"failed too ({fallback_exc})"
            ) from fallback_exc
        backend.status = f"FALLBACK {backend.status} ({name!r} failed: {exc})"
        return backend
    if cfg.backend == "auto":
        backend.status = f"{backend.status} [auto]"
    return backend

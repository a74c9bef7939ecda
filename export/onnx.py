"""ONNX export of every part of a bundle, with onnxruntime-vs-torch parity.

Parts and their graphs (named inputs -> named outputs; B = batch, dynamic for the
extractors and the projection when ``dynamic_batch``):

==============  ==========================================  ===========================================
part            inputs                                      outputs
==============  ==========================================  ===========================================
pixel_encoder   eeg (B, C, T)                               features (B, F)
saliency        features (B, F)                             saliency (B, 3, S, S) in [0, 1]
semantic        eeg (B, C, T)                               tokens (B, N, W), pooled (B, W)
projection      tokens (B, N, W)                            prompt_embeds (B, N, D)
vae_encoder     image (1, 3, H, W) in [-1, 1]               latent_mean (1, 4, h, w) [, latent_std]
unet            sample (1, 4, h, w), timestep (1,) float,   noise_pred (1, 4, h, w)
                encoder_hidden_states (1, N, D)
                [, timestep_cond (1, E)]
vae_decoder     latents (1, 4, h, w) (unscaled)             image (1, 3, H, W) in [0, 1]
==============  ==========================================  ===========================================

The scaling factor, the noise, the scheduler and the class scores stay outside
the graphs (the backends run them as :class:`~neuroimagen.training.models.img2img.Img2ImgFrame`
does); ``latent_std`` is exported for AutoencoderKL so ``encode_mode: sample`` works.

Exporter: ``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript), the
exporter torch 2.13 defaults to and maintains; the TorchScript exporter is
deprecated and available as ``export.exporter: legacy``.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuroimagen.training.models.bundle import (
    ArtifactEntry,
    Bundle,
    BundleManifest,
    TensorSpec,
    artifact_files,
    derive_bundle,
    load_bundle,
)

from .config import ExportConfig

logger = logging.getLogger(__name__)

__all__ = [
    "PARTS",
    "ExportReport",
    "OnnxPart",
    "PartParity",
    "bundle_parts",
    "export_bundle",
    "export_part",
    "part_parity",
]

PARTS = ("pixel_encoder", "saliency", "semantic", "projection", "vae_encoder", "unet", "vae_decoder")
ONNX_DIR = "onnx"


# --------------------------------------------------------------------------- parts as modules


class _Call(torch.nn.Module):
    """A part as a plain module: positional named inputs -> tuple of named outputs."""

    def __init__(self, module: torch.nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.module = module
        self._fn = fn

    def forward(self, *args: torch.Tensor) -> Any:
        return self._fn(self.module, *args)


def _unet_fn(with_cond: bool) -> Callable[..., Any]:
    if with_cond:
        def fn(u, sample, timestep, ehs, cond):
            return u(sample, timestep, encoder_hidden_states=ehs, timestep_cond=cond, return_dict=False)[0]
    else:
        def fn(u, sample, timestep, ehs):
            return u(sample, timestep, encoder_hidden_states=ehs, return_dict=False)[0]
    return fn


def _vae_encoder_fn(kl: bool) -> Callable[..., Any]:
    if kl:
        def fn(vae, image):
            dist = vae.encode(image).latent_dist
            return dist.mean, dist.std
    else:
        def fn(vae, image):
            return vae.encode(image).latents
    return fn


def _vae_decoder_fn(vae, latents):
    return (vae.decode(latents).sample / 2 + 0.5).clamp(0, 1)


@dataclass
class OnnxPart:
    """One exportable part: the module, example inputs (torch, the real chain's values) and names."""

    part: str
    module: torch.nn.Module
    inputs: dict[str, torch.Tensor]
    output_names: tuple[str, ...]
    source: tuple[str, ...]
    dynamic_batch: bool = False
    attributes: dict[str, float | int | str] = field(default_factory=dict)

    def reference(self) -> dict[str, np.ndarray]:
        """The torch outputs on :attr:`inputs`, float32 numpy."""
        with torch.inference_mode():
            out = self.module(*self.inputs.values())
        out = out if isinstance(out, tuple) else (out,)
        return {n: o.float().cpu().numpy() for n, o in zip(self.output_names, out, strict=True)}


def bundle_parts(bundle: Bundle, *, dtype: torch.dtype | None = None, device: str = "cpu",
                 seed: int = 0) -> list[OnnxPart]:
    """Every exportable part of ``bundle``, with example inputs taken from the real chain.

    The inputs are seeded unit-scale EEG pushed through the torch models (features from
    the pixel encoder, the saliency image, its latents, the noisy latents at the first
    kept timestep), so parity is measured on the values each part sees live.
    """
    m = bundle.manifest
    gen = torch.Generator().manual_seed(seed)
    names = {mm.role: mm.name for mm in (*m.members, *m.external)}
    load = {role: bundle.load_model(names[role], device=device, dtype=dtype)
            for role in ("pixel_encoder", "saliency", "semantic")}
    frame = bundle.frame(device=device, dtype=dtype)
    eeg = torch.randn(1, len(m.stream.ch_names), m.n_times, generator=gen).to(device, dtype or torch.float32)
    parts: list[OnnxPart] = []
    with torch.inference_mode():
        # 1. extractors
        features = load["pixel_encoder"](eeg)
        saliency = load["saliency"](features)
        tokens, _ = load["semantic"](eeg)
        parts += [
            OnnxPart("pixel_encoder", _Call(load["pixel_encoder"], lambda mod, x: mod(x)), {"eeg": eeg},
                     ("features",), (names["pixel_encoder"],), True),
            OnnxPart("saliency", _Call(load["saliency"], lambda mod, x: mod(x)), {"features": features},
                     ("saliency",), (names["saliency"],), True),
            OnnxPart("semantic", _Call(load["semantic"], lambda mod, x: tuple(mod(x))), {"eeg": eeg},
                     ("tokens", "pooled"), (names["semantic"],), True),
        ]
        # 2. the generator, on the frame's own intermediate values
        gspec = m.generator
        embeds = frame.conditioning(tokens)
        if frame.projection is not None:
            parts.append(OnnxPart("projection", _Call(frame.projection, lambda mod, x: mod(x)),
                                  {"tokens": tokens}, ("prompt_embeds",), (gspec.projection,), True))
        image = frame.preprocess(saliency)
        kl = hasattr(frame.vae.encode(image), "latent_dist")
        sf = float(frame.vae.config.scaling_factor)
        parts.append(OnnxPart(
            "vae_encoder", _Call(frame.vae, _vae_encoder_fn(kl)), {"image": image},
            ("latent_mean", "latent_std") if kl else ("latent_mean",), (gspec.autoencoder,),
            attributes={"scaling_factor": sf, "kind": "kl" if kl else "tiny"},
        ))
        latents = frame.encode(image)
        timesteps = frame.timesteps()
        noisy = frame.scheduler.add_noise(latents, torch.randn(latents.shape, generator=gen).to(latents),
                                          timesteps[:1])
        batch = 2 if frame.do_classifier_free_guidance else 1
        unet_in = {
            "sample": frame.scheduler.scale_model_input(noisy, timesteps[0]).repeat(batch, 1, 1, 1),
            "timestep": timesteps[:1].to(device=device, dtype=torch.float32),
            "encoder_hidden_states": embeds.repeat(batch, 1, 1),
        }
        cond = frame._timestep_cond(batch)
        if cond is not None:
            unet_in["timestep_cond"] = cond
        parts.append(OnnxPart("unet", _Call(frame.unet, _unet_fn(cond is not None)), unet_in, ("noise_pred",),
                              (gspec.unet,), attributes={"batch": batch}))
        parts.append(OnnxPart("vae_decoder", _Call(frame.vae, _vae_decoder_fn), {"latents": latents / sf},
                              ("image",), (gspec.autoencoder,), attributes={"scaling_factor": sf}))
    return parts


# --------------------------------------------------------------------------- export + check


def _n_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


@contextlib.contextmanager
def _quiet_dynamo_exporter() -> Iterator[None]:
    """Silence what the dynamo exporter says on every call that is not about our graph.

    It warns that torchvision's ops are skipped when torchvision is not installed (no bundle
    uses them) and raises a pytree FutureWarning from inside torch. Errors still propagate,
    and the ONNX checker and the parity check after export judge the graph.
    """
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, message=r".*treespec.*LeafSpec")
            yield
    finally:
        registration.setLevel(level)


def export_part(part: OnnxPart, path: str | Path, cfg: ExportConfig) -> list[Path]:
    """Export one part to ``path`` (ONNX checker included); returns the files written.

    Weights above ``cfg.external_data_mb`` go to ``<path>.data`` (external data), so
    graphs of any size stay loadable (protobuf's 2 GB limit).
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    external = _n_bytes(part.module) > cfg.external_data_mb * 2**20
    names_in = list(part.inputs)
    kwargs: dict[str, Any] = {}
    args = tuple(part.inputs.values())
    if part.dynamic_batch:
        # a batch of 2 in the example: torch.export specialises a size-1 axis to a constant
        args = tuple(a[:1].repeat(2, *([1] * (a.ndim - 1))) for a in args)
        if cfg.exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=1024)
            kwargs["dynamic_shapes"] = (tuple({0: batch} for _ in args),)
        else:
            kwargs["dynamic_axes"] = {n: {0: "batch"} for n in (*names_in, *part.output_names)}
    module = part.module.eval()
    if cfg.exporter == "dynamo":
        with _quiet_dynamo_exporter():
            torch.onnx.export(module, args, str(path), dynamo=True, opset_version=cfg.opset,
                              input_names=names_in, output_names=list(part.output_names),
                              external_data=external, verbose=False, **kwargs)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), dynamo=False, opset_version=cfg.opset,
                              input_names=names_in, output_names=list(part.output_names), **kwargs)
        if external:
            model = onnx.load(str(path))
            onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=path.name + ".data", size_threshold=1024)
    # the path form of the checker reads external data and graphs over 2 GB
    onnx.checker.check_model(str(path), full_check=True)
    files = [path]
    data = path.with_name(path.name + ".data")
    if data.exists():
        files.append(data)
    return files


@dataclass(frozen=True)
class PartParity:
    """onnxruntime vs torch on one part: per output, max abs error and the output's scale."""

    part: str
    errors: dict[str, float]
    scales: dict[str, float]
    atol: float
    provider: str

    def scaled(self, name: str) -> float:
        """Error relative to the output's scale where that exceeds 1 (unit-scale outputs: absolute)."""
        return self.errors[name] / max(1.0, self.scales[name])

    @property
    def ok(self) -> bool:
        return all(self.scaled(n) <= self.atol for n in self.errors)


def _providers(device: str) -> list[str]:
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device.startswith("cuda") else ["CPUExecutionProvider"]


def part_parity(part: OnnxPart, path: str | Path, *, atol: float, device: str = "cpu") -> PartParity:
    """Run the ONNX graph in onnxruntime on the part's example inputs and compare with torch."""
    import onnxruntime as ort

    providers = _providers(device)
    sess = ort.InferenceSession(str(path), providers=providers)
    if providers[0] not in sess.get_providers():
        raise RuntimeError(f"onnxruntime cannot use {providers[0]} (has {sess.get_providers()})")
    ref = part.reference()
    feeds = {n: t.cpu().numpy() for n, t in part.inputs.items()}
    got = dict(zip(part.output_names, sess.run(list(part.output_names), feeds), strict=True))
    errors = {n: float(np.max(np.abs(got[n].astype(np.float32) - ref[n]))) for n in part.output_names}
    scales = {n: float(np.max(np.abs(ref[n]))) for n in part.output_names}
    return PartParity(part.part, errors, scales, atol, providers[0])


def _spec(t: torch.Tensor | np.ndarray, dynamic: bool) -> TensorSpec:
    shape = tuple(int(s) for s in t.shape)
    if dynamic:
        shape = (-1, *shape[1:])
    dtype = str(t.dtype).removeprefix("torch.")
    return TensorSpec(shape=shape, dtype=dtype)


# --------------------------------------------------------------------------- the bundle


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_bundle` did: the new bundle's manifest and every part's parity."""

    manifest: BundleManifest
    parity: tuple[PartParity, ...]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.parity)

    def rows(self) -> list[tuple[str, str, float, float, float, bool]]:
        """(part, output, max abs error, output scale, scaled error, within atol) per output."""
        return [(p.part, n, p.errors[n], p.scales[n], p.scaled(n), p.scaled(n) <= p.atol)
                for p in self.parity for n in p.errors]


def export_bundle(source: str | Path, out: str | Path, cfg: ExportConfig | None = None, *,
                  device: str = "cpu", progress: Callable[[str], None] | None = None,
                  command: str | None = None) -> ExportReport:
    """Export every part of ``source`` to ONNX and write the new bundle ``out``.

    Parameters
    ----------
    source : path
        A bundle; only read (verified first).
    out : path
        The new bundle: the source's files plus ``onnx/<part>.onnx`` (+ ``.onnx.data``),
        one ``onnx`` artifact entry per part (named inputs/outputs, shapes, dtypes, opset,
        versions) and metrics ``onnx_parity_<part>_<output>`` (max abs error).
    cfg : ExportConfig
    device : "cpu" | "cuda"
        Where torch and onnxruntime run for parity (fp16 needs "cuda").
    progress : called with each part's name before it is exported

    Raises
    ------
    RuntimeError
        A part's parity is outside ``cfg.parity_atol`` (``parity_atol_fp16`` for fp16):
        no bundle is written; the message lists every output's error.
    """
    import onnx
    import onnxruntime

    cfg = cfg or ExportConfig()
    bundle = load_bundle(source)
    fp16 = cfg.precision == "fp16"
    atol = cfg.parity_atol_fp16 if fp16 else cfg.parity_atol
    # fp32: load as stored (diffusers warns on every cast, even to the same dtype)
    parts = bundle_parts(bundle, dtype=torch.float16 if fp16 else None, device=device)
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    with tempfile.TemporaryDirectory(prefix="neuroimagen-onnx-") as tmp:
        # 1. export and check each part, then its parity in onnxruntime
        files: dict[str, Path] = {}
        entries_files: dict[str, list[str]] = {}
        parity = []
        for part in parts:
            if progress is not None:
                progress(part.part)
            written = export_part(part, Path(tmp) / ONNX_DIR / f"{part.part}.onnx", cfg)
            rels = [f"{ONNX_DIR}/{p.name}" for p in written]
            files.update(zip(rels, written, strict=True))
            entries_files[part.part] = rels
            parity.append(part_parity(part, written[0], atol=atol, device=device))
        report_rows = [f"{p.part}.{n}: {p.errors[n]:.2e} (scale {p.scales[n]:.2f})"
                       for p in parity for n in p.errors]
        bad = [p.part for p in parity if not p.ok]
        if bad:
            raise RuntimeError(f"onnxruntime differs from torch beyond {atol:g} on {bad}: " + "; ".join(report_rows))
        metrics = {f"onnx_parity_{p.part}_{n}": err for p in parity for n, err in p.errors.items()}

        # 2. the new bundle: the source + the graphs + their entries
        def entries(root: Path) -> list[ArtifactEntry]:
            out_entries = []
            for part in parts:
                ref = part.reference()
                out_entries.append(ArtifactEntry(
                    name=f"onnx_{part.part}", kind="onnx", part=part.part, source=part.source,
                    files=artifact_files(root, entries_files[part.part]),
                    inputs={n: _spec(t, part.dynamic_batch) for n, t in part.inputs.items()},
                    outputs={n: _spec(ref[n].astype(np.float16 if fp16 else np.float32), part.dynamic_batch)
                             for n in part.output_names},
                    opset=cfg.opset, precision=cfg.precision, versions=versions,
                    attributes=dict(part.attributes),
                ))
            return out_entries

        manifest = derive_bundle(source, out, add_files=files, artifacts=entries, metrics=metrics,
                                 description=f"(+ ONNX opset {cfg.opset}, {cfg.precision})", command=command)
    return ExportReport(manifest=manifest, parity=tuple(parity))

"""The model bundle: one folder with everything the live process needs, and a typed manifest.

Layout::

    bundle/
      manifest.json                  BundleManifest (below): the only thing read by convention
      pixel_encoder/                 member model folders, each in the one model format
        config.json                  (training.models.format: config.json + safetensors)
        diffusion_pytorch_model.safetensors
      saliency/ semantic/ unet/ autoencoder/ projection/ ...
      scheduler/scheduler_config.json
      class_embeddings.safetensors   data files (tokens, pooled, ...) with their shapes

The manifest holds the stream contract (channel names and order, sfreq, unit),
the ``PreprocessingConfig``, ``WindowingConfig`` and normalisation statistics
the models were trained with, every member (class, folder, per-file sha256,
tensor shapes and dtypes), large base models referenced by local path and
per-file sha256 (not copied), the generator's frame settings, provenance
(data, seed, twin preset/seed/version, commands) and metrics.

:func:`write_bundle` writes a new bundle (never into an existing one),
:func:`verify_bundle` refuses a modified, missing or unlisted file and a
manifest inconsistent with its models, naming each, and :func:`load_bundle`
returns a :class:`Bundle` whose :meth:`Bundle.stream_config` and
:meth:`Bundle.norm_stats` build the live ``WindowPipeline``: the live process
gets its windowing and preprocessing only from there. stream/ never imports
this module.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
import torch
from diffusers import ModelMixin, SchedulerMixin
from pydantic import Field, ValidationError, field_validator, model_validator

from neuroimagen.stream.config import (
    FrozenConfig,
    PreprocessingConfig,
    StreamConfig,
    WindowingConfig,
)
from neuroimagen.stream.preprocessing import NormStats

from .format import (
    CONFIG_NAME,
    ModelFormatError,
    file_sha256,
    load_model,
    read_model_config,
    save_model,
)

__all__ = [
    "BUNDLE_FORMAT_VERSION",
    "MANIFEST_NAME",
    "Bundle",
    "BundleError",
    "ArtifactEntry",
    "BundleManifest",
    "ExternalModel",
    "FileEntry",
    "FrameSettings",
    "MemberEntry",
    "NormStatsSpec",
    "Provenance",
    "StreamContract",
    "TensorSpec",
    "TwinProvenance",
    "artifact_files",
    "derive_bundle",
    "describe_bundle",
    "load_bundle",
    "load_model_folder",
    "twin_mismatches",
    "verify_bundle",
    "write_bundle",
]

BUNDLE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
SCHEDULER_FOLDER = "scheduler"
SCHEDULER_CONFIG = "scheduler_config.json"
# where member classes may come from (the manifest names a class; nothing else is imported)
ALLOWED_CLASS_MODULES = ("neuroimagen.training.models", "diffusers")
_IGNORED_NAMES = ("__pycache__", ".DS_Store")


class BundleError(ValueError):
    """A bundle that is not what its manifest says; the message names every difference."""


# --------------------------------------------------------------------------- manifest


class TensorSpec(FrozenConfig):
    shape: tuple[int, ...]
    dtype: str = Field(description="safetensors dtype name: F32, F16, BF16, I64, ...")


class FileEntry(FrozenConfig):
    """One file: path relative to its root (the bundle, or an external model's folder)."""

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    tensors: dict[str, TensorSpec] | None = Field(None, description="safetensors files: name -> shape, dtype")

    @field_validator("path")
    @classmethod
    def _relative(cls, v: str) -> str:
        p = PurePosixPath(v)
        if p.is_absolute() or ".." in p.parts or not p.parts:
            raise ValueError(f"file path must be relative and inside its root, got {v!r}")
        return v


class MemberEntry(FrozenConfig):
    """A model folder inside the bundle (the one model format)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    role: str = Field(description="pixel_encoder, saliency, semantic, unet, autoencoder, projection, ...")
    class_name: str = Field(description="'module:Class', e.g. 'diffusers:UNet2DConditionModel'")
    folder: str
    files: tuple[FileEntry, ...]


class ExternalModel(FrozenConfig):
    """A large base model (SD weights) referenced by local path and per-file sha256, not copied."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    role: str
    class_name: str
    path: str = Field(description="absolute local folder of the model (config.json + safetensors)")
    files: tuple[FileEntry, ...]


class ArtifactEntry(FrozenConfig):
    """A derived, runnable form of a member (an ONNX graph, a TensorRT engine), written by export.

    ``inputs`` and ``outputs`` name every tensor with its shape (-1: a dynamic axis)
    and dtype (numpy name), in call order; ``source`` names the member(s) it was
    built from; ``files`` are bundle-relative (graph, external weights).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    kind: Literal["onnx", "tensorrt"]
    part: str = Field(description="pixel_encoder, saliency, semantic, projection, vae_encoder, unet, vae_decoder")
    source: tuple[str, ...] = Field(description="member names it was built from")
    files: tuple[FileEntry, ...]
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    opset: int | None = None
    precision: Literal["fp32", "fp16"] = "fp32"
    versions: dict[str, str] = Field(default_factory=dict)
    attributes: dict[str, float | int | str] = Field(
        default_factory=dict, description="part-specific constants (e.g. a VAE's scaling_factor)"
    )


class StreamContract(FrozenConfig):
    """What the models were trained on: channels in order, rate and unit."""

    ch_names: tuple[str, ...] = Field(min_length=1)
    sfreq_hz: float = Field(gt=0)
    units: Literal["V"] = Field(
        "V", description="unit of the signal the models saw (the stream layer converts every stream to V)"
    )


class NormStatsSpec(FrozenConfig):
    """Per-channel mean/std of ``dataset`` normalisation, in ``StreamContract.units``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_norm_stats(self) -> NormStats:
        return NormStats(np.asarray(self.mean), np.asarray(self.std))

    @classmethod
    def from_norm_stats(cls, stats: NormStats) -> NormStatsSpec:
        return cls(mean=tuple(map(float, stats.mean)), std=tuple(map(float, stats.std)))


class FrameSettings(FrozenConfig):
    """The generator: which members form the img2img frame, and how it runs."""

    unet: str = Field(description="member or external model name")
    autoencoder: str
    projection: str | None = None
    scheduler: str = Field(SCHEDULER_FOLDER, description="folder (in the bundle) with scheduler_config.json")
    strength: float = Field(0.6, gt=0, le=1)
    num_inference_steps: int = Field(2, ge=1)
    guidance_scale: float = Field(1.0, ge=1)
    image_size: int | None = Field(None, gt=0, description="encoding resolution (None: the saliency's)")
    encode_mode: Literal["sample", "mode"] = "mode"
    seed: int = 0


class TwinProvenance(FrozenConfig):
    """The synthetic twin a bundle was trained on: enough to regenerate it exactly."""

    preset: str
    seed: int
    version: str | int
    config: dict[str, Any] | None = Field(
        None, description="the twin's whole config (``neuroimagen.training.config.TwinConfig`` fields, as in "
        "its twin.json); None: the preset at this seed with every other field at its default")

    def twin_config(self) -> dict[str, Any]:
        """The TwinConfig fields that regenerate this twin."""
        return dict(self.config) if self.config is not None else {"preset": self.preset, "seed": self.seed}


class Provenance(FrozenConfig):
    data: str = Field(description="training data: dataset name and location")
    seed: int
    twin: TwinProvenance | None = Field(None, description="set when trained on the synthetic twin")
    commands: tuple[str, ...] = ()
    created_utc: str = ""
    versions: dict[str, str] = Field(default_factory=dict)


def _twin_sizes(twin: TwinProvenance) -> str:
    """The twin's sizes that differ from its preset's (", n_images_per_class=60"), for the notice."""
    sizes = ("n_classes", "n_images_per_class", "n_subjects", "image_size_px")
    return "".join(f", {k}={twin.config[k]}" for k in sizes if twin.config and twin.config.get(k) is not None)


class BundleManifest(FrozenConfig):
    """Everything the live process needs, typed; written as ``manifest.json``."""

    format_version: int = BUNDLE_FORMAT_VERSION
    name: str
    description: str = ""
    stream: StreamContract
    preprocessing: PreprocessingConfig
    windowing: WindowingConfig
    norm_stats: NormStatsSpec | None = None
    members: tuple[MemberEntry, ...] = ()
    external: tuple[ExternalModel, ...] = ()
    files: tuple[FileEntry, ...] = Field((), description="data files: class embeddings, scheduler config, ...")
    class_names: tuple[str, ...] = ()
    generator: FrameSettings | None = None
    artifacts: tuple[ArtifactEntry, ...] = Field((), description="exported forms of members (ONNX, TensorRT)")
    provenance: Provenance
    metrics: dict[str, float] = Field(default_factory=dict)

    @property
    def simulated(self) -> bool:
        """Trained on the synthetic twin (simulated EEG), not on recordings."""
        return self.provenance.twin is not None

    @property
    def n_times(self) -> int:
        """Samples per window the models take (after the optional resample)."""
        return self.preprocessing.resample_n_times or self.windowing.n_times

    def model_names(self) -> list[str]:
        return [m.name for m in self.members] + [e.name for e in self.external]

    @model_validator(mode="after")
    def _consistent(self) -> BundleManifest:
        problems = []
        if self.format_version != BUNDLE_FORMAT_VERSION:
            problems.append(f"format_version {self.format_version} (this code reads {BUNDLE_FORMAT_VERSION})")
        n_ch = len(self.stream.ch_names)
        if self.norm_stats is not None and not (len(self.norm_stats.mean) == len(self.norm_stats.std) == n_ch):
            problems.append(
                f"norm_stats have {len(self.norm_stats.mean)} mean / {len(self.norm_stats.std)} std "
                f"values for {n_ch} channels"
            )
        if self.preprocessing.normalization.mode == "dataset" and self.norm_stats is None:
            problems.append("preprocessing.normalization.mode is 'dataset' but norm_stats are missing")
        names = self.model_names()
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            problems.append(f"model names repeat: {dup}")
        for a in self.artifacts:
            missing = [s for s in a.source if s not in names]
            if missing:
                problems.append(f"artifact {a.name!r} is built from {missing}, which are not models of the bundle")
        art = [a.name for a in self.artifacts]
        if len(set(art)) != len(art):
            problems.append(f"artifact names repeat: {sorted({n for n in art if art.count(n) > 1})}")
        if self.generator is not None:
            for field in ("unet", "autoencoder", "projection"):
                ref = getattr(self.generator, field)
                if ref is not None and ref not in names:
                    problems.append(f"generator.{field} {ref!r} is not a member or external model")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# --------------------------------------------------------------------------- helpers


def _safetensors_specs(path: Path) -> dict[str, TensorSpec]:
    from safetensors import safe_open

    specs = {}
    with safe_open(str(path), framework="numpy") as f:
        for key in f.keys():
            sl = f.get_slice(key)
            specs[key] = TensorSpec(shape=tuple(sl.get_shape()), dtype=str(sl.get_dtype()))
    return specs


def _file_entry(root: Path, path: Path) -> FileEntry:
    return FileEntry(
        path=path.relative_to(root).as_posix(),
        sha256=file_sha256(path),
        size_bytes=path.stat().st_size,
        tensors=_safetensors_specs(path) if path.suffix == ".safetensors" else None,
    )


def _listed_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part in _IGNORED_NAMES for part in p.relative_to(folder).parts)
    )


def _class_path(obj_or_cls: Any) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    module = cls.__module__
    if module.startswith("diffusers"):
        module = "diffusers"  # the public name survives diffusers' internal moves
    return f"{module}:{cls.__qualname__}"


def resolve_class(class_name: str) -> type[ModelMixin]:
    """The class a manifest names, imported only from neuroimagen.training.models or diffusers."""
    module, _, qualname = class_name.partition(":")
    if not qualname or not any(module == m or module.startswith(m + ".") for m in ALLOWED_CLASS_MODULES):
        raise BundleError(
            f"member class {class_name!r} is not allowed (classes come from {', '.join(ALLOWED_CLASS_MODULES)})"
        )
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise BundleError(f"member class {class_name!r} cannot be imported: {exc}") from None
    if not (isinstance(obj, type) and issubclass(obj, ModelMixin)):
        raise BundleError(f"member class {class_name!r} is not a diffusers ModelMixin")
    return obj


# --------------------------------------------------------------------------- write


@contextlib.contextmanager
def _new_bundle_folder(out: Path) -> Iterator[Path]:
    """A temporary sibling of ``out`` (empty or absent) that becomes ``out`` when the block succeeds.

    On any error the temporary folder is removed, so no half-written bundle is ever left.
    """
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"{out}: exists and is not empty; a bundle is written into a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bundle(
    out_dir: str | Path,
    *,
    name: str,
    stream: StreamContract,
    preprocessing: PreprocessingConfig,
    windowing: WindowingConfig,
    provenance: Provenance,
    norm_stats: NormStats | NormStatsSpec | None = None,
    members: Mapping[str, tuple[str, ModelMixin | str | Path]] | None = None,
    external: Mapping[str, tuple[str, str | Path, str]] | None = None,
    data: Mapping[str, Mapping[str, torch.Tensor | np.ndarray]] | None = None,
    class_names: Sequence[str] = (),
    scheduler: SchedulerMixin | None = None,
    generator: FrameSettings | None = None,
    metrics: Mapping[str, float] | None = None,
    description: str = "",
) -> BundleManifest:
    """Write a new bundle folder; returns its manifest.

    Parameters
    ----------
    out_dir : path
        Must not exist or be empty: a bundle is never written into (export writes a new one).
    name, description : str
    stream, preprocessing, windowing : the contract and the chain the models were trained with
    provenance : Provenance
        ``created_utc`` and library versions are filled in when empty.
    norm_stats : NormStats | None
        Required with ``dataset`` normalisation; (n_channels,) each, in V.
    members : {name: (role, model or model folder)}
        Saved (models) or copied (folders) into ``out_dir/name``, in the one model format.
    external : {name: (role, local folder, 'module:Class')}
        Large base models: hashed where they are, not copied.
    data : {file stem: {tensor name: array}}
        Data files written as ``stem.safetensors`` (e.g. ``class_embeddings``: ``tokens``
        (K, 77, W), ``pooled`` (K, W)).
    class_names : names of the K classes, in the order of the class embeddings
    scheduler : the generator's scheduler (its config is saved in ``scheduler/``)
    generator : FrameSettings naming the UNet, autoencoder and projection members
    metrics : {name: value}, e.g. ``nway_top1``, ``ssim``, ``frame_p99_ms``

    Raises
    ------
    BundleError
        ``out_dir`` is not empty, or the manifest would be inconsistent.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    # 1. build everything in a temporary sibling, then move it in place (no half-written bundle)
    with _new_bundle_folder(out) as tmp:
        member_entries = []
        for mname, (role, model) in (members or {}).items():
            folder = tmp / mname
            if isinstance(model, ModelMixin):
                save_model(model, folder)
                class_name = _class_path(model)
            else:
                src = Path(model)
                config = read_model_config(src)
                shutil.copytree(src, folder, ignore=shutil.ignore_patterns(*_IGNORED_NAMES))
                class_name = _class_from_config(config, src)
            member_entries.append(MemberEntry(
                name=mname, role=role, class_name=class_name, folder=mname,
                files=tuple(_file_entry(tmp, p) for p in _listed_files(folder)),
            ))
        # 2. base models stay where they are, hashed file by file
        external_entries = []
        for ename, (role, path, class_name) in (external or {}).items():
            root = Path(path).resolve()
            resolve_class(class_name)
            if not root.is_dir():
                raise BundleError(f"external model {ename}: {root} is not a folder")
            external_entries.append(ExternalModel(
                name=ename, role=role, class_name=class_name, path=str(root),
                files=tuple(_file_entry(root, p) for p in _listed_files(root)),
            ))
        # 3. data files and the scheduler config
        data_paths = []
        for stem, tensors in (data or {}).items():
            path = tmp / f"{stem}.safetensors"
            save_file(
                {k: torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v).contiguous()
                 for k, v in tensors.items()},
                str(path),
            )
            data_paths.append(path)
        if scheduler is not None:
            scheduler.save_config(str(tmp / SCHEDULER_FOLDER))
            data_paths.append(tmp / SCHEDULER_FOLDER / SCHEDULER_CONFIG)
        # 4. the manifest
        stats = NormStatsSpec.from_norm_stats(norm_stats) if isinstance(norm_stats, NormStats) else norm_stats
        if not provenance.created_utc:
            provenance = provenance.model_copy(update={"created_utc": datetime.now(UTC).isoformat(timespec="seconds")})
        if not provenance.versions:
            provenance = provenance.model_copy(update={"versions": _versions()})
        try:
            manifest = BundleManifest(
                name=name, description=description, stream=stream, preprocessing=preprocessing,
                windowing=windowing, norm_stats=stats, members=tuple(member_entries),
                external=tuple(external_entries),
                files=tuple(_file_entry(tmp, p) for p in data_paths),
                class_names=tuple(class_names), generator=generator, provenance=provenance,
                metrics=dict(metrics or {}),
            )
        except ValidationError as exc:
            raise BundleError(f"{out}: inconsistent manifest: {_validation_message(exc)}") from None
        (tmp / MANIFEST_NAME).write_text(manifest.model_dump_json(indent=1))
        _check_against_models(manifest, tmp)
    return manifest


def _versions() -> dict[str, str]:
    import diffusers

    out = {"torch": torch.__version__, "diffusers": diffusers.__version__}
    try:
        from importlib.metadata import version

        out["neuroimagen"] = version("neuroimagen")
    except Exception:
        out["neuroimagen"] = "unknown"
    return out


def _class_from_config(config: dict[str, Any], folder: Path) -> str:
    """'module:Class' of a model folder: ours record it, diffusers' name the public class."""
    cls = config.get("_class_name")
    if not cls:
        raise BundleError(f"{folder}: config.json names no _class_name")
    import diffusers

    if hasattr(diffusers, cls):
        return f"diffusers:{cls}"
    # our own classes: find the training.models module that defines it
    import pkgutil

    import neuroimagen.training.models as models_pkg

    for info in pkgutil.iter_modules(models_pkg.__path__):
        mod = importlib.import_module(f"{models_pkg.__name__}.{info.name}")
        if isinstance(getattr(mod, cls, None), type) and getattr(mod, cls).__module__ == mod.__name__:
            return f"{mod.__name__}:{cls}"
    raise BundleError(f"{folder}: class {cls!r} is neither a diffusers nor a neuroimagen.training.models class")


def load_model_folder(folder: str | Path, expect: Sequence[type] = (), what: str = "") -> ModelMixin:
    """A model folder of any neuroimagen.training.models or diffusers class, in eval mode.

    Its config.json names the class (as a bundle member's does); loaded strictly by
    :func:`~neuroimagen.training.models.format.load_model`. ``expect``: the classes it may
    hold (e.g. either pixel encoder); another is refused with ``what`` and the class named.
    """
    folder = Path(folder)
    cls = resolve_class(_class_from_config(read_model_config(folder), folder))
    if expect and not issubclass(cls, tuple(expect)):
        raise ValueError(f"{folder}: holds a {cls.__name__}, not {what or 'the model expected'} "
                         f"({', '.join(c.__name__ for c in expect)})")
    return load_model(cls, folder).eval()


def twin_mismatches(meta: Mapping[str, Any], manifest: BundleManifest) -> list[str]:
    """What differs between a twin (its ``twin.json``) and the twin a bundle was trained on.

    Checks the twin's preset, seed and version (the manifest's provenance), then what the
    models depend on: channels, sampling rate, window length, class names and the
    normalisation statistics (to 1e-4 of each channel's std). An empty list means it is the same twin.
    """
    prov = manifest.provenance.twin
    out: list[str] = []
    if prov is None:
        return ["the bundle was not trained on the synthetic twin"]
    have = {"preset": meta.get("preset"), "seed": meta.get("seed"), "version": meta.get("version")}
    for key, want in (("preset", prov.preset), ("seed", prov.seed), ("version", prov.version)):
        if str(have[key]) != str(want):
            out.append(f"twin {key} is {have[key]!r}, the bundle was trained on {want!r}")
    if prov.config is not None:
        have_cfg = meta.get("config", {})
        out += [f"twin {key} is {have_cfg.get(key)!r}, the bundle was trained on {want!r}"
                for key, want in prov.config.items() if key not in ("preset", "seed") and have_cfg.get(key) != want]
    if tuple(meta.get("ch_names", ())) != tuple(manifest.stream.ch_names):
        out.append("the channel names differ")
    if float(meta.get("sfreq", 0)) != float(manifest.stream.sfreq_hz):
        out.append(f"sfreq {meta.get('sfreq')} Hz != the bundle's {manifest.stream.sfreq_hz} Hz")
    if int(meta.get("n_times", 0)) != manifest.n_times:
        out.append(f"window n_times {meta.get('n_times')} != the bundle's {manifest.n_times}")
    if manifest.class_names and list(meta.get("class_names", ())) != list(manifest.class_names):
        out.append("the class names differ")
    stats = meta.get("norm_stats")
    if manifest.norm_stats is not None and stats is not None:
        std = np.asarray(manifest.norm_stats.std, dtype=np.float64)
        for key in ("mean", "std"):
            a, b = np.asarray(stats[key], dtype=np.float64), np.asarray(getattr(manifest.norm_stats, key))
            # to 1e-4 of each channel's std: what moves the normalised signal (the band-passed means are
            # ~1e-12 V, so their float rounding across machines is a large relative difference)
            if a.shape != b.shape or np.any(np.abs(a - b) > 1e-4 * std):
                out.append(f"the normalisation {key} differs from the bundle's (regenerated twin is not the "
                           "one the bundle was trained on)")
    return out


def _validation_message(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'manifest'}: {e['msg']}" for e in exc.errors()
    )


def derive_bundle(
    source: str | Path,
    out_dir: str | Path,
    *,
    add_files: Mapping[str, str | Path] | None = None,
    artifacts: Callable[[Path], Sequence[ArtifactEntry]] | Sequence[ArtifactEntry] = (),
    metrics: Mapping[str, float] | None = None,
    description: str | None = None,
    command: str | None = None,
) -> BundleManifest:
    """Write a new bundle: a verified copy of ``source`` plus files, artifact entries and metrics.

    The source bundle is only read (export writes here, never into an installed bundle).

    Parameters
    ----------
    source : path
        A bundle; verified first (its external models too).
    out_dir : path
        Must not exist or be empty.
    add_files : {bundle-relative path: file}
        Copied in (e.g. ``onnx/unet.onnx``); must not replace a source file.
    artifacts : entries, or a callable taking the new bundle's (temporary) root
        A callable lets the caller hash the files once they are in place
        (:func:`artifact_files`). Entries of the source with the same name are replaced, files and all.
    metrics : added to (and override) the source's metrics
    description, command : appended to the description and the provenance commands

    Raises
    ------
    BundleError
        The source does not verify, ``out_dir`` is not empty, a file would be replaced,
        or an artifact lists a file that is not there.
    """
    src = Path(source)
    manifest = verify_bundle(src)
    out = Path(out_dir)
    if out.exists() and out.resolve() == src.resolve():
        raise BundleError(f"{out}: is the source bundle; a derived bundle is written into a new folder")
    with _new_bundle_folder(out) as tmp:
        # 1. the source's models and files, file by file as its manifest lists them (nothing else)
        listed = [f.path for m in manifest.members for f in m.files] + [f.path for f in manifest.files]
        for rel in listed:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, tmp / rel)
        # 2. the new files
        for rel, path in (add_files or {}).items():
            _ = FileEntry(path=rel, sha256="0" * 64, size_bytes=0)  # validates the relative path
            if (tmp / rel).exists():
                raise BundleError(f"{out}: {rel} would replace a file of the source bundle")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, tmp / rel)
        new = list(artifacts(tmp) if callable(artifacts) else artifacts)
        names = {a.name for a in new}
        # 3. the source's artifacts that no new one replaces (re-exporting an exported bundle
        #    replaces its graphs, files and all; an artifact kept must not lose a file)
        for kept in (a for a in manifest.artifacts if a.name not in names):
            for f in kept.files:
                if (tmp / f.path).exists():
                    raise BundleError(f"{out}: {f.path} would replace a file of the source bundle's "
                                      f"artifact {kept.name}, which is kept")
                (tmp / f.path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src / f.path, tmp / f.path)
        provenance = manifest.provenance
        if command:
            provenance = provenance.model_copy(update={"commands": (*provenance.commands, command)})
        update = {
            "artifacts": tuple(a for a in manifest.artifacts if a.name not in names) + tuple(new),
            "metrics": {**manifest.metrics, **dict(metrics or {})},
            "provenance": provenance,
        }
        if description:
            update["description"] = f"{manifest.description} {description}".strip()
        try:
            derived = BundleManifest.model_validate(manifest.model_copy(update=update).model_dump())
        except ValidationError as exc:
            raise BundleError(f"{out}: inconsistent manifest: {_validation_message(exc)}") from None
        (tmp / MANIFEST_NAME).write_text(derived.model_dump_json(indent=1))
        verify_bundle(tmp)
    return derived


def artifact_files(root: str | Path, paths: Sequence[str]) -> tuple[FileEntry, ...]:
    """File entries (sha256, size) of bundle-relative ``paths`` under ``root``."""
    root = Path(root)
    return tuple(_file_entry(root, root / p) for p in paths)


# --------------------------------------------------------------------------- verify


def read_manifest(path: str | Path) -> BundleManifest:
    """Parse ``manifest.json`` (no file checks)."""
    path = Path(path)
    mpath = path / MANIFEST_NAME
    if not mpath.is_file():
        raise BundleError(f"{path}: not a bundle (no {MANIFEST_NAME})")
    try:
        return BundleManifest.model_validate_json(mpath.read_text())
    except ValidationError as exc:
        raise BundleError(f"{mpath}: invalid manifest: {_validation_message(exc)}") from None


def _check_files(root: Path, entries: Sequence[FileEntry], where: str) -> list[str]:
    problems = []
    for e in entries:
        p = root / e.path
        if not p.is_file():
            problems.append(f"{where}{e.path}: missing")
            continue
        size = p.stat().st_size
        if size != e.size_bytes:
            problems.append(f"{where}{e.path}: modified (size {size} bytes, manifest {e.size_bytes})")
            continue
        digest = file_sha256(p)
        if digest != e.sha256:
            problems.append(f"{where}{e.path}: modified (sha256 {digest[:12]}..., manifest {e.sha256[:12]}...)")
            continue
        if e.tensors is not None:
            found = _safetensors_specs(p)
            if found != e.tensors:
                diff = sorted(set(found) ^ set(e.tensors)) + sorted(
                    k for k in set(found) & set(e.tensors) if found[k] != e.tensors[k]
                )
                problems.append(f"{where}{e.path}: tensors differ from the manifest: {diff[:8]}")
    return problems


def _check_against_models(manifest: BundleManifest, root: Path) -> None:
    """The models must take the manifest's stream: channel count and window length."""
    problems = []
    n_ch, n_times = len(manifest.stream.ch_names), manifest.n_times
    for m in manifest.members:
        try:
            config = read_model_config(root / m.folder)
        except ModelFormatError as exc:
            problems.append(str(exc))
            continue
        if "n_channels" in config and config["n_channels"] != n_ch:
            problems.append(
                f"{m.name}: takes {config['n_channels']} channels, the stream contract has {n_ch}"
            )
        if "n_times" in config and config["n_times"] != n_times:
            problems.append(
                f"{m.name}: takes windows of {config['n_times']} samples, preprocessing/windowing give {n_times}"
            )
    if manifest.class_names and any(f.path == "class_embeddings.safetensors" for f in manifest.files):
        entry = next(f for f in manifest.files if f.path == "class_embeddings.safetensors")
        for key, spec in (entry.tensors or {}).items():
            if spec.shape and spec.shape[0] != len(manifest.class_names):
                problems.append(
                    f"class_embeddings.safetensors: {key} has {spec.shape[0]} rows for "
                    f"{len(manifest.class_names)} class names"
                )
    if problems:
        raise BundleError(f"{root}: manifest and models disagree:\n  " + "\n  ".join(problems))


def verify_bundle(path: str | Path, *, external: bool = True) -> BundleManifest:
    """Check a bundle against its manifest; returns the manifest.

    Every listed file must exist with its size, sha256 and (safetensors) tensor
    shapes and dtypes; no file may be unlisted; external base models must match their
    per-file sha256 (``external=False`` skips hashing them); the models must take the
    manifest's channel count and window length.

    Raises
    ------
    BundleError
        Naming every file that is missing, modified or unlisted, and every mismatch.
    """
    root = Path(path)
    manifest = read_manifest(root)
    # 1. the bundle's own files: listed, present, unchanged
    listed = {MANIFEST_NAME}
    problems: list[str] = []
    for m in manifest.members:
        problems += _check_files(root, m.files, f"{m.name}: ")
        listed |= {f.path for f in m.files}
        if not any(f.path == f"{m.folder}/{CONFIG_NAME}" for f in m.files):
            problems.append(f"{m.name}: the manifest lists no {m.folder}/{CONFIG_NAME}")
    problems += _check_files(root, manifest.files, "")
    listed |= {f.path for f in manifest.files}
    for a in manifest.artifacts:
        problems += _check_files(root, a.files, f"artifact {a.name}: ")
        listed |= {f.path for f in a.files}
    unlisted = [p.relative_to(root).as_posix() for p in _listed_files(root)]
    problems += [f"{p}: not in the manifest" for p in unlisted if p not in listed]
    # 2. base models where they were
    if external:
        for e in manifest.external:
            if not Path(e.path).is_dir():
                problems.append(f"external {e.name}: {e.path} not found")
                continue
            problems += _check_files(Path(e.path), e.files, f"external {e.name} ({e.path}): ")
    if problems:
        raise BundleError(f"{root}: bundle does not match its manifest:\n  " + "\n  ".join(problems))
    # 3. manifest against the models it lists
    _check_against_models(manifest, root)
    return manifest


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: the manifest plus loaders for what the live process needs.

    Attributes
    ----------
    path : Path
    manifest : BundleManifest
    """

    path: Path
    manifest: BundleManifest

    def stream_config(self, base: StreamConfig | None = None) -> StreamConfig:
        """``base`` (inlet, replay, record settings) with the bundle's contract, preprocessing, windowing.

        The contract's channels and rate come from the manifest; the stream's own unit
        and the mismatch policies stay as ``base`` sets them.
        """
        base = base or StreamConfig()
        contract = base.contract.model_copy(update={
            "ch_names": self.manifest.stream.ch_names, "sfreq_hz": self.manifest.stream.sfreq_hz,
        })
        return base.model_copy(update={
            "contract": contract,
            "preprocessing": self.manifest.preprocessing,
            "windowing": self.manifest.windowing,
        })

    def norm_stats(self) -> NormStats | None:
        """The training set's per-channel statistics, (n_channels,) each, in V."""
        spec = self.manifest.norm_stats
        return spec.to_norm_stats() if spec is not None else None

    def check_stream(self, ch_names: Sequence[str], sfreq: float, units: Sequence[str | None] | None = None,
                     base: StreamConfig | None = None) -> None:
        """Refuse a stream the bundle's models cannot take, naming what differs.

        Raises
        ------
        BundleError
            Wrapping the stream layer's ``ContractError`` (missing channels by name, rate, units).
        """
        from neuroimagen.stream.contract import ChannelContract, ContractError

        try:
            ChannelContract(self.stream_config(base).contract, ch_names, sfreq, units)
        except ContractError as exc:
            raise BundleError(f"the stream does not fit bundle {self.manifest.name!r}: {exc}") from None

    def member(self, name: str) -> MemberEntry | ExternalModel:
        for m in (*self.manifest.members, *self.manifest.external):
            if m.name == name:
                return m
        raise BundleError(f"bundle {self.manifest.name!r} has no model {name!r}; it has {self.manifest.model_names()}")

    def load_model(self, name: str, *, device: str | torch.device | None = None,
                   dtype: torch.dtype | None = None) -> ModelMixin:
        """One member (strictly, in the one model format) or external base model, in eval mode."""
        entry = self.member(name)
        cls = resolve_class(entry.class_name)
        if isinstance(entry, ExternalModel):
            # third-party configs carry keys of other diffusers versions
            return load_model(cls, entry.path, strict_config=False, device=device, dtype=dtype)
        return load_model(cls, self.path / entry.folder, device=device, dtype=dtype)

    def load_role(self, role: str, **kwargs: Any) -> ModelMixin:
        names = [m.name for m in (*self.manifest.members, *self.manifest.external) if m.role == role]
        if len(names) != 1:
            raise BundleError(f"bundle {self.manifest.name!r}: {len(names)} models with role {role!r}: {names}")
        return self.load_model(names[0], **kwargs)

    def data(self, stem: str) -> dict[str, torch.Tensor]:
        """A data file's tensors (e.g. ``class_embeddings``: tokens, pooled)."""
        from safetensors.torch import load_file

        fname = f"{stem}.safetensors"
        if not any(f.path == fname for f in self.manifest.files):
            raise BundleError(f"bundle {self.manifest.name!r} has no data file {fname}")
        return load_file(str(self.path / fname))

    def artifacts(self, kind: str) -> dict[str, ArtifactEntry]:
        """The bundle's artifacts of one kind (``onnx``, ``tensorrt``), by part."""
        return {a.part: a for a in self.manifest.artifacts if a.kind == kind}

    def frame(self, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
              **overrides: Any) -> Any:
        """The generator's :class:`~.img2img.Img2ImgFrame`, settings from the manifest (``overrides`` win)."""
        from .img2img import Img2ImgFrame, load_scheduler

        spec = self.manifest.generator
        if spec is None:
            raise BundleError(f"bundle {self.manifest.name!r} has no generator")
        settings = spec.model_copy(update=overrides) if overrides else spec
        unet = self.load_model(settings.unet, device=device, dtype=dtype)
        vae = self.load_model(settings.autoencoder, device=device, dtype=dtype)
        proj = self.load_model(settings.projection, device=device, dtype=dtype) if settings.projection else None
        scheduler = load_scheduler(self.path / settings.scheduler, subfolder=None)
        return Img2ImgFrame(
            unet, vae, scheduler, proj, strength=settings.strength,
            num_inference_steps=settings.num_inference_steps, guidance_scale=settings.guidance_scale,
            image_size=settings.image_size, encode_mode=settings.encode_mode, seed=settings.seed,
            device=device, dtype=dtype,
        )


def load_bundle(path: str | Path, *, verify: bool = True, external: bool = True) -> Bundle:
    """Open a bundle; with ``verify`` (the default, and what the live process uses) check it first.

    Raises
    ------
    BundleError
        See :func:`verify_bundle`.
    """
    path = Path(path)
    manifest = verify_bundle(path, external=external) if verify else read_manifest(path)
    return Bundle(path=path, manifest=manifest)


# --------------------------------------------------------------------------- info


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def describe_bundle(manifest: BundleManifest) -> dict[str, Any]:
    """What ``neuroimagen bundle info`` shows: models, sizes, preprocessing, metrics, provenance."""
    def n_params(files: Sequence[FileEntry]) -> int:
        return sum(
            int(np.prod(t.shape)) for f in files for t in (f.tensors or {}).values()
        )

    models = [
        {"name": m.name, "role": m.role, "class": m.class_name, "where": m.folder,
         "size": _human(sum(f.size_bytes for f in m.files)), "parameters": n_params(m.files)}
        for m in manifest.members
    ] + [
        {"name": e.name, "role": e.role, "class": e.class_name, "where": e.path + " (external)",
         "size": _human(sum(f.size_bytes for f in e.files)), "parameters": n_params(e.files)}
        for e in manifest.external
    ]
    total = sum(f.size_bytes for m in manifest.members for f in m.files) + sum(f.size_bytes for f in manifest.files)
    pre = manifest.preprocessing
    band = pre.bandpass
    return {
        "name": manifest.name,
        "description": manifest.description,
        "simulated": manifest.simulated,
        "notice": (
            "This model was trained on SIMULATED EEG (the synthetic twin "
            f"preset={manifest.provenance.twin.preset}, seed={manifest.provenance.twin.seed}, "
            f"version={manifest.provenance.twin.version}{_twin_sizes(manifest.provenance.twin)}); "
            "it does not decode real brains."
            if manifest.provenance.twin is not None else ""
        ),
        "size": _human(total),
        "models": models,
        "stream": {
            "n_channels": len(manifest.stream.ch_names),
            "ch_names": f"{', '.join(manifest.stream.ch_names[:4])}, ... {manifest.stream.ch_names[-1]}",
            "sfreq_hz": manifest.stream.sfreq_hz,
            "units": manifest.stream.units,
        },
        "preprocessing": {
            "bandpass_hz": None if band is None else [band.l_freq_hz, band.h_freq_hz],
            "notch_hz": pre.notch_hz,
            "reference": pre.reference,
            "normalization": pre.normalization.mode,
            "n_times": manifest.n_times,
            "windowing": manifest.windowing.mode,
            "hop_s": manifest.windowing.hop_s,
        },
        "generator": None if manifest.generator is None else manifest.generator.model_dump(),
        "classes": len(manifest.class_names),
        "metrics": dict(manifest.metrics),
        "provenance": manifest.provenance.model_dump(),
    }

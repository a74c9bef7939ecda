"""The one model format: a folder with ``config.json`` next to safetensors weights.

Every torch model in NeuroImagen is a diffusers ``ModelMixin`` + ``ConfigMixin``
subclass, saved with ``save_pretrained`` and loaded here. diffusers'
``from_pretrained`` is not strict: a missing tensor is "newly initialized" with
random weights and only logged. :func:`load_model` refuses missing, unexpected
or mis-shaped tensors, an unknown config key and a config written for another
class, and names what differs.

Usage
-----
>>> save_model(model, "runs/semantic/model")            # doctest: +SKIP
>>> model = load_model(SemanticExtractor, "runs/semantic/model")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import ModelMixin

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ModelFormatError",
    "file_sha256",
    "load_model",
    "read_model_config",
    "save_model",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"  # diffusers' own name, so its loaders read our folders
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"

M = TypeVar("M", bound=ModelMixin)


class ModelFormatError(ValueError):
    """A model folder that does not hold exactly the model it claims to."""


def file_sha256(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (weights can be GB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def save_model(model: ModelMixin, path: str | Path) -> Path:
    """Save ``model`` as a model folder (config.json + safetensors); returns the folder."""
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    return path


def _folder(path: str | Path, subfolder: str | None) -> Path:
    folder = Path(path) / subfolder if subfolder else Path(path)
    if not folder.is_dir():
        raise ModelFormatError(f"{folder}: model folder not found")
    if not (folder / CONFIG_NAME).is_file():
        raise ModelFormatError(f"{folder}: not a model folder (no {CONFIG_NAME})")
    return folder


def read_model_config(path: str | Path, subfolder: str | None = None) -> dict[str, Any]:
    """The parsed ``config.json`` of a model folder."""
    folder = _folder(path, subfolder)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{folder / CONFIG_NAME}: unreadable config ({exc})") from None
    if not isinstance(config, dict):
        raise ModelFormatError(f"{folder / CONFIG_NAME}: config must be a JSON object")
    return config


def _weight_files(folder: Path) -> list[Path]:
    single = folder / WEIGHTS_NAME
    if single.is_file():
        return [single]
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        return [folder / name for name in sorted(set(weight_map.values()))]
    found = sorted(folder.glob("*.safetensors"))
    if len(found) == 1:
        return found
    raise ModelFormatError(
        f"{folder}: expected {WEIGHTS_NAME} (or a sharded index); found "
        f"{[p.name for p in found] or 'no safetensors file'}"
    )


def _read_state_dict(files: list[Path]) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in files:
        if not f.is_file():
            raise ModelFormatError(f"{f}: weight file missing")
        try:
            state.update(load_file(str(f)))
        except (SafetensorError, OSError) as exc:
            raise ModelFormatError(f"{f}: unreadable safetensors file ({exc})") from None
    return state


def _list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _check_config(cls: type[ModelMixin], config: dict[str, Any], folder: Path) -> None:
    class_name = config.get("_class_name")
    if class_name is not None and class_name != cls.__name__:
        raise ModelFormatError(f"{folder}: holds a {class_name}, not a {cls.__name__}")


def _init_keys(cls: type[ModelMixin]) -> set[str] | None:
    """The config keys ``cls.__init__`` takes (None: it takes any, via ``**kwargs``)."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return set(params) - {"self"}


def load_model(
    cls: type[M],
    path: str | Path,
    *,
    subfolder: str | None = None,
    strict_config: bool = True,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> M:
    """Load a model folder strictly, in eval mode.

    Parameters
    ----------
    cls : a ``ModelMixin`` subclass (ours or diffusers', e.g. ``UNet2DConditionModel``)
    path : folder with config.json + safetensors, or a repository folder with ``subfolder``
    subfolder : e.g. ``"unet"`` inside a diffusers pipeline folder
    strict_config : refuse config keys that ``cls`` does not take. Off for third-party
        checkpoints whose configs carry keys of other diffusers versions.
    device, dtype : where and how to place the weights (default: CPU, as stored)

    Raises
    ------
    ModelFormatError
        The folder, config or a weight file is missing or unreadable; the config is for
        another class or has unknown keys; or the tensors differ from what ``cls`` builds
        from the config (missing, unexpected or mis-shaped: each is named).
    """
    # 1. config: the right class, no keys the class does not take
    folder = _folder(path, subfolder)
    config = read_model_config(folder)
    _check_config(cls, config, folder)
    init_keys = _init_keys(cls) if strict_config else None
    build = config
    if init_keys is not None:
        build = {k: v for k, v in config.items() if k.startswith("_") or k in init_keys}
    try:
        model = cls.from_config(build)
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{folder / CONFIG_NAME}: cannot build {cls.__name__}: {exc}") from None
    if init_keys is not None:
        # keys a model registers itself (AutoencoderTiny's block_out_channels) are not unknown
        unknown = sorted(
            k for k in config
            if not k.startswith("_") and k not in init_keys and k not in model.config
        )
        if unknown:
            raise ModelFormatError(
                f"{folder / CONFIG_NAME}: unknown config key(s) for {cls.__name__}: {_list(unknown)}"
            )

    # 2. tensors: exactly the model's, shape for shape
    state = _read_state_dict(_weight_files(folder))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    problems = [
        f"{label}: {_list(names)}"
        for label, names in (
            ("missing tensors", missing),
            ("unexpected tensors", unexpected),
            ("mis-shaped tensors (file != model)", misshaped),
        )
        if names
    ]
    if problems:
        raise ModelFormatError(f"{folder}: weights do not match {cls.__name__}: " + "; ".join(problems))

    # 3. load, then place
    model.load_state_dict(state, strict=True)
    # move / cast only what differs: diffusers warns on every .to(dtype=...), even a no-op one
    tensors = [*model.parameters(), *model.buffers()]
    if device is not None and any(t.device != torch.device(device) for t in tensors):
        model.to(device=device)
    if dtype is not None and any(t.dtype != dtype for t in tensors if t.is_floating_point()):
        model.to(dtype=dtype)
    return model.eval()

"""Targets from a frozen image/text model (CLIP etc.), computed once and cached with the model's identity.

A cache is one safetensors file whose metadata names the model (``model_name``) and the
sha256 of its weights (``model_sha256``); reading it for another model, or for the same
name with other weights, is refused with a message saying what differs. The twin's own
targets (``targets.safetensors``) need no cache: they are data, identified by their sha256
in every run's run.json.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

__all__ = ["TargetCacheError", "cached_targets", "clip_image_targets", "folder_weights_sha256"]


class TargetCacheError(ValueError):
    """A target cache made by another model (or unreadable)."""


def folder_weights_sha256(folder: str | Path) -> str:
    """sha256 over a model folder's weight files (sorted by name): the frozen model's identity."""
    import hashlib

    from neuroimagen.training.models.format import file_sha256

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
    if not files:
        raise FileNotFoundError(f"{folder}: no weight files (.safetensors/.bin/.pt)")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + file_sha256(f).encode())
    return h.hexdigest()


def cached_targets(cache: str | Path, model_name: str, model_sha256: str,
                   compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The targets in ``cache`` if it was made by this model, else ``compute()`` them once and write it.

    Raises
    ------
    TargetCacheError
        The cache exists but names another model or other weights.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    cache = Path(cache)
    if cache.is_file():
        with safe_open(str(cache), framework="pt") as f:
            meta = f.metadata() or {}
        differs = [f"{k}: cache {meta.get(k)!r} != requested {v!r}"
                   for k, v in (("model_name", model_name), ("model_sha256", model_sha256)) if meta.get(k) != v]
        if differs:
            raise TargetCacheError(f"{cache}: targets of another model ({'; '.join(differs)}); "
                                   "delete the cache or point to the model that made it")
        return load_file(str(cache))
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in compute().items()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"model_name": model_name, "model_sha256": model_sha256})
    tmp.replace(cache)
    return tensors


def clip_image_targets(clip_folder: str | Path, images: torch.Tensor, cache: str | Path,
                       batch_size: int = 64) -> torch.Tensor:
    """CLIP image embeddings (n, proj_dim) of images (n, 3, h, w) in [0, 1], cached by the model's identity."""
    from neuroimagen.training.eval.metrics import load_clip_image_encoder

    clip_folder = Path(clip_folder)

    def compute() -> dict[str, torch.Tensor]:
        enc = load_clip_image_encoder(clip_folder)
        with torch.no_grad():
            emb = torch.cat([enc(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
        return {"image_embeddings": emb}

    return cached_targets(cache, f"clip-vision:{clip_folder.name}", folder_weights_sha256(clip_folder),
                          compute)["image_embeddings"]

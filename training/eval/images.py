"""Image files for evaluation: reading, and pairing folders by file stem."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp")


def load_image(path: str | Path | BinaryIO, size: int | tuple[int, int] | None = None) -> torch.Tensor:
    """Read an image as RGB.

    Parameters
    ----------
    path : path or binary file object
        Any format PIL reads.
    size : int or (height, width), optional
        Resize to this (bicubic); None keeps the file's size.

    Returns
    -------
    torch.Tensor
        (3, height, width) float32 in [0, 1].
    """
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        if size is not None:
            h, w = (size, size) if isinstance(size, int) else size
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BICUBIC)
        arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def index_images(folder: str | Path) -> dict[str, Path]:
    """Map file stem -> path for the images anywhere under ``folder`` (recursive).

    Raises
    ------
    FileNotFoundError
        ``folder`` does not exist.
    ValueError
        two files share a stem (pairing by stem would be ambiguous).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    out: dict[str, Path] = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
            if f.stem in out:
                raise ValueError(
                    f"two images in {folder} share the stem {f.stem!r}: {out[f.stem]} and {f}"
                )
            out[f.stem] = f
    return out


@dataclass(frozen=True)
class ImagePairs:
    """Ground-truth / reconstruction (/ saliency) files matched by stem."""

    stems: list[str]
    gt: list[Path]
    pred: list[Path]
    saliency: list[Path | None]
    unmatched_gt: list[str]
    unmatched_pred: list[str]


def match_by_stem(
    gt_dir: str | Path, pred_dir: str | Path, saliency_dir: str | Path | None = None
) -> ImagePairs:
    """Pair the images of two folders (and optionally a saliency folder) by file stem.

    Stems must match exactly (``n02951358_31190.JPEG`` pairs with
    ``n02951358_31190.png``); unmatched files are logged and listed.

    Raises
    ------
    ValueError
        no stem is common to both folders.
    """
    gt, pred = index_images(gt_dir), index_images(pred_dir)
    sal = index_images(saliency_dir) if saliency_dir is not None else {}
    stems = sorted(set(gt) & set(pred))
    if not stems:
        raise ValueError(
            f"no image stems in common between {gt_dir} ({len(gt)} images) and {pred_dir} ({len(pred)} images)"
        )
    unmatched_gt = sorted(set(gt) - set(pred))
    unmatched_pred = sorted(set(pred) - set(gt))
    if unmatched_gt or unmatched_pred:
        logger.warning(
            "%d ground-truth and %d reconstructed images have no partner (by stem)",
            len(unmatched_gt),
            len(unmatched_pred),
        )
    if saliency_dir is not None:
        missing = [s for s in stems if s not in sal]
        if missing:
            logger.warning("%d pairs have no saliency map in %s", len(missing), saliency_dir)
    return ImagePairs(
        stems=stems,
        gt=[gt[s] for s in stems],
        pred=[pred[s] for s in stems],
        saliency=[sal.get(s) for s in stems],
        unmatched_gt=unmatched_gt,
        unmatched_pred=unmatched_pred,
    )


def load_batch(paths: list[Path], size: int | tuple[int, int]) -> torch.Tensor:
    """Read images into one (n, 3, h, w) float32 [0, 1] tensor, all resized to ``size``."""
    return torch.stack([load_image(p, size=size) for p in paths])

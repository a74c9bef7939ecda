"""Where the object is in an image: the centroid of what differs from the background.

Used to score saliency images: the hemifield of the centroid (``cx < 0.5`` is the
left half) against the stimulus's true layout in ``stimuli.json``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["background_colour", "object_centroid", "centroid_hemifield"]


def background_colour(images: torch.Tensor, border: int = 2) -> torch.Tensor:
    """Per-image background colour: the median of the ``border``-pixel frame, (n, 3)."""
    n, c, h, w = images.shape
    frame = torch.cat([
        images[:, :, :border].reshape(n, c, -1), images[:, :, -border:].reshape(n, c, -1),
        images[:, :, :, :border].reshape(n, c, -1), images[:, :, :, -border:].reshape(n, c, -1),
    ], dim=2)
    return frame.median(dim=2).values


def object_centroid(images: torch.Tensor, background: torch.Tensor | None = None,
                    power: float = 2.0) -> np.ndarray:
    """Centroid of each image weighted by the distance of each pixel's colour from the background.

    Parameters
    ----------
    images : (n, 3, h, w) float in [0, 1]
    background : (n, 3) or None (the median colour of the image's border)
    power : the weight is ``distance ** power`` (sharpens the object against faint blur)

    Returns
    -------
    ndarray, shape (n, 2), float64: ``(cx, cy)`` as fractions of the width and height
    (y down, like ``stimuli.json``); ``(0.5, 0.5)`` for an image equal to its background.
    """
    x = images.detach().to(torch.float64)
    bg = background_colour(x) if background is None else background.to(torch.float64)
    dist = (x - bg[:, :, None, None]).norm(dim=1) ** power  # (n, h, w)
    n, h, w = dist.shape
    total = dist.sum(dim=(1, 2))
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) / w
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) / h
    cx = (dist.sum(dim=1) * xs).sum(dim=1) / total.clamp_min(1e-12)
    cy = (dist.sum(dim=2) * ys).sum(dim=1) / total.clamp_min(1e-12)
    empty = total <= 1e-12
    cx[empty], cy[empty] = 0.5, 0.5
    return torch.stack([cx, cy], dim=1).numpy()


def centroid_hemifield(images: torch.Tensor) -> np.ndarray:
    """0 where the object centroid is in the left half (``cx < 0.5``), 1 in the right; (n,) int64."""
    return (object_centroid(images)[:, 0] >= 0.5).astype(np.int64)

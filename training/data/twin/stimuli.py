"""Procedural stimuli of the twin: class = shape x fill style, layout varies per image.

Class ``c`` (0-based) is the shape ``SHAPES[c % 10]`` drawn in the fill style
``STYLES[c // 10]``; the first 10 classes are the 10 solid shapes, so a small
twin still has 10 distinct object categories. The class id is WordNet-like,
``n9`` + 7 digits (``n90000000``, ``n90000001``, ...), and images are named
``<wnid>_<n>`` (n from 1).

Layout, drawn per image and independent of the class: object centre
``(cx, cy)`` in [0.25, 0.75] (fraction of the image, y down), radius
``size`` in [0.12, 0.22], rotation, hue (the object's colour, HSV) and the
background grey level.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

__all__ = [
    "SHAPES",
    "STYLES",
    "Layout",
    "class_names",
    "class_wnids",
    "render_image",
    "sample_layouts",
]

SHAPES: tuple[str, ...] = (
    "circle", "square", "triangle", "star", "cross",
    "ring", "diamond", "hexagon", "crescent", "arrow",
)
STYLES: tuple[str, ...] = ("solid", "striped", "dotted", "outlined")


def class_names(n_classes: int) -> list[str]:
    """Human-readable class names, e.g. ``"solid circle"``, ``"striped star"``."""
    if not 1 <= n_classes <= len(SHAPES) * len(STYLES):
        raise ValueError(f"n_classes must be in 1..{len(SHAPES) * len(STYLES)}, got {n_classes}")
    return [f"{STYLES[c // len(SHAPES)]} {SHAPES[c % len(SHAPES)]}" for c in range(n_classes)]


def class_wnids(n_classes: int) -> list[str]:
    """WordNet-like class ids ``n9xxxxxxx`` (9 characters, like ``n02951358``)."""
    return [f"n9{c:07d}" for c in range(n_classes)]


@dataclass(frozen=True)
class Layout:
    """Where and how the object is drawn (fractions of the image side; y grows downwards)."""

    cx: float
    cy: float
    size: float
    rotation_deg: float
    hue: float
    background: float

    @property
    def hemifield(self) -> int:
        """0: object in the left half, 1: right half."""
        return int(self.cx >= 0.5)

    @property
    def quadrant(self) -> int:
        """0 upper-left, 1 upper-right, 2 lower-left, 3 lower-right."""
        return int(self.cx >= 0.5) + 2 * int(self.cy >= 0.5)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(hemifield=self.hemifield, quadrant=self.quadrant)
        return d


def sample_layouts(n: int, rng: np.random.Generator) -> list[Layout]:
    """``n`` independent layouts (vectorised draw)."""
    cx = rng.uniform(0.25, 0.75, n)
    cy = rng.uniform(0.25, 0.75, n)
    size = rng.uniform(0.12, 0.22, n)
    rot = rng.uniform(0.0, 360.0, n)
    hue = rng.uniform(0.0, 1.0, n)
    bg = rng.uniform(0.05, 0.45, n)
    return [
        Layout(float(a), float(b), float(c), float(d), float(e), float(f))
        for a, b, c, d, e, f in zip(cx, cy, size, rot, hue, bg, strict=True)
    ]


def _regular(n: int, r: float, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(r * math.cos(phase + 2 * math.pi * k / n), r * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _shape_polygons(shape: str) -> tuple[list[list[tuple[float, float]]], list[list[tuple[float, float]]]]:
    """(filled polygons, holes) on the unit disc, centred at the origin."""
    if shape == "circle":
        return [_regular(64, 1.0)], []
    if shape == "square":
        return [_regular(4, 1.0, math.pi / 4)], []
    if shape == "triangle":
        return [_regular(3, 1.0)], []
    if shape == "star":
        pts = []
        for k in range(10):
            r = 1.0 if k % 2 == 0 else 0.42
            a = -math.pi / 2 + math.pi * k / 5
            pts.append((r * math.cos(a), r * math.sin(a)))
        return [pts], []
    if shape == "cross":
        w = 0.33
        return [[(-w, -1), (w, -1), (w, 1), (-w, 1)], [(-1, -w), (1, -w), (1, w), (-1, w)]], []
    if shape == "ring":
        return [_regular(64, 1.0)], [_regular(64, 0.55)]
    if shape == "diamond":
        return [[(0, -1), (0.6, 0), (0, 1), (-0.6, 0)]], []
    if shape == "hexagon":
        return [_regular(6, 1.0, 0.0)], []
    if shape == "crescent":
        hole = [(x + 0.45, y - 0.15) for x, y in _regular(64, 0.85)]
        return [_regular(64, 1.0)], [hole]
    if shape == "arrow":
        return [[(-1, -0.3), (0.1, -0.3), (0.1, -0.75), (1, 0), (0.1, 0.75), (0.1, 0.3), (-1, 0.3)]], []
    raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")


def render_image(class_index: int, layout: Layout, size_px: int) -> Image.Image:
    """Draw one stimulus.

    Parameters
    ----------
    class_index : int
        0-based class (shape ``class_index % 10``, style ``class_index // 10``).
    layout : Layout
    size_px : int
        Side of the square RGB image.

    Returns
    -------
    PIL.Image.Image, mode RGB, size (size_px, size_px)
    """
    shape = SHAPES[class_index % len(SHAPES)]
    style = STYLES[class_index // len(SHAPES)]
    ss = 2  # supersampling for anti-aliased edges
    n = size_px * ss
    cx, cy, r = layout.cx * n, layout.cy * n, layout.size * n
    rot = math.radians(layout.rotation_deg)
    cos_r, sin_r = math.cos(rot), math.sin(rot)

    def place(poly):
        return [(cx + r * (x * cos_r - y * sin_r), cy + r * (x * sin_r + y * cos_r)) for x, y in poly]

    fills, holes = _shape_polygons(shape)
    mask = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(mask)
    for poly in fills:
        draw.polygon(place(poly), fill=255)
    for poly in holes:
        draw.polygon(place(poly), fill=0)
    m = np.asarray(mask, dtype=np.float32) / 255.0
    if style != "solid":
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        if style == "striped":
            period = max(r / 2.5, 4.0)
            u = (xx - cx) * cos_r + (yy - cy) * sin_r
            m = m * ((u / period) % 1.0 < 0.5)
        elif style == "dotted":
            period = max(r / 2.5, 5.0)
            du = ((xx - cx) / period) % 1.0 - 0.5
            dv = ((yy - cy) / period) % 1.0 - 0.5
            m = m * (du * du + dv * dv < 0.09)
        else:  # outlined
            width = max(int(round(r * 0.18)) | 1, 3)
            m = m * (1.0 - ndimage.minimum_filter(m, size=width, mode="constant", cval=0.0))
    fg = np.array(colorsys.hsv_to_rgb(layout.hue, 0.85, 0.95), dtype=np.float32)
    bg = np.full(3, layout.background, dtype=np.float32)
    img = bg[None, None, :] * (1.0 - m[..., None]) + fg[None, None, :] * m[..., None]
    img8 = Image.fromarray(np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")
    return img8.resize((size_px, size_px), Image.Resampling.LANCZOS)

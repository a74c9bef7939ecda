"""A tiny twin for the training tests (seconds to make)."""

from __future__ import annotations

from pathlib import Path

TINY_TWIN = dict(n_classes=4, n_images_per_class=10, n_subjects=2, image_size_px=32, block_pause_s=0.5)


def make_tiny_twin(out: Path, seed: int = 0) -> Path:
    from neuroimagen.training.config import TwinConfig
    from neuroimagen.training.data.twin import make_twin

    make_twin(out, TwinConfig(seed=seed, **TINY_TWIN))
    return out

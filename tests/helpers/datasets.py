"""Generators of small, format-faithful dataset files for the loader tests.

Each writes files with the same keys, dtypes and shapes as the real datasets
(only smaller) and returns what it wrote, so tests compare the loaders'
output with the source arrays, not with numbers copied from the loaders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Real EEG-ImageNet WordNet ids (the first three of the 40).
WNIDS = ["n02389026", "n03888257", "n03584829", "n02607072"]


@dataclass
class EEGImageNetFixture:
    path: Path
    obj: dict[str, Any]
    stems: list[str] = field(default_factory=list)


def make_eeg_imagenet(
    path: Path,
    *,
    n_classes: int = 3,
    n_images_per_class: int = 2,
    subjects: tuple[int, ...] = (1, 2),
    lengths: list[int] | None = None,
    n_channels: int = 128,
    raw: bool = False,
    seed: int = 0,
) -> EEGImageNetFixture:
    """``eeg_5_95_std.pth``-shaped file: every subject sees every image once.

    Segment order is subject-major (as in the real file, grouped by subject).
    ``lengths`` gives T per segment in file order (default: 500 for all).
    """
    rng = np.random.default_rng(seed)
    labels = WNIDS[:n_classes]
    stems = [f"{w}_{1000 + k}" for w in labels for k in range(n_images_per_class)]
    dataset = []
    for subject in subjects:
        for image, stem in enumerate(stems):
            dataset.append({"label": labels.index(stem.split("_")[0]), "image": image, "subject": subject})
    if lengths is None:
        lengths = [500] * len(dataset)
    assert len(lengths) == len(dataset), (len(lengths), len(dataset))
    for seg, n_times in zip(dataset, lengths, strict=True):
        seg["eeg"] = torch.from_numpy(rng.standard_normal((n_channels, n_times)).astype(np.float32))
    obj: dict[str, Any] = {"dataset": dataset, "labels": labels, "images": stems}
    if raw:
        obj["means"] = torch.zeros(n_channels)
        obj["stddevs"] = torch.ones(n_channels)
    torch.save(obj, path)
    return EEGImageNetFixture(Path(path), obj, stems)


def make_splits(path: Path, train: list[int], val: list[int], test: list[int], n_splits: int = 1) -> Path:
    """``block_splits_by_image_*.pth``: ``{"splits": [{"train", "val", "test"}]}``."""
    torch.save({"splits": [{"train": train, "val": val, "test": test} for _ in range(n_splits)]}, path)
    return Path(path)


def make_images(root: Path, relpaths: list[str], size: int = 8) -> list[Path]:
    """Tiny real JPEG files at ``root/<relpath>``."""
    from PIL import Image

    out = []
    for k, rel in enumerate(relpaths):
        p = Path(root) / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (size, size), color=(k * 37 % 256, 80, 160)).save(p, format="JPEG")
        out.append(p)
    return out


class CodeRunner:
    """Unpickling this runs ``os.mkdir(target)``: proves a loader never executes pickles."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def truncate(path: Path, keep_fraction: float = 0.5) -> Path:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep_fraction)])
    return Path(path)


# --------------------------------------------------------------------------- Things-EEG2

THINGS_CONCEPTS = ["aardvark", "abacus", "accordion", "acorn", "air_conditioner"]


@dataclass
class ThingsFixture:
    path: Path
    eeg: np.ndarray
    ch_names: list[str]
    times: np.ndarray
    concepts: list[str]
    image_files: list[str]


def make_things_eeg2(
    folder: Path,
    *,
    partition: str = "training",
    n_concepts: int = 3,
    n_reps: int = 4,
    n_channels: int = 17,
    n_times: int = 100,
    sfreq: float = 100.0,
    seed: int = 0,
    with_metadata: bool = True,
) -> ThingsFixture:
    """``preprocessed_eeg_<partition>.npy``: np.save of the official dict.

    Training: ``n_concepts`` x 10 images; test: ``n_concepts`` x 1 image.
    Also writes ``image_metadata.npy`` (official keys) when ``with_metadata``.
    """
    rng = np.random.default_rng(seed)
    per = 10 if partition == "training" else 1
    n_images = n_concepts * per
    eeg = rng.standard_normal((n_images, n_reps, n_channels, n_times)).astype(np.float32)
    ch_names = [f"O{k}" if k % 2 else f"P{k}" for k in range(n_channels)]
    times = (np.arange(n_times) / sfreq - 0.2).astype(np.float64)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"preprocessed_eeg_{partition}.npy"
    np.save(path, {"preprocessed_eeg_data": eeg, "ch_names": ch_names, "times": times})
    concepts = [f"{k + 1:05d}_{THINGS_CONCEPTS[k % len(THINGS_CONCEPTS)]}" for k in range(n_concepts)]
    files = [
        f"{c.split('_', 1)[1]}_{j + 1:02d}{'b' if partition == 'training' else 's'}.jpg"
        for c in concepts
        for j in range(per)
    ]
    if with_metadata:
        key = "train" if partition == "training" else "test"
        np.save(
            folder / "image_metadata.npy",
            {
                f"{key}_img_concepts": [c for c in concepts for _ in range(per)],
                f"{key}_img_files": files,
            },
        )
    return ThingsFixture(path, eeg, ch_names, times, concepts, files)


# --------------------------------------------------------------------------- fMRI


@dataclass
class FMRIFixture:
    betas_path: Path
    stimulus_path: Path
    betas: np.ndarray
    stimulus: np.ndarray


def make_fmri(
    folder: Path, *, n_trials: int = 30, n_voxels: int = 50, n_stimuli: int = 10, seed: int = 0
) -> FMRIFixture:
    """NSD-style betas ``[trials x voxels]`` (float32) + stimulus index per trial (int64)."""
    rng = np.random.default_rng(seed)
    betas = (rng.standard_normal((n_trials, n_voxels)) * 3.0 + rng.uniform(-5, 5, n_voxels)).astype(np.float32)
    stimulus = rng.integers(0, n_stimuli, size=n_trials).astype(np.int64)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "betas.npy", betas)
    np.save(folder / "stimulus.npy", stimulus)
    return FMRIFixture(folder / "betas.npy", folder / "stimulus.npy", betas, stimulus)

"""Things-EEG2 (Gifford et al., 2022), official preprocessed files and the NICE variant.

Files
-----
``preprocessed_eeg_training.npy`` / ``preprocessed_eeg_test.npy`` (one pair per subject)
    ``np.save`` of a dict: ``preprocessed_eeg_data`` float array
    ``(n_images, n_repetitions, n_channels, n_times)``, ``ch_names`` (list of
    str) and ``times`` (seconds, relative to image onset). The official
    release keeps 17 occipital/parietal channels at 100 Hz (training: 16,540
    images x 4 repetitions; test: 200 images x 80 repetitions). The NICE
    re-preprocessing (Song et al., 2023) has the same keys with 63 channels at
    250 Hz.

Because the file is a pickled dict, ``np.load`` needs ``allow_pickle=True``,
which would run any code the file carries. We never call it: the file goes
through :func:`~neuroimagen.training.data._io.load_npy`, whose unpickler
rebuilds numpy arrays and plain containers only, and the result is checked to
be exactly this dict of arrays/lists before use.

Images and concepts
-------------------
Training images are 1,654 concepts x 10 images (16,540), test images 200
concepts x 1 image, in concept order: image ``i`` belongs to concept
``i // 10`` (training) or ``i`` (test). With ``image_root`` (the official
image set folder holding ``training_images/<concept>/<file>.jpg``,
``test_images/...`` and optionally ``image_metadata.npy``) items carry image
paths and concept names.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ._io import DatasetFileError, load_npy, require_keys

log = logging.getLogger(__name__)

__all__ = ["VARIANTS", "ThingsEEG2Dataset", "ThingsEEG2File", "read_things_eeg2"]

#: (n_channels, sfreq_hz) of the known releases.
VARIANTS: dict[str, tuple[int, float]] = {"official": (17, 100.0), "nice": (63, 250.0)}
IMAGES_PER_CONCEPT = {"training": 10, "test": 1}
FOLDERS = {"training": "training_images", "test": "test_images"}
METADATA_KEYS = {"training": "train", "test": "test"}


@dataclass(frozen=True)
class ThingsEEG2File:
    """A validated preprocessed Things-EEG2 file.

    Attributes
    ----------
    eeg : ndarray, shape (n_images, n_repetitions, n_channels, n_times), float
        As stored (float32 or float64; items are converted one at a time, so
        a multi-GB file is not copied), in the file's unit (the official release stores volts rescaled by
        MVNN whitening; treat values as unitless).
    ch_names : list of str
    times : ndarray, shape (n_times,), float64, seconds
    sfreq : float
        From ``times``.
    variant : {"official", "nice", "other"}
    """

    path: Path
    eeg: np.ndarray
    ch_names: list[str]
    times: np.ndarray
    sfreq: float
    variant: str


def read_things_eeg2(path: str | Path) -> ThingsEEG2File:
    """Load and validate a preprocessed Things-EEG2 ``.npy`` dict (see the module notes)."""
    p = Path(path)
    obj = load_npy(p)
    require_keys(obj, ("preprocessed_eeg_data", "ch_names", "times"), p)
    eeg = obj["preprocessed_eeg_data"]
    if not isinstance(eeg, np.ndarray) or eeg.ndim != 4 or not np.issubdtype(eeg.dtype, np.floating):
        desc = f"{eeg.dtype} array of shape {eeg.shape}" if isinstance(eeg, np.ndarray) else type(eeg).__name__
        raise DatasetFileError(
            f"{p}: key 'preprocessed_eeg_data' must be a float array "
            f"(images, repetitions, channels, times), got {desc}"
        )
    ch_names = obj["ch_names"]
    if isinstance(ch_names, np.ndarray):
        ch_names = ch_names.tolist()
    if not isinstance(ch_names, list) or not all(isinstance(c, str) for c in ch_names):
        raise DatasetFileError(f"{p}: key 'ch_names' must be a list of str")
    if len(ch_names) != eeg.shape[2]:
        raise DatasetFileError(
            f"{p}: key 'ch_names' lists {len(ch_names)} channels but 'preprocessed_eeg_data' has {eeg.shape[2]}"
        )
    times = np.asarray(obj["times"], dtype=np.float64) if isinstance(obj["times"], np.ndarray | list) else None
    if times is None or times.ndim != 1 or times.shape[0] != eeg.shape[3]:
        raise DatasetFileError(
            f"{p}: key 'times' must be 1-D with {eeg.shape[3]} entries (one per sample), "
            f"got {None if times is None else times.shape}"
        )
    steps = np.diff(times)
    if times.shape[0] < 2 or not np.all(steps > 0):
        raise DatasetFileError(f"{p}: key 'times' must increase")
    sfreq = float(1.0 / np.median(steps))
    variant = "other"
    for name, (n_ch, fs) in VARIANTS.items():
        if eeg.shape[2] == n_ch and abs(sfreq - fs) < 0.01 * fs:
            variant = name
    return ThingsEEG2File(p, eeg, list(ch_names), times, sfreq, variant)


def _infer_partition(path: Path) -> str:
    m = re.search(r"(training|test)", path.name)
    if not m:
        raise ValueError(f"cannot tell training from test by the name {path.name!r}; pass partition=")
    return m.group(1)


class ThingsEEG2Dataset(Dataset):
    """One subject's preprocessed Things-EEG2 epochs.

    Parameters
    ----------
    eeg_path : path
        ``preprocessed_eeg_training.npy`` or ``preprocessed_eeg_test.npy``.
    partition : {"training", "test"} | None
        None: from the file name.
    average_repetitions : bool
        True: one item per image, the mean over its repetitions (the usual
        test-time protocol); False: one item per (image, repetition).
    image_root : path | None
        The image set folder (``training_images/``, ``test_images/``, optional
        ``image_metadata.npy``).
    variant : {"official", "nice"} | None
        Refuse a file whose channel count and rate are not that release's.
    caption_template : str
        Caption from the concept name (``{class_name}``).

    Notes
    -----
    Items: ``eeg`` float32 tensor (n_channels, n_times), ``label`` int (concept
    index), ``image_index`` int, ``image_id`` str (file stem, or
    ``<partition>_<index>`` without images), ``repetition`` int (-1 when
    averaged), ``concept`` str ("" without images), ``image_path`` str | None,
    ``caption`` str.
    """

    def __init__(
        self,
        eeg_path: str | Path,
        *,
        partition: Literal["training", "test"] | None = None,
        average_repetitions: bool = False,
        image_root: str | Path | None = None,
        variant: Literal["official", "nice"] | None = None,
        caption_template: str = "an image of a {class_name}",
    ) -> None:
        # 1. the file
        self.file = read_things_eeg2(eeg_path)
        self.partition = partition or _infer_partition(self.file.path)
        if self.partition not in IMAGES_PER_CONCEPT:
            raise ValueError(f"partition must be 'training' or 'test', got {self.partition!r}")
        if variant is not None and self.file.variant != variant:
            n_ch, fs = VARIANTS[variant]
            raise DatasetFileError(
                f"{self.file.path}: expected the {variant} release ({n_ch} channels at {fs:g} Hz), "
                f"found {self.file.eeg.shape[2]} channels at {self.file.sfreq:g} Hz"
            )
        n_images, n_reps = self.file.eeg.shape[:2]
        self.images_per_concept = IMAGES_PER_CONCEPT[self.partition]
        if n_images % self.images_per_concept:
            raise DatasetFileError(
                f"{self.file.path}: {n_images} images is not a whole number of concepts "
                f"({self.images_per_concept} images each for {self.partition})"
            )
        self.n_concepts = n_images // self.images_per_concept
        self.average_repetitions = average_repetitions
        self.ch_names = self.file.ch_names
        self.sfreq = self.file.sfreq
        self.caption_template = caption_template
        self._n_reps = 1 if average_repetitions else n_reps

        # 2. images
        self.image_paths: list[Path] | None = None
        self.concepts: list[str] | None = None
        if image_root is not None:
            self.image_paths, self.concepts = self._scan_images(Path(image_root), n_images)

    def _scan_images(self, root: Path, n_images: int) -> tuple[list[Path], list[str]]:
        folder = root / FOLDERS[self.partition]
        meta_path = root / "image_metadata.npy"
        if meta_path.is_file():
            meta = load_npy(meta_path)
            key = METADATA_KEYS[self.partition]
            require_keys(meta, (f"{key}_img_concepts", f"{key}_img_files"), meta_path)
            concepts = [str(c) for c in meta[f"{key}_img_concepts"]]
            files = [str(f) for f in meta[f"{key}_img_files"]]
            paths = [folder / c / f for c, f in zip(concepts, files, strict=True)]
        else:
            if not folder.is_dir():
                raise DatasetFileError(f"image_root {root}: no {FOLDERS[self.partition]}/ folder")
            paths, concepts = [], []
            for cdir in sorted(d for d in folder.iterdir() if d.is_dir()):
                for f in sorted(cdir.glob("*.jpg")):
                    paths.append(f)
                    concepts.append(cdir.name)
        if len(paths) != n_images:
            raise DatasetFileError(
                f"image_root {root}: {len(paths)} {self.partition} images but {self.file.path} has {n_images}"
            )
        missing = [q for q in paths if not q.is_file()]
        if missing:
            raise DatasetFileError(f"image_root {root}: {len(missing)} image(s) missing, first {missing[0]}")
        # official folder names are '<5-digit index>_<concept>'
        return paths, [re.sub(r"^\d+_", "", c) for c in concepts]

    def __len__(self) -> int:
        return self.file.eeg.shape[0] * self._n_reps

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        i = i % len(self)
        image, rep = divmod(i, self._n_reps)
        if self.average_repetitions:
            x = self.file.eeg[image].mean(axis=0, dtype=np.float64).astype(np.float32)
            rep = -1
        else:
            x = np.array(self.file.eeg[image, rep], dtype=np.float32)
        concept = self.concepts[image] if self.concepts is not None else ""
        name = concept.replace("_", " ") if concept else f"concept {image // self.images_per_concept}"
        return {
            "eeg": torch.from_numpy(x),
            "label": image // self.images_per_concept,
            "image_index": image,
            "image_id": self.image_paths[image].stem if self.image_paths is not None else f"{self.partition}_{image:05d}",
            "repetition": rep,
            "concept": concept,
            "image_path": str(self.image_paths[image]) if self.image_paths is not None else None,
            "caption": self.caption_template.format(class_name=name),
        }

    def summary(self) -> dict[str, Any]:
        n_images, n_reps, n_ch, n_times = self.file.eeg.shape
        return {
            "file": str(self.file.path),
            "variant": self.file.variant,
            "partition": self.partition,
            "n_images": n_images,
            "n_repetitions": n_reps,
            "n_concepts": self.n_concepts,
            "n_channels": n_ch,
            "n_times": n_times,
            "sfreq": self.sfreq,
            "n_items": len(self),
        }

"""fMRI voxel vectors (NSD-style betas) for fMRI-to-image training on the same encoders.

Files
-----
betas ``.npy``
    Float array ``(n_trials, n_voxels)``: one response pattern per trial (for
    NSD, single-trial GLM betas inside an ROI such as nsdgeneral), in the
    file's unit. Memory-mapped, so large files stay on disk.
stimulus ``.npy``
    Integer array ``(n_trials,)``: the image each trial showed (e.g. the
    NSD 73k index).

Z-scoring uses statistics of the *training* trials only: build the training
set with ``zscore=True`` and pass its :attr:`FMRIDataset.stats` to the test
set (``zscore=train.stats``), so nothing about the test responses leaks into
training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ._io import DatasetFileError, load_npy

__all__ = ["FMRIDataset", "VoxelStats", "read_fmri"]


@dataclass(frozen=True)
class VoxelStats:
    """Per-voxel mean and std of the training trials, shape (n_voxels,), float32."""

    mean: np.ndarray
    std: np.ndarray
    eps: float = 1e-6

    @classmethod
    def from_betas(cls, betas: np.ndarray) -> VoxelStats:
        b = np.asarray(betas, dtype=np.float64)
        return cls(b.mean(axis=0).astype(np.float32), b.std(axis=0).astype(np.float32))

    def apply(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / (self.std + self.eps)).astype(np.float32)


def read_fmri(betas_path: str | Path, stimulus_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Betas ``(n_trials, n_voxels)`` (memory-mapped) and stimulus ids ``(n_trials,)``, validated."""
    betas = load_npy(betas_path, mmap_mode="r")
    stim = load_npy(stimulus_path)
    if not isinstance(betas, np.ndarray) or betas.ndim != 2 or not np.issubdtype(betas.dtype, np.number):
        desc = f"{betas.dtype} array of shape {betas.shape}" if isinstance(betas, np.ndarray) else type(betas).__name__
        raise DatasetFileError(f"{betas_path}: betas must be a numeric (n_trials, n_voxels) array, got {desc}")
    if not isinstance(stim, np.ndarray) or stim.ndim != 1 or not np.issubdtype(stim.dtype, np.integer):
        desc = f"{stim.dtype} array of shape {stim.shape}" if isinstance(stim, np.ndarray) else type(stim).__name__
        raise DatasetFileError(f"{stimulus_path}: stimulus index must be a 1-D integer array, got {desc}")
    if stim.shape[0] != betas.shape[0]:
        raise DatasetFileError(
            f"{stimulus_path}: {stim.shape[0]} stimulus ids for {betas.shape[0]} trials in {betas_path}"
        )
    return betas, stim.astype(np.int64)


class FMRIDataset(Dataset):
    """Voxel vectors with their image ids.

    Parameters
    ----------
    betas_path, stimulus_path : path
        See the module notes.
    trials : sequence of int | None
        Trials (rows) to use, e.g. the training split; None: all.
    zscore : bool | VoxelStats
        False: raw betas; True: z-score each voxel with statistics of these
        trials (use for the training set); a :class:`VoxelStats`: apply those
        (the training set's, for validation/test).
    average_repeats : bool
        One item per stimulus, the mean of its trials (NSD test protocol).
    image_ids : sequence of str | None
        Name of each stimulus id (indexable by id); None: ``str(id)``.
    image_template : str | None
        Image path template with ``{image_id}`` (e.g.
        ``"/data/nsd/{image_id}.png"``); None: no image paths.

    Notes
    -----
    Items: ``x`` float32 tensor (n_voxels,), ``image_index`` int (stimulus
    id), ``image_id`` str, ``trial`` int (-1 when averaged), ``image_path``
    str | None.
    """

    def __init__(
        self,
        betas_path: str | Path,
        stimulus_path: str | Path,
        trials: Sequence[int] | None = None,
        zscore: bool | VoxelStats = False,
        average_repeats: bool = False,
        image_ids: Sequence[str] | None = None,
        image_template: str | None = None,
    ) -> None:
        # 1. files
        self.betas, self.stimulus = read_fmri(betas_path, stimulus_path)
        n_trials, self.n_voxels = self.betas.shape
        # 2. trial selection
        rows = np.arange(n_trials) if trials is None else np.asarray(trials, dtype=np.int64)
        bad = rows[(rows < 0) | (rows >= n_trials)]
        if bad.size:
            raise IndexError(f"trial index {int(bad[0])} outside the {n_trials} trials of {betas_path}")
        self.trials = rows
        # 3. grouping (one item per trial, or per stimulus)
        self.average_repeats = average_repeats
        if average_repeats:
            ids = self.stimulus[rows]
            self.groups = [rows[ids == s] for s in np.unique(ids)]
        else:
            self.groups = [rows[k : k + 1] for k in range(rows.size)]
        # 4. z-scoring statistics
        if zscore is True:
            self.stats: VoxelStats | None = VoxelStats.from_betas(self.betas[np.sort(rows)])
        elif isinstance(zscore, VoxelStats):
            if zscore.mean.shape != (self.n_voxels,):
                raise ValueError(f"VoxelStats for {zscore.mean.shape[0]} voxels, betas have {self.n_voxels}")
            self.stats = zscore
        else:
            self.stats = None
        self.image_ids = image_ids
        self.image_template = image_template

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        rows = self.groups[i]
        x = np.asarray(self.betas[np.sort(rows)], dtype=np.float32)
        if self.stats is not None:
            x = self.stats.apply(x)
        x = x.mean(axis=0, dtype=np.float64).astype(np.float32) if self.average_repeats else x[0]
        stim = int(self.stimulus[rows[0]])
        image_id = self.image_ids[stim] if self.image_ids is not None else str(stim)
        return {
            "x": torch.from_numpy(np.ascontiguousarray(x)),
            "image_index": stim,
            "image_id": image_id,
            "trial": -1 if self.average_repeats else int(rows[0]),
            "image_path": self.image_template.format(image_id=image_id) if self.image_template else None,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "n_trials": int(self.betas.shape[0]),
            "n_voxels": int(self.n_voxels),
            "n_stimuli": int(np.unique(self.stimulus).size),
            "n_items": len(self),
            "zscored": self.stats is not None,
        }

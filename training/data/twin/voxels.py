"""Synthetic fMRI voxels for a twin: a linear mixing of the stimulus factors plus noise.

Each trial's voxel vector is ``W @ factors(image) + noise`` where the factors are the
class one-hot (K), the layout ``(cx - 0.5, cy - 0.5, size - 0.17)`` scaled to unit
spread, and the colour ``(cos 2 pi hue, sin 2 pi hue)``; ``W`` (n_voxels x n_factors)
is Gaussian and each block of factors is scaled to the configured signal-to-noise
ratio (RMS over voxels). Files, in the layout :class:`~neuroimagen.training.data.fmri.FMRIDataset`
reads::

    <twin>/fmri/betas.npy      (n_trials, n_voxels) float32
    <twin>/fmri/stimulus.npy   (n_trials,) int64, index into voxels.json "images"
    <twin>/fmri/voxels.json    images, the split part of each image, the recipe

The split is the twin's own by-image split (``block_splits_by_image_all.pth``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["VOXEL_DIR", "make_voxel_twin", "read_voxel_meta"]

VOXEL_DIR = "fmri"


def read_voxel_meta(twin_dir: str | Path) -> dict:
    path = Path(twin_dir) / VOXEL_DIR / "voxels.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: make it with `neuroimagen data make-voxels {twin_dir}`")
    return json.loads(path.read_text())


def make_voxel_twin(twin_dir: str | Path, n_voxels: int = 512, n_repeats: int = 2, class_snr: float = 0.5,
                    layout_snr: float = 0.5, seed: int = 0) -> dict:
    """Write synthetic voxel responses for every image of a twin (``n_repeats`` trials each).

    Returns the content of voxels.json.
    """
    from .._io import load_torch_file
    from ..eeg_imagenet import read_splits

    root = Path(twin_dir)
    meta = json.loads((root / "twin.json").read_text())
    stim = json.loads((root / meta["files"]["stimuli"]).read_text())
    segments = load_torch_file(root / meta["files"]["eeg"])
    stems = list(segments["images"])
    n_cls = len(meta["wnids"])
    # 1. the split part of each image, from the twin's by-image splits
    split_of_image = []
    for split in read_splits(root / meta["files"]["splits"]):
        part = {}
        for name in ("train", "val", "test"):
            for i in split[name]:
                part[stems[int(segments["dataset"][i]["image"])]] = name
        split_of_image.append(part)
    del segments
    stems = [s for s in stems if s in split_of_image[0]]
    # 2. factors and mixing
    rng = np.random.default_rng([seed, 4242])
    onehot = np.eye(n_cls)[[stim[s]["label"] for s in stems]]
    lay = np.array([[stim[s]["cx"] - 0.5, stim[s]["cy"] - 0.5, stim[s]["size"] - 0.17,
                     np.cos(2 * np.pi * stim[s]["hue"]), np.sin(2 * np.pi * stim[s]["hue"])] for s in stems])
    lay = lay / lay.std(axis=0, keepdims=True)
    w_cls = rng.standard_normal((n_cls, n_voxels))
    w_lay = rng.standard_normal((lay.shape[1], n_voxels))
    sig_cls = onehot @ w_cls
    sig_lay = lay @ w_lay
    sig_cls *= class_snr / np.sqrt(np.mean(sig_cls**2))
    sig_lay *= layout_snr / np.sqrt(np.mean(sig_lay**2))
    signal = sig_cls + sig_lay
    # 3. trials: every image n_repeats times, fresh unit-variance noise each
    stim_idx = np.repeat(np.arange(len(stems)), n_repeats)
    betas = signal[stim_idx] + rng.standard_normal((len(stim_idx), n_voxels))
    out = root / VOXEL_DIR
    out.mkdir(exist_ok=True)
    np.save(out / "betas.npy", betas.astype(np.float32))
    np.save(out / "stimulus.npy", stim_idx.astype(np.int64))
    vmeta = {
        "images": stems,
        "split_of_image": split_of_image,
        "n_voxels": n_voxels,
        "n_repeats": n_repeats,
        "recipe": "betas = class_onehot @ W_c + layout @ W_l + N(0, 1); each block scaled to its SNR (RMS)",
        "class_snr": class_snr,
        "layout_snr": layout_snr,
        "seed": seed,
    }
    (out / "voxels.json").write_text(json.dumps(vmeta))
    return vmeta

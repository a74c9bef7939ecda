"""What the stages train on: a twin's windows split by image, its images, its class targets, voxels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neuroimagen.stream.preprocessing import resample_window

__all__ = ["TwinTargets", "TwinTrials", "load_images", "load_trials", "load_twin_targets", "twin_info"]


@dataclass
class TwinTrials:
    """Trials of one part of a twin (eeg or fMRI), with every label the stages need.

    x : (n, n_channels, n_times) float32 windows, or (n, n_voxels) float32 voxels
    label, hemifield, quadrant : (n,) int64
    image_index : (n,) int64, index into ``images`` (the stimulus of each trial)
    layout : (n, 4) float32, (cx, cy, size, hue) of the stimulus
    images : list of str, the distinct stimulus stems of this part
    """

    x: torch.Tensor
    label: torch.Tensor
    hemifield: torch.Tensor
    quadrant: torch.Tensor
    image_index: torch.Tensor
    layout: torch.Tensor
    images: list[str]
    n_classes: int
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _meta(twin_dir: Path) -> dict:
    path = Path(twin_dir) / "twin.json"
    if not path.is_file():
        raise FileNotFoundError(f"{twin_dir}: no twin.json (make one with `neuroimagen data make-twin`)")
    return json.loads(path.read_text())


def _labels_for(stems: list[str], stim: dict, meta: dict) -> dict:
    images = sorted(set(stems))
    pos = {s: i for i, s in enumerate(images)}
    return {
        "label": torch.tensor([stim[s]["label"] for s in stems], dtype=torch.long),
        "hemifield": torch.tensor([stim[s]["hemifield"] for s in stems], dtype=torch.long),
        "quadrant": torch.tensor([stim[s]["quadrant"] for s in stems], dtype=torch.long),
        "image_index": torch.tensor([pos[s] for s in stems], dtype=torch.long),
        "layout": torch.tensor([[stim[s][k] for k in ("cx", "cy", "size", "hue")] for s in stems],
                               dtype=torch.float32),
        "images": images,
        "n_classes": len(meta["wnids"]),
        "class_names": list(meta["class_names"]),
    }


def load_trials(twin_dir: str | Path, parts: tuple[str, ...] = ("train",), split_index: int = 0,
                resample_n_times: int | None = None, modality: str = "eeg") -> TwinTrials:
    """The trials of the named split parts (``train``, ``val``, ``test``) of a twin, split by image.

    EEG windows come through the EEG-ImageNet loader (``segment[:, 20:460]``, normalised as
    the live stream), optionally resampled in time by the stream layer's function. fMRI
    voxels come from ``<twin>/fmri/`` (:func:`neuroimagen.training.data.twin.voxels.make_voxel_twin`),
    z-scored with the training images' statistics.
    """
    root = Path(twin_dir)
    meta = _meta(root)
    stim = json.loads((root / meta["files"]["stimuli"]).read_text())
    if modality == "fmri":
        return _load_voxels(root, meta, stim, parts, split_index)
    from neuroimagen.training.data.twin.baseline import load_twin_windows

    xs, stems = [], []
    for part in parts:
        d = load_twin_windows(root, part, split_index)
        xs.append(d["x"])
        stems += list(d["image"])
    x = np.concatenate(xs)
    if resample_n_times is not None and resample_n_times != x.shape[-1]:
        x = np.stack([resample_window(w, resample_n_times) for w in x])
    return TwinTrials(x=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                      **_labels_for(stems, stim, meta))


def _load_voxels(root: Path, meta: dict, stim: dict, parts: tuple[str, ...], split_index: int) -> TwinTrials:
    from neuroimagen.training.data.fmri import FMRIDataset, VoxelStats
    from neuroimagen.training.data.twin.voxels import VOXEL_DIR, read_voxel_meta

    vmeta = read_voxel_meta(root)
    all_stems = vmeta["images"]
    part_of = vmeta["split_of_image"][split_index]
    stim_ids = np.load(root / VOXEL_DIR / "stimulus.npy")
    want = set(parts)
    rows = [i for i, s in enumerate(stim_ids) if part_of[all_stems[s]] in want]
    train_rows = [i for i, s in enumerate(stim_ids) if part_of[all_stems[s]] == "train"]
    betas = root / VOXEL_DIR / "betas.npy"
    train_stats = VoxelStats.from_betas(np.load(betas, mmap_mode="r")[np.sort(train_rows)])
    ds = FMRIDataset(betas, root / VOXEL_DIR / "stimulus.npy", trials=rows, zscore=train_stats,
                     image_ids=all_stems)
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([it["x"] for it in items])
    stems = [it["image_id"] for it in items]
    return TwinTrials(x=x, **_labels_for(stems, stim, meta))


@dataclass
class TwinTargets:
    """The twin's class conditioning targets (targets.safetensors) and where they came from.

    tokens : (K, n_tokens, width) float32; pooled : (K, width) float32
    source : dict with ``model`` (what made them) and ``sha256`` (of the file)
    """

    tokens: torch.Tensor
    pooled: torch.Tensor
    source: dict


def load_twin_targets(twin_dir: str | Path, width: int | None = None, n_tokens: int | None = None,
                      seed: int = 0) -> TwinTargets:
    """The twin's class targets, optionally cut to ``n_tokens`` and projected to ``width``.

    A smaller ``width`` (for tiny generators) uses a fixed random orthonormal projection
    (seeded), applied to tokens and pooled alike, so class similarities are kept approximately.
    """
    from safetensors.torch import load_file

    from neuroimagen.training.models.format import file_sha256

    root = Path(twin_dir)
    meta = _meta(root)
    path = root / meta["targets"]["file"]
    t = load_file(str(path))
    tokens, pooled = t["class_embeddings"].float(), t["class_pooled"].float()
    if n_tokens is not None:
        tokens = tokens[:, :n_tokens]
    source = {"model": "twin class embeddings", "recipe": meta["targets"]["recipe"],
              "file": str(path), "sha256": file_sha256(path)}
    if width is not None and width != tokens.shape[-1]:
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(tokens.shape[-1], width, generator=g))
        scale = (tokens.shape[-1] / width) ** 0.5
        tokens, pooled = tokens @ q * scale, torch.nn.functional.normalize(pooled @ q, dim=-1)
        source["projection"] = {"width": width, "seed": seed, "kind": "random orthonormal"}
    return TwinTargets(tokens=tokens.contiguous(), pooled=pooled.contiguous(), source=source)


def load_images(twin_dir: str | Path, stems: list[str], size: int) -> torch.Tensor:
    """Stimulus images ``<twin>/images/<wnid>/<stem>.JPEG`` as (n, 3, size, size) float32 in [0, 1]."""
    from neuroimagen.training.eval.images import load_image

    root = Path(twin_dir)
    meta = _meta(root)
    stim = json.loads((root / meta["files"]["stimuli"]).read_text())
    folder = root / meta["files"]["images"]
    return torch.stack([load_image(folder / stim[s]["class"] / f"{s}.JPEG", size=size) for s in stems])


def twin_info(twin_dir: str | Path) -> dict:
    """What run.json records about the data: the folder, its eeg and splits sha256s."""
    from neuroimagen.training.models.format import file_sha256

    root = Path(twin_dir)
    meta = _meta(root)
    return {"twin_dir": str(root.resolve()), "twin_seed": meta.get("seed"), "twin_preset": meta.get("preset"),
            "eeg_sha256": file_sha256(root / meta["files"]["eeg"]),
            "splits_sha256": file_sha256(root / meta["files"]["splits"])}

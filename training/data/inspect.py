"""What a dataset file holds: kind detected, counts, shapes, classes, subjects.

Backs ``neuroimagen data inspect FILE``. Every file is opened through the same
safe loaders the datasets use (no unrestricted unpickling).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ._io import DatasetFileError, load_npy, load_torch_file, require_file

__all__ = ["inspect_dataset_file"]


def _eeg_imagenet(path: Path) -> dict[str, Any]:
    from .eeg_imagenet import read_eeg_imagenet

    f = read_eeg_imagenet(path)
    n_times = f.n_times
    subjects = Counter(s["subject"] for s in f.segments)
    dtypes = sorted({str(s["eeg"].dtype) for s in f.segments})
    return {
        "kind": "EEG-ImageNet (raw variant, with means/stddevs)" if f.is_raw else "EEG-ImageNet",
        "n_segments": len(f.segments),
        "segment_shape": f"(128, T), T {int(n_times.min())}..{int(n_times.max())} (median {int(np.median(n_times))})",
        "n_segments_450_600": int(((n_times >= 450) & (n_times <= 600)).sum()),
        "eeg_dtype": ", ".join(dtypes),
        "n_classes": len(f.labels),
        "classes": ", ".join(f.labels[:6]) + (" ..." if len(f.labels) > 6 else ""),
        "n_images": len(f.images),
        "subjects": ", ".join(f"{s}: {n}" for s, n in sorted(subjects.items())),
    }


def _splits(path: Path) -> dict[str, Any]:
    from .eeg_imagenet import read_splits

    splits = read_splits(path)
    out: dict[str, Any] = {"kind": "EEG-ImageNet splits", "n_splits": len(splits)}
    for name in ("train", "val", "test"):
        idx = splits[0][name]
        out[f"split 0 {name}"] = f"{len(idx)} indices, max {max(idx) if idx else '-'}"
    return out


def _things(path: Path, obj: dict) -> dict[str, Any]:
    from .things_eeg2 import read_things_eeg2

    f = read_things_eeg2(path)
    n_images, n_reps, n_ch, n_times = f.eeg.shape
    return {
        "kind": f"Things-EEG2 preprocessed ({f.variant})",
        "shape": f"{n_images} images x {n_reps} repetitions x {n_ch} channels x {n_times} samples",
        "dtype": str(f.eeg.dtype),
        "sfreq_hz": round(f.sfreq, 3),
        "times_s": f"{f.times[0]:.3f} .. {f.times[-1]:.3f}",
        "ch_names": ", ".join(f.ch_names[:8]) + (" ..." if n_ch > 8 else ""),
    }


def _npy(path: Path) -> dict[str, Any]:
    obj = load_npy(path, mmap_mode="r")
    if isinstance(obj, dict):
        if "preprocessed_eeg_data" in obj:
            return _things(path, obj)
        concepts = [k for k in obj if k.endswith("_img_concepts")]
        if concepts:
            return {
                "kind": "Things-EEG2 image metadata",
                **{k: f"{len(obj[k])} entries, {len(set(map(str, obj[k])))} distinct" for k in concepts},
            }
        return {"kind": "pickled dict (.npy)", "keys": ", ".join(map(str, obj))}
    if isinstance(obj, np.ndarray):
        kind = "numeric array"
        if obj.ndim == 2 and np.issubdtype(obj.dtype, np.floating):
            kind = "fMRI betas? (trials x voxels)"
        elif obj.ndim == 1 and np.issubdtype(obj.dtype, np.integer):
            kind = "stimulus index? (one image id per trial)"
        info: dict[str, Any] = {"kind": kind, "shape": str(obj.shape), "dtype": str(obj.dtype)}
        if obj.ndim == 1 and np.issubdtype(obj.dtype, np.integer):
            info["n_distinct"] = int(np.unique(obj).size)
        return info
    return {"kind": f"{type(obj).__name__} (.npy)"}


def inspect_dataset_file(path: str | Path) -> dict[str, Any]:
    """Describe a dataset file.

    Recognises EEG-ImageNet ``.pth`` files (preprocessed and raw variants),
    their split files, Things-EEG2 ``.npy`` dicts and image metadata, fMRI
    betas / stimulus arrays, caption JSON files, class-name YAML, and any
    recording :func:`neuroimagen.stream.readers.read_recording` reads.

    Returns
    -------
    dict
        ``kind`` plus kind-specific counts and shapes (values are str/int/float).

    Raises
    ------
    DatasetFileError
        The file is unsafe, corrupt, or of no known kind.
    """
    p = require_file(path)
    suffix = p.suffix.lower()
    if suffix in (".pth", ".pt"):
        obj = load_torch_file(p)
        if isinstance(obj, dict) and "dataset" in obj:
            return _eeg_imagenet(p)
        if isinstance(obj, dict) and "splits" in obj:
            return _splits(p)
        keys = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise DatasetFileError(f"{p}: a torch file, but neither EEG-ImageNet data nor splits (holds {keys})")
    if suffix == ".npy":
        return _npy(p)
    if suffix == ".json":
        from .captions import load_captions_json

        caps = load_captions_json(p)
        return {"kind": "captions (image stem -> caption)", "n_captions": len(caps)}
    if suffix in (".yaml", ".yml"):
        from .captions import load_class_names

        names = load_class_names(p)
        return {"kind": "class names (id -> name)", "n_classes": len(names)}
    from neuroimagen.stream.readers import RecordingError, read_recording

    try:
        rec = read_recording(p)
    except RecordingError as exc:
        raise DatasetFileError(f"{p}: not a known dataset file or recording: {exc}") from None
    types = Counter(rec.ch_types)
    return {
        "kind": "continuous recording (usable as unlabelled EEG)",
        "n_channels": rec.n_channels,
        "channel_types": ", ".join(f"{t}: {n}" for t, n in sorted(types.items())),
        "sfreq_hz": rec.sfreq,
        "duration_s": round(rec.n_times / rec.sfreq, 3),
        "n_markers": len(rec.markers),
        "ch_names": ", ".join(rec.ch_names[:8]) + (" ..." if rec.n_channels > 8 else ""),
    }

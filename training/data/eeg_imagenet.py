"""EEG-ImageNet (Spampinato et al., CVPR 2017) as DreamDiffusion reads it.

Files
-----
``eeg_5_95_std.pth``, ``eeg_14_70_std.pth``, ``eeg_55_95_std.pth``
    ``torch.save`` of a dict: ``dataset`` (list of ``{"eeg": float tensor
    (128, T) with T about 500 samples at 1 kHz, "label": int, "image": int,
    "subject": int 1-6}``), ``labels`` (40 WordNet ids, ``label`` indexes
    it) and ``images`` (stems such as ``n02951358_31190``, ``image`` indexes
    it). The authors band-passed (5-95, 14-70 or 55-95 Hz) and z-scored the
    signals offline.
``eeg_signals_raw_with_mean_std.pth``
    The same structure, unfiltered, plus ``means`` and ``stddevs``.
``block_splits_by_image_all.pth`` / ``block_splits_by_image_single.pth``
    ``{"splits": [{"train": [...], "val": [...], "test": [...]}, ...]}``.

Selection (as the reference code does)
--------------------------------------
1. A subject filter (``subject`` 1-6; 0/None: all) keeps the file's segments of
   that subject, in file order.
2. Split indices index *that subject-filtered list*. An index outside it is an
   error naming the split file, split and index. DreamDiffusion's ``Splitter``
   filters with ``i <= len(self.dataset.data) and ...``: the ``<=`` is an
   off-by-one (an index equal to the length passes the bound check and then
   raises ``IndexError`` at ``data[i]``), and larger indices are dropped
   silently, which hides a split file that does not match the subject filter
   (``_all`` splits index all subjects' segments; use ``_single`` splits with a
   subject filter).
3. Segments whose length T is outside ``n_times_range`` (450 <= T <= 600) are
   dropped (logged with their count), as in both reference codes. Segments
   with T below the crop stop (450 <= T < 460) are dropped too, with a
   warning: DreamDiffusion keeps them and its resample stretches their 430-439
   samples to 512, a time scale the live windows (always 440 samples) never have.
4. Each kept segment is cropped to samples ``[20:460]`` -> (128, 440), and
   optionally linearly resampled to 512 samples (DreamDiffusion) with
   :func:`neuroimagen.stream.preprocessing.resample_window`, the same function
   the live process uses.

Preprocessing gap (raw variant)
-------------------------------
The ``*_std.pth`` files were filtered offline by the authors, non-causally and
over whole sessions; the live process filters causally (a Butterworth SOS
carried across chunks). A model trained on the authors' filtering therefore
sees slightly different phase and edge behaviour live. To close the gap,
``preprocess="ours"`` trains on ``eeg_signals_raw_with_mean_std.pth`` through
*our* chain: each raw segment goes through
:func:`~neuroimagen.stream.preprocessing.preprocess_continuous` (the causal
filter the live stream uses), is cropped, then through
:func:`~neuroimagen.stream.preprocessing.preprocess_window` (normalisation
and resample, exactly as live). One gap remains: segments are cut, so the
filter starts from rest at segment onset while the live filter has been
running for minutes. We subtract each channel's first sample before filtering,
which removes the largest part of that start-up transient (the step response
to the DC offset, which a settled band-pass filter would have removed), and
the ``[20:460]`` crop drops the first 20 ms; the remaining transient of the
high-pass edge (a few hundred ms at 5 Hz) is not removed. Prefer continuous
recordings (:mod:`.unlabelled`) or the synthetic twin where exact equality with
the live chain matters.

The files carry no channel names; channels are the default montage's 128
names (:func:`neuroimagen.stream.montage.montage_ch_names`) in file order.

The file format is parsed once, by :func:`neuroimagen.stream.readers.read_eeg_imagenet`
(and :func:`~neuroimagen.stream.readers.read_splits`), which replay uses too;
they are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from neuroimagen.stream.config import PreprocessingConfig
from neuroimagen.stream.montage import montage_ch_names
from neuroimagen.stream.preprocessing import (
    NormStats,
    preprocess_continuous,
    preprocess_window,
    resample_window,
)
from neuroimagen.stream.readers import (
    EEG_IMAGENET_N_CHANNELS,
    EEG_IMAGENET_SFREQ,
    SPLIT_NAMES,
    EEGImageNetFile,
    read_eeg_imagenet,
    read_splits,
)

from ._io import DatasetFileError
from .captions import Captioner

log = logging.getLogger(__name__)

__all__ = [
    "EEGImageNetDataset",
    "EEGImageNetFile",
    "read_eeg_imagenet",
    "read_splits",
]

N_CHANNELS = EEG_IMAGENET_N_CHANNELS
SFREQ_HZ = EEG_IMAGENET_SFREQ


class EEGImageNetDataset(Dataset):
    """EEG-ImageNet segments as model-ready windows.

    Parameters
    ----------
    eeg_path : path
        ``eeg_5_95_std.pth`` (or 14_70, 55_95, the raw variant, or a twin's file).
    splits_path : path | None
        ``block_splits_by_image_*.pth``; None: every segment (``split`` ignored).
    split : {"train", "val", "test", "all"}
    split_index : int
        Which entry of ``splits`` (0, as DreamDiffusion).
    subject : int | None
        1-6 keeps that subject; 0 or None keeps all.
    image_root : path | None
        Folder of ``<wnid>/<stem>.JPEG`` images; every selected image must exist.
    crop : (int, int)
        Samples kept from each segment, ``[start, stop)``.
    n_times_range : (int, int)
        Segments with ``lo <= T <= hi`` are kept.
    resample_n_times : int | None
        Linear resample of the cropped window's time axis (512 for DreamDiffusion).
    captions : Captioner | str | None
        A :class:`Captioner`, a template string, or None (the default template).
    class_names : mapping | None
        WordNet id -> name (None: the shipped 40-class map); ignored when
        ``captions`` is a Captioner.
    preprocess : {"file", "ours"}
        ``file``: the signals as stored (the authors' offline filtering);
        ``ours``: run our causal chain on each segment (meant for the raw
        variant, see the module notes).
    preprocessing : PreprocessingConfig | None
        Our chain's settings for ``preprocess="ours"`` (None: the defaults).
    norm_stats : NormStats | None
        For ``preprocess="ours"`` with ``dataset`` normalisation.

    Notes
    -----
    Items are dicts: ``eeg`` float32 tensor (128, 440) (or (128,
    resample_n_times)), ``label`` int, ``image_id`` str (stem), ``subject``
    int, ``image_path`` str or None, ``caption`` str. Use
    :func:`~neuroimagen.training.data._io.collate_samples` with a DataLoader
    when ``image_path`` is None (torch's default collate refuses None).
    """

    sfreq: float = SFREQ_HZ

    def __init__(
        self,
        eeg_path: str | Path,
        splits_path: str | Path | None = None,
        split: str = "train",
        split_index: int = 0,
        subject: int | None = None,
        image_root: str | Path | None = None,
        crop: tuple[int, int] = (20, 460),
        n_times_range: tuple[int, int] = (450, 600),
        resample_n_times: int | None = None,
        captions: Captioner | str | None = None,
        *,
        class_names: Mapping[str, str] | None = None,
        preprocess: Literal["file", "ours"] = "file",
        preprocessing: PreprocessingConfig | None = None,
        norm_stats: NormStats | None = None,
    ) -> None:
        # 1. arguments
        lo, hi = n_times_range
        c0, c1 = crop
        if not 0 <= c0 < c1:
            raise ValueError(f"crop {crop} must satisfy 0 <= start < stop")
        if lo > hi:
            raise ValueError(f"n_times_range {n_times_range} is empty")
        if split not in (*SPLIT_NAMES, "all"):
            raise ValueError(f"split must be one of {', '.join((*SPLIT_NAMES, 'all'))}, got {split!r}")
        if preprocess not in ("file", "ours"):
            raise ValueError(f"preprocess must be 'file' or 'ours', got {preprocess!r}")
        self.crop = (int(c0), int(c1))
        self.resample_n_times = resample_n_times
        self.preprocess = preprocess
        self.norm_stats = norm_stats

        # 2. the file
        self.file = read_eeg_imagenet(eeg_path)
        self.labels = self.file.labels
        self.images = self.file.images
        self.ch_names = montage_ch_names()
        subject = subject or None
        pool = [i for i, s in enumerate(self.file.segments) if subject is None or s["subject"] == subject]
        if not pool:
            raise DatasetFileError(
                f"{eeg_path}: no segments of subject {subject}; subjects present: {self.file.subjects}"
            )

        # 3. split indices index the subject-filtered list
        if splits_path is None or split == "all":
            chosen = pool
        else:
            splits = read_splits(splits_path)
            if not 0 <= split_index < len(splits):
                raise DatasetFileError(f"{splits_path}: split_index {split_index} but the file holds {len(splits)} split(s)")
            idx = splits[split_index][split]
            bad = [i for i in idx if not 0 <= i < len(pool)]
            if bad:
                hint = " (an _all split file used with a subject filter? use the _single splits)" if subject else ""
                raise DatasetFileError(
                    f"{splits_path}: splits[{split_index}][{split!r}] holds {len(bad)} index(es) outside "
                    f"the {len(pool)} selected segments of {eeg_path}, first {bad[0]}{hint}"
                )
            chosen = [pool[i] for i in idx]

        # 4. length filter
        n_times = self.file.n_times
        kept = [i for i in chosen if lo <= n_times[i] <= hi]
        if len(kept) < len(chosen):
            log.info("%s: dropped %d segment(s) with T outside [%d, %d]", eeg_path, len(chosen) - len(kept), lo, hi)
        self.indices = [i for i in kept if n_times[i] >= c1]
        if len(self.indices) < len(kept):
            # DreamDiffusion keeps them and stretches the shorter crop to 512; live windows are never short
            log.warning(
                "%s: dropped %d segment(s) shorter than the crop stop (%d samples)",
                eeg_path, len(kept) - len(self.indices), c1,
            )

        # 5. our chain (raw variant)
        self.preprocessing = None
        if preprocess == "ours":
            cfg = preprocessing if preprocessing is not None else PreprocessingConfig()
            if resample_n_times is not None:
                cfg = cfg.model_copy(update={"resample_n_times": resample_n_times})
            self.preprocessing = cfg
            if not self.file.is_raw:
                log.warning("%s is not the raw variant: preprocess='ours' filters already-filtered signals", eeg_path)

        # 6. images and captions
        self.image_root = Path(image_root) if image_root is not None else None
        if isinstance(captions, Captioner):
            self.captioner = captions
        else:
            self.captioner = Captioner(captions or "an image of a {class_name}", class_names=class_names)
        self.class_names = [self.captioner.class_name(w) for w in self.labels]
        stems = [self.images[self.file.segments[i]["image"]] for i in self.indices]
        self.captioner.check(stems)
        if self.image_root is not None:
            missing = sorted({s for s in stems if not self._image_path(s).is_file()})
            if missing:
                raise DatasetFileError(
                    f"image_root {self.image_root}: {len(missing)} image(s) missing, first "
                    f"{self._image_path(missing[0])}"
                )

    # ------------------------------------------------------------------ helpers

    @classmethod
    def from_config(cls, data_cfg: Any, split: str = "train", preprocessing: Any | None = None) -> EEGImageNetDataset:
        """Build from a :class:`~neuroimagen.training.config.DataConfig`."""
        c = data_cfg.eeg_imagenet
        if c.eeg_path is None:
            raise ValueError("training.data.eeg_imagenet.eeg_path is not set")
        captioner = Captioner(data_cfg.caption_template, captions_path=data_cfg.captions_path)
        return cls(
            c.eeg_path, c.splits_path, split, c.split_index, c.subject, c.image_root,
            (c.crop_start, c.crop_stop), (c.min_n_times, c.max_n_times), c.resample_n_times,
            captioner, preprocess=c.preprocess, preprocessing=preprocessing,
        )

    def _image_path(self, stem: str) -> Path:
        assert self.image_root is not None
        return self.image_root / stem.split("_")[0] / f"{stem}.JPEG"

    @property
    def n_times(self) -> int:
        return self.resample_n_times or (self.crop[1] - self.crop[0])

    @property
    def subjects(self) -> list[int]:
        return sorted({self.file.segments[i]["subject"] for i in self.indices})

    def window(self, i: int) -> np.ndarray:
        """Model-ready window of item ``i``, shape (128, n_times), float32."""
        seg = self.file.segments[self.indices[i]]
        x = seg["eeg"].detach().cpu().numpy().astype(np.float32, copy=False)
        c0, c1 = self.crop
        if self.preprocessing is None:
            x = x[:, c0:c1]
            return resample_window(x, self.resample_n_times) if self.resample_n_times else np.ascontiguousarray(x)
        # the segment's first sample is the DC a settled band-pass would already have removed
        x = x - x[:, :1]
        x = preprocess_continuous(x, self.sfreq, self.preprocessing, self.ch_names)
        return preprocess_window(x[:, c0:c1], self.preprocessing, self.norm_stats)

    def fit_norm_stats(self) -> NormStats:
        """Per-channel statistics of this dataset's windows *before* normalisation.

        For ``preprocess="ours"`` with ``normalization.mode: dataset``: fit on
        the training split, then pass to every split (and to the live process)
        as ``norm_stats``.
        """
        if self.preprocessing is None:
            raise ValueError("fit_norm_stats is for preprocess='ours' (the files are normalised already)")
        c0, c1 = self.crop
        windows = []
        for i in range(len(self)):
            x = self.file.segments[self.indices[i]]["eeg"].numpy().astype(np.float32)
            x = preprocess_continuous(x - x[:, :1], self.sfreq, self.preprocessing, self.ch_names)
            windows.append(x[:, c0:c1])
        return NormStats.from_windows(np.stack(windows))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        i = i % len(self)
        seg = self.file.segments[self.indices[i]]
        stem = self.images[seg["image"]]
        wnid = self.labels[seg["label"]]
        return {
            "eeg": torch.from_numpy(self.window(i)),
            "label": seg["label"],
            "image_id": stem,
            "subject": seg["subject"],
            "image_path": str(self._image_path(stem)) if self.image_root is not None else None,
            "caption": self.captioner(stem, wnid),
        }

    def summary(self) -> dict[str, Any]:
        """Counts for logging and ``neuroimagen data inspect``."""
        return {
            "file": str(self.file.path),
            "n_items": len(self),
            "n_classes": len(self.labels),
            "subjects": self.subjects,
            "window_shape": (N_CHANNELS, self.n_times),
            "raw_variant": self.file.is_raw,
        }

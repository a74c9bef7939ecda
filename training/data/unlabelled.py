"""Unlabelled EEG for pretraining: any recording cut into model-sized windows.

Every file goes through the same steps the live stream does, in the stream
layer's own code:

1. read with :func:`neuroimagen.stream.readers.read_recording` (MNE formats,
   XDF), EEG channels only, volts;
2. resample to the model rate (1000 Hz) with
   :func:`neuroimagen.stream.resample.resample_oneshot`, the one-shot twin of
   the live contract's streaming resampler;
3. adapt the channels to the model's 128 (``channel_mode``, below);
4. :func:`~neuroimagen.stream.preprocessing.preprocess_continuous` (causal
   filters from rest) over the whole recording; the first ``skip_start_s``
   seconds, where the filters are still settling, are not used;
5. sliding windows of ``n_times`` samples every ``hop_samples`` samples, the
   positions :func:`neuroimagen.stream.windowing.cut_windows` gives, cut
   lazily (only the continuous signal is kept in memory);
6. :func:`~neuroimagen.stream.preprocessing.preprocess_window` on each
   window (normalisation, optional resample).

Channel adaptation (``channel_mode``)
-------------------------------------
``"replicate"`` (DreamDiffusion's pretraining dataset)
    Fewer than 128 channels are tiled (channels 0..n-1, 0..n-1, ...) and the
    remainder filled with the first ``128 % n``; more than 128 keep the first
    128 (DreamDiffusion takes a random contiguous block per sample; a fixed
    block keeps items reproducible). Positions carry no spatial meaning, so
    this suits encoders pretrained as generic time-series models only.
``"interpolate"``
    Channels are matched to the default montage by name
    (:func:`~neuroimagen.stream.contract.canonical_ch_name`); montage channels
    the recording lacks are estimated with MNE's spherical splines
    (:func:`~neuroimagen.stream.contract.interpolation_matrix`, the weights the
    live contract uses); recording channels outside the montage are dropped.
    Needs at least ``min_matched_channels`` matches. Estimates from few
    channels are smooth: expect far less spatial detail than a real cap.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from neuroimagen.stream.config import PreprocessingConfig
from neuroimagen.stream.montage import DEFAULT_MONTAGE, montage_ch_names
from neuroimagen.stream.preprocessing import NormStats, preprocess_continuous, preprocess_window

from ._io import DatasetFileError

log = logging.getLogger(__name__)

__all__ = [
    "UnlabelledEEGDataset",
    "adapt_channels_interpolate",
    "adapt_channels_replicate",
    "window_starts",
]


def window_starts(n_total: int, n_times: int, hop_samples: int, first: int = 0) -> np.ndarray:
    """First sample of every full sliding window over samples ``[first, n_total)``.

    The same positions as :func:`neuroimagen.stream.windowing.cut_windows`
    (first window once ``n_times`` samples exist, then every ``hop_samples``).
    """
    if n_times < 1 or hop_samples < 1:
        raise ValueError(f"n_times ({n_times}) and hop_samples ({hop_samples}) must be >= 1")
    last = n_total - n_times
    if last < first:
        return np.zeros(0, dtype=np.int64)
    return np.arange(first, last + 1, hop_samples, dtype=np.int64)


def adapt_channels_replicate(x: np.ndarray, n_channels: int = 128) -> np.ndarray:
    """DreamDiffusion's channel adaptation (see the module notes).

    Parameters
    ----------
    x : ndarray, shape (n_in, n_times)

    Returns
    -------
    ndarray, shape (n_channels, n_times), float32
    """
    n_in = x.shape[0]
    if n_in == 0:
        raise ValueError("no channels to replicate")
    if n_in >= n_channels:
        return np.ascontiguousarray(x[:n_channels], dtype=np.float32)
    reps = -(-n_channels // n_in)
    return np.ascontiguousarray(np.tile(x, (reps, 1))[:n_channels], dtype=np.float32)


def adapt_channels_interpolate(
    x: np.ndarray,
    ch_names: Sequence[str],
    montage: str = DEFAULT_MONTAGE,
    min_matched_channels: int = 16,
    source: str = "",
) -> np.ndarray:
    """Map channels onto ``montage`` by name, spline-interpolating the missing ones.

    Parameters
    ----------
    x : ndarray, shape (n_in, n_times), volts
    ch_names : sequence of str, length n_in

    Returns
    -------
    ndarray, shape (n_montage_channels, n_times), float32, in montage order
    """
    from neuroimagen.stream.contract import canonical_ch_name, interpolation_matrix

    target = montage_ch_names(montage)
    src = {}
    for i, name in enumerate(ch_names):
        src.setdefault(canonical_ch_name(name), i)
    matched = [k for k, name in enumerate(target) if canonical_ch_name(name) in src]
    if len(matched) < min_matched_channels:
        raise DatasetFileError(
            f"{source}: only {len(matched)} channel(s) match montage {montage!r} by name "
            f"(need {min_matched_channels}); use channel_mode='replicate'"
        )
    out = np.zeros((len(target), x.shape[1]), dtype=np.float64)
    for k in matched:
        out[k] = x[src[canonical_ch_name(target[k])]]
    missing = [k for k in range(len(target)) if k not in set(matched)]
    if missing:
        weights = interpolation_matrix(montage, target, [target[k] for k in missing])
        out[missing] = weights @ out
    log.info("%s: %d channels matched, %d interpolated", source, len(matched), len(missing))
    return out.astype(np.float32)


class UnlabelledEEGDataset(Dataset):
    """Sliding windows over continuous recordings, for self-supervised pretraining.

    Parameters
    ----------
    paths : sequence of path
        Recordings readable by :func:`neuroimagen.stream.readers.read_recording`.
    n_times : int
        Samples per window at ``sfreq`` (512, DreamDiffusion's pretraining length).
    hop_samples : int
        Samples between window starts.
    sfreq : float
        Model rate in Hz; recordings at another rate are resampled.
    preprocessing : PreprocessingConfig | None
        The stream's preprocessing (None: the defaults, as live).
    channel_mode : {"replicate", "interpolate"}
        See the module notes.
    n_channels : int
        Model channel count for ``replicate`` (``interpolate`` gives the montage's).
    montage : str
    min_matched_channels : int
        ``interpolate`` refuses a recording with fewer name matches.
    skip_start_s : float
        Seconds at the start of each recording left out while the causal filters settle.
    norm_stats : NormStats | None
        For ``dataset`` normalisation.

    Notes
    -----
    Items: ``eeg`` float32 tensor (n_channels, n_times or
    preprocessing.resample_n_times), ``file_index`` int, ``first_sample`` int
    (at ``sfreq``, in the resampled recording).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        n_times: int = 512,
        hop_samples: int = 256,
        sfreq: float = 1000.0,
        preprocessing: PreprocessingConfig | None = None,
        channel_mode: Literal["replicate", "interpolate"] = "replicate",
        n_channels: int = 128,
        montage: str = DEFAULT_MONTAGE,
        min_matched_channels: int = 16,
        skip_start_s: float = 1.0,
        norm_stats: NormStats | None = None,
    ) -> None:
        from neuroimagen.stream.readers import read_recording
        from neuroimagen.stream.resample import resample_oneshot

        if channel_mode not in ("replicate", "interpolate"):
            raise ValueError(f"channel_mode must be 'replicate' or 'interpolate', got {channel_mode!r}")
        if not paths:
            raise ValueError("no recordings given")
        self.cfg = preprocessing if preprocessing is not None else PreprocessingConfig()
        self.sfreq = float(sfreq)
        self.n_times = int(n_times)
        self.hop_samples = int(hop_samples)
        self.channel_mode = channel_mode
        self.norm_stats = norm_stats
        self.paths = [Path(p) for p in paths]
        self.ch_names = (
            montage_ch_names(montage) if channel_mode == "interpolate" or n_channels == 128 else None
        )
        self.signals: list[np.ndarray] = []
        index: list[tuple[int, int]] = []
        skip = round(skip_start_s * self.sfreq)
        for f, path in enumerate(self.paths):
            # 1. read, EEG only, volts
            rec = read_recording(path)
            picks = [i for i, t in enumerate(rec.ch_types) if t == "eeg"]
            if not picks:
                raise DatasetFileError(f"{path}: no EEG channels (types: {sorted(set(rec.ch_types))})")
            x = rec.data[picks]
            names = [rec.ch_names[i] for i in picks]
            # 2. model rate
            if abs(rec.sfreq - self.sfreq) > 1e-6:
                x = resample_oneshot(x, rec.sfreq, self.sfreq)
            # 3. channels
            if channel_mode == "replicate":
                x = adapt_channels_replicate(x, n_channels)
            else:
                x = adapt_channels_interpolate(x, names, montage, min_matched_channels, str(path))
            # 4. continuous stage, over the whole recording
            x = preprocess_continuous(x, self.sfreq, self.cfg, self.ch_names)
            # 5. window positions
            starts = window_starts(x.shape[1], self.n_times, self.hop_samples, first=skip)
            if starts.size == 0:
                log.warning("%s: %.2f s is too short for one window after the %.2f s filter settling",
                            path, x.shape[1] / self.sfreq, skip_start_s)
            self.signals.append(x)
            index += [(f, int(s)) for s in starts]
        self.index = index
        if not index:
            raise DatasetFileError("no windows: every recording is shorter than skip_start_s + one window")

    def fit_norm_stats(self) -> NormStats:
        """Per-channel statistics of every window before normalisation (for ``dataset`` mode)."""
        return NormStats.from_windows(
            np.stack([self.signals[f][:, s : s + self.n_times] for f, s in self.index])
        )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} items")
        f, start = self.index[i]
        window = self.signals[f][:, start : start + self.n_times]
        return {
            "eeg": torch.from_numpy(preprocess_window(window, self.cfg, self.norm_stats)),
            "file_index": f,
            "first_sample": start,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "n_files": len(self.paths),
            "n_windows": len(self),
            "window_shape": tuple(self[0]["eeg"].shape) if len(self) else None,
            "seconds": [round(s.shape[1] / self.sfreq, 2) for s in self.signals],
        }

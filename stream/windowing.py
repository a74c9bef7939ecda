"""Cutting the continuous stream into model windows, by sample count.

Two windowers, both fed ``(n_channels, n)`` chunks with their LSL timestamps
in stream order, and both returning complete :class:`Window` objects:

- :class:`SlidingWindower`: a window of ``n_times`` samples every
  ``hop_samples`` samples (the first once ``n_times`` samples exist).
- :class:`MarkerLockedWindower`: one window per stimulus marker, starting
  ``offset_samples`` after the marker's onset sample.

Windows are cut by sample count, never wall-clock time, and carry the LSL
timestamp of their last sample. Sample indices count from the first sample
pushed (after the channel/rate contract), so a window can be located exactly
in the stream. Both classes are pure numpy (no LSL) and synchronous: the
caller decides which thread feeds them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import WindowingConfig

__all__ = [
    "MarkerLockedWindower",
    "SlidingWindower",
    "Window",
    "cut_windows",
    "make_windower",
    "parse_marker_payload",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """One model window.

    Attributes
    ----------
    data : ndarray, shape (n_channels, n_times), float32
        After the continuous stage (the per-window stage is applied later).
    timestamp : float
        LSL local-clock timestamp of the window's last sample (s).
    first_sample : int
        Index of the window's first sample in the contract-conformed stream.
    sfreq : float
        Sampling rate in Hz.
    marker, marker_timestamp : str | None, float | None
        Payload and timestamp of the marker that locked the window (marker mode).
    meta : Mapping
        Parsed marker payload, e.g. ``{"image": ..., "label": ...}``.
    """

    data: np.ndarray
    timestamp: float
    first_sample: int
    sfreq: float
    marker: str | None = None
    marker_timestamp: float | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def n_times(self) -> int:
        return int(self.data.shape[1])


def parse_marker_payload(payload: str) -> dict[str, Any]:
    """Marker payload to a dict: a JSON object as is, anything else as ``{"description": s}``."""
    text = payload.strip() if isinstance(payload, str) else payload
    if isinstance(text, str) and text.startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    return {"description": payload}


def _check_chunk(data: np.ndarray, timestamps: np.ndarray, n_channels: int):
    data = np.asarray(data)
    timestamps = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if data.ndim != 2 or data.shape[0] != n_channels:
        raise ValueError(f"data must be ({n_channels}, n_times), got shape {data.shape}")
    if timestamps.shape[0] != data.shape[1]:
        raise ValueError(f"{timestamps.shape[0]} timestamps for {data.shape[1]} samples")
    return data, timestamps


class _SampleBuffer:
    """Linear sample buffer with amortised compaction (no per-push reallocation).

    Holds samples with global indices ``[start, start + n)``; ``append`` first
    discards samples older than ``keep_from`` when the buffer is full, growing it
    only when the retained samples plus the chunk still do not fit.
    """

    def __init__(self, n_channels: int, capacity: int) -> None:
        self.n_channels = n_channels
        self.data = np.zeros((n_channels, capacity), dtype=np.float32)
        self.ts = np.zeros(capacity, dtype=np.float64)
        self.start = 0
        self.n = 0
        self.last_dropped_ts = -np.inf  # timestamp of sample start - 1

    @property
    def stop(self) -> int:
        """Global index one past the newest sample (= samples pushed so far)."""
        return self.start + self.n

    def reset(self) -> None:
        self.start = 0
        self.n = 0
        self.last_dropped_ts = -np.inf

    def append(self, data: np.ndarray, ts: np.ndarray, keep_from: int) -> None:
        m = data.shape[1]
        cap = self.data.shape[1]
        if self.n + m > cap:
            keep_from = min(max(keep_from, self.start), self.stop)
            drop = keep_from - self.start
            keep = self.n - drop
            if drop:
                self.last_dropped_ts = float(self.ts[drop - 1])
            if keep + m > cap:  # grow (rare: huge chunk or long pending history)
                new_cap = max(2 * cap, keep + m)
                new_data = np.zeros((self.n_channels, new_cap), dtype=np.float32)
                new_ts = np.zeros(new_cap, dtype=np.float64)
                new_data[:, :keep] = self.data[:, drop : self.n]
                new_ts[:keep] = self.ts[drop : self.n]
                self.data, self.ts = new_data, new_ts
            elif keep:
                self.data[:, :keep] = self.data[:, drop : self.n]
                self.ts[:keep] = self.ts[drop : self.n]
            self.start += drop
            self.n = keep
        self.data[:, self.n : self.n + m] = data
        self.ts[self.n : self.n + m] = ts
        self.n += m

    def window(self, first: int, n_times: int) -> tuple[np.ndarray, np.ndarray]:
        """Copy of samples ``[first, first + n_times)`` (global indices) and their timestamps."""
        a = first - self.start
        if a < 0 or a + n_times > self.n:
            raise IndexError(f"samples [{first}, {first + n_times}) not in buffer")
        return self.data[:, a : a + n_times].copy(), self.ts[a : a + n_times]


def _estimate_sfreq(ts: np.ndarray) -> float:
    span = float(ts[-1] - ts[0]) if ts.size > 1 else 0.0
    return (ts.size - 1) / span if span > 0 else float("nan")


class SlidingWindower:
    """Sliding windows of ``n_times`` samples every ``hop_samples`` samples.

    Parameters
    ----------
    n_channels, n_times, hop_samples : int
    sfreq : float | None
        Stored in each :class:`Window`; None estimates it from the window's
        timestamps (pass the nominal rate in live use).

    Notes
    -----
    The first window covers samples ``[0, n_times)``, the k-th
    ``[k * hop_samples, k * hop_samples + n_times)``; every window is returned
    exactly once, whatever the chunking. Not thread-safe.
    """

    def __init__(
        self, n_channels: int, n_times: int, hop_samples: int, sfreq: float | None = None
    ) -> None:
        if n_channels < 1 or n_times < 1 or hop_samples < 1:
            raise ValueError(
                f"n_channels, n_times and hop_samples must be >= 1, got "
                f"{n_channels}, {n_times}, {hop_samples}"
            )
        self.n_channels = int(n_channels)
        self.n_times = int(n_times)
        self.hop_samples = int(hop_samples)
        self.sfreq = None if sfreq is None else float(sfreq)
        self._buf = _SampleBuffer(self.n_channels, max(4 * self.n_times, 4096))
        self.reset()

    def reset(self) -> None:
        """Forget all samples; the next push is sample 0."""
        self._buf.reset()
        self._next_first = 0
        self.n_windows = 0

    @property
    def n_samples(self) -> int:
        """Samples pushed since the last reset."""
        return self._buf.stop

    def push(self, data: np.ndarray, timestamps: np.ndarray) -> list[Window]:
        """Add a chunk; return the windows it completes, oldest first.

        Parameters
        ----------
        data : ndarray, shape (n_channels, n), float32
        timestamps : ndarray, shape (n,), float64
        """
        data, timestamps = _check_chunk(data, timestamps, self.n_channels)
        self._buf.append(data, timestamps, keep_from=self._next_first)
        out = []
        while self._next_first + self.n_times <= self._buf.stop:
            x, ts = self._buf.window(self._next_first, self.n_times)
            sfreq = self.sfreq if self.sfreq is not None else _estimate_sfreq(ts)
            out.append(Window(x, float(ts[-1]), self._next_first, sfreq))
            self._next_first += self.hop_samples
        self.n_windows += len(out)
        return out


@dataclass
class _Marker:
    timestamp: float
    payload: str
    seq: int
    onset: int | None = None  # global sample index, once resolved


class MarkerLockedWindower:
    """One window per marker: ``n_times`` samples from ``offset_samples`` after its onset.

    Parameters
    ----------
    n_channels, n_times : int
    offset_samples : int
        Window start relative to the onset sample (0: the onset sample itself).
    sfreq : float
        Stream rate in Hz (for the onset tolerance and the time limits).
    max_pending_s : float
        A marker whose window is not complete when the newest sample is this
        much later than the marker is dropped (counted in ``n_expired``).
    history_s : float | None
        Samples kept for markers that arrive after their samples (default
        ``max_pending_s``). A marker whose window starts before the kept history
        is dropped (counted in ``n_too_old``).
    max_pending : int
        Most markers held at once; beyond it the oldest is dropped (``n_overflow``).
    max_onset_lag_s : float
        A marker whose first sample at or after it comes later than this (a gap
        in the EEG stream) is dropped (``n_no_onset``) rather than locked to a
        sample that does not show the stimulus.

    Notes
    -----
    A marker locks to the first sample whose timestamp is ``>= marker_ts -
    0.5 / sfreq`` (its onset sample), so a marker stamped with a sample's own
    timestamp locks to exactly that sample. Markers may be added before or after
    their samples arrive, and in any order: each is resolved independently by its
    own timestamp (out-of-order, non-monotonic marker timestamps are fine), and
    windows are returned by :meth:`push` sorted by ``first_sample`` (ties in
    arrival order). Marker windows may overlap. A marker added after its window
    is already complete is returned by the next :meth:`push`, which may carry no
    samples. EEG timestamps are assumed non-decreasing (LSL with dejitter).
    Not thread-safe: call add_marker and push from one thread.
    """

    def __init__(
        self,
        n_channels: int,
        n_times: int,
        offset_samples: int,
        sfreq: float,
        max_pending_s: float = 10.0,
        history_s: float | None = None,
        max_pending: int = 1000,
        max_onset_lag_s: float = 0.05,
    ) -> None:
        if n_channels < 1 or n_times < 1 or offset_samples < 0:
            raise ValueError(
                f"need n_channels >= 1, n_times >= 1, offset_samples >= 0; got "
                f"{n_channels}, {n_times}, {offset_samples}"
            )
        if not sfreq > 0:
            raise ValueError(f"sfreq must be positive, got {sfreq}")
        span_s = (offset_samples + n_times) / sfreq
        if max_pending_s <= span_s:
            raise ValueError(
                f"max_pending_s ({max_pending_s} s) must exceed the marker-to-window-end span "
                f"({span_s:.3f} s = {offset_samples} + {n_times} samples at {sfreq} Hz)"
            )
        self.n_channels = int(n_channels)
        self.n_times = int(n_times)
        self.offset_samples = int(offset_samples)
        self.sfreq = float(sfreq)
        self.max_pending_s = float(max_pending_s)
        self.history_s = self.max_pending_s if history_s is None else float(history_s)
        self.max_pending = int(max_pending)
        self.max_onset_lag_s = max(float(max_onset_lag_s), 1.0 / self.sfreq)
        self._n_history = (
            int(np.ceil(self.history_s * self.sfreq)) + self.offset_samples + self.n_times
        )
        self._buf = _SampleBuffer(self.n_channels, self._n_history + max(4096, self.n_times))
        self.reset()

    def _onset_tolerance(self, ts: np.ndarray) -> float:
        """Half the *observed* sample spacing, in seconds.

        A replay faster than real time stamps samples closer than 1/sfreq, and a
        marker stamped with a sample's own timestamp must lock to that sample,
        not its neighbour.
        """
        n_recent = min(len(ts), 65)
        spacing = float(np.median(np.diff(ts[len(ts) - n_recent :]))) if n_recent >= 2 else 0.0
        return 0.5 * (spacing if spacing > 0 else 1.0 / self.sfreq)

    def reset(self) -> None:
        """Forget samples, pending markers and counters."""
        self._buf.reset()
        self._pending: list[_Marker] = []
        self._seq = 0
        self.n_markers = 0
        self.n_windows = 0
        self.n_expired = 0
        self.n_too_old = 0
        self.n_overflow = 0
        self.n_no_onset = 0

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    @property
    def n_dropped(self) -> int:
        """Markers dropped for any reason (expired, too old, overflow, no onset sample)."""
        return self.n_expired + self.n_too_old + self.n_overflow + self.n_no_onset

    def add_marker(self, timestamp: float, payload: str) -> None:
        """Register a marker (LSL timestamp in the EEG stream's clock, payload string)."""
        if len(self._pending) >= self.max_pending:
            dropped = self._pending.pop(0)
            self.n_overflow += 1
            logger.warning(
                "marker queue full: dropped marker %r at %.3f", dropped.payload, dropped.timestamp
            )
        self._pending.append(_Marker(float(timestamp), str(payload), self._seq))
        self._seq += 1
        self.n_markers += 1

    def expire(self, now: float) -> int:
        """Drop markers older than ``max_pending_s`` at LSL time ``now``; return how many.

        :meth:`push` expires against the newest sample's timestamp; call this
        with the LSL clock when the EEG stream may have stalled.
        """
        limit = now - self.max_pending_s
        if all(m.timestamp >= limit for m in self._pending):
            return 0
        keep = [m for m in self._pending if m.timestamp >= limit]
        n = len(self._pending) - len(keep)
        if n:
            logger.info("dropped %d marker(s) pending longer than %.1f s", n, self.max_pending_s)
            self._pending = keep
            self.n_expired += n
        return n

    def push(self, data: np.ndarray, timestamps: np.ndarray) -> list[Window]:
        """Add a chunk (may be empty); return the marker windows now complete.

        Parameters
        ----------
        data : ndarray, shape (n_channels, n), float32
        timestamps : ndarray, shape (n,), float64

        Returns
        -------
        list of Window
            Sorted by ``first_sample``; ``marker``, ``marker_timestamp`` and
            ``meta`` (:func:`parse_marker_payload`) filled.
        """
        data, timestamps = _check_chunk(data, timestamps, self.n_channels)
        buf = self._buf
        keep_from = buf.stop - self._n_history
        for mk in self._pending:
            if mk.onset is not None:
                keep_from = min(keep_from, mk.onset + self.offset_samples)
        buf.append(data, timestamps, keep_from=keep_from)
        if buf.n == 0:
            return []

        # 1. resolve onsets of markers whose onset sample has arrived
        ts = buf.ts[: buf.n]
        tol = self._onset_tolerance(ts) if any(mk.onset is None for mk in self._pending) else 0.0
        ready: list[tuple[int, int, _Marker]] = []
        still: list[_Marker] = []
        ts_last = float(ts[-1])
        for mk in self._pending:
            if mk.onset is None:
                if mk.timestamp - tol > ts_last:  # onset sample not here yet
                    still.append(mk)
                    continue
                pos = int(np.searchsorted(ts, mk.timestamp - tol, side="left"))
                if pos < buf.n:
                    if pos == 0 and buf.last_dropped_ts >= mk.timestamp - tol:
                        # onset precedes the kept history: cannot be windowed any more
                        self.n_too_old += 1
                        logger.warning(
                            "marker %r at %.3f is older than the kept history (%.1f s): dropped",
                            mk.payload,
                            mk.timestamp,
                            self.history_s,
                        )
                        continue
                    if ts[pos] - mk.timestamp > self.max_onset_lag_s:
                        # no sample near the marker (a gap in the EEG stream)
                        self.n_no_onset += 1
                        logger.warning(
                            "marker %r at %.3f: first sample after it is %.3f s later "
                            "(gap in the EEG stream): dropped",
                            mk.payload,
                            mk.timestamp,
                            ts[pos] - mk.timestamp,
                        )
                        continue
                    mk.onset = buf.start + pos
            if mk.onset is not None:
                first = mk.onset + self.offset_samples
                if first < buf.start:
                    self.n_too_old += 1
                    continue
                if first + self.n_times <= buf.stop:
                    ready.append((first, mk.seq, mk))
                    continue
            still.append(mk)
        self._pending = still

        # 2. cut the complete windows, in stream order
        out = []
        for first, _, mk in sorted(ready, key=lambda r: (r[0], r[1])):
            x, wts = buf.window(first, self.n_times)
            out.append(
                Window(
                    x,
                    float(wts[-1]),
                    first,
                    self.sfreq,
                    marker=mk.payload,
                    marker_timestamp=mk.timestamp,
                    meta=parse_marker_payload(mk.payload),
                )
            )
        self.n_windows += len(out)

        # 3. expire markers whose window never completed, on the stream's clock
        if self._pending:
            self.expire(ts_last)
        return out


def make_windower(
    cfg: WindowingConfig, n_channels: int, sfreq: float
) -> SlidingWindower | MarkerLockedWindower:
    """The windower a :class:`~neuroimagen.stream.config.WindowingConfig` describes.

    ``hop_s`` becomes ``max(1, round(hop_s * sfreq))`` samples.
    """
    if cfg.mode == "sliding":
        hop = max(1, round(cfg.hop_s * sfreq))
        return SlidingWindower(n_channels, cfg.n_times, hop, sfreq=sfreq)
    if cfg.mode == "marker":
        return MarkerLockedWindower(
            n_channels,
            cfg.n_times,
            cfg.marker_offset_samples,
            sfreq,
            max_pending_s=cfg.marker_max_pending_s,
        )
    raise ValueError(f"unknown windowing mode {cfg.mode!r}")


def cut_windows(
    data: np.ndarray,
    timestamps: np.ndarray,
    n_times: int,
    hop_samples: int,
    sfreq: float | None = None,
) -> list[Window]:
    """All sliding windows of a whole signal (offline convenience).

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_total), float32
    timestamps : ndarray, shape (n_total,), float64
    n_times, hop_samples : int
    sfreq : float | None
        As in :class:`SlidingWindower`.
    """
    data = np.asarray(data)
    win = SlidingWindower(data.shape[0], n_times, hop_samples, sfreq=sfreq)
    return win.push(data, timestamps)

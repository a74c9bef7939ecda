"""Preallocated ring buffer between the acquisition thread and its readers.

Samples are addressed by a running *sample index* (0 for the first sample ever
written); sample ``k`` lives at row ``k % n_samples``. Writing copies into the
rows at a modulo index under a lock; reading copies out under the same lock, so
a reader never sees a half-written chunk and never aliases the buffer. Nothing
is ever rolled or reallocated after construction.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["RingBuffer"]


class RingBuffer:
    """Fixed-size sample store: float32 data, float64 timestamps, float64 arrival times.

    Parameters
    ----------
    n_channels : int
    n_samples : int
        Capacity in samples; older samples are overwritten.

    Attributes
    ----------
    total_written : int
        Samples written since construction (the index the next sample gets).
    n_overflow : int
        Samples a reader asked for (via :meth:`read_since`) that had already been
        overwritten: the reader fell more than ``n_samples`` behind.

    Notes
    -----
    Thread-safe for one writer and any number of readers. Data is stored
    sample-major (``(n_samples, n_channels)``, as LSL delivers it) so a write is
    one contiguous copy; reads return channel-major copies
    ``(n_channels, n)``.
    """

    def __init__(self, n_channels: int, n_samples: int) -> None:
        if n_channels < 1 or n_samples < 1:
            raise ValueError(f"RingBuffer needs n_channels >= 1 and n_samples >= 1, got {n_channels}, {n_samples}")
        self.n_channels = int(n_channels)
        self.n_samples = int(n_samples)
        self._data = np.zeros((self.n_samples, self.n_channels), dtype=np.float32)
        self._ts = np.zeros(self.n_samples, dtype=np.float64)
        self._arrival = np.zeros(self.n_samples, dtype=np.float64)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.total_written = 0
        self.n_overflow = 0

    # ------------------------------------------------------------------ writing

    def write(
        self, data: np.ndarray, timestamps: np.ndarray, arrival: float | None = None
    ) -> None:
        """Append a chunk.

        Parameters
        ----------
        data : ndarray, shape (n, n_channels)
            Samples as LSL delivers them (any real dtype; stored as float32).
        timestamps : ndarray, shape (n,), float64
            Timestamps in seconds (LSL local clock).
        arrival : float | None
            When the chunk was pulled (``pylsl.local_clock()`` seconds), kept per
            sample for latency measurements; None stores NaN.
        """
        n = len(timestamps)
        if data.shape != (n, self.n_channels):
            raise ValueError(
                f"chunk shape {data.shape} does not match {n} timestamps x {self.n_channels} channels"
            )
        if n == 0:
            return
        if n > self.n_samples:  # only the newest n_samples survive anyway
            skip = n - self.n_samples
            data, timestamps, n = data[skip:], timestamps[skip:], self.n_samples
        else:
            skip = 0
        with self._cond:
            start = (self.total_written + skip) % self.n_samples
            first = min(n, self.n_samples - start)
            self._data[start : start + first] = data[:first]
            self._ts[start : start + first] = timestamps[:first]
            self._arrival[start : start + first] = np.nan if arrival is None else arrival
            if first < n:
                rest = n - first
                self._data[:rest] = data[first:]
                self._ts[:rest] = timestamps[first:]
                self._arrival[:rest] = np.nan if arrival is None else arrival
            self.total_written += n + skip
            self._cond.notify_all()

    # ------------------------------------------------------------------ reading

    def _copy(self, first_index: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # caller holds the lock; first_index is still in the buffer
        start = first_index % self.n_samples
        stop = start + n
        if stop <= self.n_samples:
            data = self._data[start:stop].T.copy()
            ts = self._ts[start:stop].copy()
            arr = self._arrival[start:stop].copy()
        else:
            rows = np.r_[start : self.n_samples, 0 : stop - self.n_samples]
            data = self._data[rows].T.copy()
            ts = self._ts[rows]
            arr = self._arrival[rows]
        return data, ts, arr

    def read_since(
        self, index: int, max_samples: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Copy every sample with index >= ``index`` (or the oldest still held).

        Parameters
        ----------
        index : int
            The first sample index wanted (typically the previous call's
            ``first_index + n``).
        max_samples : int | None
            Return at most this many (the oldest first).

        Returns
        -------
        data : ndarray, shape (n_channels, n), float32 (a copy)
        timestamps : ndarray, shape (n,), float64
        first_index : int
            Sample index of ``data[:, 0]`` (``index`` unless samples were lost).
        n_lost : int
            Samples between ``index`` and ``first_index`` that were overwritten
            before this read (also added to :attr:`n_overflow`).
        """
        data, ts, _, first, lost = self.read_since_with_arrival(index, max_samples)
        return data, ts, first, lost

    def read_since_with_arrival(
        self, index: int, max_samples: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
        """:meth:`read_since` plus the arrival times, shape (n,), float64 (local clock, s)."""
        with self._lock:
            oldest = max(0, self.total_written - self.n_samples)
            index = max(0, int(index))
            lost = max(0, oldest - index)
            first = max(index, oldest)
            n = max(0, self.total_written - first)
            if max_samples is not None:
                n = min(n, int(max_samples))
            self.n_overflow += lost
            data, ts, arr = self._copy(first, n)
        return data, ts, arr, first, lost

    def latest(self, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Copy the newest ``n`` samples (fewer if fewer were written).

        Returns
        -------
        data : ndarray, shape (n_channels, n), float32
        timestamps : ndarray, shape (n,), float64
        first_index : int
        """
        with self._lock:
            n = min(int(n), self.total_written, self.n_samples)
            first = self.total_written - n
            data, ts, _ = self._copy(first, n)
        return data, ts, first

    def wait_for(self, index: int, timeout: float) -> bool:
        """Block until sample ``index`` has been written, or ``timeout`` seconds pass.

        Returns True when ``total_written > index``. Lets a consumer wake on new
        data instead of polling.
        """
        with self._cond:
            return self._cond.wait_for(lambda: self.total_written > index, timeout)

"""Engine metrics: per-stage and end-to-end latencies, fps, windows and drops.

Stages, per reconstructed window (milliseconds):

- ``pull``: pulling what arrived off the network (the acquisition step that
  completed the window);
- ``preprocess``: contract, causal filters, windowing and the per-window stage;
- ``extractors``: pixel encoder, saliency generator, semantic extractor, class scores;
- ``diffusion``: the img2img frame;
- ``publish``: building and publishing the snapshot;
- ``end_to_end``: from the LSL timestamp of the window's last sample (local
  clock) to the frame being ready to show (the snapshot published).

The first frame is start-up: its window waits while the threads, the inlet (and a
GUI) start, which made one 460 ms frame the p99 of a 16-frame run. Its timings are
reported apart (``first_frame_ms``), not in the percentiles.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

import numpy as np

__all__ = ["STAGES", "EngineMetrics", "LatencyStats"]

STAGES = ("pull", "preprocess", "extractors", "diffusion", "publish", "end_to_end")
#: samples kept per stage for the percentiles (a 10-minute run at 10 fps fits)
N_KEPT = 20000


class LatencyStats:
    """A bounded record of one latency, in milliseconds, with its percentiles.

    Notes
    -----
    Threading: ``add`` from one thread, ``summary`` from any (a deque append and
    a copy are atomic under the GIL).
    """

    def __init__(self, maxlen: int = N_KEPT) -> None:
        self._values: collections.deque[float] = collections.deque(maxlen=maxlen)
        self.n = 0

    def add(self, ms: float) -> None:
        self._values.append(float(ms))
        self.n += 1

    def values(self) -> np.ndarray:
        return np.fromiter(tuple(self._values), dtype=np.float64)

    def summary(self) -> dict[str, float | None]:
        """``p50``, ``p95``, ``p99``, ``mean``, ``max`` in ms (None when empty)."""
        v = self.values()
        if not v.size:
            return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
        p50, p95, p99 = np.percentile(v, [50, 95, 99])
        return {"p50": float(p50), "p95": float(p95), "p99": float(p99),
                "mean": float(v.mean()), "max": float(v.max())}


class EngineMetrics:
    """Every figure the engine reports, updated by its threads, read by anyone.

    Attributes
    ----------
    stages : dict of str -> LatencyStats
        One per name in :data:`STAGES`.
    counters : dict of str -> int
        ``n_windows`` (windows the pipeline cut), ``n_frames`` (reconstructions
        published), ``n_dropped_windows`` (replaced in the window slot before the
        inference worker took them), ``n_dropped_frames`` (replaced in the
        publisher's slot), ``n_unfinished_at_stop`` (cut, neither shown nor dropped:
        still in a slot when the engine stopped). ``n_windows == n_frames + n_dropped
        + n_unfinished_at_stop`` once stopped.
    """

    def __init__(self) -> None:
        self.stages = {name: LatencyStats() for name in STAGES}
        self.counters: dict[str, int] = collections.defaultdict(int)
        self._lock = threading.Lock()
        self._t_start = time.monotonic()
        self._frame_times: collections.deque[float] = collections.deque(maxlen=64)
        self.first_frame_ms: dict[str, float] | None = None
        self.extra: dict[str, Any] = {}

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def frame_done(self, timings_ms: dict[str, float]) -> None:
        """One frame published, with its per-stage timings (ms, names from :data:`STAGES`).

        The first frame's timings become ``first_frame_ms``; every later frame's go to ``stages``.
        """
        now = time.monotonic()
        with self._lock:
            first = self.counters["n_frames"] == 0
            self.counters["n_frames"] += 1
            self._frame_times.append(now)
        if first:
            self.first_frame_ms = dict(timings_ms)
            return
        for name, value in timings_ms.items():
            self.stages[name].add(value)

    def fps(self) -> dict[str, float]:
        """``fps`` over the whole run and ``fps_recent`` over the last (up to) 64 frames."""
        with self._lock:
            times = list(self._frame_times)
            n = self.counters["n_frames"]
        elapsed = time.monotonic() - self._t_start
        recent = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        return {"fps": n / elapsed if elapsed > 0 else 0.0, "fps_recent": recent}

    def restart_clock(self) -> None:
        """Start the fps clock now (the loop begins after warm-up)."""
        self._t_start = time.monotonic()

    def summary(self) -> dict[str, Any]:
        """JSON-ready: ``latency_ms`` (per stage and end to end, from the second frame on),
        ``first_frame_ms`` (the start-up frame's timings, None before it), fps, counters, extra."""
        with self._lock:
            counters = dict(self.counters)
        for key in ("n_windows", "n_frames", "n_dropped_windows", "n_dropped_frames", "n_unfinished_at_stop"):
            counters.setdefault(key, 0)
        out: dict[str, Any] = {"latency_ms": {name: s.summary() for name, s in self.stages.items()},
                               "first_frame_ms": self.first_frame_ms}
        out.update(self.fps())
        out.update(counters)
        out["n_dropped"] = counters["n_dropped_windows"] + counters["n_dropped_frames"]
        out["elapsed_s"] = time.monotonic() - self._t_start
        out.update(self.extra)
        return out

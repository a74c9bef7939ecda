"""Input health: flat or railing channels, NaN bursts and stream gaps, never a crash.

:class:`InputHealth` looks at the newest raw samples of a running
:class:`~neuroimagen.stream.pipeline.WindowPipeline` (the model's channels,
converted to volts with the pipeline's own contract) every
``check_interval_s``, and at the inlet's counters:

- **flat**: a channel whose standard deviation over the check is below
  ``flat_std_v`` (a disconnected or shorted electrode);
- **railing**: a channel at or beyond ``rail_abs_v`` for at least
  ``rail_fraction`` of the samples (a saturated amplifier);
- **NaN burst**: non-finite samples arrived (the inlet replaced them by its
  ``on_nonfinite`` policy and counted them);
- **gap**: the inlet reported a discontinuity (samples missing, outlet restarted).

Each onset and recovery is logged once (warning) and kept as an event; the
counts and the channels currently flat or railing are in :meth:`summary`,
which the engine puts into its metrics and snapshots.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import numpy as np

from .config import HealthConfig

logger = logging.getLogger(__name__)

__all__ = ["InputHealth"]

#: events kept for the snapshot / metrics (the log has them all)
N_EVENTS = 200


class InputHealth:
    """Watch a pipeline's input; never raises on bad data.

    Parameters
    ----------
    cfg : HealthConfig
    pipeline : WindowPipeline
        Started; its inlet's ring buffer and contract are read, nothing is changed.

    Notes
    -----
    Threading: :meth:`check` runs in one thread (the engine's acquisition worker);
    :meth:`summary` may be called from any thread.
    """

    def __init__(self, cfg: HealthConfig, pipeline: Any) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        contract = pipeline.contract
        picks = [(out, p) for out, p in enumerate(contract.picks) if p is not None]
        self._out_names = [contract.ch_names_out[o] for o, _ in picks]
        self._picks = np.asarray([p for _, p in picks], dtype=np.intp)
        self._scale = float(contract.scale_to_volts)
        self._next_index = pipeline.inlet.buffer.total_written
        self._next_check = 0.0
        self._n_nonfinite_seen = 0
        self._n_gaps_seen = 0
        self.flat: set[str] = set()
        self.railing: set[str] = set()
        self.n_flat_events = 0
        self.n_railing_events = 0
        self.n_nan_bursts = 0
        self.n_nonfinite_samples = 0
        self.n_gaps = 0
        self.gap_seconds = 0.0
        self.n_gap_samples = 0
        self.n_checks = 0
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=N_EVENTS)

    def _event(self, kind: str, message: str, **fields: Any) -> None:
        logger.warning("input health: %s", message)
        self.events.append({"kind": kind, "time": time.time(), "message": message, **fields})

    def check(self, force: bool = False) -> None:
        """Check what arrived since the last check (at most every ``check_interval_s``)."""
        now = time.monotonic()
        if not force and now < self._next_check:
            return
        self._next_check = now + self.cfg.check_interval_s
        inlet = self.pipeline.inlet
        self.n_checks += 1
        # 1. NaN / inf samples the inlet replaced (counted there, per sample)
        n_bad = inlet.n_nonfinite - self._n_nonfinite_seen
        if n_bad >= self.cfg.nan_burst_samples:
            self.n_nan_bursts += 1
            self.n_nonfinite_samples += n_bad
            self._event("nan", f"{n_bad} non-finite samples (NaN/inf) arrived; replaced by "
                        f"the inlet's '{inlet.cfg.on_nonfinite}' policy", n_samples=n_bad)
        self._n_nonfinite_seen = inlet.n_nonfinite
        # 2. gaps the inlet found
        gaps = inlet.gaps
        for gap in gaps[self._n_gaps_seen:]:
            self.n_gaps += 1
            self.n_gap_samples += gap.n_samples
            self.gap_seconds += gap.seconds
            self._event("gap", f"stream gap of {gap.n_samples} samples ({gap.seconds:.3f} s)"
                        f"{' after the outlet restarted' if gap.reconnected else ''}",
                        n_samples=gap.n_samples, seconds=gap.seconds)
        self._n_gaps_seen = len(gaps)
        # 3. flat and railing channels over the newest samples, in volts
        data, _, first, _ = inlet.buffer.read_since(self._next_index)
        self._next_index = first + data.shape[1]
        if data.shape[1] < 2 or not self._picks.size:
            return
        x = data[self._picks]
        if self._scale != 1.0:
            x = x * np.float32(self._scale)
        flat_now = {self._out_names[i] for i in np.flatnonzero(x.std(axis=1) < self.cfg.flat_std_v)}
        at_rail = (np.abs(x) >= self.cfg.rail_abs_v).mean(axis=1) >= self.cfg.rail_fraction
        rail_now = {self._out_names[i] for i in np.flatnonzero(at_rail)}
        flat_now -= rail_now  # a railing channel is flat too; say the more specific thing
        self._transition("flat", flat_now, self.flat)
        self._transition("railing", rail_now, self.railing)
        self.flat, self.railing = flat_now, rail_now

    def _transition(self, kind: str, now: set[str], before: set[str]) -> None:
        started, ended = sorted(now - before), sorted(before - now)
        if started:
            if kind == "flat":
                self.n_flat_events += 1
            else:
                self.n_railing_events += 1
            self._event(kind, f"{len(started)} channel(s) {kind}: {_names(started)}", channels=started)
        if ended:
            self._event(f"{kind}_recovered", f"{len(ended)} channel(s) no longer {kind}: {_names(ended)}",
                        channels=ended)

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts, the channels flat/railing now, and the recent events."""
        return {
            "ok": not (self.flat or self.railing),
            "flat_channels": sorted(self.flat),
            "railing_channels": sorted(self.railing),
            "n_flat_events": self.n_flat_events,
            "n_railing_events": self.n_railing_events,
            "n_nan_bursts": self.n_nan_bursts,
            "n_nonfinite_samples": self.n_nonfinite_samples,
            "n_gaps": self.n_gaps,
            "n_gap_samples": self.n_gap_samples,
            "gap_seconds": self.gap_seconds,
            "n_checks": self.n_checks,
            "events": list(self.events)[-20:],
        }


def _names(names: list[str], n_max: int = 8) -> str:
    return ", ".join(names[:n_max]) + (f" ... (+{len(names) - n_max})" if len(names) > n_max else "")

"""The live chain: LSL inlet -> contract -> continuous stage -> windows -> per-window stage.

:class:`WindowPipeline` is what the real-time engine, the demo and the twin
test use to turn a live (or replayed) LSL stream into model-ready windows.
Every stage is the same function the training data went through
(:mod:`neuroimagen.stream.preprocessing`), so the model sees online what it
saw offline.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Any, Literal

import numpy as np

from .config import StreamConfig
from .contract import ChannelContract, ContractError
from .inlet import EEGInlet, MarkerInlet, StreamMeta
from .markers import find_marker_stream, marker_time_offset_s
from .preprocessing import NormStats, StreamingPreprocessor, preprocess_window
from .windowing import Window, make_windower
from .worker import Worker

logger = logging.getLogger(__name__)

__all__ = ["WindowPipeline", "already_preprocessed"]

#: latencies kept for the stats (newest first out)
N_LATENCIES = 10000
#: seconds of signal that decide the unit of a stream that declares none (``units: auto``)
UNIT_PROBE_S = 0.5


def already_preprocessed(preprocessed: dict[str, Any] | None) -> tuple[bool, bool]:
    """Read a stream's ``desc/neuroimagen/preprocessed`` dict: (filtered, normalised).

    ``filtered``: a ``bandpass_hz`` (or ``filtered: true``) entry is present.
    ``normalised``: ``normalized`` names a mode other than ``none``/false.
    """
    if not preprocessed:
        return False, False
    filtered = preprocessed.get("bandpass_hz") is not None or bool(preprocessed.get("filtered"))
    norm = preprocessed.get("normalized", preprocessed.get("normalised"))
    normalised = norm not in (None, False, "none", "", 0)
    return filtered, normalised


class WindowPipeline(Worker):
    """Live windows from an LSL stream, preprocessed exactly as in training.

    Parameters
    ----------
    cfg : StreamConfig
        ``inlet`` (which stream, buffering), ``contract`` (the model's channels,
        rate, unit), ``preprocessing``, ``windowing``.
    norm_stats : NormStats | None
        The training set's statistics, required for ``dataset`` normalisation.
    eeg_name : str | None
        EEG stream name (overrides ``cfg.inlet.name``).
    marker_name : str | None
        Marker stream name for ``windowing.mode == 'marker'`` (default:
        ``cfg.windowing.marker_stream``, else the one marker stream matched to
        the EEG stream by :func:`~neuroimagen.stream.markers.match_marker_streams`:
        same host and source_id, or a name ``<eeg name>-...``).
    run_worker : bool
        Start a worker thread that polls continuously and keeps only the newest
        window in a one-slot holder (:meth:`latest`); older ones not taken in
        time are dropped and counted.
    acquisition : {"thread", "caller"}
        ``thread``: the inlets pull on their own threads. ``caller``: no
        acquisition threads (mne-lsl's ``acquisition_delay=None``); every
        :meth:`poll` first pulls what has arrived (:meth:`acquire`), so the
        whole chain runs in the thread that polls (the caller's, or the worker's).

    Attributes
    ----------
    inlet : EEGInlet
    meta : StreamMeta | None
    contract : ChannelContract | None
    ch_names : list of str
        Output channel order (the model's), after :meth:`start`.
    sfreq : float
        Output rate (the model's), after :meth:`start`.

    Notes
    -----
    Stages, per :meth:`poll`:

    1. copy what arrived since the last poll out of the inlet's ring buffer
       (plus new markers);
    2. :meth:`ChannelContract.apply` -- model channel order, volts, model rate;
    3. :class:`StreamingPreprocessor` (causal filters, reference) -- skipped
       when the stream says it is already filtered;
    4. the windower (sliding or marker-locked), cutting by sample count; each
       window carries the LSL timestamp of its last sample;
    5. :func:`preprocess_window` (normalisation -- ``none`` when the stream is
       already normalised -- and the optional resample).

    Two latencies are measured per window, under different names:
    ``window_ready`` (from its last sample being pulled off the network to the
    window being ready: this process's own cost) and ``timestamp_to_ready``
    (from its last sample's LSL timestamp to the window being ready: includes
    the outlet's chunking and the network).

    Threading: without a worker, :meth:`poll` runs in the caller's thread (one
    caller). With ``run_worker=True`` the worker (a
    :class:`~neuroimagen.stream.worker.Worker`) owns :meth:`poll` and
    consumers call :meth:`latest`. Errors from the inlets or the worker are
    re-raised from :meth:`stop`, :meth:`poll` and :meth:`latest`. A
    :meth:`start` after :meth:`stop` starts fresh (counts, gaps, sample index).
    """

    def __init__(
        self,
        cfg: StreamConfig,
        norm_stats: NormStats | None = None,
        eeg_name: str | None = None,
        marker_name: str | None = None,
        *,
        run_worker: bool = False,
        acquisition: Literal["thread", "caller"] = "thread",
    ) -> None:
        super().__init__("WindowPipeline")
        if acquisition not in ("thread", "caller"):
            raise ValueError(f"acquisition must be 'thread' or 'caller', got {acquisition!r}")
        self.cfg = cfg
        self.norm_stats = norm_stats
        inlet_cfg = cfg.inlet if eeg_name is None else cfg.inlet.model_copy(update={"name": eeg_name})
        self.inlet = EEGInlet(inlet_cfg)
        self.eeg_name = eeg_name
        self.marker_name = marker_name
        self.run_worker = run_worker
        self.acquisition = acquisition
        self.marker_inlet: MarkerInlet | None = None
        self.meta: StreamMeta | None = None
        self.contract: ChannelContract | None = None
        self.preprocessor: StreamingPreprocessor | None = None
        self.window_cfg = cfg.preprocessing
        self.windower: Any = None
        self.ch_names: list[str] = []
        self.sfreq = float("nan")
        self._poll_lock = threading.Lock()
        self._slot_cond = threading.Condition()
        self._started = False
        self._reset_counts()

    def _reset_counts(self) -> None:
        self.n_windows = 0
        self.n_dropped_windows = 0
        self.n_lost_samples = 0
        self.n_segments = 1
        self._n_out = 0
        self._segment_start = 0
        self._n_gaps_seen = 0
        self.last_ready = float("nan")
        self._next_index = 0
        self._ready_after_pull: collections.deque[float] = collections.deque(maxlen=N_LATENCIES)
        self._timestamp_to_ready: collections.deque[float] = collections.deque(maxlen=N_LATENCIES)
        self._slot: Window | None = None
        self._marker_offset_s = 0.0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open the stream(s), build every stage, start the worker if asked."""
        if self._started:
            raise RuntimeError("WindowPipeline already started")
        if self.run_worker:
            super().start()
            return
        try:
            self._setup()
        except BaseException:
            self._on_stop()
            raise

    def _setup(self) -> None:
        import pylsl

        cfg = self.cfg
        self._reset_counts()
        self.marker_inlet = None
        thread = self.acquisition == "thread"
        # 1. the EEG stream's description (raises StreamNotFoundError listing what is visible);
        #    data starts flowing only once every stage is built (step 6)
        self.inlet.open()
        meta = self.meta = self.inlet.meta
        # 2. the model's channel/unit/rate contract (raises ContractError listing problems)
        contract = self.contract = ChannelContract(
            cfg.contract, meta.ch_names, meta.sfreq, meta.units,
            ch_types=meta.ch_types, labelled=meta.labelled,
        )
        self.ch_names = list(contract.ch_names_out)
        self.sfreq = float(contract.sfreq_out)
        logger.info("contract: %s", contract.describe())
        # 3. continuous stage, unless the stream was filtered at the source
        filtered, normalised = already_preprocessed(meta.preprocessed)
        if filtered:
            logger.warning(
                "STREAM %r IS ALREADY FILTERED (%s): the continuous stage (band-pass, notch, "
                "re-reference) is SKIPPED", meta.name, meta.preprocessed,
            )
            self.preprocessor = None
        else:
            self.preprocessor = StreamingPreprocessor(
                cfg.preprocessing, self.sfreq, contract.n_channels_out, self.ch_names
            )
        # 4. per-window stage: normalisation 'none' if the stream is normalised already
        pre = cfg.preprocessing
        if normalised:
            logger.warning(
                "STREAM %r IS ALREADY NORMALISED (%s): window normalisation is 'none' "
                "instead of %r", meta.name, meta.preprocessed, pre.normalization.mode,
            )
            pre = pre.model_copy(
                update={"normalization": pre.normalization.model_copy(update={"mode": "none"})}
            )
        if pre.normalization.mode == "dataset" and self.norm_stats is None:
            raise ValueError(
                "preprocessing.normalization.mode is 'dataset' but no NormStats were given "
                "(they come with the model bundle / training set)"
            )
        self.window_cfg = pre
        # 5. windower (and the marker stream for marker-locked windows)
        self.windower = make_windower(cfg.windowing, contract.n_channels_out, self.sfreq)
        if cfg.windowing.mode == "marker":
            # the matching rule: stream/markers.py (explicit name, same source, name prefix)
            info = find_marker_stream(
                meta, self.marker_name or cfg.windowing.marker_stream, cfg.inlet.resolve_timeout_s
            )
            self.marker_inlet = MarkerInlet(info.name(), self.inlet.cfg, source_id=info.source_id())
        # 6. warm up (first calls allocate and load), then let data flow: the EEG first, so
        #    that every marker received has its samples (a marker that came before the EEG
        #    subscription would only be dropped as "no onset sample")
        self._warm_up()
        self.inlet.start(thread=thread)
        if self.marker_inlet is not None:
            self.marker_inlet.start(thread=thread)
            self._marker_offset_s = marker_time_offset_s(self.marker_inlet.meta, meta)
        if contract.units_pending:  # no declared unit: the first samples decide, or refuse
            self._units_from_amplitude(thread)
        self._clock = pylsl.local_clock
        self._started = True

    def _units_from_amplitude(self, thread: bool) -> None:
        """``units: auto`` on a stream without units: decide from its first samples (or refuse)."""
        buffer, timeout = self.inlet.buffer, self.cfg.inlet.resolve_timeout_s
        n = max(2, int(round(UNIT_PROBE_S * self.meta.sfreq)))
        if thread:
            arrived = buffer.wait_for(n - 1, timeout)
        else:  # the caller's thread acquires: pull until the probe is in (or the timeout)
            deadline = time.monotonic() + timeout
            while buffer.total_written < n and time.monotonic() < deadline:
                if not self.inlet.acquire():
                    time.sleep(self.cfg.inlet.poll_interval_s)
            arrived = buffer.total_written >= n
        if not arrived:
            self.inlet.check()
            raise ContractError(
                f"stream {self.meta.name!r} declares no channel units and sent fewer than {n} samples "
                f"in {timeout:g} s to judge them by; set stream.contract.units to V or uV"
            )
        data, _, _, _ = buffer.read_since(0)  # a copy; poll() still starts at sample 0
        self.contract.resolve_units_from_amplitude(data)

    def _warm_up(self) -> None:
        t0 = time.perf_counter()
        n_out, n_times = self.contract.n_channels_out, self.cfg.windowing.n_times
        zeros = np.zeros((n_out, n_times), dtype=np.float32)
        if self.preprocessor is not None:  # a throwaway instance: the real one keeps rest state
            StreamingPreprocessor(self.cfg.preprocessing, self.sfreq, n_out, self.ch_names).process(zeros)
        stats = self.norm_stats
        if self.window_cfg.normalization.mode == "dataset" and stats is not None:
            zeros = zeros + stats.mean[:, None]
        preprocess_window(zeros, self.window_cfg, stats)
        logger.info("pipeline warmed up in %.1f ms", (time.perf_counter() - t0) * 1e3)

    def _on_stop(self) -> None:
        """Stop the inlets; raise the first error either had (after stopping both)."""
        errors: list[BaseException] = []
        for inlet in (self.marker_inlet, self.inlet):
            if inlet is None:
                continue
            try:
                inlet.stop()
            except BaseException as exc:  # keep stopping the others, raise after
                errors.append(exc)
        self._started = False
        with self._slot_cond:
            self._slot = None
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ processing

    def acquire(self) -> int:
        """Pull what has arrived into the inlets' buffers, in this thread (``acquisition='caller'``).

        :meth:`poll` calls it; call it directly only to pull without processing.
        Returns the EEG samples pulled.
        """
        if self.marker_inlet is not None:
            self.marker_inlet.acquire()
        return self.inlet.acquire()

    def check(self) -> None:
        """Re-raise a stored error of the worker or either inlet."""
        super().check()
        self.inlet.check()
        if self.marker_inlet is not None:
            self.marker_inlet.check()

    def poll(self) -> list[Window]:
        """Process everything that arrived since the last poll; return the new windows.

        Returns
        -------
        list of Window
            Oldest first; ``data`` after the per-window stage, shape
            ``(n_channels, n_times or resample_n_times)``, float32.

        Raises
        ------
        Exception
            An inlet's (or the worker's) stored error, as soon as it happened.
        """
        self.check()
        if not self._started:
            raise RuntimeError("WindowPipeline is not started")
        with self._poll_lock:
            if self.acquisition == "caller":
                self.acquire()
            # 1. new samples (a copy) and new markers
            data, ts, arrival, first, lost = self.inlet.buffer.read_since_with_arrival(self._next_index)
            if lost:
                self.n_lost_samples += lost
                logger.warning("pipeline fell behind: %d samples overwritten in the ring buffer", lost)
            n = data.shape[1]
            self._next_index = first + n
            new_markers = False
            if self.marker_inlet is not None:
                for t, payload in self.marker_inlet.pop_markers():
                    self.windower.add_marker(t + self._marker_offset_s, payload)
                    new_markers = True
            if n == 0 and not new_markers:
                return []
            # 2. split at discontinuities (outlet lost and recovered, ring overflow):
            #    windows never straddle one, and the filters restart from rest after it
            cuts = self._discontinuities(first, n, lost > 0)
            windows: list[Window] = []
            starts = sorted({0, *cuts})
            for lo, hi in zip(starts, [*starts[1:], n], strict=True):
                if lo in cuts:
                    self._restart_segment()
                if hi > lo or (new_markers and hi == n):
                    windows.extend(self._process(data[:, lo:hi], ts[lo:hi]))
            # 6. per-window stage
            out = [
                dataclasses.replace(w, data=preprocess_window(w.data, self.window_cfg, self.norm_stats))
                for w in windows
            ]
            if out:
                self._record_latency(out, ts, arrival)
            self.n_windows += len(out)
            return out

    def _discontinuities(self, first: int, n: int, overflowed: bool) -> list[int]:
        """Offsets in this read (0..n-1) where a new segment starts."""
        cuts = {0} if overflowed and self._n_out else set()
        gaps = self.inlet.gaps
        while self._n_gaps_seen < len(gaps) and gaps[self._n_gaps_seen].at_index < first + n:
            at = gaps[self._n_gaps_seen].at_index
            if at >= first and (at > first or self._n_out):
                cuts.add(at - first)
            self._n_gaps_seen += 1
        return sorted(cuts)

    def _restart_segment(self) -> None:
        self.contract.reset()
        if self.preprocessor is not None:
            self.preprocessor.reset()
        if self.cfg.windowing.mode == "sliding":
            # marker windows are located by timestamp; sliding ones restart after the gap
            self.windower.reset()
            self._segment_start = self._n_out
        self.n_segments += 1
        logger.warning("discontinuity in the stream: filters and windows restart at sample %d", self._n_out)

    def _process(self, data: np.ndarray, ts: np.ndarray) -> list[Window]:
        # 3. contract: model channels, volts, model rate (its work array, consumed at once)
        y, ty = self.contract.apply(data, ts, copy=False)
        # 4. continuous stage
        if self.preprocessor is not None and y.shape[1]:
            y = self.preprocessor.process(y)
        # 5. cut by sample count (the windower copies what it keeps)
        windows = self.windower.push(y, ty)
        self._n_out += y.shape[1]
        if self._segment_start:
            windows = [dataclasses.replace(w, first_sample=w.first_sample + self._segment_start)
                       for w in windows]
        return windows

    def _record_latency(self, windows: list[Window], ts: np.ndarray, arrival: np.ndarray) -> None:
        # the window's last sample arrived with the first input sample stamped at or after it
        if ts.size == 0:
            return
        now = self.last_ready = self._clock()
        stamps = [w.timestamp for w in windows]
        pos = np.searchsorted(ts, stamps, side="left")
        pos = np.clip(pos, 0, ts.size - 1)
        for p, stamp in zip(pos, stamps, strict=True):
            if np.isfinite(arrival[p]):
                self._ready_after_pull.append(now - float(arrival[p]))
            self._timestamp_to_ready.append(now - float(stamp))

    def latest(self, timeout: float = 0.0) -> Window | None:
        """Take the newest window from the one-slot holder (worker mode).

        Waits up to ``timeout`` seconds for one; returns None if none came.
        A window taken is removed; windows replaced before being taken are
        counted in ``n_dropped_windows``.

        Raises
        ------
        Exception
            The worker's or an inlet's stored error (instead of None forever).
        """
        self.check()
        with self._slot_cond:
            if self._slot is None and timeout > 0:
                self._slot_cond.wait_for(lambda: self._slot is not None or self._error is not None
                                         or not self.running, timeout)
            window, self._slot = self._slot, None
        if window is None:
            self.check()
        return window

    def _run(self) -> None:
        buffer = self.inlet.buffer
        caller = self.acquisition == "caller"
        wait = self.cfg.inlet.poll_interval_s
        try:
            while not self.stopping:
                if caller:
                    windows = self.poll()
                    if not windows and self.inlet.buffer.total_written <= self._next_index:
                        self._sleep(wait)
                else:
                    # wake on new data rather than on a timer
                    buffer.wait_for(self._next_index, 0.05)
                    windows = self.poll()
                if not windows:
                    continue
                with self._slot_cond:
                    dropped = len(windows) - 1 + (self._slot is not None)
                    self._slot = windows[-1]
                    self._slot_cond.notify_all()
                if dropped:
                    self.n_dropped_windows += dropped
        except BaseException as exc:
            self._error = exc  # before waking a consumer in latest(), which re-raises it
            raise
        finally:
            with self._slot_cond:
                self._slot_cond.notify_all()

    # ------------------------------------------------------------------ figures

    def latencies_s(self) -> np.ndarray:
        """Window-ready latencies: seconds from each window's last sample being pulled to the window being ready."""
        return np.asarray(self._ready_after_pull, dtype=np.float64)

    def timestamp_to_ready_s(self) -> np.ndarray:
        """Seconds from each window's last sample's LSL timestamp to the window being ready."""
        return np.asarray(self._timestamp_to_ready, dtype=np.float64)

    @property
    def stats(self) -> dict[str, Any]:
        ready = self.latencies_s() * 1e3
        e2e = self.timestamp_to_ready_s() * 1e3
        inlet = self.inlet

        def pct(a: np.ndarray, q: float) -> float | None:
            return float(np.percentile(a, q)) if a.size else None

        return {
            "n_windows": self.n_windows,
            "n_dropped_windows": self.n_dropped_windows,
            "n_received": inlet.n_received,
            "n_lost_samples": self.n_lost_samples,
            "n_nonfinite": inlet.n_nonfinite,
            "n_nonmonotonic": inlet.n_nonmonotonic,
            "n_overflow": inlet.n_overflow,
            "n_segments": self.n_segments,
            "n_reconnects": inlet.n_reconnects,
            "gaps": [dataclasses.asdict(g) for g in inlet.gaps],
            "n_gap_samples": inlet.n_gap_samples,
            "gap_seconds": inlet.gap_seconds,
            "n_markers": 0 if self.marker_inlet is None else self.marker_inlet.n_received,
            "n_markers_dropped": getattr(self.windower, "n_dropped", 0),
            "n_markers_pending": getattr(self.windower, "n_pending", 0),
            # the last sample pulled off the network -> the window ready (this process's cost)
            "window_ready_ms_p50": pct(ready, 50),
            "window_ready_ms_p99": pct(ready, 99),
            # the last sample's LSL timestamp -> the window ready (outlet chunking + network too)
            "timestamp_to_ready_ms_p50": pct(e2e, 50),
            "timestamp_to_ready_ms_p99": pct(e2e, 99),
        }

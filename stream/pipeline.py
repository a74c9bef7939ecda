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
from typing import Any

import numpy as np

from .config import StreamConfig
from .contract import ChannelContract, ContractError
from .inlet import EEGInlet, MarkerInlet, StreamMeta
from .markers import find_marker_stream, marker_time_offset_s
from .preprocessing import NormStats, StreamingPreprocessor, preprocess_window
from .windowing import Window, make_windower

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


class WindowPipeline:
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

    Threading: without a worker, :meth:`poll` runs in the caller's thread (one
    caller). With ``run_worker=True`` the worker owns :meth:`poll` and
    consumers call :meth:`latest`. Errors from the inlet or the worker are
    re-raised from :meth:`stop`.
    """

    def __init__(
        self,
        cfg: StreamConfig,
        norm_stats: NormStats | None = None,
        eeg_name: str | None = None,
        marker_name: str | None = None,
        *,
        run_worker: bool = False,
    ) -> None:
        self.cfg = cfg
        self.norm_stats = norm_stats
        inlet_cfg = cfg.inlet if eeg_name is None else cfg.inlet.model_copy(update={"name": eeg_name})
        self.inlet = EEGInlet(inlet_cfg)
        self.eeg_name = eeg_name
        self.marker_name = marker_name
        self.run_worker = run_worker
        self.marker_inlet: MarkerInlet | None = None
        self.meta: StreamMeta | None = None
        self.contract: ChannelContract | None = None
        self.preprocessor: StreamingPreprocessor | None = None
        self.window_cfg = cfg.preprocessing
        self.windower: Any = None
        self.ch_names: list[str] = []
        self.sfreq = float("nan")
        self.n_windows = 0
        self.n_dropped_windows = 0
        self.n_lost_samples = 0
        self.n_segments = 1
        self._n_out = 0
        self._segment_start = 0
        self._n_gaps_seen = 0
        self.last_ready = float("nan")
        self._next_index = 0
        self._latencies: collections.deque[float] = collections.deque(maxlen=N_LATENCIES)
        self._poll_lock = threading.Lock()
        self._slot: Window | None = None
        self._slot_cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._started = False
        self._marker_offset_s = 0.0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open the stream(s), build every stage, start the worker if asked."""
        import pylsl

        if self._started:
            raise RuntimeError("WindowPipeline already started")
        cfg = self.cfg
        # 1. the EEG stream's description (raises StreamNotFoundError listing what is visible);
        #    data starts flowing only once every stage is built (step 6)
        self.inlet.open()
        try:
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
                self.marker_inlet.start()
                self._marker_offset_s = marker_time_offset_s(self.marker_inlet.meta, meta)
            # 6. warm up (first calls allocate and load), then let data flow
            self._warm_up()
            self.inlet.start()
            if contract.units_pending:  # no declared unit: the first samples decide, or refuse
                self._units_from_amplitude()
        except BaseException:
            if self.marker_inlet is not None:
                self.marker_inlet.stop()
            self.inlet.stop()
            raise
        self._next_index = 0
        self._clock = pylsl.local_clock
        self._started = True
        # 7. the worker: poll continuously, newest window wins
        if self.run_worker:
            self._stop.clear()
            self._worker = threading.Thread(target=self._run, name="WindowPipeline", daemon=True)
            self._worker.start()

    def _units_from_amplitude(self) -> None:
        """``units: auto`` on a stream without units: decide from its first samples (or refuse)."""
        buffer, timeout = self.inlet.buffer, self.cfg.inlet.resolve_timeout_s
        n = max(2, int(round(UNIT_PROBE_S * self.meta.sfreq)))
        if not buffer.wait_for(n - 1, timeout):
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

    def stop(self) -> None:
        """Stop the worker and the inlets; re-raise the first error any of them had."""
        errors: list[BaseException] = []
        worker, self._worker = self._worker, None
        if worker is not None:
            self._stop.set()
            worker.join(5.0)
        if self._error is not None:
            errors.append(self._error)
            self._error = None
        for inlet in (self.marker_inlet, self.inlet):
            if inlet is None:
                continue
            try:
                inlet.stop()
            except BaseException as exc:  # keep stopping the others, raise after
                errors.append(exc)
        self._started = False
        if errors:
            raise errors[0]

    def __enter__(self) -> WindowPipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ processing

    def poll(self) -> list[Window]:
        """Process everything that arrived since the last poll; return the new windows.

        Returns
        -------
        list of Window
            Oldest first; ``data`` after the per-window stage, shape
            ``(n_channels, n_times or resample_n_times)``, float32.
        """
        if not self._started:
            raise RuntimeError("WindowPipeline is not started")
        with self._poll_lock:
            self.inlet.check()
            # 1. new samples (a copy) and new markers
            data, ts, arrival, first, lost = self.inlet.buffer.read_since_with_arrival(self._next_index)
            if lost:
                self.n_lost_samples += lost
                logger.warning("pipeline fell behind: %d samples overwritten in the ring buffer", lost)
            n = data.shape[1]
            self._next_index = first + n
            new_markers = False
            if self.marker_inlet is not None:
                self.marker_inlet.check()
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
        # 3. contract: model channels, volts, model rate
        y, ty = self.contract.apply(data, ts)
        # 4. continuous stage
        if self.preprocessor is not None and y.shape[1]:
            y = self.preprocessor.process(y)
        # 5. cut by sample count
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
        pos = np.searchsorted(ts, [w.timestamp for w in windows], side="left")
        pos = np.clip(pos, 0, ts.size - 1)
        for p in pos:
            if np.isfinite(arrival[p]):
                self._latencies.append(now - float(arrival[p]))

    def latest(self, timeout: float = 0.0) -> Window | None:
        """Take the newest window from the one-slot holder (worker mode).

        Waits up to ``timeout`` seconds for one; returns None if none came.
        A window taken is removed; windows replaced before being taken are
        counted in ``n_dropped_windows``.
        """
        with self._slot_cond:
            if self._slot is None and timeout > 0:
                self._slot_cond.wait_for(lambda: self._slot is not None, timeout)
            window, self._slot = self._slot, None
        return window

    def _run(self) -> None:
        try:
            buffer = self.inlet.buffer
            while not self._stop.is_set():
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
        except BaseException as exc:  # stored, re-raised from stop()
            logger.error("pipeline worker failed: %s", exc)
            self._error = exc

    # ------------------------------------------------------------------ figures

    def latencies_s(self) -> np.ndarray:
        """Seconds from each window's last sample being pulled to the window being ready."""
        return np.asarray(self._latencies, dtype=np.float64)

    @property
    def stats(self) -> dict[str, Any]:
        lat = self.latencies_s()
        inlet = self.inlet
        return {
            "n_windows": self.n_windows,
            "n_dropped_windows": self.n_dropped_windows,
            "n_received": inlet.n_received,
            "n_lost_samples": self.n_lost_samples,
            "n_nonfinite": inlet.n_nonfinite,
            "n_nonmonotonic": inlet.n_nonmonotonic,
            "n_overflow": inlet.n_overflow,
            "gaps": [dataclasses.asdict(g) for g in inlet.gaps],
            "n_gap_samples": inlet.n_gap_samples,
            "n_markers": 0 if self.marker_inlet is None else self.marker_inlet.n_received,
            "latency_ms_p50": float(np.percentile(lat, 50) * 1e3) if lat.size else None,
            "latency_ms_p99": float(np.percentile(lat, 99) * 1e3) if lat.size else None,
        }

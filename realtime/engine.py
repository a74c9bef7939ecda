"""The real-time engine: windows in, reconstructions out, published as snapshots.

Three threads, each a :class:`~neuroimagen.stream.worker.Worker`, with a
one-slot, latest-wins holder between stages (never an unbounded queue; a
window or frame replaced before it was taken is counted as dropped)::

    acquisition                      inference                    publisher
    WindowPipeline.poll()  --slot--> backend(window) --slot-->   Snapshot (seq + 1),
    (pull, preprocess),              (extractors,                 scorer, session
    input health                      diffusion)                  (PNG, top-k JSONL)

Readers (the headless writer, the terminal table, the GUI) call
:meth:`Engine.snapshot` or :meth:`Engine.wait_snapshot`: they get the newest
immutable :class:`Snapshot` and never block the engine.

Modes follow the pipeline's windowing: ``sliding`` (a window every hop:
continuous reconstruction) or ``marker`` (one window, hence one reconstruction,
per stimulus marker).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from neuroimagen.stream.worker import Worker

from .backend import Backend, BackendOutput
from .config import RealtimeConfig
from .health import InputHealth
from .metrics import EngineMetrics

logger = logging.getLogger(__name__)

__all__ = ["Engine", "Frame", "LatestSlot", "Scorer", "Snapshot"]

T = TypeVar("T")
#: how often the published snapshot's metrics are recomputed
SUMMARY_INTERVAL_S = 0.25


class LatestSlot(Generic[T]):
    """A one-slot holder: ``put`` replaces (and counts) what was not taken; ``take`` waits.

    Notes
    -----
    Threading: one producer, one consumer. :meth:`wake` releases a waiting
    consumer (on stop).
    """

    def __init__(self) -> None:
        self._item: T | None = None
        self._cond = threading.Condition()
        self.n_replaced = 0

    def put(self, item: T) -> bool:
        """Hold ``item``; True when it replaced one that was never taken (a drop)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            if replaced:
                self.n_replaced += 1
            self._cond.notify_all()
        return replaced

    def take(self, timeout: float) -> T | None:
        """The held item (removed), waiting up to ``timeout`` seconds; None if none came."""
        with self._cond:
            if self._item is None and timeout > 0:
                self._cond.wait(timeout)
            item, self._item = self._item, None
        return item

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


@dataclass(frozen=True)
class Frame:
    """One reconstruction, ready to show.

    Attributes
    ----------
    seq : int
        1, 2, ... in publication order.
    timestamp : float
        LSL timestamp (local clock, s) of the window's last sample.
    first_sample : int
        Index of the window's first sample in the stream (model rate).
    marker : dict
        The stimulus marker's payload (marker mode), e.g. ``{"image", "label", "class"}``; empty in sliding mode.
    image : ndarray, uint8 (H, W, 3)
    saliency : ndarray, uint8 (S, S, 3)
    class_scores : ndarray, float32 (K,)
    top_k : list of (str, float)
        The ``realtime.top_k`` best classes and their scores, best first.
    timings_ms : dict
        ``pull``, ``preprocess``, ``extractors``, ``diffusion``, ``publish``, ``end_to_end``.
    scores : dict
        The live scorer's per-frame figures (empty without a scorer or ground truth).
    """

    seq: int
    timestamp: float
    first_sample: int
    marker: Mapping[str, Any]
    image: np.ndarray
    saliency: np.ndarray
    class_scores: np.ndarray
    top_k: list[tuple[str, float]]
    timings_ms: dict[str, float]
    scores: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """What readers render: the newest frame with the engine's figures at that moment.

    Attributes
    ----------
    seq : int
        The frame's ``seq`` (0 before the first frame); readers compare it to skip repeats.
    frame : Frame | None
    metrics : dict
        :meth:`EngineMetrics.summary` plus ``health`` and ``scores`` (live scorer summary).
    recent_eeg : ndarray, float32 (n_channels, n_times)
        The newest ``realtime.recent_eeg_s`` of raw input, in the stream's units
        and channel order (``eeg_ch_names``).
    eeg_ch_names : list of str
    sfreq : float
        Rate of ``recent_eeg`` (the stream's).
    status : str
        The backend's status line (says FALLBACK when a fallback is in use).
    """

    seq: int
    frame: Frame | None
    metrics: dict[str, Any]
    recent_eeg: np.ndarray
    eeg_ch_names: list[str]
    sfreq: float
    status: str


class Scorer(Protocol):
    """Live scoring, injected by the CLI (realtime never imports training.eval).

    ``__call__`` runs in the publisher thread once per frame and returns that
    frame's figures (``{}`` when the frame has no ground truth); ``summary``
    returns the running figures (class accuracy, SSIM, n-way ...), JSON-ready.
    """

    def __call__(self, frame: Frame) -> dict[str, Any]: ...

    def summary(self) -> dict[str, Any]: ...


@dataclass
class _Job:
    window: Any
    pull_ms: float
    preprocess_ms: float


@dataclass
class _Result:
    job: _Job
    out: BackendOutput


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    return (np.clip(image[0], 0.0, 1.0).transpose(1, 2, 0) * 255.0 + 0.5).astype(np.uint8)


# --------------------------------------------------------------------------- threads


class _Acquisition(Worker):
    """Pull, preprocess and window in this thread; the newest window goes to the slot."""

    def __init__(self, engine: Engine) -> None:
        super().__init__("engine-acquisition")
        self.engine = engine

    def _setup(self) -> None:
        e = self.engine
        e.pipeline.start()
        e.health = InputHealth(e.cfg.health, e.pipeline)

    def _on_stop(self) -> None:
        self.engine.pipeline.stop()

    def _run(self) -> None:
        e = self.engine
        pipe, metrics = e.pipeline, e.metrics
        wait_s = max(pipe.cfg.inlet.poll_interval_s, 0.001)
        while not self.stopping:
            # 1. pull what arrived (this thread is the pipeline's acquisition thread)
            t0 = time.perf_counter()
            n_pulled = pipe.acquire()
            t1 = time.perf_counter()
            # 2. contract, filters, windows, per-window stage
            windows = pipe.poll()
            t2 = time.perf_counter()
            e.health.check()
            if windows:
                metrics.count("n_windows", len(windows))
                # latest wins: older windows of this poll are dropped, counted
                if len(windows) > 1:
                    metrics.count("n_dropped_windows", len(windows) - 1)
                job = _Job(windows[-1], (t1 - t0) * 1e3, (t2 - t1) * 1e3)
                if e.window_slot.put(job):
                    metrics.count("n_dropped_windows")
            elif not n_pulled:  # nothing arrived: yield the core until the next poll
                self._sleep(wait_s)


class _Inference(Worker):
    """Take the newest window, run the backend's frame, hand the result on (latest wins)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__("engine-inference")
        self.engine = engine

    def _run(self) -> None:
        e = self.engine
        while not self.stopping:
            job = e.window_slot.take(0.05)
            if job is None:
                continue
            eeg = job.window.data[None]
            out = e.backend(eeg)
            if e.result_slot.put(_Result(job, out)):
                e.metrics.count("n_dropped_frames")


class _Publisher(Worker):
    """Build the snapshot, publish it, then score and write the session."""

    def __init__(self, engine: Engine) -> None:
        super().__init__("engine-publisher")
        self.engine = engine

    def _run(self) -> None:
        e = self.engine
        while not self.stopping:
            result = e.result_slot.take(0.05)
            if result is not None:
                e._publish(result)


# --------------------------------------------------------------------------- engine


class Engine:
    """Windows from a pipeline through a backend to published snapshots.

    Parameters
    ----------
    pipeline : WindowPipeline
        Not started, built with ``acquisition="caller"`` (the engine's
        acquisition thread pulls) and ``run_worker=False``.
    backend : Backend
    cfg : RealtimeConfig
        ``top_k``, ``warmup_frames``, ``recent_eeg_s``, ``health``.
    scorer : Scorer | None
        Live scoring (the CLI wires in training.eval's metrics).
    on_frame : callable | None
        Called in the publisher thread with each published :class:`Frame`,
        after the snapshot (the session writer).

    Notes
    -----
    Lifecycle: :meth:`start` warms the backend up (logged), starts the
    publisher, the inference worker and the acquisition (which opens the
    streams); :meth:`stop` stops them in the reverse order and re-raises the
    first error any had. :meth:`check` re-raises a stored error at once.
    Everything else may be called from any thread.
    """

    def __init__(self, pipeline: Any, backend: Backend, cfg: RealtimeConfig | None = None, *,
                 scorer: Scorer | None = None, on_frame: Callable[[Frame], None] | None = None) -> None:
        self.pipeline = pipeline
        self.backend = backend
        self.cfg = cfg or RealtimeConfig()
        self.scorer = scorer
        self.on_frame = on_frame
        self.metrics = EngineMetrics()
        self.health: InputHealth | None = None
        self.window_slot: LatestSlot[_Job] = LatestSlot()
        self.result_slot: LatestSlot[_Result] = LatestSlot()
        self.warmup_s: float | None = None
        self._workers = [_Publisher(self), _Inference(self), _Acquisition(self)]
        self._snapshot = Snapshot(0, None, {}, np.zeros((0, 0), np.float32), [], float("nan"), backend.status)
        self._snap_cond = threading.Condition()
        self._seq = 0
        self._started = False
        self._summary: dict[str, Any] = {}
        self._next_summary = 0.0
        names = backend.spec.class_names
        self._class_names = list(names)
        self._top_k = min(self.cfg.top_k, len(names))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Warm up, then start the publisher, inference and acquisition threads."""
        if self._started:
            raise RuntimeError("Engine already started")
        # 1. warm up before the loop, and say how long it took
        self.warmup_s = self.backend.warmup(self.cfg.warmup_frames)
        logger.info("backend %s warmed up in %.0f ms (%d frames)", self.backend.status,
                    self.warmup_s * 1e3, self.cfg.warmup_frames)
        self.metrics.extra["warmup_ms"] = self.warmup_s * 1e3
        self.metrics.extra["backend"] = self.backend.status
        # 2. consumers first, so the first window finds them running
        started: list[Worker] = []
        try:
            for worker in self._workers:
                worker.start()
                started.append(worker)
        except BaseException:
            for worker in reversed(started):
                try:
                    worker.stop()
                except BaseException as exc:  # the start error is the one to raise
                    logger.error("%s: %s while stopping after a failed start", worker.thread_name, exc)
            raise
        self.metrics.restart_clock()
        self._started = True

    def stop(self) -> None:
        """Stop acquisition, inference, publisher (in that order); re-raise the first error."""
        errors: list[BaseException] = []
        for worker in reversed(self._workers):
            try:
                worker.stop()
            except BaseException as exc:
                errors.append(exc)
            self.window_slot.wake()
            self.result_slot.wake()
        self._started = False
        # what was cut but never shown: a window still in its slot when acquisition stopped
        for slot in (self.window_slot, self.result_slot):
            if slot.take(0.0) is not None:
                self.metrics.count("n_unfinished_at_stop")
        if errors:
            raise errors[0]

    def check(self) -> None:
        """Re-raise a worker's (or the pipeline's) stored error now."""
        for worker in self._workers:
            worker.check()
        self.pipeline.check()

    def __enter__(self) -> Engine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ readers

    def snapshot(self) -> Snapshot:
        """The newest snapshot (never blocks on the engine's work)."""
        return self._snapshot

    def wait_snapshot(self, after_seq: int, timeout: float) -> Snapshot:
        """The first snapshot with ``seq > after_seq``, or the current one after ``timeout`` s."""
        with self._snap_cond:
            self._snap_cond.wait_for(lambda: self._snapshot.seq > after_seq, timeout)
            return self._snapshot

    def summary(self) -> dict[str, Any]:
        """Every figure now: metrics, pipeline and input health, live scores."""
        out = self.metrics.summary()
        out["pipeline"] = {k: v for k, v in self.pipeline.stats.items() if k != "gaps"}
        out["health"] = self.health.summary() if self.health is not None else {}
        out["scores"] = self.scorer.summary() if self.scorer is not None else {}
        return out

    # ------------------------------------------------------------------ publisher

    def _publish(self, result: _Result) -> None:
        import pylsl

        t0 = time.perf_counter()
        job, out = result.job, result.out
        window = job.window
        scores = out.class_scores[0]
        order = np.argsort(scores)[::-1][: self._top_k]
        timings = {"pull": job.pull_ms, "preprocess": job.preprocess_ms, **out.timings_ms}
        self._seq += 1
        frame = Frame(
            seq=self._seq, timestamp=float(window.timestamp), first_sample=int(window.first_sample),
            marker=dict(window.meta), image=_to_uint8(out.image), saliency=_to_uint8(out.saliency),
            class_scores=scores, top_k=[(self._class_names[i], float(scores[i])) for i in order],
            timings_ms=timings,
        )
        recent, ch_names, sfreq = self._recent_eeg()
        # 1. publish: the frame is ready to show from here
        snapshot = Snapshot(frame.seq, frame, self._summary, recent, ch_names, sfreq, self.backend.status)
        with self._snap_cond:
            self._snapshot = snapshot
            self._snap_cond.notify_all()
        e2e_ms = (pylsl.local_clock() - frame.timestamp) * 1e3
        timings["publish"] = (time.perf_counter() - t0) * 1e3
        timings["end_to_end"] = e2e_ms
        m = self.metrics
        m.frame_done(timings)
        # 2. live scores, the session, then the figures for the next snapshot
        if self.scorer is not None:
            try:
                frame.scores.update(self.scorer(frame) or {})
            except Exception as exc:  # a scoring bug must not stop reconstruction; it is counted
                m.count("n_scorer_errors")
                logger.error("live scorer failed on frame %d: %s", frame.seq, exc)
        if self.on_frame is not None:
            self.on_frame(frame)
        now = time.monotonic()
        if now >= self._next_summary:  # percentiles over thousands of values: not every frame
            self._next_summary = now + SUMMARY_INTERVAL_S
            self._summary = self.summary()
        self._snapshot = Snapshot(frame.seq, frame, self._summary, recent, ch_names, sfreq,
                                  self.backend.status)

    def _recent_eeg(self) -> tuple[np.ndarray, list[str], float]:
        meta = self.pipeline.meta
        if meta is None:
            return np.zeros((0, 0), np.float32), [], float("nan")
        n = int(round(self.cfg.recent_eeg_s * meta.sfreq))
        data, _, _ = self.pipeline.inlet.buffer.latest(n)
        return data, list(meta.ch_names), float(meta.sfreq)

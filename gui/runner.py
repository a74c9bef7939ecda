"""The engine behind the GUI: one live run on a worker thread, polled, never waited on.

:class:`EngineRunner` is a :class:`~neuroimagen.stream.worker.Worker` whose
thread loads the bundle and backend, then runs
:func:`neuroimagen.realtime.live.run_live` until stopped. The GUI thread only
reads what it publishes: :attr:`EngineRunner.engine` (its ``snapshot()`` and
its inlet's ring buffer) and :attr:`EngineRunner.phase`. Loading, warm-up and
stopping happen in this thread, so the window keeps drawing meanwhile.

Decision (issue 12): the engine runs in the GUI's process, on its own threads.
The transport is therefore plain memory: an immutable ``Snapshot`` swapped by
reference (frames, saliency, top-k, metrics) and the engine inlet's
``RingBuffer`` read with ``latest()`` (a copy under its lock) for the scope.
The torch work releases the GIL; the GUI's redraw rate adapts to the load
(``gui.window``), so the engine is not slowed down. The measured cost is in
the README.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neuroimagen.realtime.config import RealtimeConfig
from neuroimagen.stream.config import StreamConfig
from neuroimagen.stream.worker import Worker

logger = logging.getLogger(__name__)

__all__ = ["EngineRunner"]


class EngineRunner(Worker):
    """Run a bundle's engine on the stream ``stream_name`` until :meth:`stop`.

    Parameters
    ----------
    bundle : path or Bundle
        A bundle folder (loaded and verified in the thread) or a loaded bundle.
    stream_name : str
        The EEG stream (markers: ``<name>-markers``).
    stream_cfg : StreamConfig
    rt_cfg : RealtimeConfig
        Backend, device, mode, hop, steps and strength of this run.
    out_dir : path
        The engine's session folder (frames, top-k, metrics).
    resolved_config : mapping
    scorer : Scorer | None

    Attributes
    ----------
    engine : Engine | None
        Set while the engine runs (read from the GUI thread).
    bundle : Bundle | None
        Set once loaded.
    marker_inlet : MarkerInlet | None
        The stream's markers for the scope's lines (None when it has none).
    phase : str
        ``loading``, ``warming up``, ``running``, ``stopped``.
    summary : dict
        The final metrics once the run ended.

    Notes
    -----
    Errors in the thread (no such stream, a contract mismatch, a backend that
    cannot load) are re-raised from :meth:`check` and :meth:`stop`; the window
    polls :meth:`check` every frame and shows them.
    """

    def __init__(self, bundle: Any, stream_name: str, stream_cfg: StreamConfig, rt_cfg: RealtimeConfig, *,
                 out_dir: str | Path, resolved_config: Mapping[str, Any] | None = None,
                 scorer: Any = None) -> None:
        super().__init__(f"gui-engine[{stream_name}]", stop_timeout_s=60.0)
        self._bundle_arg = bundle
        self.stream_name = stream_name
        self.stream_cfg = stream_cfg
        self.rt_cfg = rt_cfg
        self.out_dir = Path(out_dir)
        self.resolved_config = dict(resolved_config or {})
        self.scorer = scorer
        self.engine: Any = None
        self.bundle: Any = None
        self.backend: Any = None
        self.marker_inlet: Any = None
        self.phase = "loading"
        self.summary: dict[str, Any] = {}

    # ------------------------------------------------------------------ what the window reads

    def source(self) -> tuple[Any, Any, Any, float] | None:
        """(inlet, ring buffer, stream meta, scale to volts) of the engine's EEG, once connected."""
        engine = self.engine
        if engine is None or engine.pipeline.inlet.buffer is None or engine.pipeline.meta is None:
            return None
        pipe = engine.pipeline
        contract = getattr(pipe, "contract", None)
        return pipe.inlet, pipe.inlet.buffer, pipe.meta, float(getattr(contract, "scale_to_volts", 1.0))

    def latest_snapshot(self) -> Any:
        engine = self.engine
        return None if engine is None else engine.snapshot()

    def model_info(self) -> dict[str, Any] | None:
        b = self.bundle
        if b is None:
            return None
        m = b.manifest
        return {"name": m.name, "description": m.description, "simulated": m.simulated, "path": str(b.path)}

    def _on_engine(self, engine: Any) -> None:
        self.engine = engine
        if engine is not None:
            self.phase = "running"

    def _run(self) -> None:
        from neuroimagen.realtime.backend import load_backend
        from neuroimagen.realtime.live import live_stream_config, run_live
        from neuroimagen.stream.inlet import MarkerInlet, StreamNotFoundError
        from neuroimagen.training.models.bundle import load_bundle

        # 1. bundle (verified) and backend
        self.phase = "loading"
        bundle = self._bundle_arg
        self.bundle = bundle = load_bundle(bundle) if isinstance(bundle, str | Path) else bundle
        if self.stopping:
            return
        self.backend = backend = load_backend(bundle, self.rt_cfg)
        try:
            # 2. the stream's markers for the scope (optional: a stream may have none)
            cfg = live_stream_config(bundle, self.stream_cfg, self.rt_cfg, eeg_name=self.stream_name)
            cfg = cfg.model_copy(update={"inlet": cfg.inlet.model_copy(update={"source_id": None})})
            marker_name = cfg.windowing.marker_stream or f"{self.stream_name}-markers"
            inlet_cfg = cfg.inlet.model_copy(update={"resolve_timeout_s": 1.0})
            markers = MarkerInlet(marker_name, inlet_cfg)
            try:
                markers.start()
                self.marker_inlet = markers
            except StreamNotFoundError:
                logger.info("no marker stream %r: the scope draws no stimulus lines", marker_name)
            # 3. the live run (warm-up happens in engine.start, in this thread)
            self.phase = "warming up"
            run_live(bundle, backend, cfg, self.rt_cfg, out_dir=self.out_dir,
                     resolved_config=self.resolved_config, scorer=self.scorer,
                     should_stop=lambda: self.stopping, summary_out=self.summary,
                     on_engine=self._on_engine)
        finally:
            self.phase = "stopped"
            backend.close()
            if self.marker_inlet is not None:
                self.marker_inlet.stop()


class ProcessRunner:
    """The engine in a child process (``neuroimagen engine-process``), snapshots through shared memory.

    Same reader interface as :class:`EngineRunner` (``phase``, ``check``, ``stop``,
    ``source``, ``latest_snapshot``, ``model_info``, ``marker_inlet``, ``summary``).
    The scope's EEG comes from this process's own inlet on the LSL stream (LSL is
    the transport for samples); frames, saliency, top-k and metrics come through
    a :class:`~.transport.SnapshotReader` block (a seqlock, never waited on).

    spawner : ProcessSpawner | None
        Starts the engine's process (see :mod:`.priority`); None: this thread does.

    Notes
    -----
    Threading: the GUI thread calls everything; the inlets have no threads. A child that exits with an error is reported by :meth:`check`
    with the tail of its stderr.
    """

    def __init__(self, bundle: Any, stream_name: str, stream_cfg: StreamConfig, rt_cfg: RealtimeConfig, *,
                 out_dir: str | Path, resolved_config: Mapping[str, Any] | None = None,
                 scorer_spec: Mapping[str, Any] | None = None, spawner: Any = None) -> None:
        self.bundle_path = Path(bundle)
        self.spawner = spawner
        self.stream_name = stream_name
        self.stream_cfg = stream_cfg
        self.rt_cfg = rt_cfg
        self.out_dir = Path(out_dir)
        self.resolved_config = dict(resolved_config or {})
        self.scorer_spec = dict(scorer_spec or {})
        self.phase = "starting"
        self.summary: dict[str, Any] = {}
        self.marker_inlet: Any = None
        self.inlet: Any = None
        self.proc: Any = None
        self.reader: Any = None
        self._info: dict[str, Any] = {}
        self._snapshot: Any = None
        self._stderr: Any = None
        self._error: BaseException | None = None
        self._opener: _ScopeInletOpener | None = None

    def start(self) -> None:
        import json
        import subprocess
        import sys
        import tempfile

        from .transport import SnapshotReader

        self.reader = SnapshotReader()
        spec = {
            "bundle": str(self.bundle_path), "stream": self.stream_name, "shm": self.reader.name,
            "stream_cfg": self.stream_cfg.model_dump(mode="json"), "rt_cfg": self.rt_cfg.model_dump(mode="json"),
            "out_dir": str(self.out_dir), "resolved_config": self.resolved_config, "scorer": self.scorer_spec,
        }
        self._stderr = tempfile.TemporaryFile()
        script = Path(sys.executable).with_name("neuroimagen")
        cmd = [str(script)] if script.is_file() else [sys.executable, "-c",
                                                      "from neuroimagen.realtime.cli import main; main()"]
        # from the spawner's thread when there is one: the engine keeps the priority the GUI gave up
        popen = self.spawner.popen if self.spawner is not None else subprocess.Popen
        self.proc = popen([*cmd, "engine-process", json.dumps(spec, default=str)],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr)

    # ------------------------------------------------------------------ polling

    def _poll(self) -> None:
        snap = self.reader.read() if self.reader is not None else None
        if snap is None:
            return
        info = snap.info
        self.phase = info.get("phase", self.phase)
        if "model" in info:
            self._info = info["model"]
        if info.get("summary") is not None:
            self.summary = info["summary"]
        if info.get("frame") is not None:
            from neuroimagen.realtime.engine import Frame, Snapshot

            f = info["frame"]
            frame = Frame(seq=f["seq"], timestamp=f["timestamp"], first_sample=f["first_sample"],
                          marker=f["marker"], image=snap.image, saliency=snap.saliency,
                          class_scores=np.asarray(f["class_scores"], np.float32),
                          top_k=[tuple(t) for t in f["top_k"]], timings_ms=f["timings_ms"])
            self._snapshot = Snapshot(frame.seq, frame, info.get("metrics") or {}, np.zeros((0, 0), np.float32),
                                      [], float("nan"), info.get("status", ""))

    def check(self) -> None:
        if self._error is not None:
            raise self._error
        self._poll()
        if self.proc is not None and self.proc.poll() not in (None, 0):
            self._stderr.seek(0)
            tail = self._stderr.read().decode(errors="replace").strip().splitlines()[-3:]
            self._error = RuntimeError(f"engine process exited with {self.proc.returncode}: {' | '.join(tail)}")
            raise self._error
        if self.phase == "running" and self._opener is None:
            # resolving and subscribing can take seconds on a busy machine: not in the GUI thread
            self._opener = _ScopeInletOpener(self)
            self._opener.start()
        if self._opener is not None:
            self._opener.check()
        # 2. the scope's inlets have no threads: pulled here, once per tick (see _ScopeInletOpener)
        if self.inlet is not None:
            self.inlet.acquire()
        if self.marker_inlet is not None:
            self.marker_inlet.acquire()

    def source(self) -> tuple[Any, Any, Any, float] | None:
        inlet = self.inlet
        if inlet is None or inlet.buffer is None:
            return None
        return inlet, inlet.buffer, inlet.meta, float(self._info.get("scale_to_volts", 1.0))

    def latest_snapshot(self) -> Any:
        return self._snapshot

    def model_info(self) -> dict[str, Any] | None:
        return self._info or None

    def stop(self) -> None:
        """SIGTERM the child (it stops its engine cleanly and writes its final metrics), then close."""
        import signal
        import subprocess

        errors: list[BaseException] = []
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                errors.append(RuntimeError("engine process did not stop within 60 s; killed"))
        self._poll()
        if self._opener is not None:
            try:
                self._opener.stop()
            except BaseException as exc:
                errors.append(exc)
        for w in (self.inlet, self.marker_inlet):
            if w is not None:
                try:
                    w.stop()
                except BaseException as exc:
                    errors.append(exc)
        self.inlet = self.marker_inlet = None
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self.phase = "stopped"
        if errors:
            raise errors[0]


class _ScopeInletOpener(Worker):
    """Open the scope's own EEG (and marker) inlet on the stream, off the GUI thread, once.

    The inlets get no acquisition threads (``start(thread=False)``): the GUI thread
    pulls what arrived once per tick (:meth:`ProcessRunner.check`). An inlet thread
    polling every millisecond would wake this process 1000 times a second for a
    display that redraws 30 times, and each wake competes for the cores the
    engine's process needs.
    """

    def __init__(self, runner: ProcessRunner) -> None:
        super().__init__(f"gui-scope-inlet[{runner.stream_name}]", stop_timeout_s=30.0)
        self.runner = runner

    def _run(self) -> None:
        from neuroimagen.stream.inlet import EEGInlet, MarkerInlet, StreamNotFoundError

        r = self.runner
        cfg = r.stream_cfg.inlet.model_copy(update={"name": r.stream_name, "source_id": None})
        inlet = EEGInlet(cfg)
        inlet.start(thread=False)
        r.inlet = inlet
        markers = MarkerInlet(f"{r.stream_name}-markers", cfg.model_copy(update={"resolve_timeout_s": 1.0}))
        try:
            markers.start(thread=False)
            r.marker_inlet = markers
        except StreamNotFoundError:
            logger.info("no marker stream %s-markers: the scope draws no stimulus lines", r.stream_name)

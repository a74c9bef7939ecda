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

"""One live run: a bundle's engine on a stream, with a session folder and readers.

:func:`run_live` is what ``neuroimagen run`` and ``neuroimagen demo`` call:

1. the stream config comes from the bundle (contract, preprocessing, windowing)
   with the run's inlet settings, mode and hop;
2. a session folder gets the resolved config, the raw EEG + markers (stream
   recorder), every frame and its top-k, and the metrics;
3. the engine (acquisition -> inference -> publisher) runs until the duration
   ends, the caller's ``should_stop`` says so, or Ctrl-C / SIGTERM;
4. readers get every new snapshot in the calling thread (``on_snapshot``);
5. everything stops cleanly and the final metrics are written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuroimagen.stream.config import StreamConfig
from neuroimagen.stream.inlet import StreamMeta, list_streams

from .backend import Backend
from .config import RealtimeConfig
from .engine import Engine, Scorer, Snapshot

if TYPE_CHECKING:
    from neuroimagen.training.models.bundle import Bundle

logger = logging.getLogger(__name__)

__all__ = ["AmbiguousStreamError", "live_stream_config", "pick_eeg_stream", "run_live"]


class AmbiguousStreamError(LookupError):
    """Several EEG streams are visible and none is named; the message lists them."""


def pick_eeg_stream(stype: str = "EEG", timeout: float = 2.0,
                    streams: Sequence[StreamMeta] | None = None) -> StreamMeta:
    """The one visible stream of type ``stype``; refuse when there are none or several.

    Raises
    ------
    AmbiguousStreamError
        Several are visible: the message lists each (name, source_id, host) and says
        how to name one (``--stream NAME`` or ``--set stream.inlet.name=NAME``).
    LookupError
        None is visible.
    """
    found = [m for m in (list_streams(timeout) if streams is None else streams) if m.stype == stype]
    if len(found) == 1:
        return found[0]
    if not found:
        raise LookupError(f"no LSL stream of type {stype!r} is visible (waited {timeout:g} s)")
    listing = "\n  ".join(m.describe() for m in found)
    raise AmbiguousStreamError(
        f"{len(found)} LSL streams of type {stype!r} are visible and none is named; name one with "
        f"--stream NAME (or --set stream.inlet.name=NAME):\n  {listing}"
    )


def live_stream_config(bundle: Bundle, base: StreamConfig, rt: RealtimeConfig,
                       eeg_name: str | None = None) -> StreamConfig:
    """``base``'s inlet/record settings with the bundle's contract, preprocessing and windowing.

    ``rt.mode`` and ``rt.hop_s`` override the bundle's windowing mode and hop (the
    window length stays the models').
    """
    cfg = bundle.stream_config(base)
    updates: dict[str, Any] = {}
    if rt.mode is not None:
        updates["mode"] = rt.mode
    if rt.hop_s is not None:
        updates["hop_s"] = rt.hop_s
    windowing = cfg.windowing.model_copy(update=updates) if updates else cfg.windowing
    inlet = cfg.inlet.model_copy(update={"name": eeg_name}) if eeg_name else cfg.inlet
    return cfg.model_copy(update={"windowing": windowing, "inlet": inlet})


def run_live(
    bundle: Bundle,
    backend: Backend,
    stream_cfg: StreamConfig,
    rt_cfg: RealtimeConfig,
    *,
    out_dir: str | Path,
    resolved_config: Mapping[str, Any],
    duration_s: float | None = None,
    scorer: Scorer | None = None,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    summary_out: dict[str, Any] | None = None,
    on_engine: Callable[[Engine | None], None] | None = None,
) -> dict[str, Any]:
    """Run the engine on ``stream_cfg.inlet.name`` until done; return the final metrics.

    Parameters
    ----------
    bundle : Bundle
    backend : Backend
        Built on ``bundle`` (:func:`~neuroimagen.realtime.backend.load_backend`).
    stream_cfg : StreamConfig
        From :func:`live_stream_config`; ``inlet.name`` names the EEG stream.
    rt_cfg : RealtimeConfig
    out_dir : path
        The session folder.
    resolved_config : mapping
        Every config section as resolved (saved in the session).
    duration_s : float | None
        Stop after this long (None: until ``should_stop`` or Ctrl-C).
    scorer : Scorer | None
    on_snapshot : callable | None
        Called in this thread with each new snapshot (the terminal table).
    should_stop : callable | None
        Polled in this thread; True ends the run.
    summary_out : dict | None
        Filled with the final metrics even when the run ends by an exception
        (``KeyboardInterrupt`` included), so the caller can report them.
    on_engine : callable | None
        Called in this thread with the engine once it has started, and with None
        before it stops: readers in other threads (the GUI) poll
        :meth:`Engine.snapshot` and read its inlet's ring buffer themselves.

    Returns
    -------
    dict
        The final metrics (also ``out_dir/metrics.json``).
    """
    from neuroimagen.stream.pipeline import WindowPipeline

    from .session import Session

    eeg_name = stream_cfg.inlet.name
    win = stream_cfg.windowing
    marker_name = win.marker_stream or f"{eeg_name}-markers" if eeg_name else None
    manifest = bundle.manifest
    # 1. the session folder: config first
    session = Session(out_dir, rt_cfg.session, resolved_config, bundle_info={
        "name": manifest.name, "path": str(bundle.path), "simulated": manifest.simulated,
        "class_names": list(manifest.class_names), "backend": backend.status,
        "windowing": win.model_dump(mode="json"),
    })
    summary: dict[str, Any] = summary_out if summary_out is not None else {}
    engine: Engine | None = None
    try:
        # 2. raw EEG (+ markers when the stream has them) through the recorder
        if rt_cfg.session.record_eeg and eeg_name:
            visible = {m.name for m in list_streams(timeout=0.5)}
            names = [eeg_name] + ([marker_name] if marker_name in visible or win.mode == "marker" else [])
            session.start_recorder(names, stream_cfg.record, resolved_config)
        # 3. the engine: the pipeline is pulled by the engine's acquisition thread
        pipeline = WindowPipeline(stream_cfg, norm_stats=bundle.norm_stats(), eeg_name=eeg_name,
                                  marker_name=marker_name if win.mode == "marker" else None,
                                  acquisition="caller")
        engine = Engine(pipeline, backend, rt_cfg, scorer=scorer, on_frame=session.write_frame)
        logger.info("engine: %s mode, window %d samples%s, backend %s", win.mode, win.n_times,
                    f", hop {win.hop_s * 1e3:g} ms" if win.mode == "sliding" else "", backend.status)
        engine.start()
        if on_engine is not None:
            on_engine(engine)
        # 4. readers, in this thread, until done
        t_end = None if duration_s is None else time.monotonic() + duration_s
        seq, next_metrics = 0, 0.0
        while True:
            now = time.monotonic()
            if (t_end is not None and now >= t_end) or (should_stop is not None and should_stop()):
                break
            wait = 0.25 if t_end is None else max(0.0, min(0.25, t_end - now))
            snap = engine.wait_snapshot(seq, wait)
            engine.check()
            if snap.seq != seq:
                seq = snap.seq
                if on_snapshot is not None:
                    on_snapshot(snap)
            if now >= next_metrics:
                session.write_metrics(engine.summary())
                next_metrics = now + rt_cfg.session.metrics_interval_s
    finally:
        # 5. stop cleanly (also on Ctrl-C / an error); the final figures are written either way
        error: BaseException | None = None
        if on_engine is not None:
            on_engine(None)
        if engine is not None:
            try:
                engine.stop()
            except BaseException as exc:
                error = exc
            summary.update(engine.summary())
        summary["session"] = str(session.out_dir)
        summary["n_frames_written"] = session.n_frames
        try:
            session.close(summary)
        except BaseException as exc:
            error = error or exc
        if error is not None:
            raise error
    return summary

"""``neuroimagen gui``: the live view (PyQt6 + pyqtgraph), imported lazily."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ._common import common_options, section


def has_display() -> bool:
    """A screen to open a window on, or a Qt platform the user chose explicitly (e.g. offscreen)."""
    return any(os.environ.get(k) for k in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def choose_qt_platform() -> str:
    """Offscreen where there is no display (CI, ssh): the window still renders and screenshots.

    Set before any QApplication exists; an explicit ``QT_QPA_PLATFORM`` wins.
    """
    if not has_display():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    return os.environ.get("QT_QPA_PLATFORM", "")


def require_gui_packages() -> None:
    try:
        import pyqtgraph  # noqa: F401
        from PyQt6 import QtWidgets  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            f"the GUI needs PyQt6 and pyqtgraph ({exc}); install them with `pip install \"neuroimagen[gui]\"`, "
            "or pass --headless"
        ) from None


@click.command("gui")
@click.option("--bundle", "bundle_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Model bundle folder (default: realtime.bundle, else the embedded one).")
@click.option("--stream", "stream_name", default=None, help="Connect to this EEG stream at once.")
@click.option("--replay", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Replay this recording over LSL (looped) and connect to it.")
@click.option("--stimuli", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="True images (paired by file stem with the markers' 'image'): shown and scored live.")
@click.option("--out", "out_root", type=click.Path(file_okay=False, path_type=Path), default=Path("sessions/gui"),
              help="Engine sessions and recordings go here.")
@click.option("--duration", type=float, default=None, help="Close by itself after this many seconds.")
@click.option("--screenshot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Save the main window as PNG (1 s before --duration ends, else on close).")
@common_options
def gui(cfg_data: dict, bundle_path: Path | None, stream_name: str | None, replay: Path | None,
        stimuli: Path | None, out_root: Path, duration: float | None, screenshot: Path | None) -> None:
    """Open the live view: stream panel, EEG scope, decoding view, performance, controls.

    \b
    Pick a visible LSL stream (Refresh) or replay a file, pick a bundle, Connect.
    The engine runs in its own process (gui.engine=process; snapshots through
    shared memory) at normal priority, while the GUI thread lowers its own
    (gui.nice); the window polls the snapshots and never waits on the engine.
    Offscreen where there is no display.
    """
    import json

    from neuroimagen.gui.app import run_gui
    from neuroimagen.gui.config import GuiConfig
    from neuroimagen.realtime.config import RealtimeConfig
    from neuroimagen.stream.config import StreamConfig

    from .live import resolved_config

    require_gui_packages()
    choose_qt_platform()
    stream_cfg = section(StreamConfig, cfg_data, "stream")
    rt_cfg = section(RealtimeConfig, cfg_data, "realtime")
    gui_cfg = section(GuiConfig, cfg_data, "gui")
    images: dict = {}
    scorer_factory = None
    if stimuli is not None:
        from neuroimagen.training.eval.images import index_images
        from neuroimagen.training.models.bundle import load_bundle

        from .scoring import LiveScorer

        images = index_images(stimuli)

        def scorer_factory(path):
            return LiveScorer(load_bundle(path, verify=False).manifest.class_names, images)

    result = run_gui(stream_cfg, rt_cfg, gui_cfg, bundle=bundle_path, stream_name=stream_name, replay=replay,
                     out_root=out_root, resolved_config=resolved_config(cfg_data, stream=stream_cfg,
                                                                        realtime=rt_cfg, gui=gui_cfg),
                     truth_images=images, scorer_factory=scorer_factory, duration_s=duration,
                     screenshot=screenshot)
    if "screenshot" in result:
        click.echo(f"screenshot saved: {result['screenshot']}")
    if result.get("gui_error"):
        raise click.ClickException(result["gui_error"])
    if duration is not None:
        click.echo(json.dumps({"gui": result.get("gui"), "n_frames": result.get("n_frames", 0)}))


@click.command("engine-process", hidden=True)
@click.argument("spec_json")
def engine_process(spec_json: str) -> None:
    """The GUI's engine in its own process (started by the GUI; not for direct use).

    SPEC_JSON: bundle, stream, shm (the shared-memory block the GUI created),
    stream_cfg, rt_cfg, out_dir, resolved_config, scorer ({images: dir, heldout_twin: dir}).
    Snapshots go to the block (neuroimagen.gui.transport); SIGTERM stops cleanly.
    """
    import json
    import signal
    import threading

    from neuroimagen.gui.transport import SnapshotWriter
    from neuroimagen.realtime.backend import load_backend
    from neuroimagen.realtime.config import RealtimeConfig
    from neuroimagen.realtime.live import live_stream_config, run_live
    from neuroimagen.stream.config import StreamConfig
    from neuroimagen.training.models.bundle import load_bundle

    spec = json.loads(spec_json)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    writer = SnapshotWriter(spec["shm"])
    state: dict = {"phase": "loading"}
    writer.write(None, None, state)
    try:
        # 1. bundle, backend, scorer
        bundle = load_bundle(spec["bundle"])
        m = bundle.manifest
        state["model"] = {"name": m.name, "description": m.description, "simulated": m.simulated,
                          "path": str(bundle.path)}
        stream_cfg = StreamConfig.model_validate(spec["stream_cfg"])
        rt_cfg = RealtimeConfig.model_validate(spec["rt_cfg"])
        backend = load_backend(bundle, rt_cfg)
        scorer = None
        sc = spec.get("scorer") or {}
        if sc.get("twin"):
            from .scoring import LiveScorer, twin_truth

            images, heldout = twin_truth(sc["twin"])
            scorer = LiveScorer(m.class_names, images, heldout)
        cfg = live_stream_config(bundle, stream_cfg, rt_cfg, eeg_name=spec["stream"])
        cfg = cfg.model_copy(update={"inlet": cfg.inlet.model_copy(update={"source_id": None})})
        state["phase"] = "warming up"
        writer.write(None, None, state)

        def on_engine(engine) -> None:
            if engine is not None:
                state["phase"] = "running"
                state["scale_to_volts"] = float(getattr(engine.pipeline.contract, "scale_to_volts", 1.0))
                writer.write(None, None, state)

        def on_snapshot(snap) -> None:
            f = snap.frame
            if f is None:
                return
            state["frame"] = {"seq": f.seq, "timestamp": f.timestamp, "first_sample": f.first_sample,
                              "marker": dict(f.marker), "class_scores": f.class_scores.tolist(),
                              "top_k": f.top_k, "timings_ms": f.timings_ms}
            state["metrics"] = snap.metrics
            state["status"] = snap.status
            writer.write(f.image, f.saliency, state)

        summary: dict = {}
        try:
            run_live(bundle, backend, cfg, rt_cfg, out_dir=spec["out_dir"], resolved_config=spec["resolved_config"],
                     scorer=scorer, on_snapshot=on_snapshot, should_stop=stop.is_set, summary_out=summary,
                     on_engine=on_engine)
        finally:
            backend.close()
            state["phase"] = "stopped"
            state["summary"] = summary
            state.pop("frame", None)
            writer.write(None, None, state)
    finally:
        writer.close()

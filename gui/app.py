"""Open the main window, optionally connect, screenshot near the end, and exit by itself.

:func:`run_gui` is what ``neuroimagen gui`` and ``neuroimagen demo`` (without
``--headless``) call. The caller picks the Qt platform (offscreen where there
is no display) before this runs: this module sets no environment variables.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["run_gui"]


def run_gui(stream_cfg: Any, rt_cfg: Any, gui_cfg: Any, *, bundle: str | Path | None = None,
            stream_name: str | None = None, replay: str | Path | None = None,
            out_root: str | Path = "sessions/gui", resolved_config: Mapping[str, Any] | None = None,
            truth_images: Mapping[str, Path] | None = None, scorer_factory: Any = None,
            scorer_spec: Mapping[str, Any] | None = None,
            duration_s: float | None = None, screenshot: str | Path | None = None,
            screenshot_before_end_s: float = 1.0) -> dict[str, Any]:
    """Run the GUI until the window closes or ``duration_s`` passes.

    Parameters
    ----------
    stream_cfg, rt_cfg, gui_cfg : StreamConfig, RealtimeConfig, GuiConfig
    bundle : path | None
        None: ``realtime.bundle`` or the embedded default.
    stream_name : str | None
        Connect to this stream at once.
    replay : path | None
        Replay this recording over LSL from this process and connect to it.
    out_root : path
        Engine sessions and recordings go here.
    resolved_config, truth_images, scorer_factory, scorer_spec : see :class:`~.window.MainWindow`
    duration_s : float | None
        Close by itself after this long (None: when the user closes the window).
    screenshot : path | None
        Save the main window there ``screenshot_before_end_s`` before the end
        (with ``duration_s``), else when the window closes.

    Returns
    -------
    dict
        The engine's final metrics, plus ``gui`` (the window's figures) and
        ``screenshot`` (the path, when one was saved).

    Notes
    -----
    With ``gui.engine: process`` the calling thread's priority is lowered by
    ``gui.nice`` (Linux) and stays lowered: call it from the thread that runs the GUI.
    """
    import sys

    from PyQt6 import QtCore, QtWidgets

    from .priority import ProcessSpawner, lower_gui_priority
    from .window import MainWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["neuroimagen"])
    # the engine shares this process: its threads wait for the GIL after every torch op, and
    # the redraws hold it; a shorter switch interval bounds each wait (restored on exit)
    old_interval = sys.getswitchinterval()
    if gui_cfg.gil_switch_interval_s is not None:
        sys.setswitchinterval(gui_cfg.gil_switch_interval_s)
    # the engine's process is started by a thread that keeps this process's priority; then this
    # (GUI) thread lowers its own, so a busy machine favours the engine (gui.priority)
    spawner = ProcessSpawner()
    spawner.start()
    if gui_cfg.engine == "process":  # engine threads in this process would inherit it
        lower_gui_priority(gui_cfg.nice)
    window = MainWindow(stream_cfg, rt_cfg, gui_cfg, bundle=bundle, out_root=out_root,
                        resolved_config=resolved_config, truth_images=truth_images,
                        scorer_factory=scorer_factory, scorer_spec=scorer_spec, spawner=spawner)
    result: dict[str, Any] = {}

    def shoot() -> None:
        if screenshot is not None and "screenshot" not in result:
            result["screenshot"] = str(window.save_screenshot(screenshot))

    def finish() -> None:
        shoot()
        result["gui"] = window.figures()
        result.update(window.shutdown())
        window.close()
        app.quit()

    window.show()
    # 1. connect (the engine loads and warms up in its own thread)
    if replay is not None:
        stream_name = window.replay_file(replay, stream_name)
    if stream_name:
        window.connect_stream(stream_name)
    else:
        window.refresh_streams()
    # 2. the timeline: a screenshot near the end, then close
    if duration_s is not None:
        QtCore.QTimer.singleShot(int(max(0.0, duration_s - screenshot_before_end_s) * 1e3), shoot)
        QtCore.QTimer.singleShot(int(duration_s * 1e3), finish)
    app.aboutToQuit.connect(lambda: None if "gui" in result else finish())
    try:
        app.exec()
    finally:
        sys.setswitchinterval(old_interval)
        spawner.stop()
    if window.error:
        result.setdefault("gui_error", window.error)
    return result

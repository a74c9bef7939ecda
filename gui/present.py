"""The stimulus presenter (``neuroimagen present``): show images, send a marker at every onset, record.

What it does
------------
1. Opens the marker outlet ``<eeg stream>-markers`` (type Markers, one string
   channel; the name every consumer matches to the EEG stream: the recorder, the
   live engine, the simulated subject), then starts the stream recorder
   (:class:`~neuroimagen.stream.record.Recorder`) on the EEG stream and that
   marker stream, into the session folder, and writes ``session.json`` with the
   schedule (so an interrupted session still says what was planned; the
   recorder's files are crash-safe).
2. Shows the schedule (:func:`neuroimagen.stream.design.make_schedule`): a
   fixation cross between stimuli, each image for ``stimulus_s`` from its
   onset, a "break" text in breaks. Each onset is driven by a precise
   single-shot QTimer aimed at the intended time (computed from the start, so
   errors never accumulate).
3. Every onset sends one marker (payload :func:`~neuroimagen.stream.design.marker_payload`,
   the replay markers' JSON plus trial index and test flag), timestamped at the
   frame flip:

   - with a display (a QOpenGLWidget): the LSL clock read in the slot of Qt's
     ``frameSwapped``, emitted once the frame showing the image was swapped
     to the screen (with vsync, the flip);
   - offscreen (``QT_QPA_PLATFORM=offscreen`` or ``minimal``: no display, no
     flip): a plain QWidget; the LSL clock read right after ``repaint()``
     returns, i.e. once the frame showing the image has been rendered into the
     window's backing store. ``session.json`` says which (``timestamped_at``).
4. At the end (or on Escape / window close: whatever was shown is kept) stops
   the recorder, which finalizes ``<eeg stream>_raw.fif`` (markers as
   annotations), and rewrites ``session.json`` with per-trial times and the
   timing summary.

Timing measured per trial (``session.json`` ``trials[*]`` and ``timing``)
-------------------------------------------------------------------------
``intended_ts`` (start + onset), ``flip_ts`` (the marker's timestamp, as above),
``push_ts`` (LSL clock right after the push returned). ``timing`` holds p50/p99
of ``onset_error_ms`` = flip_ts - intended_ts and ``flip_to_push_ms`` = push_ts -
flip_ts. (The simulated subject places responses at marker timestamps, so
comparing against it would be circular; these are measured on the presenter.)

Photodiode patch
----------------
``photodiode_px > 0`` draws a square in a corner (``photodiode_corner``) that is
white on every frame showing a stimulus and black otherwise. Tape a photodiode
over it and record it as an AUX channel of the amplifier: the delay from each
marker to the photodiode's rising edge is the true display latency (which this
software cannot see: panel scan-out and response time come after the flip).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from neuroimagen.stream.design import Trial, marker_payload, write_session

logger = logging.getLogger(__name__)

__all__ = ["PresenterOptions", "run_presenter", "timing_summary"]

OFFSCREEN_PLATFORMS = ("offscreen", "minimal")


@dataclass(frozen=True)
class PresenterOptions:
    """How stimuli are shown.

    Attributes
    ----------
    stimulus_s : float
        How long each image stays on (then the fixation cross).
    image_px : int
        Side of the square the image is drawn in.
    window_px : (int, int)
        Window size when not fullscreen.
    fullscreen : bool
    background : int
        Grey level (0-255) of the screen.
    lead_in_s : float
        Fixation before the first onset (the recorder and every consumer settle).
    tail_s : float
        EEG recorded after the last onset before the recorder stops (the last response
        and its window); waited for up to ``tail_s + 10`` s (a headset's delay, a busy machine).
    photodiode_px : int
        Side of the photodiode patch (0: none).
    photodiode_corner : "bottom-left" | "bottom-right" | "top-left" | "top-right"
    """

    stimulus_s: float = 0.3
    image_px: int = 400
    window_px: tuple[int, int] = (800, 600)
    fullscreen: bool = False
    background: int = 128
    lead_in_s: float = 2.0
    tail_s: float = 1.0
    photodiode_px: int = 0
    photodiode_corner: Literal["bottom-left", "bottom-right", "top-left", "top-right"] = "bottom-left"


def timing_summary(trials: Sequence[dict]) -> dict[str, float]:
    """p50/p99 (ms) of the onset error (flip - intended) and of the flip-to-push delay."""
    shown = [t for t in trials if t.get("flip_ts") is not None]
    out: dict[str, float] = {"n_shown": float(len(shown))}
    if not shown:
        return out
    err = 1e3 * np.array([t["flip_ts"] - t["intended_ts"] for t in shown])
    push = 1e3 * np.array([t["push_ts"] - t["flip_ts"] for t in shown])
    for name, x in (("onset_error_ms", err), ("flip_to_push_ms", push)):
        out[f"{name}_p50"] = float(np.percentile(x, 50))
        out[f"{name}_p99"] = float(np.percentile(x, 99))
        out[f"{name}_max"] = float(np.max(np.abs(x)))
    return out


def _view_class(offscreen: bool):
    from PyQt6 import QtGui, QtWidgets
    from PyQt6.QtCore import Qt

    base = QtWidgets.QWidget
    if not offscreen:
        from PyQt6.QtOpenGLWidgets import QOpenGLWidget

        base = QOpenGLWidget

    class StimulusView(base):  # type: ignore[misc, valid-type]
        """Draws the fixation cross, the current image, break text and the photodiode patch."""

        def __init__(self, opts: PresenterOptions) -> None:
            super().__init__()
            self.opts = opts
            self.pixmap: QtGui.QPixmap | None = None
            self.text: str | None = None
            self.setAutoFillBackground(False)

        def _paint(self) -> None:
            o = self.opts
            p = QtGui.QPainter(self)
            w, h = self.width(), self.height()
            p.fillRect(0, 0, w, h, QtGui.QColor(o.background, o.background, o.background))
            if self.pixmap is not None:
                s = o.image_px
                p.drawPixmap((w - s) // 2, (h - s) // 2, s, s, self.pixmap)
            elif self.text:
                p.setPen(QtGui.QColor(255, 255, 255))
                p.drawText(0, 0, w, h, int(Qt.AlignmentFlag.AlignCenter), self.text)
            else:  # fixation cross
                p.setPen(QtGui.QPen(QtGui.QColor(255, 255, 255), 3))
                p.drawLine(w // 2 - 12, h // 2, w // 2 + 12, h // 2)
                p.drawLine(w // 2, h // 2 - 12, w // 2, h // 2 + 12)
            if o.photodiode_px:
                d = o.photodiode_px
                x = 0 if "left" in o.photodiode_corner else w - d
                y = 0 if "top" in o.photodiode_corner else h - d
                on = self.pixmap is not None
                p.fillRect(x, y, d, d, QtGui.QColor(255, 255, 255) if on else QtGui.QColor(0, 0, 0))
            p.end()

        def paintEvent(self, event: Any) -> None:
            if offscreen:
                self._paint()
            else:
                super().paintEvent(event)

        def paintGL(self) -> None:
            self._paint()

    return StimulusView


class _Run:
    """The presentation state machine (Qt thread only)."""

    def __init__(self, trials: Sequence[Trial], opts: PresenterOptions, outlet: Any, view: Any,
                 offscreen: bool, records: list[dict], loop: Any) -> None:
        import pylsl
        from PyQt6 import QtGui

        self.trials, self.opts, self.outlet, self.view = list(trials), opts, outlet, view
        self.offscreen, self.records, self.loop = offscreen, records, loop
        self.clock = pylsl.local_clock
        self.pixmaps: dict[Path, QtGui.QPixmap] = {}
        for t in self.trials:
            path = t.stimulus.path
            if path not in self.pixmaps:
                pm = QtGui.QPixmap(str(path))
                if pm.isNull():
                    raise ValueError(f"cannot read image {path}")
                self.pixmaps[path] = pm
        self.i = 0
        self.t_start = 0.0
        self.pending_flip: tuple[Trial, dict] | None = None
        self.aborted = False
        if not offscreen:
            view.frameSwapped.connect(self._on_swapped)

    # 1. scheduling -------------------------------------------------------------
    def start(self) -> None:
        from PyQt6 import QtCore

        self.t_start = self.clock() + self.opts.lead_in_s
        if self.trials:
            self._arm(self.t_start + self.trials[0].onset_s, self._onset)
        else:  # nothing to show: leave the loop once it runs
            QtCore.QTimer.singleShot(0, self.loop.quit)

    def _arm(self, when: float, slot: Any) -> None:
        from PyQt6 import QtCore

        ms = max(0, int(round((when - self.clock()) * 1e3)))
        QtCore.QTimer.singleShot(ms, QtCore.Qt.TimerType.PreciseTimer, slot)

    # 2. onset: draw, timestamp at the flip, push ----------------------------------
    def _onset(self) -> None:
        if self.aborted:
            return
        t = self.trials[self.i]
        intended = self.t_start + t.onset_s
        while self.clock() < intended - 0.0005:  # the timer fires up to ~1 ms early: finish the wait
            pass
        rec = {**t.to_dict(), "intended_ts": intended, "requested_ts": self.clock()}
        self.view.pixmap = self.pixmaps[t.stimulus.path]
        self.view.text = None
        if self.offscreen:
            self.view.repaint()  # synchronous: rendered into the backing store on return
            self._push(t, rec, self.clock())
        else:
            self.pending_flip = (t, rec)
            self.view.update()
        self._arm(intended + self.opts.stimulus_s, self._offset)

    def _on_swapped(self) -> None:
        if self.pending_flip is not None:
            (t, rec), self.pending_flip = self.pending_flip, None
            self._push(t, rec, self.clock())

    def _push(self, t: Trial, rec: dict, flip_ts: float) -> None:
        payload = marker_payload(t)
        self.outlet.push_sample([payload], flip_ts)
        rec.update(flip_ts=flip_ts, push_ts=self.clock(), marker=payload)
        self.records.append(rec)

    # 3. offset: fixation (or break text), next onset ----------------------------
    def _offset(self) -> None:
        if self.aborted:
            return
        self.view.pixmap = None
        self.i += 1
        if self.i >= len(self.trials):
            self.view.update()
            self.loop.quit()
            return
        gap = self.trials[self.i].onset_s - self.trials[self.i - 1].onset_s
        self.view.text = "Break" if gap > 3.0 else None
        self.view.update()
        self._arm(self.t_start + self.trials[self.i].onset_s, self._onset)

    def abort(self) -> None:
        self.aborted = True
        self.loop.quit()


def _wait_for_tail(recorder: Any, name: str, until_ts: float, timeout_s: float) -> None:
    """Let the recorder get the EEG up to ``until_ts`` (the last response), at most ``timeout_s``."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and recorder.running:
        last = recorder.last_timestamps.get(name)
        if last is not None and last >= until_ts:
            return
        time.sleep(0.02)
    logger.warning("the EEG stream %r did not reach %.1f s after the last onset within %.0f s; "
                   "stopping the recording anyway", name, timeout_s - 10.0, timeout_s)


def run_presenter(
    trials: Sequence[Trial],
    out_dir: str | Path,
    *,
    eeg_stream: str | None,
    opts: PresenterOptions | None = None,
    marker_stream: str | None = None,
    session_meta: dict | None = None,
    record_cfg: Any = None,
    resolved_config: dict | None = None,
) -> dict:
    """Present ``trials``, marking every onset over LSL and recording into ``out_dir``.

    Parameters
    ----------
    trials : sequence of Trial
        The schedule (onsets relative to the first).
    out_dir : path
        The session folder (created; must not hold a session).
    eeg_stream : str | None
        The EEG stream to record with the markers (None: markers only, no recording).
    opts : PresenterOptions
    marker_stream : str | None
        Marker outlet name (default ``<eeg_stream>-markers``, else ``NeuroImagenPresenter-markers``).
    session_meta : dict | None
        Extra ``session.json`` content (stimulus folder, class names, design).
    record_cfg : RecordConfig | None
    resolved_config : dict | None
        Saved beside the recording (config.yaml).

    Returns
    -------
    dict
        The final ``session.json`` content.

    Notes
    -----
    Runs a Qt event loop in the calling (GUI) thread; a QApplication must exist.
    """
    import pylsl
    from PyQt6 import QtCore, QtGui, QtWidgets

    from neuroimagen.stream.design import SESSION_FILE
    from neuroimagen.stream.record import Recorder
    from neuroimagen.stream.replay import make_marker_info

    opts = opts or PresenterOptions()
    out = Path(out_dir)
    if (out / SESSION_FILE).exists():
        raise FileExistsError(f"{out} already holds a session ({SESSION_FILE})")
    out.mkdir(parents=True, exist_ok=True)
    app = QtWidgets.QApplication.instance()
    if app is None:
        raise RuntimeError("run_presenter needs a QApplication")
    offscreen = QtGui.QGuiApplication.platformName() in OFFSCREEN_PLATFORMS
    mname = marker_stream or f"{eeg_stream or 'NeuroImagenPresenter'}-markers"
    # 1. the marker outlet first: the recorder and every consumer find it by name
    outlet = pylsl.StreamOutlet(make_marker_info(mname, f"neuroimagen-present-{uuid.uuid4().hex[:8]}"))
    meta = {
        "version": 1, "kind": "presented", **(session_meta or {}),
        "eeg_stream": eeg_stream, "marker_stream": mname,
        "eeg_file": f"{eeg_stream}_raw.fif" if eeg_stream else None,
        "timestamped_at": ("after repaint() returned (offscreen: no display, no flip)" if offscreen
                           else "Qt frameSwapped (the flip)"),
        "presenter": {**opts.__dict__, "platform": QtGui.QGuiApplication.platformName()},
        "n_trials": len(trials), "trials": [t.to_dict() for t in trials], "complete": False,
    }
    write_session(out, meta)
    recorder = None
    if eeg_stream:
        recorder = Recorder(out, record_cfg, stream_names=[eeg_stream], resolved_config=resolved_config)
        recorder.start()
    records: list[dict] = []
    import sys

    switch = sys.getswitchinterval()
    # the recorder's thread shares this process: a short GIL interval lets the Qt thread in sooner
    sys.setswitchinterval(0.0005)
    try:
        # 2. the window and the schedule
        view = _view_class(offscreen)(opts)
        view.setWindowTitle("NeuroImagen stimuli")
        view.resize(*opts.window_px)
        view.showFullScreen() if opts.fullscreen else view.show()
        loop = QtCore.QEventLoop()
        run = _Run(trials, opts, outlet, view, offscreen, records, loop)
        shortcut = QtGui.QShortcut(QtGui.QKeySequence("Escape"), view)
        shortcut.activated.connect(run.abort)
        app.lastWindowClosed.connect(run.abort)
        run.start()
        loop.exec()
        app.lastWindowClosed.disconnect(run.abort)
        view.close()
        if run.aborted:
            logger.warning("presentation stopped after %d of %d trials", len(records), len(trials))
    finally:
        # 3. stop the recorder (finalizes the FIF), then the session file with the times
        if recorder is not None:
            if recorder.running and records:
                _wait_for_tail(recorder, eeg_stream, records[-1]["flip_ts"] + opts.tail_s, opts.tail_s + 10.0)
            written = recorder.stop()
            meta["recorded"] = {k: str(v) for k, v in written.items()}
            meta["n_samples"] = recorder.n_samples
        by_index = {r["index"]: r for r in records}
        meta["trials"] = [by_index.get(t.index, t.to_dict()) for t in trials]
        meta["n_shown"] = len(records)
        meta["complete"] = len(records) == len(trials)
        meta["timing"] = timing_summary(records)
        write_session(out, meta)
        sys.setswitchinterval(switch)
        del outlet
    return meta

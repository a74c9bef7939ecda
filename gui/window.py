"""The main window: stream panel, EEG scope, decoding view, performance panel, controls.

Everything here runs in the GUI thread. A QTimer (``gui.refresh_hz``) polls:

1. the runner for an error (shown, the engine stopped);
2. the engine inlet's ring buffer for new samples (the scope) and the marker inlet;
3. ``engine.snapshot()``: when its ``seq`` is new, the decoding view and the
   performance panel are redrawn from it.

Nothing the timer calls waits on the engine: a slow window shows fewer frames,
the engine does not slow down. The timer re-arms itself after each tick with
an interval of at least twice that tick's own cost, so under load the redraw
rate adapts down instead of queueing.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtWidgets

from neuroimagen.realtime.config import RealtimeConfig
from neuroimagen.stream.config import StreamConfig

from .config import GuiConfig
from .runner import EngineRunner, ProcessRunner
from .scope import QUALITY_NAMES, ScopeWidget

logger = logging.getLogger(__name__)

__all__ = ["MainWindow"]

STAGES = ("pull", "preprocess", "extractors", "diffusion", "publish", "end_to_end")
SIMULATED_NOTICE = "trained on SIMULATED EEG (the synthetic twin): it does not decode real brains"


def _image_view(title: str) -> tuple[pg.GraphicsLayoutWidget, pg.ImageItem]:
    w = pg.GraphicsLayoutWidget()
    w.setBackground((25, 25, 30))
    vb = w.addViewBox(row=0, col=0, lockAspect=True, enableMouse=False)
    vb.invertY(True)
    item = pg.ImageItem(axisOrder="row-major")
    vb.addItem(item)
    w.addLabel(title, row=1, col=0)
    w.setMinimumSize(150, 170)
    return w, item


def _fix_size(label: QtWidgets.QLabel, width: int, n_lines: int) -> None:
    """A fixed size for a label whose text changes while running.

    A widget whose minimum and maximum sizes are equal does not invalidate its
    parent's layout when its text changes; otherwise every new figure would
    relayout (and repaint) the whole window.
    """
    label.setFixedSize(width, n_lines * label.fontMetrics().lineSpacing() + 4)
    label.setAlignment(QtCore.Qt.AlignmentFlag.AlignLeft | QtCore.Qt.AlignmentFlag.AlignTop)


class MainWindow(QtWidgets.QMainWindow):
    """The NeuroImagen live view.

    Parameters
    ----------
    stream_cfg : StreamConfig
    rt_cfg : RealtimeConfig
    gui_cfg : GuiConfig
    bundle : path or None
        The bundle to run (None: the embedded default, if this install has one).
    out_root : path
        Engine sessions go to ``out_root/session-N``, recordings to ``out_root/recording-N``.
    resolved_config : mapping
    truth_images : mapping str -> path
        Image stem -> true stimulus file (marker ``image``), shown beside the
        reconstruction when known.
    scorer_factory : callable | None
        ``bundle -> Scorer`` for live scoring (the CLI wires in training.eval); thread engine.
    scorer_spec : mapping | None
        The same for the engine process: ``{"twin": DIR}`` scores against a twin's images.
    spawner : ProcessSpawner | None
        Starts the engine's process at the priority the GUI gave up (:mod:`.priority`).

    Attributes
    ----------
    runner : EngineRunner | None
    shown_seq : int
        The snapshot ``seq`` the decoding view shows.
    shown_frame : Frame | None
    n_frames_shown : int

    Notes
    -----
    Threading: GUI thread only; see the module docstring.
    """

    def __init__(self, stream_cfg: StreamConfig | None = None, rt_cfg: RealtimeConfig | None = None,
                 gui_cfg: GuiConfig | None = None, *, bundle: str | Path | None = None,
                 out_root: str | Path = "sessions/gui", resolved_config: Mapping[str, Any] | None = None,
                 truth_images: Mapping[str, Path] | None = None, scorer_factory: Any = None,
                 scorer_spec: Mapping[str, Any] | None = None, spawner: Any = None) -> None:
        super().__init__()
        self.spawner = spawner
        pg.setConfigOptions(imageAxisOrder="row-major", antialias=False)
        self.stream_cfg = stream_cfg or StreamConfig()
        self.rt_cfg = rt_cfg or RealtimeConfig()
        self.gui_cfg = gui_cfg or GuiConfig()
        self.bundle_path = Path(bundle) if bundle is not None else None
        self.out_root = Path(out_root)
        self.resolved_config = dict(resolved_config or {})
        self.truth_images = dict(truth_images or {})
        self.scorer_factory = scorer_factory
        self.scorer_spec = dict(scorer_spec or {})
        self.runner: EngineRunner | ProcessRunner | None = None
        self.player: Any = None
        self.recorder: Any = None
        self.recording_dir: Path | None = None
        self.stream_name: str | None = None
        self.shown_seq = 0
        self.shown_frame: Any = None
        self.n_frames_shown = 0
        self.error: str | None = None
        self._attached_ring: Any = None
        self._clock_offset: float | None = None
        self._next_offset = 0.0
        self._n_sessions = 0
        self._strip: deque[np.ndarray] = deque(maxlen=self.gui_cfg.strip_n)
        self._tick_cost_s: deque[float] = deque(maxlen=30)
        self._interval_ms = 1000.0 / self.gui_cfg.refresh_hz
        self.n_ticks = 0
        self._next_panels = 0.0
        self.setWindowTitle("NeuroImagen")
        self._build()
        # a precise single-shot timer re-armed against a deadline: Qt's default (coarse, 5 %) timer
        # and re-arming "interval after this tick" both lose frames against a 33 ms target
        self.timer = QtCore.QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self._tick)
        self._next_tick_s = time.perf_counter() + self._interval_ms / 1e3
        self.timer.start(int(self._interval_ms))

    # ------------------------------------------------------------------ layout

    def _build(self) -> None:
        central = QtWidgets.QWidget()
        root = QtWidgets.QVBoxLayout(central)
        self.banner = QtWidgets.QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("background:#402a00;color:#ffd27a;padding:4px;font-weight:bold")
        root.addWidget(self.banner)
        body = QtWidgets.QHBoxLayout()
        root.addLayout(body, 1)
        left = QtWidgets.QVBoxLayout()
        body.addLayout(left, 0)
        left.addWidget(self._stream_panel())
        left.addWidget(self._controls())
        left.addStretch(1)
        middle = QtWidgets.QVBoxLayout()
        body.addLayout(middle, 1)
        self.scope = ScopeWidget(self.gui_cfg, self.rt_cfg.health)
        self.scope.widget.setMinimumSize(480, 420)
        middle.addWidget(self.scope.widget, 1)
        middle.addWidget(self._performance_panel(), 0)
        body.addWidget(self._decoding_view(), 0)
        self.setCentralWidget(central)
        self.statusBar().showMessage("not connected")
        self._update_banner()
        self.resize(1500, 900)

    def _stream_panel(self) -> QtWidgets.QGroupBox:
        box = QtWidgets.QGroupBox("Stream")
        g = QtWidgets.QGridLayout(box)
        self.stream_combo = QtWidgets.QComboBox()
        self.stream_combo.setEditable(True)
        self.refresh_button = QtWidgets.QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh_streams)
        self.open_button = QtWidgets.QPushButton("Replay file...")
        self.open_button.clicked.connect(self._open_file_dialog)
        self.bundle_edit = QtWidgets.QLineEdit(str(self.bundle_path) if self.bundle_path else "")
        self.bundle_edit.setPlaceholderText("embedded default")
        self.bundle_button = QtWidgets.QPushButton("Bundle...")
        self.bundle_button.clicked.connect(self._pick_bundle_dialog)
        self.connect_button = QtWidgets.QPushButton("Connect")
        self.connect_button.clicked.connect(lambda: self.connect_stream(self.stream_combo.currentText()))
        self.disconnect_button = QtWidgets.QPushButton("Disconnect")
        self.disconnect_button.clicked.connect(self.disconnect_stream)
        g.addWidget(self.stream_combo, 0, 0, 1, 2)
        g.addWidget(self.refresh_button, 1, 0)
        g.addWidget(self.open_button, 1, 1)
        g.addWidget(self.bundle_edit, 2, 0)
        g.addWidget(self.bundle_button, 2, 1)
        g.addWidget(self.connect_button, 3, 0)
        g.addWidget(self.disconnect_button, 3, 1)
        self.status_labels: dict[str, QtWidgets.QLabel] = {}
        for i, key in enumerate(("state", "rate", "channels", "units", "clock offset", "gaps", "drops",
                                 "input health")):
            g.addWidget(QtWidgets.QLabel(key), 4 + i, 0)
            label = QtWidgets.QLabel("-")
            label.setWordWrap(True)
            _fix_size(label, 210, 2)
            g.addWidget(label, 4 + i, 1)
            self.status_labels[key] = label
        box.setMaximumWidth(330)
        return box

    def _controls(self) -> QtWidgets.QGroupBox:
        box = QtWidgets.QGroupBox("Controls")
        g = QtWidgets.QGridLayout(box)
        self.backend_combo = QtWidgets.QComboBox()
        self.backend_combo.addItems(["auto", "torch", "onnxruntime", "tensorrt"])
        self.backend_combo.setCurrentText(self.rt_cfg.backend)
        self.device_combo = QtWidgets.QComboBox()
        self.device_combo.addItems(["cpu", "cuda"])
        self.device_combo.setCurrentText(self.rt_cfg.device)
        self.steps_spin = QtWidgets.QSpinBox()
        self.steps_spin.setRange(0, 50)
        self.steps_spin.setSpecialValueText("bundle's")
        self.steps_spin.setValue(self.rt_cfg.num_inference_steps or 0)
        self.strength_spin = QtWidgets.QDoubleSpinBox()
        self.strength_spin.setRange(0.0, 1.0)
        self.strength_spin.setSingleStep(0.05)
        self.strength_spin.setSpecialValueText("bundle's")
        self.strength_spin.setValue(self.rt_cfg.strength or 0.0)
        self.mode_combo = QtWidgets.QComboBox()
        self.mode_combo.addItems(["bundle's", "sliding", "marker"])
        self.mode_combo.setCurrentText(self.rt_cfg.mode or "bundle's")
        self.apply_button = QtWidgets.QPushButton("Apply (restart engine)")
        self.apply_button.clicked.connect(self.apply_settings)
        self.record_button = QtWidgets.QPushButton("Record")
        self.record_button.setCheckable(True)
        self.record_button.toggled.connect(self._record_toggled)
        self.screenshot_button = QtWidgets.QPushButton("Screenshot")
        self.screenshot_button.clicked.connect(lambda: self.save_screenshot())
        self.scale_spin = QtWidgets.QDoubleSpinBox()
        self.scale_spin.setRange(0.1, 1e5)
        self.scale_spin.setSuffix(" uV")
        self.scale_spin.setValue(self.gui_cfg.scale_uv)
        self.scale_spin.valueChanged.connect(lambda v: self.scope.set_scale_uv(v))
        self.span_spin = QtWidgets.QDoubleSpinBox()
        self.span_spin.setRange(0.5, 60.0)
        self.span_spin.setSuffix(" s")
        self.span_spin.setValue(self.gui_cfg.display_s)
        self.span_spin.valueChanged.connect(lambda v: self.scope.set_display_s(v))
        rows = [("backend", self.backend_combo), ("device", self.device_combo), ("steps", self.steps_spin),
                ("strength", self.strength_spin), ("windows", self.mode_combo),
                ("scope scale", self.scale_spin), ("time span", self.span_spin)]
        for i, (name, w) in enumerate(rows):
            g.addWidget(QtWidgets.QLabel(name), i, 0)
            g.addWidget(w, i, 1)
        g.addWidget(self.apply_button, len(rows), 0, 1, 2)
        g.addWidget(self.record_button, len(rows) + 1, 0)
        g.addWidget(self.screenshot_button, len(rows) + 1, 1)
        box.setMaximumWidth(330)
        return box

    def _decoding_view(self) -> QtWidgets.QGroupBox:
        box = QtWidgets.QGroupBox("Decoding")
        v = QtWidgets.QVBoxLayout(box)
        images = QtWidgets.QHBoxLayout()
        w, self.saliency_item = _image_view("saliency")
        images.addWidget(w)
        w, self.image_item = _image_view("reconstruction")
        images.addWidget(w)
        w, self.truth_item = _image_view("true stimulus")
        images.addWidget(w)
        v.addLayout(images)
        v.addWidget(QtWidgets.QLabel("top-k decoded classes"))
        self.topk_bars: list[QtWidgets.QProgressBar] = []
        for _ in range(self.gui_cfg.top_k):
            bar = QtWidgets.QProgressBar()
            bar.setRange(0, 1000)
            bar.setTextVisible(True)
            bar.setFormat("-")
            v.addWidget(bar)
            self.topk_bars.append(bar)
        v.addWidget(QtWidgets.QLabel(f"last {self.gui_cfg.strip_n} reconstructions"))
        # one image of tiles (newest first), not one item per frame: a new frame then costs one
        # image upload and one paint instead of strip_n of each
        self.strip_widget = pg.GraphicsLayoutWidget()
        self.strip_widget.setBackground((25, 25, 30))
        vb = self.strip_widget.addViewBox(row=0, col=0, lockAspect=True, enableMouse=False)
        vb.invertY(True)
        self.strip_item = pg.ImageItem(axisOrder="row-major")
        vb.addItem(self.strip_item)
        self.strip_image = np.zeros((0, 0, 3), np.uint8)
        self._strip_tile = (0, 0, 1)
        self.strip_widget.setMinimumHeight(160)
        v.addWidget(self.strip_widget)
        box.setMinimumWidth(520)
        return box

    def _performance_panel(self) -> QtWidgets.QGroupBox:
        box = QtWidgets.QGroupBox("Performance")
        h = QtWidgets.QHBoxLayout(box)
        self.latency_plot = pg.PlotWidget()
        self.latency_plot.setBackground((25, 25, 30))
        self.latency_plot.setMouseEnabled(x=False, y=False)
        self.latency_plot.setLabel("left", "latency p50 / p99", units="ms")
        ax = self.latency_plot.getAxis("bottom")
        ax.setTicks([list(enumerate(("pull", "prep", "extr", "diff", "pub", "e2e")))])
        self.p50_bars = pg.BarGraphItem(x=np.arange(len(STAGES)) - 0.17, height=np.zeros(len(STAGES)),
                                        width=0.33, brush=(80, 160, 255))
        self.p99_bars = pg.BarGraphItem(x=np.arange(len(STAGES)) + 0.17, height=np.zeros(len(STAGES)),
                                        width=0.33, brush=(255, 120, 80))
        self.latency_plot.addItem(self.p50_bars)
        self.latency_plot.addItem(self.p99_bars)
        self.latency_plot.setMinimumHeight(170)
        h.addWidget(self.latency_plot, 1)
        self.perf_label = QtWidgets.QLabel("-")
        self.perf_label.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.perf_label.setWordWrap(True)
        _fix_size(self.perf_label, 235, 8)
        h.addWidget(self.perf_label)
        box.setMaximumHeight(230)
        return box

    # ------------------------------------------------------------------ streams

    def refresh_streams(self, timeout: float = 0.5) -> list[str]:
        """List the visible EEG streams in the stream box (blocks the GUI up to ``timeout`` s)."""
        from neuroimagen.stream.inlet import list_streams

        names = sorted(m.name for m in list_streams(timeout) if m.stype == (self.stream_cfg.inlet.stype or m.stype))
        current = self.stream_combo.currentText()
        self.stream_combo.clear()
        self.stream_combo.addItems(names)
        if current:
            self.stream_combo.setCurrentText(current)
        return names

    def replay_file(self, path: str | Path, name: str | None = None) -> str:
        """Stream a recording over LSL from this process (looped); returns the stream name."""
        import uuid

        from neuroimagen.stream.config import ReplayConfig
        from neuroimagen.stream.readers import read_recording
        from neuroimagen.stream.replay import Player

        self.stop_replay()
        name = name or f"gui-replay-{uuid.uuid4().hex[:6]}"
        player = Player(read_recording(path), name=name, cfg=ReplayConfig(loop=True))
        player.start()
        self.player = player
        self.stream_combo.setCurrentText(name)
        return name

    def stop_replay(self) -> None:
        if self.player is not None:
            player, self.player = self.player, None
            player.stop()

    def _open_file_dialog(self) -> None:
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Recording to replay")
        if path:
            self.replay_file(path)

    def _pick_bundle_dialog(self) -> None:
        path = QtWidgets.QFileDialog.getExistingDirectory(self, "Model bundle folder")
        if path:
            self.bundle_edit.setText(path)

    def current_rt_cfg(self) -> RealtimeConfig:
        """The realtime config with the controls' backend, device, steps, strength and mode."""
        mode = self.mode_combo.currentText()
        return self.rt_cfg.model_copy(update={
            "backend": self.backend_combo.currentText(),
            "device": self.device_combo.currentText(),
            "num_inference_steps": self.steps_spin.value() or None,
            "strength": self.strength_spin.value() or None,
            "mode": None if mode == "bundle's" else mode,
        })

    def _bundle_choice(self) -> Path:
        from neuroimagen.realtime.embedded import embedded_bundle, missing_embedded_bundle_message

        text = self.bundle_edit.text().strip()
        path = Path(text) if text else (self.rt_cfg.bundle or embedded_bundle())
        if path is None:
            raise LookupError(missing_embedded_bundle_message())
        return Path(path)

    def connect_stream(self, name: str) -> None:
        """Start the engine on stream ``name`` with the chosen bundle and controls (returns at once)."""
        self.disconnect_stream()
        if not name:
            self._show_error("pick a stream (Refresh) or replay a file first")
            return
        try:
            bundle = self._bundle_choice()
        except LookupError as exc:
            self._show_error(str(exc))
            return
        rt_cfg = self.current_rt_cfg()
        self._n_sessions += 1
        out = self.out_root / f"session-{time.strftime('%Y%m%d-%H%M%S')}-{self._n_sessions}"
        rt_cfg = rt_cfg.model_copy(update={"session": rt_cfg.session.model_copy(update={"record_eeg": False})})
        self.error = None
        self.stream_name = name
        self.stream_combo.setCurrentText(name)
        if self.gui_cfg.engine == "process":
            self.runner = ProcessRunner(bundle, name, self.stream_cfg, rt_cfg, out_dir=out,
                                        resolved_config=self.resolved_config, scorer_spec=self.scorer_spec,
                                        spawner=self.spawner)
        else:
            self.runner = EngineRunner(bundle, name, self.stream_cfg, rt_cfg, out_dir=out,
                                       resolved_config=self.resolved_config,
                                       scorer=self.scorer_factory(bundle) if self.scorer_factory else None)
        self.runner.start()
        self.statusBar().showMessage(f"connecting to {name} with {bundle} ...")

    def disconnect_stream(self) -> dict[str, Any]:
        """Stop the engine (and a recording); returns its final metrics. Errors are shown, not raised."""
        if self.recorder is not None:
            self.record_button.setChecked(False)
        summary: dict[str, Any] = {}
        runner, self.runner = self.runner, None
        self.scope.detach()
        self._attached_ring = None
        if runner is not None:
            try:
                runner.stop()
            except Exception as exc:
                self._show_error(f"{type(exc).__name__}: {exc}")
            summary = runner.summary
            self.statusBar().showMessage(f"disconnected from {runner.stream_name}")
        return summary

    def apply_settings(self) -> None:
        """Restart the engine with the controls' backend, device, steps, strength and mode."""
        if self.stream_name:
            self.connect_stream(self.stream_name)

    # ------------------------------------------------------------------ recording, screenshots

    def _record_toggled(self, on: bool) -> None:
        if on:
            self.start_recording()
        else:
            self.stop_recording()

    def start_recording(self) -> Path | None:
        """Record the connected EEG stream and its markers (stream.record) into ``out_root/recording-*``."""
        from neuroimagen.stream.inlet import list_streams
        from neuroimagen.stream.record import Recorder

        if self.recorder is not None:
            return self.recording_dir
        if not self.stream_name:
            self._show_error("connect to a stream before recording")
            self.record_button.setChecked(False)
            return None
        visible = {m.name for m in list_streams(0.3)}
        names = [self.stream_name] + ([f"{self.stream_name}-markers"]
                                      if f"{self.stream_name}-markers" in visible else [])
        out = self.out_root / f"recording-{time.strftime('%Y%m%d-%H%M%S')}"
        recorder = Recorder(out, self.stream_cfg.record, stream_names=names, resolved_config=self.resolved_config)
        recorder.start()
        self.recorder, self.recording_dir = recorder, out
        self.record_button.setText("Stop recording")
        self.statusBar().showMessage(f"recording {', '.join(names)} into {out}")
        return out

    def stop_recording(self) -> dict[str, Path]:
        recorder, self.recorder = self.recorder, None
        self.record_button.setText("Record")
        if self.record_button.isChecked():
            self.record_button.blockSignals(True)
            self.record_button.setChecked(False)
            self.record_button.blockSignals(False)
        if recorder is None:
            return {}
        files = recorder.stop() or {}
        self.statusBar().showMessage(f"recording saved in {self.recording_dir}")
        return files

    def save_screenshot(self, path: str | Path | None = None) -> Path:
        """Grab the whole window into a PNG (default: ``gui.screenshot_dir``)."""
        path = Path(path) if path else Path(self.gui_cfg.screenshot_dir) / f"neuroimagen-{time.strftime('%Y%m%d-%H%M%S')}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.grab().save(str(path), "PNG"):
            raise OSError(f"could not write the screenshot {path}")
        self.statusBar().showMessage(f"screenshot saved: {path}")
        return path

    # ------------------------------------------------------------------ the timer

    def _show_error(self, text: str) -> None:
        self.error = text
        logger.error("%s", text)
        self.statusBar().showMessage(f"ERROR: {text}")
        self.status_labels["state"].setText("error")

    CATCH_UP = 3

    def _tick(self) -> None:
        t0 = time.perf_counter()
        self.n_ticks += 1
        try:
            self._poll()
        finally:
            now = time.perf_counter()
            # the traces are painted later by the event loop: count the last paint as this tick's too
            self._tick_cost_s.append(now - t0 + self.scope.traces.last_paint_s)
            # adapt: never more than half the time in the GUI thread's redraws
            target = 1000.0 / self.gui_cfg.refresh_hz
            self._interval_ms = max(target, 2000.0 * float(np.median(self._tick_cost_s)))
            # fixed-rate: the next deadline is one interval after this one (not after this tick's end),
            # so a tick the busy machine started late is made up; a backlog of at most CATCH_UP
            # intervals, never a burst (a GUI that cannot keep up slows its target above instead)
            interval_s = self._interval_ms / 1e3
            self._next_tick_s = max(self._next_tick_s + interval_s, now - self.CATCH_UP * interval_s)
            self.timer.start(max(0, int(round((self._next_tick_s - now) * 1e3))))

    def _poll(self) -> None:
        runner = self.runner
        if runner is None:
            return
        # 1. errors of the engine's threads
        try:
            runner.check()
        except Exception as exc:
            self.runner = None
            self.scope.detach()
            self._attached_ring = None
            try:
                runner.stop()
            except Exception:  # the same error, already in hand
                pass
            self._show_error(f"{type(exc).__name__}: {exc}")
            return
        self.status_labels["state"].setText(runner.phase)
        self._update_banner(runner)
        # 2. the scope: samples since the last tick, markers
        source = runner.source()
        if source is not None:
            inlet, ring, meta, scale = source
            if ring is not self._attached_ring:
                self.scope.attach(ring, meta.sfreq, scale)
                self._attached_ring = ring
                self._stream_static(meta, scale)
            if runner.marker_inlet is not None:
                self.scope.add_markers([t for t, _ in runner.marker_inlet.pop_markers()])
            self.scope.pull()
            self.scope.redraw()
        # 3. a new snapshot: decoding view every frame; the figures at most gui.panel_hz times a second
        snap = runner.latest_snapshot()
        if snap is None:
            return
        now = time.monotonic()
        panels = now >= self._next_panels
        if panels:
            self._next_panels = now + 1.0 / self.gui_cfg.panel_hz
        if snap.seq != self.shown_seq and snap.frame is not None:
            self.show_snapshot(snap, metrics=False)
        if panels:
            self._show_metrics(snap)
            if source is not None:
                self._stream_dynamic(source[0], snap)

    # ------------------------------------------------------------------ rendering

    def _update_banner(self, runner: Any = None) -> None:
        info = runner.model_info() if runner is not None else None
        if info is None:
            try:
                choice = str(self._bundle_choice())
            except LookupError:
                choice = "none (pick a bundle)"
            self.banner.setText(f"Model: {choice} (not loaded)")
            return
        from neuroimagen.realtime.embedded import EMBEDDED_BUNDLE_DIR

        where = "embedded default" if Path(info["path"]).resolve() == EMBEDDED_BUNDLE_DIR else info["path"]
        text = f"Model: {info['name']} ({where}); {info['description']}"
        if info["simulated"]:
            text += f" | {SIMULATED_NOTICE}"
        self.banner.setText(text)

    def show_snapshot(self, snap: Any, *, metrics: bool = True) -> None:
        """Draw a snapshot's frame (images, top-k, strip) and, with ``metrics``, its figures (GUI thread)."""
        f = snap.frame
        self.saliency_item.setImage(f.saliency, autoLevels=False, levels=(0, 255))
        self.image_item.setImage(f.image, autoLevels=False, levels=(0, 255))
        truth = self._truth(f.marker.get("image") if f.marker else None)
        if truth is not None:
            self.truth_item.setImage(truth, autoLevels=False, levels=(0, 255))
        else:
            self.truth_item.clear()
        for bar, item in zip(self.topk_bars, list(f.top_k) + [None] * len(self.topk_bars), strict=False):
            if item is None:
                bar.setValue(0)
                bar.setFormat("-")
            else:
                name, score = item
                bar.setValue(int(round(max(0.0, min(1.0, (score + 1) / 2)) * 1000)))
                bar.setFormat(f"{name}  {score:+.3f}")
        self._draw_strip(f.image)
        if metrics:
            self._show_metrics(snap)
        self.shown_seq = snap.seq
        self.shown_frame = f
        self.n_frames_shown += 1

    STRIP_COLS, STRIP_GAP, STRIP_TILE_PX = 4, 2, 96

    def _draw_strip(self, image: np.ndarray) -> None:
        """Add ``image`` (uint8 (H, W, 3)) to the strip: thumbnails of the last ``strip_n``, newest first."""
        step = max(1, -(-max(image.shape[:2]) // self.STRIP_TILE_PX))  # at most STRIP_TILE_PX per side
        thumb = image[::step, ::step]
        th, tw = thumb.shape[:2]
        if self._strip_tile != (th, tw, step):  # a new frame size: a new strip
            self._strip_tile = (th, tw, step)
            self._strip.clear()
            n_rows = -(-self.gui_cfg.strip_n // self.STRIP_COLS)
            g = self.STRIP_GAP
            self.strip_image = np.empty((n_rows * (th + g), self.STRIP_COLS * (tw + g), 3), np.uint8)
            self.strip_image[:] = (25, 25, 30)
        self._strip.appendleft(thumb)
        for i, t in enumerate(self._strip):
            self.strip_tile(i)[:] = t
        self.strip_item.setImage(self.strip_image, autoLevels=False, levels=(0, 255))

    def strip_tile(self, i: int) -> np.ndarray:
        """The strip's tile ``i`` (0: the newest frame), a view into :attr:`strip_image`."""
        th, tw, _ = self._strip_tile
        r, c, g = i // self.STRIP_COLS, i % self.STRIP_COLS, self.STRIP_GAP
        return self.strip_image[r * (th + g):r * (th + g) + th, c * (tw + g):c * (tw + g) + tw]

    def _truth(self, image: str | None) -> np.ndarray | None:
        if not image or image not in self.truth_images:
            return None
        from PIL import Image

        with Image.open(self.truth_images[image]) as im:
            return np.asarray(im.convert("RGB"))

    def _show_metrics(self, snap: Any) -> None:
        m = snap.metrics or {}
        lat = m.get("latency_ms", {})
        p50 = [float((lat.get(s) or {}).get("p50") or 0.0) for s in STAGES]
        p99 = [float((lat.get(s) or {}).get("p99") or 0.0) for s in STAGES]
        self.p50_bars.setOpts(height=p50)
        self.p99_bars.setOpts(height=p99)
        e2e = lat.get("end_to_end") or {}

        def ms(v: Any) -> str:
            return "-" if v is None else f"{v:.1f} ms"

        self.perf_label.setText(
            f"<b>end to end</b> p50 {ms(e2e.get('p50'))}, p99 {ms(e2e.get('p99'))}<br>"
            f"<b>first frame</b> {ms((m.get('first_frame_ms') or {}).get('end_to_end'))} (start-up)<br>"
            f"<b>fps</b> {m.get('fps_recent', 0.0):.1f} (frames {m.get('n_frames', 0)}, "
            f"windows {m.get('n_windows', 0)})<br>"
            f"<b>dropped</b> windows {m.get('n_dropped_windows', 0)}, frames {m.get('n_dropped_frames', 0)}<br>"
            f"<b>backend</b> {snap.status}<br>"
            f"<b>scope</b> {self.scope.fps:.0f} fps"
        )

    def _stream_static(self, meta: Any, scale: float | None) -> None:
        units = sorted({u or "?" for u in (meta.units or [])})
        self.status_labels["rate"].setText(f"{meta.sfreq:g} Hz")
        self.status_labels["channels"].setText(f"{meta.n_channels}: {', '.join(meta.ch_names[:3])}, ...")
        self.status_labels["units"].setText(f"{', '.join(units[:3])} -> V x {scale:g}" if scale else ", ".join(units))

    def _stream_dynamic(self, inlet: Any, snap: Any) -> None:
        m = snap.metrics or {}
        p = m.get("pipeline") or {}
        now = time.monotonic()
        if now >= self._next_offset:  # liblsl answers from its cache; once a second is plenty
            self._next_offset = now + 1.0
            try:
                self._clock_offset = inlet.time_correction(0.0)
            except Exception:  # not measured yet (pylsl TimeoutError) or the inlet is closing
                pass
        offset = self._clock_offset
        self.status_labels["clock offset"].setText("-" if offset is None else f"{offset * 1e3:.3f} ms")
        self.status_labels["gaps"].setText(f"{len(inlet.gaps)} ({inlet.gap_seconds:.3f} s)")
        self.status_labels["drops"].setText(
            f"windows {m.get('n_dropped_windows', 0)}, frames {m.get('n_dropped_frames', 0)}, "
            f"lost samples {p.get('n_lost_samples', 0)}")
        h = m.get("health") or {}
        q = np.bincount(self.scope.quality, minlength=4) if self.scope.quality.size else np.zeros(4, int)
        scope_q = ", ".join(f"{n} {QUALITY_NAMES[i]}" for i, n in enumerate(q) if n and i)
        self.status_labels["input health"].setText(
            ("OK" if h.get("ok", True) else "PROBLEM") + (f"; scope: {scope_q}" if scope_q else "")
            + f"; NaN bursts {h.get('n_nan_bursts', 0)}")
        if snap.seq:
            self.statusBar().showMessage(
                f"{self.stream_name}: frame {snap.seq}, {m.get('fps_recent', 0.0):.1f} fps; {snap.status}")

    # ------------------------------------------------------------------ closing

    def figures(self) -> dict[str, Any]:
        """The window's own figures: frames shown, scope redraws and rate, tick cost."""
        return {
            "n_frames_shown": self.n_frames_shown,
            "scope_redraws": self.scope.n_redraws,
            "scope_fps_last_s": self.scope.fps,
            "scope_fps_mean": self.scope.mean_fps(),
            "tick_ms_median": 1e3 * float(np.median(self._tick_cost_s)) if self._tick_cost_s else None,
            "paint_ms_median": self.scope.traces.paint_ms(50),
            "paint_ms_p99": self.scope.traces.paint_ms(99),
            "redraw_interval_ms": self._interval_ms,
        }

    def shutdown(self) -> dict[str, Any]:
        """Stop recording, the engine and a replay; returns the engine's final metrics."""
        self.timer.stop()
        if self.recorder is not None:
            self.stop_recording()
        summary = self.disconnect_stream()
        self.stop_replay()
        return summary

    def closeEvent(self, event: Any) -> None:
        self.shutdown()
        super().closeEvent(event)

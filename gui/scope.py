"""The EEG scope: every channel scrolling, peak-downsampled to the screen width.

Two parts:

- :class:`ScopeBuffer` (numpy only, no Qt): ONE preallocated sweep buffer of
  ``display_s`` seconds, written at a modulo column like an oscilloscope
  (nothing is ever shifted per sample), its min/max peaks per screen pixel
  computed into preallocated arrays, the channel quality (flat, railing,
  noisy) and the columns of stimulus markers.
- :class:`ScopeWidget` (pyqtgraph): draws the peaks as one curve per quality
  class (so colouring costs no per-channel item), a sweep cursor and marker
  lines. ``update_from`` copies the samples that arrived since the previous
  call out of the engine's inlet ring buffer (``RingBuffer.read_since`` from
  at most one screen back, a copy under its lock: far inside the ring, so it
  never counts as an overflow of the engine's inlet).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["FLAT", "NOISY", "OK", "QUALITY_NAMES", "RAILING", "ScopeBuffer", "ScopeWidget", "channel_quality"]

OK, FLAT, RAILING, NOISY = 0, 1, 2, 3
QUALITY_NAMES = ("ok", "flat", "railing", "noisy")
QUALITY_COLOURS = ((200, 200, 200), (70, 130, 255), (255, 60, 60), (255, 170, 0))


def channel_quality(data_v: np.ndarray, *, flat_std_v: float, rail_abs_v: float, rail_fraction: float,
                    noisy_std_v: float) -> np.ndarray:
    """Classify each channel of recent samples.

    Parameters
    ----------
    data_v : ndarray, float32 (n_channels, n_times)
        Recent samples in volts.
    flat_std_v, rail_abs_v, rail_fraction : float
        As ``realtime.health`` (std below ``flat_std_v``: flat; ``|x| >= rail_abs_v``
        for at least ``rail_fraction`` of the samples: railing).
    noisy_std_v : float
        Std above this: noisy (``gui.noisy_std_v``).

    Returns
    -------
    ndarray, int8 (n_channels,)
        :data:`OK`, :data:`FLAT`, :data:`RAILING` or :data:`NOISY` (railing wins over flat:
        a channel stuck at the rail is also flat).
    """
    out = np.zeros(data_v.shape[0], np.int8)
    if data_v.shape[1] < 2:
        return out
    std = data_v.std(axis=1)
    out[std > noisy_std_v] = NOISY
    out[std < flat_std_v] = FLAT
    railing = (np.abs(data_v) >= rail_abs_v).mean(axis=1) >= rail_fraction
    out[railing] = RAILING
    return out


class ScopeBuffer:
    """A sweep display buffer: ``display_s`` of every channel, written at a modulo column.

    Parameters
    ----------
    n_channels : int
    sfreq : float
        Rate of the samples written (Hz).
    display_s : float
        Seconds across the display.

    Attributes
    ----------
    data : ndarray, float32 (n_channels, n_cols)
        Raw samples as received (the stream's units); column ``i % n_cols`` holds
        sample ``i``. Allocated once.
    timestamps : ndarray, float64 (n_cols,)
        LSL timestamp of each column's sample (NaN: never written).
    n_written : int
        Index of the next sample (the sweep cursor is ``n_written % n_cols``).

    Notes
    -----
    Threading: the GUI thread only (one writer, one reader).
    """

    def __init__(self, n_channels: int, sfreq: float, display_s: float) -> None:
        if n_channels < 1 or sfreq <= 0 or display_s <= 0:
            raise ValueError(f"ScopeBuffer needs n_channels >= 1, sfreq > 0, display_s > 0; "
                             f"got {n_channels}, {sfreq}, {display_s}")
        self.n_channels = int(n_channels)
        self.sfreq = float(sfreq)
        self.n_cols = max(2, int(round(display_s * sfreq)))
        self.data = np.zeros((self.n_channels, self.n_cols), np.float32)
        self.timestamps = np.full(self.n_cols, np.nan)
        self.n_written = 0
        self._n_px = 0
        self._edges = np.zeros(0, np.intp)
        self._dirty: list[tuple[int, int]] = []
        self._dirty_all = True
        self.mins = np.zeros((self.n_channels, 0), np.float32)
        self.maxs = np.zeros((self.n_channels, 0), np.float32)

    @property
    def cursor(self) -> int:
        return self.n_written % self.n_cols

    def write(self, chunk: np.ndarray, timestamps: np.ndarray, first_index: int) -> None:
        """Write samples ``first_index .. first_index + n - 1`` at their columns.

        Parameters
        ----------
        chunk : ndarray, float32 (n_channels, n)
        timestamps : ndarray, float64 (n,)
        first_index : int
            Stream index of ``chunk[:, 0]`` (the ring buffer's index); a jump
            forward (the reader fell behind) simply leaves older columns as they were.
        """
        n = chunk.shape[1]
        if n == 0:
            return
        if n > self.n_cols:  # more than a screen: only the newest screen matters
            chunk, timestamps = chunk[:, -self.n_cols:], timestamps[-self.n_cols:]
            first_index += n - self.n_cols
            n = self.n_cols
        start = first_index % self.n_cols
        stop = start + n
        self._mark_dirty(first_index, n)
        if stop <= self.n_cols:
            self.data[:, start:stop] = chunk[: self.n_channels]
            self.timestamps[start:stop] = timestamps
        else:
            k = self.n_cols - start
            self.data[:, start:] = chunk[: self.n_channels, :k]
            self.data[:, : stop - self.n_cols] = chunk[: self.n_channels, k:]
            self.timestamps[start:] = timestamps[:k]
            self.timestamps[: stop - self.n_cols] = timestamps[k:]
        self.n_written = first_index + n

    def _mark_dirty(self, first_index: int, n: int) -> None:
        if first_index != self.n_written or n >= self.n_cols:  # a jump: every bin may have changed
            self._dirty_all = True
        self._dirty.append((first_index % self.n_cols, n))

    def peaks(self, n_px: int) -> tuple[np.ndarray, np.ndarray]:
        """Min and max of each channel over each of ``n_px`` column bins (peak downsampling).

        Returns
        -------
        mins, maxs : ndarray, float32 (n_channels, n_px')
            ``n_px' = min(n_px, n_cols)``; views of arrays allocated once per width.
        """
        n_px = int(max(1, min(n_px, self.n_cols)))
        if n_px != self._n_px:
            self._n_px = n_px
            self._edges = np.linspace(0, self.n_cols, n_px + 1).astype(np.intp)
            self.mins = np.empty((self.n_channels, n_px), np.float32)
            self.maxs = np.empty((self.n_channels, n_px), np.float32)
            self._dirty_all = True
        if self._dirty_all:
            np.minimum.reduceat(self.data, self._edges[:-1], axis=1, out=self.mins)
            np.maximum.reduceat(self.data, self._edges[:-1], axis=1, out=self.maxs)
        else:
            # only the bins the new samples fell in (a sweep touches one or two per frame)
            for start, n in self._dirty:
                for lo, hi in ((start, min(start + n, self.n_cols)), (0, max(0, start + n - self.n_cols))):
                    if hi <= lo:
                        continue
                    b0 = int(np.searchsorted(self._edges, lo, side="right")) - 1
                    b1 = int(np.searchsorted(self._edges, hi, side="left"))
                    seg = self.data[:, self._edges[b0]:self._edges[b1]]
                    idx = self._edges[b0:b1] - self._edges[b0]
                    np.minimum.reduceat(seg, idx, axis=1, out=self.mins[:, b0:b1])
                    np.maximum.reduceat(seg, idx, axis=1, out=self.maxs[:, b0:b1])
        self._dirty.clear()
        self._dirty_all = False
        return self.mins, self.maxs

    def recent(self, n: int) -> np.ndarray:
        """The newest ``n`` samples (fewer if fewer were written), oldest first: (n_channels, n)."""
        n = min(int(n), self.n_written, self.n_cols)
        idx = (np.arange(self.n_written - n, self.n_written)) % self.n_cols
        return self.data[:, idx]

    def marker_columns(self, marker_ts: Sequence[float]) -> list[int]:
        """Columns of the samples nearest each marker timestamp that lies on the display."""
        written = np.isfinite(self.timestamps)
        if not written.any():
            return []
        ts = np.where(written, self.timestamps, np.inf)
        lo, hi = float(np.nanmin(self.timestamps)), float(np.nanmax(self.timestamps))
        out = []
        for t in marker_ts:
            if lo <= t <= hi:
                out.append(int(np.argmin(np.abs(ts - t))))
        return out


def _trace_item_class() -> type:
    """A pyqtgraph item drawing each channel as one polyline from preallocated QPolygonF memory.

    (Stroking one QPainterPath of 100k+ points, what PlotCurveItem does with a
    connect array, costs ~50 ms a frame; ``drawPolyline`` per channel costs a
    fraction of that.) Made lazily: the module must import without Qt.
    """
    import pyqtgraph as pg
    from PyQt6 import QtCore
    from pyqtgraph import functions as fn

    class TraceItem(pg.GraphicsObject):
        def __init__(self) -> None:
            super().__init__()
            self.polys: list[Any] = []
            self.views: list[np.ndarray] = []
            self.pens = [fn.mkPen(c, width=1) for c in QUALITY_COLOURS]
            self.quality = np.zeros(0, np.int8)
            self._rect = QtCore.QRectF(0, -1, 1, 1)
            self.last_paint_s = 0.0

        def set_traces(self, x: np.ndarray, y: np.ndarray, quality: np.ndarray, rect: tuple) -> None:
            """x (n,), y (n_channels, n) in view coordinates; copied into the polygons."""
            n_ch, n = y.shape
            if len(self.polys) != n_ch or (self.views and self.views[0].shape[0] != n):
                self.polys = [fn.create_qpolygonf(n) for _ in range(n_ch)]
                self.views = [fn.ndarray_from_qpolygonf(p) for p in self.polys]
            for view, row in zip(self.views, y, strict=True):
                view[:, 0] = x
                view[:, 1] = row
            self.quality = quality
            self.prepareGeometryChange()
            self._rect = QtCore.QRectF(*rect)
            self.update()

        def boundingRect(self) -> Any:
            return self._rect

        def paint(self, painter: Any, *args: Any) -> None:
            t0 = time.perf_counter()
            self._paint(painter)
            self.last_paint_s = time.perf_counter() - t0

        def _paint(self, painter: Any) -> None:
            quality = self.quality
            last = -1
            for i, poly in enumerate(self.polys):
                q = int(quality[i]) if i < quality.size else 0
                if q != last:
                    painter.setPen(self.pens[q])
                    last = q
                painter.drawPolyline(poly)

    return TraceItem


class ScopeWidget:
    """The pyqtgraph scope: ``n_display_channels`` stacked traces, sweep cursor, marker lines.

    Parameters
    ----------
    gui_cfg : GuiConfig
        ``display_s``, ``n_display_channels``, ``scale_uv``, ``noisy_std_v``.
    health_cfg : HealthConfig
        The realtime health thresholds (flat, railing) reused for the colouring.

    Attributes
    ----------
    widget : pyqtgraph.PlotWidget
    buffer : ScopeBuffer | None
        Made on the first :meth:`update_from` of a stream.
    quality : ndarray, int8 (n_channels,)
    n_redraws : int
    fps : float
        Redraws per second over the last second.

    Notes
    -----
    Threading: GUI thread only.
    """

    def __init__(self, gui_cfg: Any, health_cfg: Any) -> None:
        import pyqtgraph as pg

        self.cfg = gui_cfg
        self.health_cfg = health_cfg
        self.display_s = float(gui_cfg.display_s)
        self.scale_uv = float(gui_cfg.scale_uv)
        self.widget = pg.PlotWidget()
        self.widget.setBackground((15, 15, 20))
        self.plot = self.widget.getPlotItem()
        self.plot.setMouseEnabled(x=False, y=False)
        self.plot.hideButtons()
        self.plot.setMenuEnabled(False)
        self.plot.showGrid(x=True, y=False, alpha=0.2)
        self.plot.setLabel("bottom", "time in sweep", units="s")
        self.plot.hideAxis("left")
        self.traces = _trace_item_class()()
        self.plot.addItem(self.traces)
        self.cursor_line = pg.InfiniteLine(angle=90, pen=pg.mkPen((90, 220, 90), width=1))
        self.plot.addItem(self.cursor_line)
        self._marker_lines: list[Any] = []
        self.buffer: ScopeBuffer | None = None
        self._ring: Any = None
        self._read_index = 0
        self.scale_to_volts = 1.0
        self.quality = np.zeros(0, np.int8)
        self._next_quality = 0.0
        self.marker_ts: list[float] = []
        self.n_redraws = 0
        self.n_redraws_attached = 0
        self.t_attach = time.monotonic()
        self.fps = 0.0
        self._fps_t0 = time.monotonic()
        self._fps_n = 0
        self._x = np.zeros(0)
        self._y = np.zeros((0, 0), np.float32)

    # ------------------------------------------------------------------ settings

    def set_scale_uv(self, scale_uv: float) -> None:
        self.scale_uv = float(scale_uv)

    def set_display_s(self, display_s: float) -> None:
        """A new time span: the buffer is remade (and refilled from the ring buffer)."""
        self.display_s = float(display_s)
        if self.buffer is not None:
            self.buffer = ScopeBuffer(self.buffer.n_channels, self.buffer.sfreq, self.display_s)
            self._read_index = max(0, self._read_index - self.buffer.n_cols)
            self._x = np.zeros(0)

    def attach(self, ring: Any, sfreq: float, scale_to_volts: float = 1.0) -> None:
        """Read from ``ring`` (a :class:`~neuroimagen.stream.ringbuffer.RingBuffer`) from now on."""
        self._ring = ring
        self.scale_to_volts = float(scale_to_volts)
        n_ch = min(ring.n_channels, int(self.cfg.n_display_channels))
        self.buffer = ScopeBuffer(n_ch, sfreq, self.display_s)
        self._read_index = max(0, ring.total_written - self.buffer.n_cols)
        self.t_attach = time.monotonic()
        self.n_redraws_attached = 0
        self._x = np.zeros(0)
        self.quality = np.zeros(n_ch, np.int8)
        self.plot.setYRange(-n_ch - 0.5, 0.5, padding=0)
        self.plot.setXRange(0, self.display_s, padding=0)

    def detach(self) -> None:
        self._ring = None

    def mean_fps(self) -> float:
        """Redraws per second since the scope was attached to the current stream."""
        return self.n_redraws_attached / max(1e-9, time.monotonic() - self.t_attach)

    # ------------------------------------------------------------------ per frame

    def pull(self) -> int:
        """Copy what arrived since the last call into the sweep buffer; the number of samples."""
        ring, buf = self._ring, self.buffer
        if ring is None or buf is None:
            return 0
        total = ring.total_written
        n_new = total - self._read_index
        if n_new <= 0:
            return 0
        # from where the last read ended (never skipping what arrives meanwhile); at most one
        # screen behind, far inside the ring, so this reader never counts as an overflow
        start = max(self._read_index, total - buf.n_cols)
        data, ts, first, _ = ring.read_since(start)
        buf.write(data, ts, first)
        self._read_index = first + data.shape[1]
        return data.shape[1]

    def redraw(self) -> None:
        """Peaks -> curves, cursor, marker lines; channel quality twice a second."""
        buf = self.buffer
        if buf is None:
            return
        now = time.monotonic()
        if now >= self._next_quality:
            self._next_quality = now + 0.5
            recent = buf.recent(int(min(buf.sfreq, buf.n_cols)))
            h = self.health_cfg
            self.quality = channel_quality(recent * self.scale_to_volts, flat_std_v=h.flat_std_v,
                                           rail_abs_v=h.rail_abs_v, rail_fraction=h.rail_fraction,
                                           noisy_std_v=self.cfg.noisy_std_v)
        width = int(self.plot.getViewBox().width()) or 800
        mins, maxs = buf.peaks(width)
        n_ch, n_px = mins.shape
        if self._x.size != 2 * n_px:
            self._x = np.repeat(np.arange(n_px) * (buf.n_cols / n_px) / buf.sfreq, 2)
        # 1. every channel centred on its own mean, scaled, stacked downwards
        gain = self.scale_to_volts / (self.scale_uv * 1e-6)
        centre = 0.5 * (mins.mean(axis=1) + maxs.mean(axis=1))
        y = self._y if self._y.shape == (n_ch, 2 * n_px) else np.empty((n_ch, 2 * n_px), np.float32)
        self._y = y
        y[:, 0::2] = mins
        y[:, 1::2] = maxs
        y -= centre[:, None]
        y *= gain
        y -= np.arange(1, n_ch + 1, dtype=np.float32)[:, None]
        np.clip(y, -n_ch - 1, 1, out=y)
        # 2. one polyline per channel, coloured by its quality
        self.traces.set_traces(self._x, y, self.quality, (0.0, -n_ch - 1.0, buf.n_cols / buf.sfreq, n_ch + 2.0))
        self.cursor_line.setValue(buf.cursor / buf.sfreq)
        self._draw_markers(buf)
        self.n_redraws += 1
        self.n_redraws_attached += 1
        self._fps_n += 1
        if now - self._fps_t0 >= 1.0:
            self.fps = self._fps_n / (now - self._fps_t0)
            self._fps_t0, self._fps_n = now, 0

    def _draw_markers(self, buf: ScopeBuffer) -> None:
        import pyqtgraph as pg

        cols = buf.marker_columns(self.marker_ts[-64:])
        while len(self._marker_lines) < len(cols):
            line = pg.InfiniteLine(angle=90, pen=pg.mkPen((255, 0, 255), width=1, style=pg.QtCore.Qt.PenStyle.DashLine))
            self.plot.addItem(line)
            self._marker_lines.append(line)
        for i, line in enumerate(self._marker_lines):
            if i < len(cols):
                line.setValue(cols[i] / buf.sfreq)
                line.show()
            else:
                line.hide()

    def add_markers(self, timestamps: Sequence[float]) -> None:
        self.marker_ts.extend(float(t) for t in timestamps)
        del self.marker_ts[:-256]

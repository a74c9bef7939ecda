"""The EEG scope: every channel scrolling, peak-downsampled to the screen width.

Two parts:

- :class:`ScopeBuffer` (numpy only, no Qt): ONE preallocated sweep buffer of
  ``display_s`` seconds, written at a modulo column like an oscilloscope
  (nothing is ever shifted per sample), its min/max peaks per screen pixel
  computed into preallocated arrays, the channel quality (flat, railing,
  noisy) and the columns of stimulus markers.
- :class:`ScopeRaster` (numpy only, no Qt): the peaks drawn as one vertical
  min..max segment per channel and pixel column into ONE preallocated RGB32
  pixel image, the size of the plot on screen. Only the columns whose peaks
  changed since the last frame are redrawn (a sweep touches a few per frame);
  the whole image is redrawn when the scale, the channel centres or the
  quality colours change (twice a second at most).
- :class:`ScopeWidget` (pyqtgraph): shows that image with one ``drawImage``
  (a 1:1 blit, no path stroking, no per-channel item), a sweep cursor and
  marker lines. :meth:`ScopeWidget.pull` copies the samples that arrived since
  the previous call out of the inlet's ring buffer (``RingBuffer.read_since``
  from at most one screen back, a copy under its lock: far inside the ring, so
  it never counts as an overflow).

Why a raster: stroking 128 polylines of 2 x screen-width points cost 15-23 ms
a frame on a 2-core machine (about half a core at 30 fps, taken from the
engine's process); drawing the few changed columns in numpy and blitting the
image costs about a millisecond.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["FLAT", "NOISY", "OK", "QUALITY_NAMES", "RAILING", "ScopeBuffer", "ScopeRaster", "ScopeWidget",
           "channel_quality"]

OK, FLAT, RAILING, NOISY = 0, 1, 2, 3
QUALITY_NAMES = ("ok", "flat", "railing", "noisy")
QUALITY_COLOURS = ((200, 200, 200), (70, 130, 255), (255, 60, 60), (255, 170, 0))
BACKGROUND = (15, 15, 20)
# problem channels are drawn over good ones where traces overlap
_DRAW_ORDER = (OK, NOISY, FLAT, RAILING)


def _rgb32(colour: tuple[int, int, int]) -> np.uint32:
    """0xffRRGGBB: one pixel of a QImage.Format_RGB32 image."""
    r, g, b = colour
    return np.uint32(0xFF000000 | (r << 16) | (g << 8) | b)


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
        self.changed = np.zeros(0, bool)
        self.all_changed = True

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

        Notes
        -----
        Afterwards :attr:`changed` (bool, (n_px',)) marks the bins recomputed by
        this call and :attr:`all_changed` says whether that was every bin.
        """
        n_px = int(max(1, min(n_px, self.n_cols)))
        if n_px != self._n_px:
            self._n_px = n_px
            self._edges = np.linspace(0, self.n_cols, n_px + 1).astype(np.intp)
            self.mins = np.empty((self.n_channels, n_px), np.float32)
            self.maxs = np.empty((self.n_channels, n_px), np.float32)
            self.changed = np.zeros(n_px, bool)
            self._dirty_all = True
        self.all_changed = self._dirty_all
        self.changed[:] = self._dirty_all
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
                    self.changed[b0:b1] = True
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


class ScopeRaster:
    """Stacked traces drawn into one preallocated RGB32 image, column by column.

    Channel ``i`` is centred at view height ``-(i + 1)``; the image spans view
    heights ``1`` (top row) to ``-(n_channels + 1)`` (bottom row), so one
    channel spacing is ``height / (n_channels + 2)`` pixels. Each pixel column
    of each channel is one vertical segment from its min to its max, widened
    to touch the previous column's segment so a trace has no gaps.

    Parameters
    ----------
    n_channels : int

    Attributes
    ----------
    image : ndarray, uint32 (height, n_px)
        0xffRRGGBB pixels (``QImage.Format_RGB32``), C-contiguous; reallocated
        only when the size changes.
    n_columns_drawn : int
        Columns drawn by the last :meth:`draw` (all of them on a full redraw).

    Notes
    -----
    Threading: the GUI thread only. numpy only, so it is tested without Qt.
    """

    def __init__(self, n_channels: int) -> None:
        self.n_channels = int(n_channels)
        self.image = np.zeros((0, 0), np.uint32)
        self.n_columns_drawn = 0
        self._bg = _rgb32(BACKGROUND)
        self._colours = [_rgb32(c) for c in QUALITY_COLOURS]
        self._lo = np.zeros((self.n_channels, 0), np.intp)
        self._hi = np.zeros((self.n_channels, 0), np.intp)
        self._state: tuple = ()

    def draw(self, mins: np.ndarray, maxs: np.ndarray, changed: np.ndarray, *, height: int, gain: float,
             centre: np.ndarray, quality: np.ndarray, full: bool = False) -> np.ndarray:
        """Draw the columns that changed (or every column) and return :attr:`image`.

        Parameters
        ----------
        mins, maxs : ndarray, float32 (n_channels, n_px)
            Peaks per pixel column (:meth:`ScopeBuffer.peaks`), in the stream's units.
        changed : ndarray, bool (n_px,)
            Columns whose peaks changed since the previous call.
        height : int
            Image height in pixels.
        gain : float
            Channel spacings per unit of the samples.
        centre : ndarray, float (n_channels,)
            Value drawn on each channel's centre line.
        quality : ndarray, int8 (n_channels,)
            Colour of each channel (:data:`OK`, :data:`FLAT`, ...).
        full : bool
            Redraw every column. A new size, gain, centre or quality does so by itself.

        Returns
        -------
        ndarray, uint32 (height, n_px)
        """
        n_ch, n_px = mins.shape
        height = max(1, int(height))
        state = (height, n_px, float(gain), centre.tobytes(), quality.tobytes())
        if self.image.shape != (height, n_px):
            self.image = np.full((height, n_px), self._bg, np.uint32)
            self._lo = np.zeros((n_ch, n_px), np.intp)
            self._hi = np.zeros((n_ch, n_px), np.intp)
            full = True
        if state != self._state:
            self._state = state
            full = True
        if full:
            cols = np.arange(n_px)
        else:
            # a column's segment is widened to its left neighbour's, so the next column redraws too
            dirty = changed.copy()
            dirty[1:] |= changed[:-1]
            cols = np.flatnonzero(dirty)
        self.n_columns_drawn = cols.size
        if cols.size == 0:
            return self.image
        # 1. pixel rows of each segment's ends (max -> the upper end); NaN -> below the image
        px_per_unit = height / (n_ch + 2.0)
        offset = (np.arange(n_ch, dtype=np.float64) + 2.0)[:, None]

        def rows(v: np.ndarray) -> np.ndarray:
            r = (offset - (v - centre[:, None]) * gain) * px_per_unit
            r = np.nan_to_num(r, nan=height, posinf=-1.0, neginf=height)
            return np.clip(r, -1, height, out=r).astype(np.intp)

        lo, hi = rows(maxs[:, cols]), rows(mins[:, cols])
        self._lo[:, cols], self._hi[:, cols] = lo, hi
        # 2. touch the left neighbour's segment (column 0 has none)
        has_left = cols > 0
        left = cols[has_left] - 1
        lo[:, has_left] = np.minimum(lo[:, has_left], self._hi[:, left])
        hi[:, has_left] = np.maximum(hi[:, has_left], self._lo[:, left])
        # 3. coverage by a difference array per quality: +1 at each segment's top, -1 below its bottom
        k = cols.size
        lo = np.clip(lo, 0, height)
        hi = np.clip(hi, -1, height - 1)
        block = np.full((height, k), self._bg, np.uint32)
        j = np.broadcast_to(np.arange(k), lo.shape)
        for q in _DRAW_ORDER:
            pick = quality[:n_ch] == q
            if not pick.any():
                continue
            ql, qh, qj = lo[pick], hi[pick], j[pick]
            keep = qh >= ql
            n = (height + 1) * k
            diff = np.bincount((ql[keep] * k + qj[keep]).ravel(), minlength=n)[:n]
            diff -= np.bincount(((qh[keep] + 1) * k + qj[keep]).ravel(), minlength=n)[:n]
            covered = np.cumsum(diff.reshape(height + 1, k)[:height], axis=0) > 0
            block[covered] = self._colours[q]
        if full:
            self.image[:] = block
        else:
            self.image[:, cols] = block
        return self.image


def _raster_item_class() -> type:
    """A pyqtgraph item showing a :class:`ScopeRaster` image with one ``drawImage``.

    Made lazily: the module must import without Qt.
    """
    import pyqtgraph as pg
    from PyQt6 import QtCore, QtGui
    from pyqtgraph import functions as fn

    class RasterItem(pg.GraphicsObject):
        def __init__(self) -> None:
            super().__init__()
            self.qimage: Any = None
            self._array: np.ndarray | None = None
            self._rect = QtCore.QRectF(0, -1, 1, 1)
            self.last_paint_s = 0.0
            self.paint_s: deque[float] = deque(maxlen=600)

        def paint_ms(self, q: float) -> float | None:
            """Percentile ``q`` of the recent paints' durations (ms; None before the first)."""
            return 1e3 * float(np.percentile(self.paint_s, q)) if self.paint_s else None

        def set_image(self, image: np.ndarray, rect: tuple) -> None:
            """``image`` (uint32, C-contiguous) is shown in place: later writes to it show on the next paint."""
            if image is not self._array:  # a new size: wrap the new array (QImage shares its memory)
                self._array = image
                self.qimage = fn.ndarray_to_qimage(image, QtGui.QImage.Format.Format_RGB32)
            new_rect = QtCore.QRectF(*rect)
            if new_rect != self._rect:
                self.prepareGeometryChange()
                self._rect = new_rect
            self.update()

        def boundingRect(self) -> Any:
            return self._rect

        def paint(self, painter: Any, *args: Any) -> None:
            if self.qimage is None:
                return
            t0 = time.perf_counter()
            painter.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform, False)
            painter.drawImage(self._rect, self.qimage)
            self.last_paint_s = time.perf_counter() - t0
            self.paint_s.append(self.last_paint_s)

    return RasterItem


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
        Made by :meth:`attach` (one per stream).
    raster : ScopeRaster | None
        The traces' pixels (made by :meth:`attach`); ``traces`` shows its image.
    quality : ndarray, int8 (n_channels,)
    centre : ndarray, float64 (n_channels,)
        Each channel's centre line (its mean peak), updated with ``quality`` twice a second.
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
        # no grid: a grid makes the axis item span the whole plot, and replaying its picture on every
        # frame cost more than the traces (a quarter of a core at 30 fps, measured with py-spy)
        self.plot.setLabel("bottom", "time in sweep", units="s")
        self.plot.hideAxis("left")
        self.traces = _raster_item_class()()
        self.plot.addItem(self.traces)
        self.raster: ScopeRaster | None = None
        self.centre = np.zeros(0)
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

    # ------------------------------------------------------------------ settings

    def set_scale_uv(self, scale_uv: float) -> None:
        self.scale_uv = float(scale_uv)

    def set_display_s(self, display_s: float) -> None:
        """A new time span: the buffer is remade (and refilled from the ring buffer)."""
        self.display_s = float(display_s)
        if self.buffer is not None:
            self.buffer = ScopeBuffer(self.buffer.n_channels, self.buffer.sfreq, self.display_s)
            self._read_index = max(0, self._read_index - self.buffer.n_cols)
            self._next_quality = 0.0

    def attach(self, ring: Any, sfreq: float, scale_to_volts: float = 1.0) -> None:
        """Read from ``ring`` (a :class:`~neuroimagen.stream.ringbuffer.RingBuffer`) from now on."""
        self._ring = ring
        self.scale_to_volts = float(scale_to_volts)
        n_ch = min(ring.n_channels, int(self.cfg.n_display_channels))
        self.buffer = ScopeBuffer(n_ch, sfreq, self.display_s)
        self._read_index = max(0, ring.total_written - self.buffer.n_cols)
        self.t_attach = time.monotonic()
        self.n_redraws_attached = 0
        self.raster = ScopeRaster(n_ch)
        self._next_quality = 0.0
        self.quality = np.zeros(n_ch, np.int8)
        self.centre = np.zeros(n_ch)
        self.plot.setYRange(-n_ch - 1.0, 1.0, padding=0)  # exactly the raster's rows: drawn 1:1
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
        """Peaks -> the raster's changed columns, cursor, marker lines; quality and centres twice a second."""
        buf, raster = self.buffer, self.raster
        if buf is None or raster is None:
            return
        now = time.monotonic()
        vb = self.plot.getViewBox()
        width, height = int(vb.width()) or 800, int(vb.height()) or 400
        mins, maxs = buf.peaks(width)
        if now >= self._next_quality:
            # 1. twice a second: channel quality (colours) and each channel's centre line; a change of
            # either redraws the whole image, so they are not updated every frame
            self._next_quality = now + 0.5
            recent = buf.recent(int(min(buf.sfreq, buf.n_cols)))
            h = self.health_cfg
            self.quality = channel_quality(recent * self.scale_to_volts, flat_std_v=h.flat_std_v,
                                           rail_abs_v=h.rail_abs_v, rail_fraction=h.rail_fraction,
                                           noisy_std_v=self.cfg.noisy_std_v)
            self.centre = 0.5 * (mins.mean(axis=1) + maxs.mean(axis=1)).astype(np.float64)
        # 2. the columns whose peaks changed, into the image shown 1:1
        gain = self.scale_to_volts / (self.scale_uv * 1e-6)
        image = raster.draw(mins, maxs, buf.changed, height=height, gain=gain, centre=self.centre,
                            quality=self.quality)
        n_ch = buf.n_channels
        self.traces.set_image(image, (0.0, -n_ch - 1.0, buf.n_cols / buf.sfreq, n_ch + 2.0))
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

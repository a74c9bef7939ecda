"""The scope's raster: peaks drawn as pixel segments, only the changed columns (numpy only, no Qt)."""

from __future__ import annotations

import numpy as np

from neuroimagen.gui.scope import (
    BACKGROUND,
    FLAT,
    NOISY,
    OK,
    QUALITY_COLOURS,
    RAILING,
    ScopeBuffer,
    ScopeRaster,
)


def _px(colour):
    r, g, b = colour
    return 0xFF000000 | (r << 16) | (g << 8) | b


def _reference(mins, maxs, *, height, gain, centre, quality):
    """Pixel by pixel: channel i's column c covers rows row(max)..row(min), widened to column c-1's."""
    n_ch, n_px = mins.shape
    ppu = height / (n_ch + 2.0)

    def row(i, v):
        return int(np.clip((i + 2.0 - (v - centre[i]) * gain) * ppu, -1, height))

    img = np.full((height, n_px), _px(BACKGROUND), np.uint32)
    for q in (OK, NOISY, FLAT, RAILING):  # problems drawn on top
        for i in range(n_ch):
            if quality[i] != q:
                continue
            for c in range(n_px):
                lo, hi = row(i, maxs[i, c]), row(i, mins[i, c])
                if c > 0:
                    lo, hi = min(lo, row(i, mins[i, c - 1])), max(hi, row(i, maxs[i, c - 1]))
                for r in range(max(lo, 0), min(hi, height - 1) + 1):
                    img[r, c] = _px(QUALITY_COLOURS[q])
    return img


def test_full_draw_equals_a_pixel_by_pixel_reference():
    rng = np.random.default_rng(0)
    n_ch, n_px, height = 5, 40, 60
    data = rng.standard_normal((n_ch, n_px, 3)).astype(np.float32)
    data[3] *= 8  # wanders over its neighbours: overlap and clipping at the image edges
    mins, maxs = data.min(axis=2), data.max(axis=2)
    quality = np.array([OK, FLAT, OK, RAILING, NOISY], np.int8)
    centre = np.array([0.0, 0.5, -0.2, 0.0, 1.0])
    raster = ScopeRaster(n_ch)
    got = raster.draw(mins, maxs, np.ones(n_px, bool), height=height, gain=0.7, centre=centre, quality=quality)
    np.testing.assert_array_equal(got, _reference(mins, maxs, height=height, gain=0.7, centre=centre,
                                                  quality=quality))
    assert raster.n_columns_drawn == n_px
    assert (got == _px(QUALITY_COLOURS[RAILING])).any() and (got == _px(BACKGROUND)).any()


def test_a_constant_channel_is_one_pixel_row_on_its_centre_line():
    n_ch, n_px, height = 3, 20, 50  # 10 px per channel spacing: channel i centred on row 10 * (i + 2)
    mins = np.full((n_ch, n_px), 2.0, np.float32)
    raster = ScopeRaster(n_ch)
    img = raster.draw(mins, mins.copy(), np.ones(n_px, bool), height=height, gain=1.0,
                      centre=np.full(n_ch, 2.0), quality=np.zeros(n_ch, np.int8))
    drawn = np.flatnonzero((img != _px(BACKGROUND)).any(axis=1))
    assert drawn.tolist() == [20, 30, 40]
    assert (img[[20, 30, 40]] == _px(QUALITY_COLOURS[OK])).all()


def test_incremental_columns_equal_a_full_redraw_while_the_sweep_runs():
    rng = np.random.default_rng(1)
    buf = ScopeBuffer(6, sfreq=200.0, display_s=1.3)  # 260 columns
    raster = ScopeRaster(6)
    quality = np.zeros(6, np.int8)
    centre = np.zeros(6)
    i = 0
    drawn = []
    for _ in range(80):  # several sweeps, chunks of any size
        n = int(rng.integers(1, 30))
        buf.write(rng.standard_normal((6, n)).astype(np.float32), np.zeros(n), i)
        i += n
        mins, maxs = buf.peaks(97)
        img = raster.draw(mins, maxs, buf.changed, height=45, gain=0.4, centre=centre, quality=quality)
        drawn.append(raster.n_columns_drawn)
        full = ScopeRaster(6).draw(mins, maxs, np.ones(mins.shape[1], bool), height=45, gain=0.4,
                                   centre=centre, quality=quality)
        np.testing.assert_array_equal(img, full)
    # after the first frame only a few columns are drawn per frame, not the whole width
    assert drawn[0] == 97 and max(drawn[1:]) < 20


def test_new_gain_centre_or_quality_redraws_everything():
    rng = np.random.default_rng(2)
    mins = rng.standard_normal((2, 30)).astype(np.float32)
    maxs = mins + 0.5
    raster = ScopeRaster(2)
    none = np.zeros(30, bool)
    kw = dict(height=40, centre=np.zeros(2), quality=np.zeros(2, np.int8))
    raster.draw(mins, maxs, none, gain=1.0, **kw)
    raster.draw(mins, maxs, none, gain=1.0, **kw)
    assert raster.n_columns_drawn == 0
    img = raster.draw(mins, maxs, none, gain=2.0, **kw).copy()
    assert raster.n_columns_drawn == 30
    np.testing.assert_array_equal(img, ScopeRaster(2).draw(mins, maxs, ~none, gain=2.0, **kw))
    raster.draw(mins, maxs, none, gain=2.0, height=40, centre=np.zeros(2), quality=np.array([OK, FLAT], np.int8))
    assert raster.n_columns_drawn == 30


def test_nan_peaks_draw_nothing_and_do_not_raise():
    mins = np.full((2, 10), np.nan, np.float32)
    img = ScopeRaster(2).draw(mins, mins.copy(), np.ones(10, bool), height=20, gain=1.0, centre=np.zeros(2),
                              quality=np.zeros(2, np.int8))
    assert (img == _px(BACKGROUND)).all()

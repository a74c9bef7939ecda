"""The scope's sweep buffer, peak downsampling, quality and marker columns (numpy only, no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from neuroimagen.gui.scope import FLAT, NOISY, OK, RAILING, ScopeBuffer, channel_quality


def _expected_counter(n_written: int, n_cols: int) -> np.ndarray:
    """Column c holds the newest index i < n_written with i % n_cols == c."""
    cols = np.arange(n_cols)
    return (n_written - 1 - ((n_written - 1 - cols) % n_cols)).astype(np.float32)


def test_sweep_writes_each_sample_at_its_modulo_column_without_shifting():
    buf = ScopeBuffer(3, sfreq=100.0, display_s=1.0)  # 100 columns
    data_id = id(buf.data)
    rng = np.random.default_rng(0)
    i = 0
    for _ in range(40):  # chunks of any size, several sweeps
        n = int(rng.integers(1, 37))
        idx = np.arange(i, i + n, dtype=np.float32)
        buf.write(np.vstack([idx, -idx, idx * 2]), idx.astype(np.float64) / 100.0, i)
        i += n
    assert id(buf.data) == data_id  # one buffer, allocated once
    assert buf.n_written == i and buf.cursor == i % 100
    np.testing.assert_array_equal(buf.data[0], _expected_counter(i, 100))
    np.testing.assert_array_equal(buf.data[1], -_expected_counter(i, 100))
    np.testing.assert_array_equal(buf.recent(30)[0], np.arange(i - 30, i, dtype=np.float32))


def test_a_chunk_longer_than_the_screen_keeps_the_newest_screen():
    buf = ScopeBuffer(1, sfreq=10.0, display_s=2.0)  # 20 columns
    idx = np.arange(5, 75, dtype=np.float32)
    buf.write(idx[None], idx.astype(np.float64), 5)
    assert buf.n_written == 75
    np.testing.assert_array_equal(buf.data[0], _expected_counter(75, 20))


@pytest.mark.parametrize("n_px", [1, 7, 33, 100, 1000])
def test_incremental_peaks_equal_a_full_min_max_over_each_pixel(n_px):
    buf = ScopeBuffer(4, sfreq=100.0, display_s=1.37)
    rng = np.random.default_rng(n_px)
    i = 0
    for _ in range(60):
        n = int(rng.integers(1, 50))
        buf.write(rng.standard_normal((4, n)).astype(np.float32), np.zeros(n), i)
        i += n
        mins, maxs = buf.peaks(n_px)
        k = min(n_px, buf.n_cols)
        edges = np.linspace(0, buf.n_cols, k + 1).astype(int)
        for b in range(k):
            seg = buf.data[:, edges[b]:edges[b + 1]]
            np.testing.assert_array_equal(mins[:, b], seg.min(axis=1))
            np.testing.assert_array_equal(maxs[:, b], seg.max(axis=1))


def test_channel_quality_flags_flat_railing_and_noisy_channels():
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((5, 1000)) * 10e-6).astype(np.float32)
    data[1] = 3e-6  # flat
    data[2] = 10e-3  # railing (and flat: railing wins)
    data[3] *= 100  # 1 mV std: noisy
    q = channel_quality(data, flat_std_v=1e-7, rail_abs_v=5e-3, rail_fraction=0.9, noisy_std_v=1e-4)
    assert q.tolist() == [OK, FLAT, RAILING, NOISY, OK]


def test_markers_map_to_the_column_of_their_nearest_sample():
    buf = ScopeBuffer(1, sfreq=100.0, display_s=1.0)
    idx = np.arange(0, 150)
    buf.write(idx[None].astype(np.float32), 10.0 + idx / 100.0, 0)
    # shown: samples 50..149 (t 10.50 .. 11.49); 10.2 scrolled off, 12.0 not yet
    cols = buf.marker_columns([10.2, 10.731, 11.49, 12.0])
    assert cols == [73 % 100, 149 % 100]

"""Streaming polyphase resampler: chunked == one-shot, against scipy and analytic signals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from neuroimagen.stream.resample import (
    StreamingResampler,
    rational_ratio,
    resample_filter,
    resample_oneshot,
)

T0 = 500.25


def stream(resampler, data, ts, sizes):
    outs, out_ts = [], []
    i = 0
    for n in sizes:
        y, t = resampler.process(data[:, i : i + n], ts[i : i + n])
        assert y.dtype == np.float32 and y.shape[0] == data.shape[0] and t.shape == (y.shape[1],)
        outs.append(y)
        out_ts.append(t)
        i += n
    assert i >= data.shape[1]
    return np.concatenate(outs, axis=1), np.concatenate(out_ts)


def chunk_sizes(kind: str, n_total: int, rng: np.random.Generator) -> list[int]:
    if kind == "ones":
        return [1] * n_total
    if kind == "whole":
        return [n_total]
    sizes = []
    while sum(sizes) < n_total:
        sizes.append(int(rng.integers(0, 97)))  # empty chunks included
    return sizes


@pytest.mark.parametrize("sfreq_in", [512.0, 2048.0, 1000.0])
@pytest.mark.parametrize("chunking", ["ones", "random", "whole"])
def test_chunked_equals_oneshot(sfreq_in, chunking):
    rng = np.random.default_rng(int(sfreq_in))
    n_total = 3000 if chunking != "ones" else 1500
    data = rng.standard_normal((5, n_total)).astype(np.float32)
    ts = T0 + np.arange(n_total) / sfreq_in
    ref = resample_oneshot(data, sfreq_in, 1000.0)
    res = StreamingResampler(sfreq_in, 1000.0, 5)
    y, t = stream(res, data, ts, chunk_sizes(chunking, n_total, rng))
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    # output count follows the rate ratio (minus the filter delay)
    assert abs(y.shape[1] - n_total * 1000.0 / sfreq_in) <= 1000.0 * res.delay_s + 2
    np.testing.assert_allclose(np.diff(t), 1e-3, atol=1e-9)


def test_passthrough_is_identity():
    rng = np.random.default_rng(1)
    data = rng.standard_normal((3, 100)).astype(np.float32)
    ts = T0 + np.arange(100) / 1000.0
    res = StreamingResampler(1000.0, 1000.0, 3)
    y, t = res.process(data, ts)
    np.testing.assert_array_equal(y, data)
    np.testing.assert_array_equal(t, ts)
    assert y is not data and res.delay_s == 0.0


def test_oneshot_matches_scipy_resample_poly():
    """2048 -> 1000 Hz: the causal output is resample_poly's, shifted by the filter delay."""
    rng = np.random.default_rng(2)
    data = rng.standard_normal((2, 4096))
    ours = resample_oneshot(data, 2048.0, 1000.0)
    up, down = rational_ratio(2048.0, 1000.0)
    g = (resample_filter(up, down).size - 1) // 2
    assert g % down == 0  # integer delay at the output rate for this ratio
    # resample_poly's sample m is the instant m / 1000; ours starts at that instant too
    ref = signal.resample_poly(data, up, down, axis=1)
    n = ours.shape[1]
    np.testing.assert_allclose(ours, ref[:, :n], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sfreq_in", [512.0, 2048.0])
def test_timestamps_mark_the_instant_each_sample_represents(sfreq_in):
    """A band-limited sine resampled: value at each output timestamp equals the sine there."""
    n_total = 4000
    ts = T0 + np.arange(n_total) / sfreq_in
    freqs = (7.0, 31.0, 80.0)
    x = sum(np.sin(2 * np.pi * f * (ts - T0) + f) for f in freqs)[None].astype(np.float32)
    res = StreamingResampler(sfreq_in, 1000.0, 1)
    y, t = stream(res, x, ts, chunk_sizes("random", n_total, np.random.default_rng(3)))
    truth = sum(np.sin(2 * np.pi * f * (t - T0) + f) for f in freqs)
    settled = t > T0 + 0.1  # skip the filter's start-up transient
    np.testing.assert_allclose(y[0, settled], truth[settled], atol=5e-3)
    # output sample 0 is at (or within one output sample after) the first input sample
    assert T0 <= t[0] < T0 + 1e-3
    # a sample is emitted delay_s after its instant
    assert ts[-1] - t[-1] == pytest.approx(res.delay_s, abs=1.5e-3)


def test_timestamps_follow_jittery_input_clock():
    """Output timestamps are interpolated from the input ones, not from a nominal grid."""
    sfreq_in = 512.0
    n_total = 2000
    ts = T0 + np.arange(n_total) / sfreq_in
    ts[1000:] += 0.25  # a clock step: outputs after it must follow
    res = StreamingResampler(sfreq_in, 1000.0, 1)
    _, t = res.process(np.zeros((1, n_total), np.float32), ts)
    pos = (np.arange(t.size) + res._m0) * res.down / res.up - res._g / res.up
    np.testing.assert_allclose(t, np.interp(pos, np.arange(n_total), ts), atol=1e-9)


def test_reset_restarts_the_signal():
    rng = np.random.default_rng(4)
    data = rng.standard_normal((2, 800)).astype(np.float32)
    ts = T0 + np.arange(800) / 512.0
    res = StreamingResampler(512.0, 1000.0, 2)
    first, _ = res.process(data, ts)
    res.reset()
    again, _ = res.process(data, ts)
    np.testing.assert_array_equal(first, again)


def test_rate_ratio_validation():
    assert rational_ratio(512.0, 1000.0) == (125, 64)
    assert rational_ratio(2048.0, 1000.0) == (125, 256)
    with pytest.raises(ValueError, match="999.7"):
        rational_ratio(999.7, 1000.0)
    with pytest.raises(ValueError, match="positive"):
        StreamingResampler(0.0, 1000.0, 2)
    res = StreamingResampler(512.0, 1000.0, 2)
    with pytest.raises(ValueError, match="n_times"):
        res.process(np.zeros((3, 4), np.float32), np.zeros(4))
    with pytest.raises(ValueError, match="timestamps"):
        res.process(np.zeros((2, 4), np.float32), np.zeros(3))

"""The one preprocessing path: streaming == one-shot, filters, reference, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import interpolate, signal

from neuroimagen.stream.config import BandpassConfig, NormalizationConfig, PreprocessingConfig
from neuroimagen.stream.preprocessing import (
    NormStats,
    StreamingPreprocessor,
    design_sos,
    normalize,
    preprocess_continuous,
    preprocess_window,
    rereference,
    resample_window,
)

SFREQ = 1000.0


def eeg_like(n_channels: int, n_times: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_channels, n_times)).cumsum(axis=1) * 1e-6  # drifting, in V
    return x.astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_oneshot_causal_filter(seed):
    cfg = PreprocessingConfig(notch_hz=50.0)
    x = eeg_like(16, 5000, seed)
    sos = design_sos(cfg, SFREQ)
    # independent reference: scipy's causal SOS filter on the whole signal, from rest
    ref = signal.sosfilt(sos, x.astype(np.float64), axis=1)
    pre = StreamingPreprocessor(cfg, SFREQ, n_channels=16)
    rng = np.random.default_rng(seed)
    outs, i = [], 0
    while i < x.shape[1]:
        n = int(rng.integers(0, 120))  # includes empty and 1-sample chunks
        out = pre.process(x[:, i : i + n])
        assert out.dtype == np.float32 and out.shape == (16, min(n, x.shape[1] - i))
        outs.append(out)
        i += n
    y = np.concatenate(outs, axis=1)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(y, ref, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(preprocess_continuous(x, SFREQ, cfg), ref, rtol=0, atol=1e-6 * scale)


def test_reset_returns_filters_to_rest():
    cfg = PreprocessingConfig()
    x = eeg_like(4, 2000)
    pre = StreamingPreprocessor(cfg, SFREQ, 4)
    a = pre.process(x)
    pre.reset()
    np.testing.assert_array_equal(pre.process(x), a)


def tone_gain(freq: float, cfg: PreprocessingConfig) -> float:
    """Steady-state amplitude ratio of a sine through the causal continuous stage."""
    t = np.arange(int(20 * SFREQ)) / SFREQ
    x = np.sin(2 * np.pi * freq * t)[None].astype(np.float32)
    y = preprocess_continuous(x, SFREQ, cfg)
    tail = slice(int(10 * SFREQ), None)  # after the transient
    return float(np.sqrt(2) * y[0, tail].std())


def test_bandpass_passes_20hz_attenuates_1hz_and_200hz():
    cfg = PreprocessingConfig(bandpass=BandpassConfig(l_freq_hz=5.0, h_freq_hz=95.0, order=4))
    assert tone_gain(20.0, cfg) == pytest.approx(1.0, abs=0.02)
    assert tone_gain(1.0, cfg) < 0.01  # > 40 dB down
    assert tone_gain(200.0, cfg) < 0.05  # > 26 dB down (4th order, one octave above 95 Hz)
    # and the measured gains are the design's frequency response
    sos = design_sos(cfg, SFREQ)
    for f in (1.0, 20.0, 200.0):
        _, h = signal.sosfreqz(sos, worN=[f], fs=SFREQ)
        assert tone_gain(f, cfg) == pytest.approx(abs(h[0]), abs=2e-3)


def test_notch_kills_50hz_and_keeps_neighbours():
    cfg = PreprocessingConfig(bandpass=None, notch_hz=50.0, notch_q=30.0)
    assert tone_gain(50.0, cfg) < 0.01
    assert tone_gain(20.0, cfg) == pytest.approx(1.0, abs=0.02)
    assert tone_gain(80.0, cfg) == pytest.approx(1.0, abs=0.02)


def test_no_filtering_returns_a_copy():
    cfg = PreprocessingConfig(bandpass=None)
    x = eeg_like(3, 50)
    y = StreamingPreprocessor(cfg, SFREQ, 3).process(x)
    np.testing.assert_array_equal(y, x)
    y[0, 0] = 123.0
    assert x[0, 0] != 123.0


def test_rereference_average_and_named():
    x = eeg_like(5, 200)
    avg = rereference(x, "average")
    np.testing.assert_allclose(avg.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(avg, x - x.mean(axis=0), rtol=1e-6, atol=1e-12)
    assert rereference(x, "none") is x
    names = ["Fz", "Cz", "Pz", "O1", "O2"]
    ref = rereference(x, ("O1", "o2"), names)
    np.testing.assert_allclose(ref, x - (x[3] + x[4]) / 2, rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError, match="Oz"):
        rereference(x, ("Oz",), names)
    with pytest.raises(ValueError, match="ch_names"):
        rereference(x, ("Cz",))
    # the streaming stage applies the configured reference
    cfg = PreprocessingConfig(bandpass=None, reference="average")
    np.testing.assert_allclose(StreamingPreprocessor(cfg, SFREQ, 5).process(x), avg)


def test_normalize_modes():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((4, 440)) * [[1], [2], [3], [4]] + [[5], [6], [7], [8]]).astype(
        np.float32
    )
    win = normalize(x, NormalizationConfig(mode="window"))
    np.testing.assert_allclose(win.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(win.std(axis=1), 1.0, atol=1e-5)
    assert win.dtype == np.float32
    np.testing.assert_array_equal(normalize(x, NormalizationConfig(mode="none")), x)
    stats = NormStats(mean=np.array([1, 2, 3, 4.0]), std=np.array([2, 2, 4, 4.0]))
    ds = normalize(x, NormalizationConfig(mode="dataset", eps=1e-8), stats)
    np.testing.assert_allclose(ds, (x - [[1], [2], [3], [4]]) / [[2], [2], [4], [4]], rtol=1e-5)
    with pytest.raises(ValueError, match="NormStats"):
        normalize(x, NormalizationConfig(mode="dataset"))
    with pytest.raises(ValueError, match="3 channels"):
        normalize(x, NormalizationConfig(mode="dataset"), NormStats(np.zeros(3), np.ones(3)))


def test_normstats_from_windows_and_roundtrip():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((10, 3, 50)) * 2 + 1
    stats = NormStats.from_windows(w)
    np.testing.assert_allclose(
        stats.mean, w.transpose(1, 0, 2).reshape(3, -1).mean(axis=1), rtol=1e-5
    )
    np.testing.assert_allclose(
        stats.std, w.transpose(1, 0, 2).reshape(3, -1).std(axis=1), rtol=1e-5
    )
    again = NormStats.from_dict(stats.to_dict())
    np.testing.assert_array_equal(again.mean, stats.mean)
    np.testing.assert_array_equal(again.std, stats.std)
    assert stats.mean.dtype == np.float32


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        (np.zeros(3), np.ones(4), "shape"),
        (np.zeros(3), np.array([1.0, 0.0, 1.0]), "positive"),
        (np.zeros(3), np.array([1.0, -1.0, 1.0]), "positive"),
        (np.zeros(3), np.array([1.0, np.nan, 1.0]), "finite"),
        (np.zeros(3), np.array([1.0, np.inf, 1.0]), "finite"),
        (np.array([0.0, np.nan, 0.0]), np.ones(3), "finite"),
        (np.zeros(0), np.ones(0), "empty"),
    ],
)
def test_normstats_validation_errors(mean, std, match):
    with pytest.raises(ValueError, match=match):
        NormStats(mean, std)


def test_resample_window_matches_scipy_interp1d():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 440)).astype(np.float32)
    y = resample_window(x, 512)
    # DreamDiffusion's reference: interp1d over linspace(0, 1, n)
    f = interpolate.interp1d(np.linspace(0, 1, 440), x.astype(np.float64), kind="linear", axis=1)
    ref = f(np.linspace(0, 1, 512))
    assert y.shape == (8, 512) and y.dtype == np.float32
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(resample_window(x, 440), x)
    with pytest.raises(ValueError, match="1 samples"):
        resample_window(x[:, :1], 512)


def test_preprocess_window_normalises_then_resamples():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 440)).astype(np.float32) * 1e-5
    cfg = PreprocessingConfig(resample_n_times=512)
    y = preprocess_window(x, cfg)
    expected = resample_window(normalize(x, cfg.normalization), 512)
    np.testing.assert_array_equal(y, expected)
    assert y.shape == (4, 512)

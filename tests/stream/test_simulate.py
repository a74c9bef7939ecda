"""The simulated headset: spectrum properties, determinism, chunking independence, LSL stream."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.lsl import unique_name
from helpers.wait import wait_until
from scipy.signal import welch

from neuroimagen.stream.config import SimulateConfig
from neuroimagen.stream.montage import montage_ch_names
from neuroimagen.stream.simulate import simulate_eeg

SFREQ = 1000.0


@pytest.fixture(scope="module")
def ten_seconds() -> np.ndarray:
    return simulate_eeg(0, 10_000, seed=3)


def test_chunking_independent_and_deterministic() -> None:
    whole = simulate_eeg(1234, 3000, seed=7)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, 3000), 15, replace=False))
    parts = [simulate_eeg(1234 + a, b - a, seed=7) for a, b in zip([0, *cuts], [*cuts, 3000], strict=True)]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(simulate_eeg(1234, 3000, seed=7), whole)
    assert not np.allclose(simulate_eeg(1234, 3000, seed=8), whole)
    assert whole.dtype == np.float32 and whole.shape == (128, 3000)


def test_amplitude_is_tens_of_microvolts(ten_seconds: np.ndarray) -> None:
    rms = ten_seconds.std(axis=1)
    assert 5e-6 < np.median(rms) < 50e-6
    assert np.isfinite(ten_seconds).all()


def _psd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return welch(x.astype(np.float64), fs=SFREQ, nperseg=2000, axis=-1)


def test_posterior_alpha_peak(ten_seconds: np.ndarray) -> None:
    names = montage_ch_names()
    posterior = [names.index(c) for c in ("O1", "Oz", "O2", "POz")]
    frontal = [names.index(c) for c in ("Fp1", "Fp2", "AFz", "Fz")]
    f, p = _psd(ten_seconds)
    alpha = (f >= 9) & (f <= 11)
    flank = ((f >= 5) & (f <= 7)) | ((f >= 14) & (f <= 16))
    post_alpha = p[posterior][:, alpha].mean(axis=1)
    assert (post_alpha > 4 * p[posterior][:, flank].mean(axis=1)).all()
    assert post_alpha.mean() > 5 * p[frontal][:, alpha].mean()
    # the peak of the posterior average spectrum between 4 and 30 Hz is at ~10 Hz
    band = (f >= 4) & (f <= 30)
    assert abs(f[band][np.argmax(p[posterior][:, band].mean(axis=0))] - 10.0) <= 0.75


def test_one_over_f_background(ten_seconds: np.ndarray) -> None:
    names = montage_ch_names()
    frontal = [names.index(c) for c in ("Fp1", "Fp2", "AFz", "Fz", "F3", "F4")]
    f, p = _psd(ten_seconds[frontal])
    keep = (f >= 2) & (f <= 40) & ~((f >= 7) & (f <= 13))
    slope = np.polyfit(np.log10(f[keep]), np.log10(p[:, keep].mean(axis=0)), 1)[0]
    assert -1.5 < slope < -0.5, slope


def test_line_noise_at_50_hz(ten_seconds: np.ndarray) -> None:
    f, p = _psd(ten_seconds)
    i50 = np.argmin(np.abs(f - 50.0))
    around = ((f >= 44) & (f <= 48)) | ((f >= 52) & (f <= 56))
    ratio = p[:, i50] / np.median(p[:, around], axis=1)
    assert ratio.min() > 5 and np.median(ratio) > 15, (ratio.min(), np.median(ratio))
    f60, p60 = _psd(simulate_eeg(0, 8000, seed=3, line_freq_hz=60.0))
    assert p60[:, np.argmin(np.abs(f60 - 60))].mean() > 10 * p60[:, np.argmin(np.abs(f60 - 50))].mean()


@pytest.mark.usefixtures("lsl_loopback")
def test_simulated_headset_over_lsl() -> None:
    import pylsl

    from neuroimagen.stream.simulate import SimulatedHeadset

    name = unique_name("sim")
    cfg = SimulateConfig(seed=5, marker_interval_s=0.4)
    with SimulatedHeadset(cfg, duration_s=1.0, name=name, wait_for_consumers_s=10.0) as sim:
        inlets = []
        for n in (name, f"{name}-markers"):
            found = pylsl.resolve_byprop("name", n, 1, 10.0)
            assert found, n
            inlets.append(pylsl.StreamInlet(found[0], max_buflen=30))
            inlets[-1].open_stream(timeout=10.0)
        eeg, mk = inlets
        chunks, stamps, markers = [], [], []

        def poll() -> bool:
            d, t = eeg.pull_chunk(timeout=0.0, max_samples=5000, as_numpy=True)
            if len(t):
                chunks.append(d.copy())
                stamps.append(t.copy())
            m, mt = mk.pull_chunk(timeout=0.0)
            markers.extend(zip(mt, (v[0] for v in m), strict=True))
            return sum(map(len, stamps)) >= 1000 and len(markers) >= 2

        wait_until(poll, 15.0, message="1 s of simulated data and 2 markers")
        assert sim.wait(5.0)
        info = eeg.info()
    data, ts = np.concatenate(chunks).T, np.concatenate(stamps)
    np.testing.assert_array_equal(data, simulate_eeg(0, 1000, seed=5))
    assert info.channel_count() == 128 and info.nominal_srate() == 1000.0
    ch = info.desc().child("channels").child("channel")
    labels, units = [], set()
    while not ch.empty():
        labels.append(ch.child_value("label"))
        units.add(ch.child_value("unit"))
        ch = ch.next_sibling()
    assert labels == montage_ch_names() and units == {"volts"}
    # markers every 0.4 s at the timestamp of their onset sample, JSON payloads
    assert [json.loads(p)["index"] for _, p in markers] == [1, 2]
    for k, (t, payload) in enumerate(markers, start=1):
        assert abs(t - ts[400 * k]) < 1e-3
        assert set(json.loads(payload)) >= {"image", "label"}

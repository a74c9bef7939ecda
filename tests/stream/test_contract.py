"""Channel/rate/unit contract: matching, refusal, interpolation, units, resampling."""

from __future__ import annotations

import numpy as np
import pytest

from neuroimagen.stream.config import ContractConfig
from neuroimagen.stream.contract import (
    ChannelContract,
    ContractError,
    canonical_ch_name,
    detect_unit_scale,
)
from neuroimagen.stream.montage import channel_positions, montage_ch_names
from neuroimagen.stream.resample import resample_oneshot

MODEL = montage_ch_names()


@pytest.mark.parametrize(
    ("name", "canon"),
    [
        ("EEG Fp1", "fp1"),
        ("FP1", "fp1"),
        ("Fp1", "fp1"),
        ("Fp1-REF", "fp1"),
        ("EEG FP1-Ref", "fp1"),
        ("eeg_fp1", "fp1"),
        ("Fp1-AVG", "fp1"),
        (" Cz ", "cz"),
        ("T3", "t7"),
        ("EEG T4-REF", "t8"),
        ("t5", "p7"),
        ("T6", "p8"),
        ("STI 014", "sti 014"),
        ("EEG", "eeg"),
    ],
)
def test_canonical_ch_name(name, canon):
    assert canonical_ch_name(name) == canon


def spelled(name: str, k: int) -> str:
    """A stream's spelling of a model channel, in the styles headsets use."""
    styles = (
        name,
        name.upper(),
        f"EEG {name}",
        f"{name}-REF",
        f"EEG {name.upper()}-Ref",
        name.lower(),
    )
    return styles[k % len(styles)]


def test_channels_matched_by_name_reordered_extras_dropped():
    rng = np.random.default_rng(0)
    order = rng.permutation(len(MODEL))
    old = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}
    stream_names = [spelled(old.get(MODEL[i], MODEL[i]), k) for k, i in enumerate(order)]
    stream_names = ["STI 014", *stream_names[:60], "Counter", *stream_names[60:]]
    n_in = len(stream_names)
    contract = ChannelContract(ContractConfig(units="V"), stream_names, 1000.0)
    assert contract.ch_names_out == MODEL
    assert (contract.n_channels_in, contract.n_channels_out) == (n_in, 128)
    assert contract.dropped == ["STI 014", "Counter"]
    assert contract.missing == [] and contract.interpolated == []
    # each stream row carries its own row number: the output must be the model order
    data = np.repeat(np.arange(n_in, dtype=np.float32)[:, None], 7, axis=1)
    ts = np.arange(7) / 1000.0
    y, t = contract.apply(data, ts)
    expected_rows = [
        stream_names.index(
            next(s for s in stream_names if canonical_ch_name(s) == canonical_ch_name(m))
        )
        for m in MODEL
    ]
    np.testing.assert_array_equal(y[:, 0], np.array(expected_rows, dtype=np.float32))
    np.testing.assert_array_equal(t, ts)
    assert y.dtype == np.float32


def test_custom_channel_list_from_the_manifest():
    cfg = ContractConfig(ch_names=("Cz", "Pz", "Oz"), units="uV", sfreq_hz=500.0)
    contract = ChannelContract(cfg, ["oz", "EEG PZ", "Counter", "CZ"], 500.0)
    assert contract.ch_names_out == ["Cz", "Pz", "Oz"]
    data = np.array([[1.0], [2.0], [99.0], [3.0]], dtype=np.float32)
    y, _ = contract.apply(data, np.zeros(1))
    np.testing.assert_allclose(y[:, 0], np.array([3.0, 2.0, 1.0]) * 1e-6, rtol=1e-6)


def test_duplicate_matches_are_an_error():
    names = [*MODEL, "EEG Fp1-REF", "T3"]  # Fp1 twice, T7 twice
    with pytest.raises(ContractError) as exc:
        ChannelContract(ContractConfig(units="V"), names, 1000.0)
    msg = str(exc.value)
    assert "Fp1 matches 2 stream channels: Fp1, EEG Fp1-REF" in msg
    assert "T7 matches 2 stream channels: T7, T3" in msg


def test_missing_channels_refused_with_their_names():
    missing = ["C3", "Pz", "O2"]
    names = [n for n in MODEL if n not in missing]
    with pytest.raises(ContractError) as exc:
        ChannelContract(ContractConfig(units="V"), names, 1000.0)
    msg = str(exc.value)
    assert "3 model channel(s) missing from the stream: C3, Pz, O2" in msg
    assert "on_missing_channels=interpolate" in msg


def test_too_many_missing_refused_even_when_interpolating():
    names = MODEL[20:]
    cfg = ContractConfig(units="V", on_missing_channels="interpolate", max_missing_fraction=0.1)
    with pytest.raises(ContractError, match=r"20 of 128 model channels missing .*Fp1, Fz"):
        ChannelContract(cfg, names, 1000.0)


def smooth_field(pos: np.ndarray) -> np.ndarray:
    """A smooth scalar field over the scalp (low-order in the direction from the head centre)."""
    u = pos - pos.mean(axis=0)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return 1.0 + 0.8 * u[:, 0] - 0.5 * u[:, 1] + 0.6 * u[:, 2] + 0.4 * u[:, 0] * u[:, 1]


def test_interpolation_of_a_smooth_field_is_accurate():
    missing = [n for n in MODEL if n in {"C3", "Pz", "O2", "F8", "CP6", "FC1", "T7"}]
    names = [n for n in MODEL if n not in missing]
    cfg = ContractConfig(units="uV", on_missing_channels="interpolate", max_missing_fraction=0.1)
    contract = ChannelContract(cfg, names, 1000.0)
    assert contract.missing == missing and contract.interpolated == missing
    truth = smooth_field(channel_positions())  # (128,), "uV"
    amp = np.array([1.0, -2.0, 0.5], dtype=np.float32)  # three time samples
    data = (np.array([truth[MODEL.index(n)] for n in names])[:, None] * amp).astype(np.float32)
    y, _ = contract.apply(data, np.arange(3.0))
    expected = truth[:, None] * amp * 1e-6
    idx = [MODEL.index(n) for n in missing]
    good = [i for i in range(128) if i not in idx]
    np.testing.assert_allclose(y[good], expected[good], rtol=1e-6)  # untouched
    err = np.abs(y[idx] - expected[idx]).max()
    spread = np.ptp(truth) * 1e-6 * 2.0
    assert err < 0.02 * spread, f"interpolation error {err:.3g} V vs field range {spread:.3g} V"
    # far better than the naive guess (the mean of all good channels)
    naive = np.abs(expected[good].mean(axis=0) - expected[idx]).max()
    assert err < 0.1 * naive


@pytest.mark.parametrize(
    ("unit", "scale"),
    [
        ("V", 1.0),
        ("volts", 1.0),
        ("uV", 1e-6),
        ("µV", 1e-6),
        ("μV", 1e-6),
        ("microvolts", 1e-6),
        ("UV", 1e-6),
        ("mV", 1e-3),
        ("millivolts", 1e-3),
    ],
)
def test_units_detected_from_the_stream(unit, scale):
    assert detect_unit_scale([unit] * 4, "auto") == pytest.approx(scale)
    contract = ChannelContract(ContractConfig(), MODEL, 1000.0, units=[unit] * 128)
    assert contract.scale_to_volts == pytest.approx(scale)
    y, _ = contract.apply(np.full((128, 2), 3.0, dtype=np.float32), np.zeros(2))
    np.testing.assert_allclose(y, 3.0 * scale, rtol=1e-6)


def test_units_missing_unknown_mixed_or_configured():
    # no unit anywhere: the amplitude decides later (tests/stream/test_units.py), or refuses
    assert ChannelContract(ContractConfig(), MODEL, 1000.0).units_pending
    with pytest.raises(ContractError, match=r"no unit .*stream\.contract\.units"):
        ChannelContract(ContractConfig(), MODEL, 1000.0, units=["uV"] * 127 + [None])
    with pytest.raises(ContractError, match=r"unknown channel unit.*'counts'"):
        detect_unit_scale(["counts", "uV"], "auto")
    with pytest.raises(ContractError, match="mixed units"):
        ChannelContract(ContractConfig(), MODEL, 1000.0, units=["uV"] * 64 + ["V"] * 64)
    # extra channels' units do not matter (a stim channel without unit, a counter in 'n/a')
    contract = ChannelContract(
        ContractConfig(), [*MODEL, "STI", "counter"], 1000.0, units=["µV"] * 128 + [None, "n/a"]
    )
    assert contract.scale_to_volts == pytest.approx(1e-6)
    # the config decides when set
    assert detect_unit_scale([None, None], "uV") == pytest.approx(1e-6)
    assert ChannelContract(ContractConfig(units="V"), MODEL, 1000.0).scale_to_volts == 1.0


def test_all_problems_listed_together():
    names = [n for n in MODEL if n != "Oz"]
    cfg = ContractConfig(on_rate_mismatch="refuse")
    with pytest.raises(ContractError) as exc:
        ChannelContract(cfg, names, 512.0, units=["uV"] * 126 + ["counts"])
    msg = str(exc.value)
    assert "missing from the stream: Oz" in msg
    assert "unknown channel unit(s) 'counts'" in msg
    assert "512 Hz differs from the model's 1000 Hz" in msg


@pytest.mark.parametrize("sfreq_in", [512.0, 2048.0])
def test_other_rates_resampled(sfreq_in):
    rng = np.random.default_rng(5)
    names = ["Counter", *MODEL[::-1]]
    n_total = 2000
    data = rng.standard_normal((len(names), n_total)).astype(np.float32)
    ts = 100.0 + np.arange(n_total) / sfreq_in
    contract = ChannelContract(ContractConfig(units="uV"), names, sfreq_in)
    assert contract.resampler is not None and contract.sfreq_out == 1000.0
    outs, out_ts = [], []
    for i in range(0, n_total, 37):
        y, t = contract.apply(data[:, i : i + 37], ts[i : i + 37])
        outs.append(y)
        out_ts.append(t)
    y = np.concatenate(outs, axis=1)
    picked = data[1:][::-1] * 1e-6
    ref = resample_oneshot(picked, sfreq_in, 1000.0)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-11)
    t = np.concatenate(out_ts)
    assert t.size == y.shape[1]
    np.testing.assert_allclose(np.diff(t), 1e-3, atol=1e-9)


def test_apply_checks_the_channel_count():
    contract = ChannelContract(ContractConfig(units="V"), MODEL, 1000.0)
    with pytest.raises(ValueError, match="128 channels"):
        contract.apply(np.zeros((127, 3), np.float32), np.zeros(3))

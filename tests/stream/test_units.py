"""The one unit table (stream/units.py), units from the amplitude, and unlabelled streams in the contract."""

import logging

import numpy as np
import pytest

from neuroimagen.stream.config import ContractConfig
from neuroimagen.stream.contract import ChannelContract, ContractError, detect_unit_scale
from neuroimagen.stream.montage import montage_ch_names
from neuroimagen.stream.units import (
    AmbiguousUnitError,
    guess_scale_from_amplitude,
    is_declared,
    unit_to_volts,
)

MODEL = montage_ch_names()


@pytest.mark.parametrize(
    ("unit", "ch_type", "volts"),
    [
        ("V", None, 1.0), ("v", None, 1.0), ("volt", None, 1.0), ("Volts", None, 1.0),
        ("mV", None, 1e-3), ("millivolts", None, 1e-3),
        ("uV", None, 1e-6), ("UV", None, 1e-6), ("µV", None, 1e-6), ("μV", None, 1e-6),
        ("microvolts", None, 1e-6), ("microvolt", None, 1e-6), ("micro volts", None, 1e-6),
        ("nV", None, 1e-9), ("nanovolts", None, 1e-9),
        # mne-lsl: MNE's unit_mul exponent of the channel type's SI unit
        ("0", "eeg", 1.0), ("-6", "eeg", 1e-6), ("-3", "eog", 1e-3), ("0", None, 1.0),
        ("0", "stim", None), ("-6", "stim", None),
        # not a voltage, or nothing declared
        ("MV", None, None), ("code", None, None), ("counts", None, None), ("teslas", None, None),
        ("none", None, None), ("", None, None), (None, None, None),
    ],
)
def test_unit_table(unit, ch_type, volts):
    got = unit_to_volts(unit, ch_type)
    assert got == (pytest.approx(volts) if volts is not None else None)


def test_mne_lsl_writes_exponents_that_the_table_reads(lsl_loopback):
    """mne-lsl's own StreamInfo writes the units we read (no copied strings)."""
    mne = pytest.importorskip("mne")
    from mne_lsl.lsl import StreamInfo

    info = mne.create_info(["Fz", "Cz", "STI"], 1000.0, ["eeg", "eeg", "stim"])
    with info._unlock():
        info["chs"][1]["unit_mul"] = -6
    sinfo = StreamInfo("units-probe", "eeg", 3, 1000.0, "float32", "units-probe")
    sinfo.set_channel_info(info)
    units, types = sinfo.get_channel_units(), sinfo.get_channel_types()
    assert units == ["0", "-6", "0"]
    assert [unit_to_volts(u, t) for u, t in zip(units, types, strict=True)] == [1.0, 1e-6, None]


def test_is_declared():
    assert not is_declared(None) and not is_declared(" none ") and not is_declared("")
    assert is_declared("0") and is_declared("uV")


def _eeg(n_channels: int, n_times: int, rms: float, dc: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, rms, (n_channels, n_times)) + dc * np.arange(1, n_channels + 1)[:, None]


@pytest.mark.parametrize(
    ("rms", "dc", "scale"),
    [(20e-6, 0.0, 1.0), (2e-6, 5e-3, 1.0), (20.0, 0.0, 1e-6), (5.0, 3000.0, 1e-6), (300.0, 0.0, 1e-6)],
)
def test_amplitude_decides_volts_or_microvolts(rms, dc, scale):
    got, reason = guess_scale_from_amplitude(_eeg(8, 500, rms, dc))
    assert got == scale and "median amplitude" in reason


@pytest.mark.parametrize("rms", [0.0, 0.02, 5e-9, 1e5])  # flat, millivolt-sized in V, too small, counts
def test_ambiguous_amplitude_is_refused(rms):
    with pytest.raises(AmbiguousUnitError):
        guess_scale_from_amplitude(_eeg(8, 500, rms))


def test_contract_without_units_decides_from_amplitude_and_logs(caplog):
    contract = ChannelContract(ContractConfig(), [*MODEL, "counter"], 1000.0)
    assert contract.units_pending
    data = np.vstack([_eeg(128, 500, 15.0), np.arange(500)[None, :] * 1e6])  # the counter is huge: dropped
    with caplog.at_level(logging.WARNING, logger="neuroimagen.stream.contract"):
        assert contract.resolve_units_from_amplitude(data) == 1e-6
    assert "reads them as uV" in caplog.text and "stream.contract.units" in caplog.text
    assert not contract.units_pending
    y, _ = contract.apply(data[:, :3].astype(np.float32), np.zeros(3))
    np.testing.assert_allclose(y, data[:128, :3] * 1e-6, rtol=1e-6)


def test_contract_without_units_and_ambiguous_amplitude_names_the_setting():
    contract = ChannelContract(ContractConfig(), MODEL, 1000.0, units=["none"] * 128)
    with pytest.raises(ContractError, match=r"stream\.contract\.units"):
        contract.resolve_units_from_amplitude(_eeg(128, 500, 0.01))
    # the configured unit wins without looking at the signal
    assert not ChannelContract(ContractConfig(units="uV"), MODEL, 1000.0).units_pending


def test_interpolation_matrix_is_scaled_once_the_unit_is_known():
    names = [n for n in MODEL if n != "Oz"]
    cfg = ContractConfig(on_missing_channels="interpolate")
    contract = ChannelContract(cfg, names, 1000.0)
    reference = ChannelContract(cfg.model_copy(update={"units": "uV"}), names, 1000.0)
    data = _eeg(127, 500, 20.0).astype(np.float32)
    contract.resolve_units_from_amplitude(data)
    y, _ = contract.apply(data, np.zeros(500))
    y_ref, _ = reference.apply(data, np.zeros(500))
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-12)


def test_declared_units_of_mixed_or_partial_channels_are_refused():
    with pytest.raises(ContractError, match="no unit for 1 of 128"):
        ChannelContract(ContractConfig(), MODEL, 1000.0, units=["uV"] * 127 + [None])
    # exponents need the channel type: 0 on EEG is volts
    assert detect_unit_scale(["0", "0"], "auto", ["eeg", "eeg"]) == 1.0
    contract = ChannelContract(ContractConfig(), [*MODEL, "STI"], 1000.0,
                               units=["0"] * 129, ch_types=["eeg"] * 128 + ["stim"])
    assert contract.scale_to_volts == 1.0 and contract.dropped == ["STI"]


def test_unlabelled_stream_is_never_mapped_by_position():
    placeholders = [f"ch{i + 1}" for i in range(8)]
    with pytest.raises(ContractError, match=r"no labels.*stream\.contract\.unlabelled_ch_names"):
        ChannelContract(ContractConfig(), placeholders, 250.0, labelled=False)
    # named by the setting, in order; channels beyond the list are dropped
    names = ("Fp1", "Fp2", "C3", "C4", "P7", "P8", "O1", "O2")
    cfg = ContractConfig(ch_names=names, sfreq_hz=250.0, units="uV", unlabelled_ch_names=names[::-1])
    contract = ChannelContract(cfg, [f"ch{i + 1}" for i in range(10)], 250.0, labelled=False)
    assert contract.picks == list(range(7, -1, -1)) and contract.dropped == ["unlabelled-9", "unlabelled-10"]
    with pytest.raises(ContractError, match="names 8 channels but the stream has 4"):
        ChannelContract(cfg, placeholders[:4], 250.0, labelled=False)

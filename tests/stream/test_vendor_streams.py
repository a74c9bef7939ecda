"""Vendor-style LSL outlets (real peers in child processes) meet the default config.

Each connects with ``stream.inlet.name`` as the only setting, or fails with a
message naming the one setting to add. The conventions, and the public source
each copies, are in tests/helpers/vendors.py.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from helpers import wait_until
from helpers.lsl import unique_name
from helpers.vendors import (
    EMOTIV_EEG,
    MUSE_EEG,
    brain_products,
    emotiv,
    muse,
    openbci_gui,
    spawn_vendor,
)

from neuroimagen.stream.config import load_stream_config
from neuroimagen.stream.contract import ContractError
from neuroimagen.stream.inlet import StreamNotFoundError, resolve_stream
from neuroimagen.stream.montage import montage_ch_names
from neuroimagen.stream.pipeline import WindowPipeline

pytestmark = pytest.mark.usefixtures("lsl_loopback")


def config(name: str, *overrides: str):
    """The shipped default config, with the stream name (and only what a test adds)."""
    return load_stream_config(overrides=[f"stream.inlet.name={name}", "stream.inlet.resolve_timeout_s=15",
                                         *overrides])


def windows_from(pipe: WindowPipeline, n: int, timeout: float = 30.0) -> list:
    got: list = []
    wait_until(lambda: got.extend(pipe.poll()) or len(got) >= n, timeout,
               message=lambda: f"{n} windows (have {len(got)}; {pipe.stats})")
    return got


# --------------------------------------------------------------------------- resolving


def test_type_matches_in_any_case_and_untyped_streams_by_unique_name():
    import pylsl

    lower = unique_name("lower")
    untyped = unique_name("untyped")
    twice = unique_name("twice")
    outlets = [
        pylsl.StreamOutlet(pylsl.StreamInfo(lower, "eeg", 2, 100.0, "float32", uuid.uuid4().hex)),
        pylsl.StreamOutlet(pylsl.StreamInfo(untyped, "", 2, 100.0, "float32", uuid.uuid4().hex)),
        pylsl.StreamOutlet(pylsl.StreamInfo(twice, "", 2, 100.0, "float32", uuid.uuid4().hex)),
        pylsl.StreamOutlet(pylsl.StreamInfo(twice, "", 2, 100.0, "float32", uuid.uuid4().hex)),
    ]
    try:
        assert resolve_stream(lower, "EEG", timeout=5.0).type() == "eeg"
        assert resolve_stream(untyped, "EEG", timeout=5.0).name() == untyped
        with pytest.raises(StreamNotFoundError, match=r"2 streams are named .* stream\.inlet\.source_id"):
            resolve_stream(twice, "EEG", timeout=5.0)
        # an untyped stream is never picked by type alone
        with pytest.raises(StreamNotFoundError):
            resolve_stream(None, "no-such-type-" + uuid.uuid4().hex[:6], timeout=0.5)
        # a typed sibling of the same name wins over the untyped one
        typed = pylsl.StreamOutlet(pylsl.StreamInfo(untyped, "EEG", 2, 100.0, "float32", uuid.uuid4().hex))
        outlets.append(typed)
        wait_until(lambda: len(pylsl.resolve_byprop("name", untyped, 2, 1.0)) == 2, 10, message="sibling")
        assert resolve_stream(untyped, "eeg", timeout=5.0).type() == "EEG"
    finally:
        del outlets


# --------------------------------------------------------------------------- vendors


def test_brain_products_connects_by_name_and_its_markers_are_found():
    """microvolts, an extra trigger channel with unit 'code', and a '<name>-Markers' stream."""
    with spawn_vendor(brain_products(montage_ch_names())) as peer:
        with WindowPipeline(config(peer.name)) as pipe:
            assert pipe.contract.scale_to_volts == pytest.approx(1e-6)
            assert pipe.contract.dropped == ["triggerStream"]
            got = windows_from(pipe, 3)
            assert got[0].data.shape == (128, 440) and np.isfinite(got[0].data).all()
        # marker-locked windows: the '-Markers' stream is matched without naming it
        with WindowPipeline(config(peer.name, "stream.windowing.mode=marker")) as pipe:
            assert pipe.marker_inlet.name == peer.marker_name
            got = windows_from(pipe, 2)
            assert all(w.marker.startswith("S  ") for w in got)


def test_emotiv_is_refused_with_the_missing_channels_counted():
    with spawn_vendor(emotiv()) as peer:
        with pytest.raises(ContractError, match=r"114 model channel\(s\) missing.*on_missing_channels"):
            WindowPipeline(config(peer.name)).start()
        with pytest.raises(ContractError, match=r"114 of 128 model channels missing \(89% > max_missing_fraction"):
            WindowPipeline(config(peer.name, "stream.contract.on_missing_channels=interpolate")).start()
        # a model made for its 14 sensors: counters, interpolation flags and quality are dropped
        model = "stream.contract.ch_names=[" + ", ".join(EMOTIV_EEG) + "]"
        with WindowPipeline(config(peer.name, model)) as pipe:  # 128 Hz, resampled to the model's 1 kHz
            assert pipe.contract.dropped == ["COUNTER", "INTERPOLATED", "RAW_CQ", "MARKER_HARDWARE"]
            assert pipe.contract.scale_to_volts == pytest.approx(1e-6)
            assert windows_from(pipe, 2)[0].data.shape == (14, 440)


def test_muse_is_refused_with_the_missing_channels_counted_and_its_aux_dropped():
    with spawn_vendor(muse()) as peer:
        with pytest.raises(ContractError, match=r"124 model channel\(s\) missing"):
            WindowPipeline(config(peer.name)).start()
        model = "stream.contract.ch_names=[" + ", ".join(MUSE_EEG) + "]"
        with WindowPipeline(config(peer.name, model)) as pipe:
            assert pipe.contract.dropped == ["Right AUX"]
            assert windows_from(pipe, 2)[0].data.shape == (4, 440)


def test_openbci_gui_without_labels_or_units_names_the_setting_then_connects():
    with spawn_vendor(openbci_gui(n_channels=8)) as peer:
        with pytest.raises(ContractError, match=r"no labels.*stream\.contract\.unlabelled_ch_names"):
            WindowPipeline(config(peer.name)).start()
        names = "[Fp1, Fp2, C3, C4, P7, P8, O1, O2]"
        with WindowPipeline(config(peer.name, f"stream.contract.unlabelled_ch_names={names}",
                                   f"stream.contract.ch_names={names}")) as pipe:
            # no unit anywhere: the amplitude (tens of uV around large DC offsets) says microvolts
            assert pipe.contract.scale_to_volts == pytest.approx(1e-6) and not pipe.contract.units_pending
            assert windows_from(pipe, 2)[0].data.shape == (8, 440)

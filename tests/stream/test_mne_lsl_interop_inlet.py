"""Our EEGInlet reads mne-lsl's PlayerLSL (its own bundled liblsl): data equals the source."""

import numpy as np
import pytest
from helpers import wait_until
from helpers.lsl import unique_name

from neuroimagen.stream.config import InletConfig
from neuroimagen.stream.inlet import EEGInlet

mne = pytest.importorskip("mne")
player_mod = pytest.importorskip("mne_lsl.player")


def _received(inlet: EEGInlet) -> tuple[np.ndarray, np.ndarray]:
    data, ts, first, lost = inlet.buffer.read_since(0)
    assert (first, lost) == (0, 0)
    return data, ts


def test_inlet_reads_player_lsl_counter_exactly(lsl_loopback):
    n, sfreq = 3000, 1000.0
    counter = np.arange(n, dtype=np.float64)
    rng = np.random.default_rng(0)
    eeg = rng.standard_normal((4, n)) * 20e-6
    info = mne.create_info(["counter", "Fz", "Cz", "Pz", "Oz"], sfreq, ["misc"] + ["eeg"] * 4)
    raw = mne.io.RawArray(np.vstack([counter, eeg]), info, verbose=False)
    name = unique_name("mnelsl")
    player = player_mod.PlayerLSL(raw, chunk_size=20, n_repeat=1, name=name, source_id=name)
    player.start()
    try:
        with EEGInlet(InletConfig(name=name, stype=None, resolve_timeout_s=10.0,
                                  counter_channel=0)) as inlet:
            assert inlet.meta.ch_names == ["counter", "Fz", "Cz", "Pz", "Oz"]
            assert inlet.meta.sfreq == sfreq and inlet.meta.n_channels == 5
            wait_until(lambda: inlet.check() or (inlet.n_received and inlet.buffer.latest(1)[0][0, 0] == n - 1),
                       timeout=20, message=lambda: f"the last sample ({inlet.n_received} received)")
            data, ts = _received(inlet)
    finally:
        player.stop()
    got = data[0].astype(np.int64)
    # joined mid-stream (the player does not wait for us): contiguous from there to the end
    np.testing.assert_array_equal(got, np.arange(got[0], n))
    assert got.size > 1000 and not inlet.gaps and inlet.n_counter_errors == 0
    np.testing.assert_array_equal(data[1:], eeg[:, got].astype(np.float32))
    assert np.all(np.diff(ts) > 0)


def test_inlet_reads_player_lsl_replaying_a_real_brainvision_file(lsl_loopback, real_eeg_dir):
    raw = mne.io.read_raw_brainvision(real_eeg_dir / "test.vhdr", preload=True, verbose=False)
    ref = raw.get_data().astype(np.float32)
    name = unique_name("mnelsl-vhdr")
    player = player_mod.PlayerLSL(raw, chunk_size=10, n_repeat=1, name=name, source_id=name)
    player.start()
    try:
        with EEGInlet(InletConfig(name=name, stype=None, resolve_timeout_s=10.0)) as inlet:
            assert inlet.meta.ch_names == raw.ch_names
            assert inlet.meta.sfreq == raw.info["sfreq"]
            wait_until(lambda: inlet.check() or inlet.n_received >= 300, timeout=20,
                       message=lambda: f"300 samples ({inlet.n_received})")
            data, _ = _received(inlet)
    finally:
        player.stop()
    # locate the first received sample in the file, then everything after must equal the file
    n = data.shape[1]
    diffs = np.abs(ref[:, : ref.shape[1] - n + 1].T - data[:, 0]).max(axis=1)
    start = int(np.argmin(diffs))
    assert diffs[start] == 0
    np.testing.assert_array_equal(data, ref[:, start : start + n])

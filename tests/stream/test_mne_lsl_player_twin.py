"""Done-when of issue 7: mne-lsl's PlayerLSL (another process) plays a twin recording.

(a) WindowPipeline with the default config and only ``stream.inlet.name`` connects and windows;
(b) ``stream record --stream NAME`` records it, annotations included;
(c) with the twin's own stream config (as the demo builds it) and only the name changed,
    marker-locked windows cut from its annotations (both encodings) equal the twin's
    segments ``[:, 20:460]`` to 1e-4 from 1.5 s after connecting; the same holds for our
    own replay, joined mid-session the same way.

The references are the twin's .pth segments and its FIF (read by MNE), never our output.
"""

from __future__ import annotations

import json

import mne
import numpy as np
import pytest
import torch
from helpers import wait_until
from helpers.lsl import unique_name
from helpers.vendors import spawn_mne_lsl_player

from neuroimagen.stream.config import ReplayConfig, load_stream_config
from neuroimagen.stream.pipeline import WindowPipeline
from neuroimagen.stream.preprocessing import NormStats

pytest.importorskip("mne_lsl")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("lsl_loopback")]

#: the causal filter joins mid-session from its zero state; it has settled after this long
SETTLE_S = 1.5


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    from neuroimagen.training.config import TwinConfig
    from neuroimagen.training.data.twin import make_twin

    out = tmp_path_factory.mktemp("twin-player")
    meta = make_twin(out, TwinConfig(n_classes=3, n_images_per_class=4, n_subjects=1,
                                     image_size_px=32, block_pause_s=0.5, seed=7))
    pth = torch.load(out / meta["files"]["eeg"], weights_only=True)
    segments = {pth["images"][s["image"]]: s["eeg"].numpy()[:, 20:460] for s in pth["dataset"]}
    return out, meta, segments


def _twin_config(meta: dict, name: str):
    from neuroimagen.realtime.demo import demo_stream_config

    base = load_stream_config(overrides=["stream.inlet.resolve_timeout_s=15"])
    return demo_stream_config(base, meta, name)


def _locked_windows(cfg, meta, until_s: float = 60.0) -> tuple[list, float]:
    """Marker-locked windows until the source ends; (windows, sfreq)."""
    stats = NormStats.from_dict(meta["norm_stats"])
    got: list = []
    with WindowPipeline(cfg, norm_stats=stats) as pipe:
        # the session is ~10 s; poll until the stream has been quiet for a while after its end
        n_seen = [0, 0]

        def finished() -> bool:
            got.extend(pipe.poll())
            n = pipe.inlet.n_received
            n_seen[1] = n_seen[1] + 1 if n == n_seen[0] and n > 0 else 0
            n_seen[0] = n
            return n_seen[1] > 300  # ~1.5 s of polls without a new sample: the player ended

        wait_until(finished, until_s, interval=0.005, message=lambda: f"the end of the stream ({pipe.stats})")
        sfreq = pipe.sfreq
    return got, sfreq


def _assert_windows_equal_segments(got: list, segments: dict, sfreq: float, offset: int) -> int:
    settled = [w for w in got if (w.first_sample - offset) / sfreq >= SETTLE_S]
    assert len(settled) >= 3, f"only {len(settled)} settled windows of {len(got)}"
    for w in settled:
        payload = json.loads(w.marker)
        assert dict(w.meta) == payload
        np.testing.assert_allclose(w.data, segments[payload["image"]], atol=1e-4, rtol=0,
                                   err_msg=f"window of {payload['image']}")
    return len(settled)


def test_default_config_with_only_the_name_connects_and_windows(twin):
    out, meta, _ = twin
    fif = out / meta["files"]["recordings"][0]
    with spawn_mne_lsl_player(fif, n_repeat=3) as peer:
        cfg = load_stream_config(overrides=[f"stream.inlet.name={peer.name}",
                                            "stream.inlet.resolve_timeout_s=15"])
        with WindowPipeline(cfg) as pipe:
            # mne-lsl publishes type 'eeg' and each unit as MNE's exponent '0' (volts on EEG)
            assert pipe.meta.stype == "eeg" and set(pipe.meta.units) == {"0"}
            assert pipe.contract.scale_to_volts == 1.0 and not pipe.contract.dropped
            got: list = []
            wait_until(lambda: got.extend(pipe.poll()) or len(got) >= 5, 30,
                       message=lambda: f"5 windows ({pipe.stats})")
    assert all(w.data.shape == (128, 440) and np.isfinite(w.data).all() for w in got)


@pytest.mark.parametrize("encoding", ["one-hot", "string"])
def test_marker_locked_windows_from_player_annotations_equal_the_segments(twin, encoding):
    out, meta, segments = twin
    fif = out / meta["files"]["recordings"][0]
    with spawn_mne_lsl_player(fif, annotations_encoding=encoding) as peer:
        cfg = _twin_config(meta, peer.name)
        got, sfreq = _locked_windows(cfg, meta)
    # the marker stream was matched (same source, '<name>-annotations'), decoded, and is exact
    _assert_windows_equal_segments(got, segments, sfreq, meta["marker_offset_samples"])


def test_marker_locked_windows_from_our_replay_joined_mid_session(twin):
    from neuroimagen.stream.readers import read_recording
    from neuroimagen.stream.replay import Player

    out, meta, segments = twin
    rec = read_recording(out / meta["files"]["recordings"][0])
    name = unique_name("twin-replay")
    player = Player(rec, name, ReplayConfig(speed=1.0))  # does not wait for us: we join mid-session
    player.start()
    try:
        got, sfreq = _locked_windows(_twin_config(meta, name), meta)
    finally:
        player.stop()
    _assert_windows_equal_segments(got, segments, sfreq, meta["marker_offset_samples"])


@pytest.mark.parametrize("encoding", ["one-hot", "string"])
def test_stream_record_by_name_stores_the_player_and_its_annotations(twin, tmp_path, encoding):
    from click.testing import CliRunner

    from neuroimagen.realtime.cli import main

    out, meta, _ = twin
    fif = out / meta["files"]["recordings"][0]
    source = mne.io.read_raw(fif, preload=True, verbose="error")
    ref = source.get_data().astype(np.float32)
    with spawn_mne_lsl_player(fif, annotations_encoding=encoding) as peer:
        res = CliRunner().invoke(main, ["stream", "record", "--out", str(tmp_path / "rec"),
                                        "--stream", peer.name, "--duration", "6",
                                        "--set", "stream.record.resolve_timeout_s=20"])
    assert res.exit_code == 0, res.output
    recorded = mne.io.read_raw(tmp_path / "rec" / f"{peer.name}_raw.fif", preload=True, verbose="error")
    data = recorded.get_data().astype(np.float32)
    assert recorded.ch_names == source.ch_names and data.shape[1] > 3000
    # 1. locate the first recorded sample in the source: everything after it equals the source
    n = data.shape[1]
    diffs = np.abs(ref[:, : ref.shape[1] - n + 1].T - data[:, 0]).max(axis=1)
    start = int(np.argmin(diffs))
    np.testing.assert_allclose(data, ref[:, start:start + n], rtol=0, atol=1e-9)
    # 2. the one-hot annotation stream became annotations at the samples they were on in the file
    src_onsets = {d: int(round(o * source.info["sfreq"])) for o, d in
                  zip(source.annotations.onset, source.annotations.description, strict=True)}
    rec_ann = recorded.annotations
    assert len(rec_ann) >= 3
    for onset, desc in zip(rec_ann.onset, rec_ann.description, strict=True):
        assert desc in src_onsets, desc
        assert int(round(onset * recorded.info["sfreq"])) + start == src_onsets[desc], desc


def test_mixed_channel_types_publish_an_empty_type_and_still_connect_by_name(twin, tmp_path):
    """A recording with a stim channel: mne-lsl sends type '' (and kind/coil_type/loc per channel)."""
    out, meta, _ = twin
    raw = mne.io.read_raw(out / meta["files"]["recordings"][0], preload=True, verbose="error")
    stim = mne.io.RawArray(np.zeros((1, raw.n_times)), mne.create_info(["STI 014"], raw.info["sfreq"], "stim"),
                           verbose="error")
    raw.add_channels([stim], force_update_info=True)
    fif = tmp_path / "mixed_raw.fif"
    raw.save(fif, verbose="error")
    with spawn_mne_lsl_player(fif, n_repeat=3) as peer:
        cfg = load_stream_config(overrides=[f"stream.inlet.name={peer.name}",
                                            "stream.inlet.resolve_timeout_s=15"])
        with WindowPipeline(cfg) as pipe:
            assert pipe.meta.stype == "" and pipe.meta.ch_types[-1] == "stim"
            assert pipe.contract.dropped == ["STI 014"] and pipe.contract.scale_to_volts == 1.0
            got: list = []
            wait_until(lambda: got.extend(pipe.poll()) or len(got) >= 2, 30,
                       message=lambda: f"2 windows ({pipe.stats})")

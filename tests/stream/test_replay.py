"""Replay real and built recordings as LSL; receive them with pylsl and mne-lsl as real peers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import mne
import numpy as np
import pytest
from helpers.lsl import unique_name
from helpers.wait import wait_until

from neuroimagen.stream.config import ReplayConfig
from neuroimagen.stream.readers import Recording, RecordingError, read_recording

pytestmark = pytest.mark.usefixtures("lsl_loopback")

# file -> speed: keep each replay around one second
SPEEDS = {"test.edf": 8.0, "test.bdf": 2.0, "test.vhdr": 8.0, "test_edf_stim_channel.edf": 10.0}


class Receiver:
    """pylsl inlets on '<name>' and '<name>-markers' that collect everything (test side)."""

    def __init__(self, name: str) -> None:
        import pylsl

        # both outlets get a consumer, so the player's wait_for_consumers releases at once
        self.eeg = self._open(name)
        self.mk = self._open(f"{name}-markers")
        self.data: list[np.ndarray] = []
        self.ts: list[np.ndarray] = []
        self.markers: list[tuple[float, str]] = []
        self._pylsl = pylsl

    @staticmethod
    def _open(name: str):
        import pylsl

        found = pylsl.resolve_byprop("name", name, 1, 10.0)
        assert found, f"stream {name} not found"
        inlet = pylsl.StreamInlet(found[0], max_buflen=60)
        inlet.open_stream(timeout=10.0)
        return inlet

    def poll(self) -> int:
        d, t = self.eeg.pull_chunk(timeout=0.0, max_samples=100000, as_numpy=True)
        if len(t):
            self.data.append(d.copy())
            self.ts.append(t.copy())
        if self.mk is not None:
            m, mt = self.mk.pull_chunk(timeout=0.0)
            self.markers += [(t, v[0]) for t, v in zip(mt, m, strict=True)]
        return self.n

    @property
    def n(self) -> int:
        return sum(len(t) for t in self.ts)

    def collect(self, n: int, timeout: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
        wait_until(lambda: self.poll() >= n, timeout, message=lambda: f"{n} samples (have {self.n})")
        return np.concatenate(self.data).T, np.concatenate(self.ts)


def player(rec: Recording, name: str, **cfg) -> object:
    from neuroimagen.stream.replay import Player

    cfg.setdefault("wait_for_consumers_s", 10.0)
    return Player(rec, name, ReplayConfig(**cfg))


@pytest.mark.parametrize("fname", list(SPEEDS))
def test_replay_real_file(real_eeg_dir: Path, fname: str) -> None:
    path = real_eeg_dir / fname
    raw = mne.io.read_raw(path, preload=True, verbose="error")
    picks = mne.pick_types(raw.info, eeg=True, misc=True, stim=False)
    reference = raw.get_data(picks=picks).astype(np.float32)
    rec = read_recording(path)
    name = unique_name("replay")
    with player(rec, name, speed=SPEEDS[fname]) as p:
        rx = Receiver(name)
        data, ts = rx.collect(raw.n_times)
        assert p.wait(10.0)
        wait_until(lambda: rx.poll() is not None and len(rx.markers) >= len(rec.markers), 5.0, message="markers")
    # 1. samples: exactly the file's, in order, nothing extra
    assert data.shape == reference.shape
    np.testing.assert_array_equal(data, reference)
    # 2. timestamps: uniform at sfreq * speed from the start (explicit per-sample stamps)
    np.testing.assert_allclose(np.diff(ts), 1.0 / (raw.info["sfreq"] * SPEEDS[fname]), rtol=0, atol=1e-9)
    # 3. markers: each at the timestamp of its onset sample (within 1 ms), onsets from MNE
    expected = Counter()
    if len(raw.annotations):
        events, event_id = mne.events_from_annotations(raw, regexp=None, verbose="error")
        names = {v: k for k, v in event_id.items()}
        expected.update((int(s - raw.first_samp), names[c]) for s, _, c in events)
    if "stim" in raw.get_channel_types():
        events = mne.find_events(raw, shortest_event=1, consecutive=True, initial_event=True, verbose="error")
        expected.update((int(s - raw.first_samp), str(c)) for s, _, c in events)
    got = Counter()
    for t, payload in rx.markers:
        i = int(np.argmin(np.abs(ts - t)))
        assert abs(ts[i] - t) < 1e-3
        got[(i, payload)] += 1
    assert got == expected
    # 4. description: labels, units, types
    desc = rx.eeg.info().desc().child("channels").child("channel")
    labels, units = [], []
    while not desc.empty():
        labels.append(desc.child_value("label"))
        units.append(desc.child_value("unit"))
        desc = desc.next_sibling()
    assert labels == [raw.ch_names[i] for i in picks]
    assert units == rec.units


def test_mne_lsl_reads_our_outlet(real_eeg_dir: Path) -> None:
    from mne_lsl.stream import StreamLSL

    rec = read_recording(real_eeg_dir / "test.vhdr")
    raw = mne.io.read_raw(real_eeg_dir / "test.vhdr", preload=True, verbose="error")
    reference = raw.get_data().astype(np.float32)
    name, speed = unique_name("mnelsl"), 4.0
    with player(rec, name, speed=speed, loop=True) as p:
        stream = StreamLSL(bufsize=10.0, name=name).connect(timeout=10.0)
        markers = Receiver._open(f"{name}-markers")  # noqa: F841 (a consumer, to release the player)
        try:
            wait_until(lambda: stream.n_new_samples >= 2000, 20.0, message="mne-lsl samples")
            data, ts = stream.get_data(winsize=2000 / raw.info["sfreq"])
            assert stream.ch_names == raw.ch_names
            assert stream.info["sfreq"] == raw.info["sfreq"]
            assert stream.get_channel_types() == raw.get_channel_types()
            # locate the window in the file through our exact per-sample timestamps
            k = np.round((ts - p.t0) * raw.info["sfreq"] * speed).astype(np.int64)
            np.testing.assert_array_equal(np.diff(k), 1)
            np.testing.assert_array_equal(data.astype(np.float32), reference[:, k % raw.n_times])
            # EEG channels in V for mne-lsl too (unit_mul 0, FIFF unit V)
            assert {ch["unit_mul"] for ch in stream.info["chs"]} == {0}
        finally:
            stream.disconnect()


def counter_recording(n_times: int = 200, sfreq: float = 1000.0) -> Recording:
    data = np.zeros((3, n_times), np.float32)
    data[0] = np.arange(n_times)
    data[1:] = np.sin(np.arange(n_times) * 0.1)[None] * 1e-5
    return Recording(
        data, sfreq, ["counter", "Cz", "EOG"], ["misc", "eeg", "eog"], ["none", "volts", "volts"],
        markers=[(0, "first"), (150, json.dumps({"image": "x", "label": 2}))], source="counter",
    )


def test_loop_continues_timestamps() -> None:
    rec = counter_recording()
    name = unique_name("loop")
    with player(rec, name, loop=True, speed=4.0) as p:
        rx = Receiver(name)
        data, ts = rx.collect(500)
        p.stop()
    counter = data[0].astype(int)
    np.testing.assert_array_equal(counter, np.arange(counter.size) % 200)
    np.testing.assert_allclose(np.diff(ts), 1 / 4000.0, rtol=0, atol=1e-9)
    # the markers repeat every pass, at their onset samples
    for t, payload in rx.markers:
        i = int(np.argmin(np.abs(ts - t)))
        if abs(ts[i] - t) < 1e-3:
            assert payload == {0: "first", 150: rec.markers[1][1]}[counter[i]]
    assert [m[1] for m in rx.markers[:4]] == ["first", rec.markers[1][1]] * 2
    # non-EEG types are kept in the description
    ch = rx.eeg.info().desc().child("channels").child("channel")
    types = []
    while not ch.empty():
        types.append(ch.child_value("type"))
        ch = ch.next_sibling()
    assert types == ["misc", "eeg", "eog"]


def test_real_time_pacing_without_drift() -> None:
    import pylsl

    rec = counter_recording(n_times=1000)
    name = unique_name("pace")
    with player(rec, name, chunk_s=0.005) as p:
        rx = Receiver(name)
        arrivals: list[tuple[float, float]] = []  # (newest timestamp pulled, local clock then)

        def poll() -> int:
            n = rx.n
            rx.poll()
            if rx.n > n:
                arrivals.append((float(rx.ts[-1][-1]), pylsl.local_clock()))
            return rx.n

        wait_until(lambda: poll() >= 1000, 20.0, message=lambda: f"1000 samples (have {rx.n})")
        assert p.wait(5.0)
    ts = np.concatenate(rx.ts)
    # stamps are t0 + i / sfreq exactly: no drift, whatever the sleeps did
    np.testing.assert_allclose(ts - p.t0, np.arange(1000) / 1000.0, rtol=0, atol=1e-9)
    # paced, not dumped: no sample reached us before it was due (a busy machine can only
    # make samples later, so this cannot fail for load; a player pushing early fails it)
    assert all(now >= newest for newest, now in arrivals), arrivals[:5]


def test_preprocessed_pth_stream(tmp_path: Path) -> None:
    import torch

    items = [{"eeg": torch.randn(128, 300), "label": 1, "image": 0, "subject": 2},
             {"eeg": torch.randn(128, 250), "label": 0, "image": 1, "subject": 2}]
    torch.save({"dataset": items, "labels": ["n01000001", "n02000002"], "images": ["n02000002_1", "n01000001_7"]},
               tmp_path / "eeg_5_95_std.pth")
    rec = read_recording(tmp_path / "eeg_5_95_std.pth")
    name = unique_name("pth")
    with player(rec, name, speed=10.0) as p:
        rx = Receiver(name)
        data, ts = rx.collect(550)
        assert p.wait(5.0)
        wait_until(lambda: rx.poll() is not None and len(rx.markers) >= 2, 5.0, message="markers")
    np.testing.assert_array_equal(data, torch.cat([it["eeg"] for it in items], 1).numpy())
    pre = rx.eeg.info().desc().child("neuroimagen").child("preprocessed")
    assert json.loads(pre.child_value("bandpass_hz")) == [5, 95]
    assert json.loads(pre.child_value("normalized")) == "dataset"
    payloads = [json.loads(m[1]) for m in rx.markers]
    assert payloads == [{"image": "n02000002_1", "label": 1, "class": "n02000002", "subject": 2},
                        {"image": "n01000001_7", "label": 0, "class": "n01000001", "subject": 2}]
    assert abs(rx.markers[1][0] - ts[300]) < 1e-3


def test_nonfinite_refused_or_replayed() -> None:
    rec = counter_recording()
    rec.data[1, 10] = np.nan
    with pytest.raises(RecordingError, match=r"counter: 1 NaN/inf samples \(Cz: 1\).*on_nonfinite"):
        player(rec, unique_name("nan"))
    name = unique_name("nan")
    with player(rec, name, on_nonfinite="replay", speed=4.0):
        rx = Receiver(name)
        data, _ = rx.collect(200)
    assert np.isnan(data[1, 10]) and np.isfinite(np.delete(data[1], 10)).all()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from neuroimagen.realtime.cli import main; main()", *args]


@pytest.mark.slow
def test_cli_replay_stops_cleanly_on_sigterm(real_eeg_dir: Path) -> None:
    name = unique_name("cli")
    proc = subprocess.Popen(
        _cli("stream", "replay", str(real_eeg_dir / "test.vhdr"), "--name", name, "--speed", "2", "--loop"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"},
    )
    try:
        rx = Receiver(name)
        rx.collect(500, timeout=30.0)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, out  # the shell's convention: 143
    assert "stopped by SIGTERM: replay closed its outlets after" in out


def test_cli_replay_bad_input(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from neuroimagen.realtime.cli import main

    res = CliRunner().invoke(main, ["stream", "replay", str(tmp_path / "missing.edf")])
    assert res.exit_code == 1 and "recording not found" in res.output and "missing.edf" in res.output
    (tmp_path / "x.pth").write_bytes(b"not a torch file")
    res = CliRunner().invoke(main, ["stream", "replay", str(tmp_path / "x.pth")])
    assert res.exit_code == 1 and "not a readable torch file" in res.output and "x.pth" in res.output

"""Recorder: replay -> record -> finalize round trips, SIGKILL safety, clean stops from the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import mne
import numpy as np
import pytest
import yaml
from helpers.lsl import spawn_outlet, unique_name
from helpers.wait import wait_until

from neuroimagen.stream.config import RecordConfig, ReplayConfig
from neuroimagen.stream.readers import read_recording

pytestmark = pytest.mark.usefixtures("lsl_loopback")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from neuroimagen.realtime.cli import main; main()", *args]


def test_replay_record_finalize_round_trip(real_eeg_dir: Path, tmp_path: Path) -> None:
    import pyxdf

    from neuroimagen.stream.record import Recorder
    from neuroimagen.stream.replay import Player

    path = real_eeg_dir / "test.vhdr"
    raw_ref = mne.io.read_raw(path, preload=True, verbose="error")
    rec = read_recording(path)
    name = unique_name("rec")
    out = tmp_path / "session"
    with Player(rec, name, ReplayConfig(speed=8.0, wait_for_consumers_s=10.0)) as player:
        recorder = Recorder(out, RecordConfig(formats=("fif", "xdf")), [name, f"{name}-markers"],
                            resolved_config={"stream": {"record": {"flush_interval_s": 0.5}}})
        recorder.start()
        assert player.wait(15.0)
        wait_until(lambda: recorder.n_samples == {name: rec.n_times, f"{name}-markers": len(rec.markers)},
                   timeout=10.0, message=lambda: f"all samples recorded ({recorder.n_samples})")
        written = recorder.stop()
    # 1. FIF: the file's samples exactly, in V, names and types kept
    raw = mne.io.read_raw_fif(written[f"fif:{name}"], preload=True, verbose="error")
    assert raw.ch_names == raw_ref.ch_names
    assert raw.get_channel_types() == raw_ref.get_channel_types()
    assert raw.info["sfreq"] == raw_ref.info["sfreq"]
    np.testing.assert_array_equal(raw.get_data().astype(np.float32), raw_ref.get_data().astype(np.float32))
    # 2. markers are annotations at the onsets MNE gives for the source file
    events, event_id = mne.events_from_annotations(raw_ref, regexp=None, verbose="error")
    names = {v: k for k, v in event_id.items()}
    expected = sorted((int(s - raw_ref.first_samp), names[c]) for s, _, c in events)
    got = sorted((int(round(o * raw.info["sfreq"])), d) for o, d in zip(raw.annotations.onset, raw.annotations.description, strict=True))
    assert got == expected
    # 3. timestamps kept exactly (the player stamps sample k at t0 + k / (sfreq * speed))
    ts = np.load(out / f"{name}_timestamps.npy")
    np.testing.assert_allclose(ts - player.t0, np.arange(rec.n_times) / 8000.0, rtol=0, atol=1e-9)
    # 4. the finalized FIF replays as the same recording
    again = read_recording(written[f"fif:{name}"])
    np.testing.assert_array_equal(again.data, rec.data)
    assert again.markers == rec.markers and again.ch_names == rec.ch_names
    # 5. XDF, read by pyxdf: same samples and timestamps, markers at their sample timestamps
    streams, _ = pyxdf.load_xdf(str(written["xdf"]), dejitter_timestamps=False, synchronize_clocks=False)
    by_name = {s["info"]["name"][0]: s for s in streams}
    np.testing.assert_array_equal(by_name[name]["time_series"].T, rec.data)
    np.testing.assert_array_equal(by_name[name]["time_stamps"], ts)
    # with pyxdf's clock synchronisation (our ClockOffset chunks): same host, offsets far below 1 ms
    synced, _ = pyxdf.load_xdf(str(written["xdf"]), dejitter_timestamps=False)
    eeg_synced = next(s for s in synced if s["info"]["name"][0] == name)
    np.testing.assert_allclose(eeg_synced["time_stamps"], ts, rtol=0, atol=1e-3)
    mk = by_name[f"{name}-markers"]
    assert [v[0] for v in mk["time_series"]] == [m[1] for m in rec.markers]
    np.testing.assert_allclose(mk["time_stamps"], by_name[name]["time_stamps"][[m[0] for m in rec.markers]], atol=1e-3)
    # 6. the resolved config sits beside the recording
    assert yaml.safe_load((out / "config.yaml").read_text())["stream"]["record"]["flush_interval_s"] == 0.5


def test_missing_stream_is_a_clear_error(tmp_path: Path) -> None:
    from neuroimagen.stream.record import Recorder

    with pytest.raises(LookupError, match=r"stream\(s\) not found: \['no-such-stream-x'\]"):
        Recorder(tmp_path / "r", RecordConfig(resolve_timeout_s=0.3), ["no-such-stream-x"]).start()


def _counter_check(raw: mne.io.BaseRaw, n_channels: int) -> np.ndarray:
    """The counter channel, after checking every sample is exactly what the child outlet sent."""
    data = raw.get_data().astype(np.float32)
    counter = data[0].astype(np.int64)
    np.testing.assert_array_equal(np.diff(counter), 1)  # contiguous: no drop, duplicate or reorder
    idx = counter.astype(np.float64)
    sent = np.sin(idx[None, :] * 0.01 * np.arange(1, n_channels)[:, None]).astype(np.float32)
    np.testing.assert_array_equal(data[1:], sent)
    return counter


@pytest.mark.slow
def test_sigkill_mid_stream_keeps_a_prefix(tmp_path: Path) -> None:
    import pylsl
    from click.testing import CliRunner

    from neuroimagen.realtime.cli import main

    n_ch = 6
    out = tmp_path / "killed"
    with spawn_outlet(n_channels=n_ch, sfreq=1000.0, unit=None) as child:
        found = pylsl.resolve_byprop("name", child.name, 1, 15.0)
        assert found
        mine = pylsl.StreamInlet(found[0], max_buflen=60)
        mine.open_stream(timeout=10.0)
        proc = subprocess.Popen(_cli("stream", "record", "--out", str(out), "--stream", child.name),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            data_bin = lambda: next(iter((out / "streams").glob("*/data.bin")), None)  # noqa: E731
            wait_until(lambda: data_bin() is not None and data_bin().stat().st_size >= 1500 * n_ch * 4,
                       timeout=40.0, message="1.5 s recorded")
            last_sent = -1
            while True:  # what the outlet had sent by now, seen by an independent inlet
                d, t = mine.pull_chunk(timeout=0.0, max_samples=100000, as_numpy=True)
                if len(t) == 0:
                    break
                last_sent = int(d[-1, 0])
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not list(out.glob("*.fif")), "a killed recorder cannot have finalized"
    res = CliRunner().invoke(main, ["stream", "finalize", str(out)])
    assert res.exit_code == 0, res.output
    raw = mne.io.read_raw_fif(next(out.glob("*_raw.fif")), preload=True, verbose="error")
    counter = _counter_check(raw, n_ch)
    assert last_sent - counter[-1] <= 1000, (last_sent, counter[-1])
    assert counter.size >= 1500


@pytest.mark.slow
def test_cli_record_finalizes_on_sigterm(tmp_path: Path) -> None:
    n_ch = 3
    out = tmp_path / "clean"
    with spawn_outlet(n_channels=n_ch, sfreq=500.0, unit=None) as child:
        proc = subprocess.Popen(_cli("stream", "record", "--out", str(out), "--stream", child.name),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "COLUMNS": "200"})
        try:
            data_bin = lambda: next(iter((out / "streams").glob("*/data.bin")), None)  # noqa: E731
            wait_until(lambda: data_bin() is not None and data_bin().stat().st_size >= 200 * n_ch * 4,
                       timeout=40.0, message="samples recorded")
            proc.send_signal(signal.SIGTERM)
            output, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, output  # the shell's convention: 143
    assert "stopped by SIGTERM: recording closed" in output and "_raw.fif" in output
    fif = next(out.glob("*_raw.fif"))
    raw = mne.io.read_raw_fif(fif, preload=True, verbose="error")
    assert raw.info["sfreq"] == 500.0 and raw.n_times >= 200
    _counter_check(raw, n_ch)
    assert (out / "config.yaml").is_file()


def test_clock_offset_timeout_is_survived(caplog) -> None:
    """pylsl 1.18 has TimeoutError in pylsl.util only: the recorder must catch that one."""
    import logging

    import pylsl

    from neuroimagen.stream.record import Recorder

    class SilentInlet:
        def time_correction(self, timeout: float) -> float:
            raise pylsl.util.TimeoutError("the operation failed due to a timeout.")

    class Answering:
        def time_correction(self, timeout: float) -> float:
            return 0.25

    class Sink:
        def __init__(self) -> None:
            self.data = b""

        def write(self, b: bytes) -> None:
            self.data += b

    rec = Recorder("unused")
    silent, answering = Sink(), Sink()
    rec._streams = [
        type("S", (), {"inlet": SilentInlet(), "files": [silent], "header": {"name": "gone"}})(),
        type("S", (), {"inlet": Answering(), "files": [answering], "header": {"name": "here"}})(),
    ]
    caplog.set_level(logging.WARNING, logger="neuroimagen.stream.record")
    rec._clock_offsets()  # AttributeError here before the fix (pylsl.TimeoutError)
    assert silent.data == b"" and "gone: no clock offset this time" in caplog.text
    assert np.frombuffer(answering.data, dtype="<f8")[1] == 0.25  # the other stream still gets its offset


@pytest.mark.slow
def test_outlet_killed_and_restarted_is_recorded_with_the_gap_annotated(tmp_path: Path) -> None:
    """kill -9 the outlet during `stream record`, restart it under the same name (a new
    source_id): the recorder and a live pipeline both reconnect; the finalized FIF holds both
    parts with the gap annotated, and the pipeline's stats report the same gap."""
    import threading

    from neuroimagen.stream.config import StreamConfig
    from neuroimagen.stream.montage import montage_ch_names
    from neuroimagen.stream.pipeline import WindowPipeline

    names = ["counter", *montage_ch_names()]
    kw = dict(n_channels=len(names), sfreq=1000.0, ch_names=names, unit="microvolts", chunk_size=10)
    name = unique_name("restart")
    out = tmp_path / "restarted"
    a = spawn_outlet(name, n_samples=None, **kw)
    proc = subprocess.Popen(_cli("stream", "record", "--out", str(out), "--stream", name),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "300"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    cfg = StreamConfig.model_validate({"inlet": {"resolve_timeout_s": 10.0},
                                       "windowing": {"mode": "sliding"}})
    pipe = WindowPipeline(cfg, eeg_name=name)
    b = None
    try:
        pipe.start()
        data_bin = lambda: next(iter((out / "streams").glob("*/data.bin")), None)  # noqa: E731
        wait_until(lambda: data_bin() is not None and data_bin().stat().st_size >= 1000 * len(names) * 4
                   and pipe.poll() is not None and pipe.inlet.n_received >= 1000,
                   timeout=40.0, message="1 s recorded and received")
        a.kill()  # SIGKILL: no goodbye
        # the same name and type, another source_id (liblsl's recover cannot reattach); it holds
        # its first sample until both consumers are back, so that both see the same gap
        b = spawn_outlet(name, n_samples=None, start=100_000, wait_go=True, **kw)
        wait_until(lambda: pipe.poll() is not None and pipe.inlet.n_reconnects == 1
                   and any("restarted as source_id" in line for line in lines),
                   timeout=40.0, message=lambda: f"both reconnected (pipeline {pipe.stats}, recorder {lines[-3:]})")
        size_at_gap = data_bin().stat().st_size
        b.go()
        n_at_gap = pipe.inlet.n_received
        # both consumers hold 1 s of the second part before the stop (the recorder's file
        # grows at its flush cadence; samples still in flight at SIGTERM are not its to keep)
        wait_until(lambda: pipe.poll() is not None and pipe.inlet.n_received >= n_at_gap + 1000
                   and data_bin().stat().st_size >= size_at_gap + 1000 * len(names) * 4,
                   timeout=40.0, message="1 s after the restart")
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        reader.join(10)
        stats = pipe.stats
    finally:
        pipe.stop()
        for child in (a, b):
            if child is not None:
                child.stop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines)
    assert proc.returncode == 128 + signal.SIGTERM, output
    # 1. the pipeline: one gap, at the reconnect, sized in samples and seconds
    assert stats["n_reconnects"] == 1 and len(stats["gaps"]) == 1, stats
    gap = stats["gaps"][0]
    assert gap["reconnected"] and gap["n_samples"] > 0 and gap["seconds"] > 0
    assert stats["n_gap_samples"] == gap["n_samples"] and stats["gap_seconds"] == gap["seconds"]
    # 2. the FIF holds both parts: the first outlet's counter, then the second's
    raw = mne.io.read_raw_fif(next(out.glob("*_raw.fif")), preload=True, verbose="error")
    counter = np.round(raw.get_data(picks=[0])[0] * 1e6).astype(np.int64)  # sent as "microvolts"
    k = int(np.flatnonzero(counter >= 100_000)[0])
    np.testing.assert_array_equal(counter[:k], np.arange(counter[0], counter[0] + k))
    np.testing.assert_array_equal(counter[k:], np.arange(100_000, 100_000 + counter.size - k))
    assert counter.size - k >= 1000
    # 3. ... with the gap annotated at the first sample of the second part
    ann = [(round(o * 1000), d) for o, d in zip(raw.annotations.onset, raw.annotations.description, strict=True)]
    gaps = [(o, d) for o, d in ann if d.startswith("gap: ")]
    assert (k, "EDGE boundary") in ann and len(gaps) == 1 and gaps[0][0] == k, ann
    n_fif = int(gaps[0][1].split()[1])
    seconds_fif = float(gaps[0][1].split("(")[1].split()[0])
    # 4. the same gap: both consumers saw the last sample before and the first after; the
    #    recorder sizes it from the outlet's own timestamps, the pipeline from its dejittered,
    #    clock-corrected ones, so the two may differ by the dejitter's sub-millisecond smoothing
    assert abs(n_fif - gap["n_samples"]) <= 1, (n_fif, gap)
    assert seconds_fif == pytest.approx(gap["seconds"], abs=2e-3)
    assert "gap of" in output and "annotated in the FIF" in output


def _write_recorder_folder(root, n, n_ch=129, sfreq=1000.0):
    """A recorder folder as `stream record` writes it: a float32 EEG stream, counter first, uV."""
    import json

    folder = root / "streams" / "00_long"
    folder.mkdir(parents=True)
    names = ["counter", *[f"E{i}" for i in range(1, n_ch)]]
    header = {"name": "long", "type": "EEG", "n_channels": n_ch, "sfreq": sfreq, "channel_format": "float32",
              "source_id": "", "hostname": "h", "ch_names": names, "types": ["misc"] + ["eeg"] * (n_ch - 1),
              "units": [""] + ["microvolts"] * (n_ch - 1), "xml": ""}
    (folder / "header.json").write_text(json.dumps(header))
    data = np.random.default_rng(0).standard_normal((n, n_ch)).astype(np.float32)
    data[:, 0] = np.arange(n)
    data.tofile(folder / "data.bin")
    (np.arange(n) / sfreq).astype("<f8").tofile(folder / "timestamps.bin")
    return folder


def test_finalize_streams_a_long_recording_to_fif_block_by_block(tmp_path):
    """finalize reads data.bin a block at a time (memory-mapped), never the whole recording in
    float64: its peak Python allocation stays far below the data's size, and the FIF holds every
    sample, scaled to volts."""
    import tracemalloc

    from neuroimagen.stream.record import finalize

    n_ch, n = 129, 60_000  # one minute of a 128-channel headset + counter
    finalize(_write_recorder_folder(tmp_path / "warm", 2000).parents[1])  # MNE's lazy imports, not data
    folder = _write_recorder_folder(tmp_path / "long", n)
    full_float64 = n * n_ch * 8
    tracemalloc.start()
    try:
        written = finalize(tmp_path / "long")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < full_float64 / 4, (peak, full_float64)
    raw = mne.io.read_raw_fif(written["fif:long"], preload=True, verbose="error")
    sent = np.fromfile(folder / "data.bin", dtype=np.float32).reshape(n, n_ch)
    assert raw.n_times == n
    np.testing.assert_array_equal(raw.get_data(picks=[0])[0], np.arange(n))
    np.testing.assert_allclose(raw.get_data(picks=["E1", "E128"]), sent[:, [1, 128]].T.astype(np.float64) * 1e-6,
                               rtol=1e-6)

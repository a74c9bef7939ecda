"""`neuroimagen run`: a session folder with everything, SIGKILL loses at most 1 s of EEG, an ambiguous
stream choice is refused with the list, and a missing bundle is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from helpers.engine import CH, make_recording, playing
from helpers.lsl import spawn_outlet, unique_name
from helpers.wait import wait_until

from neuroimagen.realtime.cli import main
from neuroimagen.stream.record import read_recorder_dir


def _lines(path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a torn last line after a kill
            pass
    return out


@pytest.mark.slow
def test_run_headless_writes_the_whole_session(lsl_loopback, tiny_bundle, tmp_path):
    name = unique_name("run")
    out = tmp_path / "session"
    with playing(make_recording(6.0, marker_every_s=0.5), name):
        result = CliRunner().invoke(main, [
            "run", "--bundle", str(tiny_bundle), "--stream", name, "--headless", "--duration", "4",
            "--out", str(out), "--hop", "0.1", "--set", "realtime.session.save_saliency=true",
        ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    m = json.loads((out / "metrics.json").read_text())
    n = m["n_frames"]
    assert n >= 10 and m["n_windows"] == n + m["n_dropped"] + m["n_unfinished_at_stop"]
    for stage in ("pull", "preprocess", "extractors", "diffusion", "publish", "end_to_end"):
        assert set(m["latency_ms"][stage]) >= {"p50", "p95", "p99"}, stage
    assert m["fps"] > 0 and "warmup_ms" in m and m["health"]["ok"]
    # every frame: a PNG, a saliency PNG, a top-k line
    assert len(list((out / "frames").glob("*.png"))) == n == len(list((out / "saliency").glob("*.png")))
    lines = _lines(out / "topk.jsonl")
    assert [x["seq"] for x in lines] == list(range(1, n + 1))
    assert len(lines[0]["top_k"]) == 5 and set(lines[0]["timings_ms"]) >= {"diffusion", "end_to_end"}
    # the resolved config: the bundle's windowing with the run's hop, the realtime section
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["stream"]["windowing"]["hop_s"] == 0.1 and cfg["stream"]["inlet"]["name"] == name
    assert cfg["realtime"]["session"]["save_saliency"] is True
    assert json.loads((out / "bundle.json").read_text())["name"] == "tiny-random"
    # raw EEG and markers through the recorder, finalized on the clean stop
    assert (out / "eeg" / f"{name}_raw.fif").is_file()
    streams = {s.header["name"]: s for s in read_recorder_dir(out / "eeg")}
    assert set(streams) == {name, f"{name}-markers"}
    assert (out / "session.log").read_text().count("warmed up") >= 1


@pytest.mark.slow
def test_sigkill_loses_at_most_one_second_of_eeg(lsl_loopback, tiny_bundle, tmp_path):
    import pylsl

    name = unique_name("run-kill")
    out = tmp_path / "killed"
    # channel 0 counts samples: a missing sample in the recording would show as a jump
    with spawn_outlet(name, n_channels=len(CH), ch_names=list(CH), unit="microvolts", linger_s=60):
        proc = subprocess.Popen(
            [sys.executable, "-c", "from neuroimagen.realtime.cli import main; main()", "run",
             "--bundle", str(tiny_bundle), "--stream", name, "--headless", "--out", str(out), "--hop", "0.1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "COLUMNS": "200"},
        )
        try:
            eeg_ts = out / "eeg" / "streams"
            wait_until(lambda: proc.poll() is not None or len(_lines(out / "topk.jsonl")) >= 10,
                       timeout=60, message="10 frames")
            assert proc.poll() is None, "run ended by itself"

            def recorded_s() -> float:
                files = list(eeg_ts.glob("*/timestamps.bin"))
                return max((f.stat().st_size / 8 / 1000 for f in files), default=0.0)

            wait_until(lambda: recorded_s() >= 3.0, timeout=30, message="3 s of recorded EEG")
            t_kill = pylsl.local_clock()
            proc.kill()
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    eeg = next(s for s in read_recorder_dir(out / "eeg") if s.header["name"] == name)
    counter = eeg.data[:, 0].astype(np.float64)
    assert counter.size >= 3000
    assert np.all(np.diff(counter) == 1), "samples missing inside the recording"
    assert eeg.timestamps[-1] >= t_kill - 1.0, f"lost {t_kill - eeg.timestamps[-1]:.2f} s"
    # what was written before the kill reads back: top-k lines and the last metrics
    assert len(_lines(out / "topk.jsonl")) >= 10
    assert json.loads((out / "metrics.json").read_text())["n_frames"] >= 1
    assert yaml.safe_load((out / "config.yaml").read_text())["stream"]["inlet"]["name"] == name


def test_several_eeg_streams_and_none_named_is_refused_with_the_list(lsl_loopback, tiny_bundle, tmp_path):
    a, b = unique_name("eeg-a"), unique_name("eeg-b")
    with spawn_outlet(a, n_channels=4), spawn_outlet(b, n_channels=4):
        wait_until(lambda: _visible({a, b}), timeout=20, message="both streams visible")
        result = CliRunner().invoke(main, ["run", "--bundle", str(tiny_bundle), "--headless",
                                           "--duration", "1", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2, result.output
    assert "none is named" in result.output and a in result.output and b in result.output
    assert not (tmp_path / "x").exists()


def _visible(names: set[str]) -> bool:
    from neuroimagen.stream.inlet import list_streams

    return names <= {m.name for m in list_streams(timeout=0.5)}


def test_run_without_a_bundle_says_exactly_that(tmp_path, monkeypatch):
    from neuroimagen.realtime import embedded

    # an install without the embedded bundle (this checkout ships one)
    monkeypatch.setattr(embedded, "EMBEDDED_BUNDLE_DIR", tmp_path / "no-embedded-bundle")
    assert embedded.embedded_bundle() is None
    result = CliRunner().invoke(main, ["run", "--headless", "--duration", "1", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "no embedded default bundle" in result.output and "--bundle PATH" in result.output
    assert "not built yet" not in result.output

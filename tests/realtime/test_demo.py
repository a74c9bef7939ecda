"""`neuroimagen demo` runs the embedded default end to end over loopback LSL."""

import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner
from helpers import wait_until

from neuroimagen.realtime.cli import main


@pytest.mark.slow
def test_demo_decodes_a_replayed_twin_live(lsl_loopback, tmp_path):
    out = tmp_path / "demo.json"
    result = CliRunner().invoke(
        main,
        ["demo", "--linear", "--duration", "12", "--speed", "2", "--workdir", str(tmp_path), "--json", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "held-out" in result.output
    s = json.loads(out.read_text())
    # 12 s at 2x speed, one stimulus per 0.5 s of recording: tens of windows
    assert s["n_windows"] >= 20, s
    # every marker that arrived became a decoded window: none was dropped by the windower
    # (an EEG gap, a marker too old or late), at most the newest still waits for its samples
    assert s["n_markers_dropped"] == 0 and s["n_lost_samples"] == 0 and s["n_gap_samples"] == 0, s
    assert s["n_markers_received"] - s["n_markers_pending"] == s["n_windows"], s
    assert s["n_markers_pending"] <= 1, s
    # the decoder was fitted on these images: far above the 10-class chance level
    assert s["class_top1_seen"] >= 0.4, s
    # both latencies are measured (their size is the bench's business, not a test's)
    assert s["timestamp_to_prediction_ms_p50"] > 0 and s["window_ready_ms_p50"] > 0, s
    assert s["interrupted"] is None
    # the cache is reused on the next run (no second twin)
    assert (tmp_path / "twin-small-seed0" / "demo_decoder" / "config.json").is_file()


@pytest.mark.slow
def test_demo_keeps_its_json_report_on_sigterm(lsl_loopback, tmp_path):
    import re
    import threading

    import pylsl

    out = tmp_path / "demo.json"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from neuroimagen.realtime.cli import main; main()", "demo",
         "--linear", "--duration", "600", "--speed", "2", "--workdir", str(tmp_path), "--json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "300"},
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    try:
        # 1. the demo names its stream when the live phase starts (after making the twin)
        found = wait_until(lambda: proc.poll() is not None or re.search(r"as LSL stream '([^']+)'", "".join(lines)),
                           timeout=180, message=lambda: f"the demo's stream name ({lines[-3:]})")
        assert proc.poll() is None, "".join(lines)
        wait_until(lambda: proc.poll() is not None or "inlet opened" in "".join(lines), timeout=60,
                   message="the demo's pipeline to connect")
        # 2. watch its markers from now on: four of them means windows have been cut and decoded
        info = pylsl.resolve_byprop("name", f"{found.group(1)}-markers", 1, 20.0)
        assert info
        inlet = pylsl.StreamInlet(info[0])
        inlet.open_stream(10.0)
        seen: list = []
        wait_until(lambda: seen.extend(inlet.pull_chunk(timeout=0.0)[1]) or len(seen) >= 4, timeout=60,
                   message="four markers")
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines)
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM: demo ended after" in output and "figures so far written" in output
    s = json.loads(out.read_text())
    assert s["interrupted"] == "SIGTERM" and s["n_windows"] >= 1, s

"""SIGINT and SIGTERM are a clean stop for the long-running commands: one line, 130 / 143.

(`stream record` and `stream replay` on SIGTERM: tests/stream/test_record.py and
test_replay.py; `demo`: tests/realtime/test_demo.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid

import pytest
from helpers import wait_until
from helpers.lsl import unique_name

pytestmark = pytest.mark.usefixtures("lsl_loopback")


def _start(*args: str) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "from neuroimagen.realtime.cli import main; main()", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "300"},
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    return proc, lines


def _finish(proc: subprocess.Popen, sig: int) -> None:
    try:
        proc.send_signal(sig)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_simulate_with_a_fixed_source_id_stops_on_sigint():
    import pylsl

    name, sid = unique_name("sim-cli"), f"fixed-{uuid.uuid4().hex[:8]}"
    proc, lines = _start("stream", "simulate", "--name", name, "--source-id", sid)
    try:
        found = pylsl.resolve_byprop("name", name, 1, 30.0)
        assert found, "".join(lines)
        # the same stream to LSL on every run: consumers' recover can reattach after a restart
        assert found[0].source_id() == sid
        markers = pylsl.resolve_byprop("name", f"{name}-markers", 1, 10.0)
        assert markers and markers[0].source_id() == f"{sid}-markers"
        inlet = pylsl.StreamInlet(found[0])
        inlet.open_stream(10.0)
        wait_until(lambda: len(inlet.pull_chunk(timeout=0.0)[1]) > 0, timeout=20, message="samples")
    finally:
        _finish(proc, signal.SIGINT)
    output = "".join(lines)
    assert proc.returncode == 128 + signal.SIGINT, output  # 130
    assert "stopped by SIGINT: simulate closed its outlets after" in output
    assert "Traceback" not in output and "Aborted" not in output


@pytest.mark.slow
def test_bench_keeps_the_finished_phase_on_sigint(tmp_path):
    out = tmp_path / "bench.json"
    proc, lines = _start("bench", "stream", "--duration", "1", "--latency-duration", "120",
                         "--json", str(out))
    try:
        wait_until(lambda: proc.poll() is not None or "latency phase" in "".join(lines), timeout=120,
                   message=lambda: f"the latency phase ({lines[-3:]})")
        assert proc.poll() is None, "".join(lines)
    finally:
        _finish(proc, signal.SIGINT)
    output = "".join(lines)
    assert proc.returncode == 130, output
    assert "stopped by SIGINT: bench interrupted; capacity finished" in output
    result = json.loads(out.read_text())
    assert result["interrupted"] == "SIGINT" and "latency" not in result
    assert result["capacity"]["n_samples_received"] == 1000 and result["capacity"]["counter_exact"]

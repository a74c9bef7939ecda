"""`neuroimagen demo` runs the embedded default end to end over loopback LSL."""

import json

import pytest
from click.testing import CliRunner

from neuroimagen.realtime.cli import main


@pytest.mark.slow
def test_demo_decodes_a_replayed_twin_live(lsl_loopback, tmp_path):
    out = tmp_path / "demo.json"
    result = CliRunner().invoke(
        main,
        ["demo", "--duration", "12", "--speed", "2", "--workdir", str(tmp_path), "--json", str(out)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "held-out" in result.output
    s = json.loads(out.read_text())
    # 12 s at 2x speed, one stimulus per 0.5 s of recording: tens of windows, none lost
    assert s["n_windows"] >= 20, s
    assert s["n_lost_samples"] == 0 and s["n_dropped_windows"] == 0, s
    # the decoder was fitted on these images: far above the 10-class chance level
    assert s["class_top1_seen"] >= 0.4, s
    assert s["latency_ms_p50"] is not None and s["latency_ms_p50"] < 500, s
    # the cache is reused on the next run (no second twin)
    assert (tmp_path / "twin-small-seed0" / "demo_decoder" / "config.json").is_file()

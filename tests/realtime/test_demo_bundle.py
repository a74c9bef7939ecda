"""`neuroimagen demo --bundle`: the full chain on a (tiny random) bundle of the twin, with every figure."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from neuroimagen.realtime.cli import main


@pytest.fixture(scope="module")
def twin_bundle(tmp_path_factory):
    from helpers.bundles import write_twin_bundle

    from neuroimagen.training.config import TwinConfig
    from neuroimagen.training.data.twin import make_twin

    work = tmp_path_factory.mktemp("demo")
    make_twin(work / "twin-small-seed0", TwinConfig(preset="small", seed=0))
    return work, write_twin_bundle(work / "bundle", work / "twin-small-seed0")


@pytest.mark.slow
def test_demo_reconstructs_every_window_and_reports_every_figure(lsl_loopback, twin_bundle, tmp_path,
                                                                 monkeypatch):
    work, bundle = twin_bundle
    out = tmp_path / "demo"
    # no display and no Qt platform chosen: the demo runs headless by itself (no --headless)
    for key in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(key, raising=False)
    result = CliRunner().invoke(main, [
        "demo", "--bundle", str(bundle), "--duration", "10", "--speed", "2",
        "--workdir", str(work), "--out", str(out), "--json", str(tmp_path / "demo.json"),
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "no display" in result.output and "running headless" in result.output
    assert "not built yet" not in result.output
    m = json.loads((out / "metrics.json").read_text())
    assert json.loads((tmp_path / "demo.json").read_text())["n_frames"] == m["n_frames"]
    # latency p50/p95/p99 per stage and end to end; fps; windows processed and dropped
    for stage in ("pull", "preprocess", "extractors", "diffusion", "publish", "end_to_end"):
        for q in ("p50", "p95", "p99"):
            assert m["latency_ms"][stage][q] is not None, (stage, q)
    assert m["fps"] > 0 and m["n_windows"] >= 20
    assert m["n_frames"] + m["n_dropped"] + m["n_unfinished_at_stop"] == m["n_windows"]
    # one reconstruction per stimulus: every marker that arrived became a window
    p = m["pipeline"]
    assert p["n_markers"] - p["n_markers_pending"] - p["n_markers_dropped"] == m["n_windows"]
    # live scores on held-out images (chance-level for random models, but measured)
    held = m["scores"]["heldout"]
    assert held["n"] >= 1 and m["scores"]["heldout_known"]
    assert held["class_top1"] is not None and held["ssim"] is not None and held["nway_top1"] is not None
    assert m["scores"]["seen"]["n"] + held["n"] == m["n_frames"]
    assert len(list((out / "frames").glob("*.png"))) == m["n_frames"]

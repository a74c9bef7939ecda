"""`neuroimagen demo --screenshot`: the GUI demo runs offscreen, screenshots, exits by itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.gui, pytest.mark.slow]


@pytest.fixture(scope="module")
def twin_bundle(tmp_path_factory):
    from helpers.bundles import write_twin_bundle

    from neuroimagen.training.config import TwinConfig
    from neuroimagen.training.data.twin import make_twin

    work = tmp_path_factory.mktemp("gui-demo")
    make_twin(work / "twin-small-seed0", TwinConfig(preset="small", seed=0))
    return work, write_twin_bundle(work / "bundle", work / "twin-small-seed0")


def test_demo_opens_the_gui_offscreen_saves_a_screenshot_and_exits(lsl_loopback, twin_bundle, tmp_path):
    from PIL import Image

    work, bundle = twin_bundle
    shot, report = tmp_path / "shot.png", tmp_path / "demo.json"
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    script = Path(sys.executable).with_name("neuroimagen")  # the console script of this environment
    cmd = [str(script), "demo", "--bundle", str(bundle), "--workdir", str(work),
           "--duration", "12", "--speed", "2", "--screenshot", str(shot), "--out", str(tmp_path / "out"),
           "--json", str(report), "--set", "gui.engine=thread"]  # an engine process starts in 15-20 s here
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "not built yet" not in out
    assert "screenshot saved" in out
    m = json.loads(report.read_text())
    assert m["n_frames"] >= 1 and m["gui"]["n_frames_shown"] >= 1, m.get("gui")
    assert m["gui"]["scope_redraws"] > 10
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size[0] >= 800 and im.size[1] >= 500
        assert np.asarray(im.convert("L")).std() > 5

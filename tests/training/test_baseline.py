"""The linear baseline on the twin: class and layout decodable, the shuffled control at chance,
and the block-design confound (class-free EEG decodes the class in block order, not in rapid order)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from neuroimagen.realtime.cli import main
from neuroimagen.training.config import TwinConfig
from neuroimagen.training.data.twin import make_twin
from neuroimagen.training.data.twin.baseline import run_baseline


def _rows(result):
    return {r["task"]: r for r in result["rows"]}


@pytest.fixture(scope="module")
def small_twin(tmp_path_factory):
    out = tmp_path_factory.mktemp("twin-baseline")
    make_twin(out, TwinConfig(preset="small", seed=0))
    return out


def test_small_preset_lands_in_a_sensible_band(small_twin):
    rows = _rows(run_baseline(small_twin, "cv", n_folds=5))
    cls, hemi, quad, shuf = rows["class"], rows["hemifield"], rows["quadrant"], rows["class_shuffled"]
    assert cls["n_classes"] == 10 and cls["n_test"] == 400
    assert abs(cls["chance"] - 0.1) < 1e-9
    # decodable, but not trivially easy
    assert 3.0 * cls["chance"] <= cls["accuracy"] <= 0.8, cls
    assert hemi["accuracy"] >= 0.7 and hemi["accuracy"] > hemi["chance"] + 0.15, hemi
    assert quad["accuracy"] >= 0.5 and quad["ratio"] > 1.5, quad
    # the control shows the metric can fail
    assert shuf["accuracy"] <= 1.5 * shuf["chance"], shuf


def test_official_split_never_shares_images(small_twin):
    res = run_baseline(small_twin, "split")
    rows = _rows(res)
    assert rows["class"]["n_test"] == 40  # 10 % of 20 images x 10 classes x 2 subjects
    assert rows["class"]["accuracy"] > rows["class"]["chance"]


@pytest.mark.slow
def test_block_design_confound_without_class_content(tmp_path):
    """class_snr = 0: in block order the block nonstationarity alone decodes the class; rapid does not."""
    acc = {}
    for order in ("block", "rapid"):
        out = tmp_path / order
        make_twin(out, TwinConfig(preset="small", seed=2, order=order, class_snr=0.0))
        acc[order] = _rows(run_baseline(out, "cv", n_folds=5))["class"]
    assert acc["block"]["accuracy"] >= 3.0 * acc["block"]["chance"], acc
    assert acc["rapid"]["accuracy"] <= 1.5 * acc["rapid"]["chance"], acc


def test_cli_make_twin_and_baseline(tmp_path):
    runner = CliRunner()
    out = tmp_path / "twin"
    res = runner.invoke(main, [
        "data", "make-twin", "--out", str(out), "--seed", "3", "--order", "block",
        "--set", "training.twin.n_classes=4", "--set", "training.twin.n_images_per_class=6",
        "--set", "training.twin.n_subjects=1",
    ])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "twin.json").read_text())
    assert meta["seed"] == 3 and meta["config"]["order"] == "block" and len(meta["wnids"]) == 4
    report = tmp_path / "b.json"
    res = runner.invoke(main, ["data", "baseline", str(out), "--folds", "3", "--json", str(report)])
    assert res.exit_code == 0, res.output
    assert "class_shuffled" in res.output and "hemifield" in res.output
    result = json.loads(report.read_text())
    assert [r["task"] for r in result["rows"]] == ["class", "hemifield", "quadrant", "class_shuffled"]
    assert np.isclose(result["rows"][0]["chance"], 0.25)
    res = runner.invoke(main, ["data", "baseline", str(tmp_path)])
    assert res.exit_code != 0 and "twin.json" in res.output

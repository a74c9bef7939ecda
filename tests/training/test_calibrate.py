"""train calibrate: the subject layer folds exactly, unknown classes are refused, NEW is a new verified bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.bundles import write_twin_bundle
from helpers.twin import make_tiny_twin

from neuroimagen.stream.design import load_stimuli, make_schedule
from neuroimagen.training.models.bundle import load_bundle, verify_bundle
from neuroimagen.training.models.format import file_sha256
from neuroimagen.training.train.calibrate import (
    CalibrationError,
    SubjectLayer,
    _forward,
    _load_models,
    bake_subject_layer,
    calibrate,
    fold_subject_layer,
    session_windows,
)


@pytest.fixture(scope="module")
def twin(tmp_path_factory) -> Path:
    return make_tiny_twin(tmp_path_factory.mktemp("twin"))


@pytest.fixture(scope="module")
def base(twin, tmp_path_factory) -> Path:
    return write_twin_bundle(tmp_path_factory.mktemp("b") / "base", twin)


@pytest.fixture(scope="module")
def session(twin, tmp_path_factory) -> Path:
    from neuroimagen.training.data.twin.subject import TwinSubjectSource, simulate_session

    trials = make_schedule(load_stimuli(twin / "images"), soa_s=0.3, jitter_s=0.1, test_repeats=2, seed=1)
    return simulate_session(tmp_path_factory.mktemp("s") / "session", TwinSubjectSource(twin, 9), trials)


def test_folded_subject_layer_equals_the_layer_in_front(base: Path) -> None:
    b = load_bundle(base)
    ref, folded = _load_models(b), _load_models(b)
    layer = SubjectLayer(128)
    with torch.no_grad():
        layer.weight.add_(0.05 * torch.randn(128, 128, generator=torch.Generator().manual_seed(0)))
        layer.bias.add_(0.1 * torch.randn(128, generator=torch.Generator().manual_seed(1)))
    convs = [folded.pixel.spatial[0], folded.semantic.patch_embed.proj]
    fold_subject_layer(convs, layer)
    bake_subject_layer(convs)
    assert set(dict(folded.pixel.named_parameters())) == set(dict(ref.pixel.named_parameters()))
    x = torch.randn(3, 128, 440, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = _forward(ref, x, layer)
        got = _forward(folded, x)
    for w, g in zip(want, got, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(_forward(ref, x)[1], got[1])  # the layer did change something


def test_windows_are_cut_at_the_markers_with_the_bundles_chain(session: Path, base: Path) -> None:
    sw, meta = session_windows(session, load_bundle(base))
    trials = meta["trials"]
    assert [p["image"] for p in sw.payloads] == [t["stem"] for t in trials]
    assert sw.onsets.tolist() == [t["onset_sample"] for t in trials]
    assert sw.eeg.shape == (len(trials), 128, 440) and sw.eeg.dtype == np.float32
    assert sw.test.tolist() == [t["test"] for t in trials] and sw.test.any()


def test_calibrate_writes_a_new_verified_bundle_and_leaves_base_alone(session, base, tmp_path) -> None:
    before = {p.name: file_sha256(p) for p in base.rglob("*") if p.is_file()}
    report = calibrate(session, base, tmp_path / "new", budget_s=30.0, max_steps=3, batch_size=16)
    assert {p.name: file_sha256(p) for p in base.rglob("*") if p.is_file()} == before
    man = verify_bundle(tmp_path / "new")
    assert man.metrics["calib_n_trials"] == report["n_trials"] > 0
    assert man.metrics["calib_top1_after"] == report["after"]["top1"]
    assert "calibrated" in man.provenance.data and report["kept"] in ("none", "subject_layer", "heads")
    assert set(report["methods"]) == {"subject_layer", "heads"}
    assert all(m["steps"] == 3 for m in report["methods"].values())
    assert report["n_test"] == int(sum(t["test"] for t in json.loads((session / "session.json").read_text())["trials"]))
    with pytest.raises(Exception, match="not empty"):
        calibrate(session, base, tmp_path / "new", budget_s=5.0, max_steps=1)


def test_classes_without_targets_are_refused_by_name(session, twin, tmp_path) -> None:
    from helpers.bundles import write_tiny_bundle

    other = write_tiny_bundle(tmp_path / "other", class_names=["cat", "dog"])
    with pytest.raises(CalibrationError, match="no targets for 4 class"):
        calibrate(session, other, tmp_path / "new", budget_s=5.0, max_steps=1)
    assert not (tmp_path / "new").exists()


def test_a_twin_recording_as_a_session_holds_out_a_fifth_of_its_images(twin, base, tmp_path) -> None:
    import shutil

    from neuroimagen.stream.design import write_session

    sess = tmp_path / "replayed"
    sess.mkdir()
    shutil.copy(twin / "recordings" / "sub-01_ses-01_raw.fif", sess / "eeg_raw.fif")
    write_session(sess, {"eeg_file": "eeg_raw.fif", "stimuli": str(twin / "images")})  # no class names in markers
    sw, _ = session_windows(sess, load_bundle(base))
    stim = json.loads((twin / "stimuli.json").read_text())
    assert len(sw.labels) == 40 and sw.labels.tolist() == [stim[im]["label"] for im in sw.images]
    held = {im for im, t in zip(sw.images, sw.test, strict=True) if t}
    assert len(held) == 8 and sw.test.tolist() == [im in held for im in sw.images]

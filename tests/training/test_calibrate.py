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


# --------------------------------------------------------------------------- Feature* extractors (the embedded default's)


@pytest.fixture(scope="module")
def feature_base(twin, tmp_path_factory) -> Path:
    return write_twin_bundle(tmp_path_factory.mktemp("fb") / "base", twin, features=True)


@pytest.fixture(scope="module")
def long_session(twin, tmp_path_factory) -> Path:
    """A new subject (seed 9, the wide variation) shown the tiny twin's images 6 times (264 trials)."""
    from neuroimagen.training.data.twin.subject import TwinSubjectSource, simulate_session

    trials = make_schedule(load_stimuli(twin / "images"), soa_s=0.3, jitter_s=0.1, test_repeats=2, n_passes=6,
                           seed=1)
    return simulate_session(tmp_path_factory.mktemp("ls") / "session", TwinSubjectSource(twin, 9), trials)


def test_feature_bundle_is_calibrated_in_closed_form_and_improves_held_out_top1(long_session, feature_base,
                                                                                 tmp_path) -> None:
    from neuroimagen.training.models.pixel import FeaturePixelEncoder
    from neuroimagen.training.models.semantic import FeatureSemanticExtractor

    report = calibrate(long_session, feature_base, tmp_path / "new", budget_s=120.0)
    assert set(report["methods"]) == {"refit", "refit_prior"}  # restandardise only when asked for
    assert report["kept"] in ("refit", "refit_prior")
    # the subject's own class code beats BASE's on the held-out test images (never fitted, never validated on)
    assert report["after"]["top1"] > report["before"]["top1"] + 0.05, report
    new, base = load_bundle(tmp_path / "new"), load_bundle(feature_base)
    sem_new, sem_base = new.load_role("semantic"), base.load_role("semantic")
    assert isinstance(sem_new, FeatureSemanticExtractor) and isinstance(new.load_role("pixel_encoder"),
                                                                         FeaturePixelEncoder)
    assert not torch.equal(sem_new.code.weight, sem_base.code.weight)
    # the heads are BASE's: only the standardisation and the class code are the subject's
    for name in ("token_coef.weight", "token_basis", "token_bias", "pooled_basis.weight"):
        torch.testing.assert_close(sem_new.state_dict()[name], sem_base.state_dict()[name])
    assert new.manifest.metrics["calib_top1_after"] == report["after"]["top1"]


def test_restandardise_takes_the_subjects_feature_statistics_and_keeps_the_weights(long_session,
                                                                                   feature_base) -> None:
    from neuroimagen.training.train.calibrate import _adapt_features

    b = load_bundle(feature_base)
    sw, _ = session_windows(long_session, b)
    x = torch.from_numpy(sw.eeg[~sw.test])
    y = torch.from_numpy(sw.labels[~sw.test])
    img = torch.zeros(len(x), 3, 32, 32)
    base, m = _load_models(b), _load_models(b)
    _adapt_features("restandardise", m, (x, y, img), (x[:8], y[:8], img[:8]), torch.randn(4, 24), budget_s=30.0)
    for new, old in ((m.semantic, base.semantic), (m.pixel, base.pixel)):
        f = new.features(x).double()
        torch.testing.assert_close(new.feature_mean, f.mean(0).float())
        torch.testing.assert_close(new.feature_scale, f.std(0, unbiased=False).float())
        old_state, new_state = old.state_dict(), new.state_dict()
        assert all(torch.equal(new_state[k], v) for k, v in old_state.items() if not k.startswith("feature_"))
        assert not torch.equal(new.feature_mean, old.feature_mean)


def test_conv_methods_are_refused_for_feature_extractors_naming_the_classes(long_session, feature_base,
                                                                            tmp_path) -> None:
    with pytest.raises(CalibrationError, match="FeaturePixelEncoder, FeatureSemanticExtractor.*refit_prior"):
        calibrate(long_session, feature_base, tmp_path / "new", methods=["heads"])
    assert not (tmp_path / "new").exists()


def test_an_extractor_class_without_a_method_is_named(base) -> None:
    from neuroimagen.training.models.pixel import FeaturePixelEncoder, FMRIPixelEncoder
    from neuroimagen.training.train.calibrate import methods_for

    m = _load_models(load_bundle(base))
    assert methods_for(m) == ("subject_layer", "heads")
    m.pixel = FMRIPixelEncoder(n_voxels=8, hidden_dim=8, feature_dim=16)
    with pytest.raises(CalibrationError, match="no method for the pixel_encoder model FMRIPixelEncoder"):
        methods_for(m)
    m.pixel = FeaturePixelEncoder(feature_dim=16)
    with pytest.raises(CalibrationError, match="pair FeaturePixelEncoder \\+ SemanticExtractor"):
        methods_for(m)


@pytest.mark.parametrize("n", [30, 80])  # fewer trials than features (dual solve), more (primal)
def test_ridge_path_is_ridge_shrunk_towards_the_prior(n: int) -> None:
    from neuroimagen.training.models._blocks import ridge_path

    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, 50, generator=g, dtype=torch.float64)
    y = torch.randn(n, 3, generator=g, dtype=torch.float64)
    w0 = torch.randn(50, 3, generator=g, dtype=torch.float64)
    for alpha, w in ridge_path(x, y, [0.5, 10.0, 1e9], w0):
        # argmin ||x w - y||^2 + alpha ||w - w0||^2, by its normal equations
        want = torch.linalg.solve(x.T @ x + alpha * torch.eye(50, dtype=torch.float64), x.T @ y + alpha * w0)
        torch.testing.assert_close(w, want)
    torch.testing.assert_close(w, w0, atol=1e-6, rtol=0)  # a huge penalty keeps the prior
    _, plain = next(ridge_path(x, y, [10.0]))
    torch.testing.assert_close(plain, torch.linalg.solve(x.T @ x + 10.0 * torch.eye(50, dtype=torch.float64),
                                                          x.T @ y))


def test_pixel_targets_are_what_the_saliency_head_maps_to_the_image() -> None:
    from neuroimagen.training.models.saliency import SaliencyGenerator
    from neuroimagen.training.train.calibrate import _pixel_targets

    gen = SaliencyGenerator(feature_dim=4, base_channels=16, image_size=16, linear_head=True).eval()
    basis = torch.linalg.qr(torch.randn(3 * 16 * 16, 4, generator=torch.Generator().manual_seed(0))).Q
    gen.set_linear_basis(0.05 * basis.T.reshape(4, 3, 16, 16), torch.full((3, 16, 16), 0.5))
    coefs = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        img = gen(coefs)  # inside [0, 1]: the clamp does not bite
    torch.testing.assert_close(_pixel_targets(gen, img).float(), coefs, atol=1e-4, rtol=1e-4)

"""The live linear decoder equals the scikit-learn model it was packed from, and round-trips."""

import numpy as np
import pytest

from neuroimagen.training.models.linear_decoder import LinearWindowDecoder, window_features


@pytest.fixture(scope="module")
def twin_dir(tmp_path_factory):
    from neuroimagen.training.config import TwinConfig
    from neuroimagen.training.data.twin import make_twin

    out = tmp_path_factory.mktemp("twin")
    make_twin(out, TwinConfig(preset="small", seed=3))
    return out


def test_decoder_equals_the_sklearn_reference_and_round_trips(twin_dir, tmp_path):
    from neuroimagen.stream.montage import channel_positions
    from neuroimagen.training.data.twin import baseline

    dec = baseline.fit_decoder(twin_dir, split="train")
    test = baseline.load_twin_windows(twin_dir, "test")
    # reference: the scikit-learn scaler + ridge fitted on the same data
    train = baseline.load_twin_windows(twin_dir, "train")
    posterior = np.flatnonzero(channel_positions()[:, 1] < baseline.POSTERIOR_Y_M)
    n_cls = int(train["n_classes"])
    scaler, model = baseline._fit_ridge(
        baseline.features(train["x"], posterior),
        [train["label"], train["hemifield"], train["quadrant"]],
        [n_cls, 2, 4],
    )
    ref = model.predict(scaler.transform(baseline.features(test["x"], posterior)))
    got = dec.scores(test["x"])
    np.testing.assert_allclose(got["class"], ref[:, :n_cls], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(got["quadrant"], ref[:, n_cls + 2 :], rtol=1e-6, atol=1e-9)

    path = dec.save(tmp_path / "dec")
    back = LinearWindowDecoder.load(path)
    assert back.class_names == dec.class_names and back.tasks == dec.tasks
    # it records exactly the images it was fitted on; the test images are not among them
    assert back.fitted_images == sorted(set(train["image"]))
    assert not set(back.fitted_images) & set(test["image"])
    for task, s in back.scores(test["x"]).items():
        np.testing.assert_array_equal(s, got[task])
    # held-out images: well above chance on this twin (10 classes)
    acc = float(np.mean(back.predict(test["x"])["class"] == test["label"]))
    assert acc > 0.2, acc


def test_decoder_refuses_wrong_shapes_and_files(twin_dir, tmp_path):
    from neuroimagen.training.data.twin import baseline

    dec = baseline.fit_decoder(twin_dir, split="train")
    with pytest.raises(ValueError, match=r"expects windows of shape \(128, 440\)"):
        dec.scores(np.zeros((64, 440), dtype=np.float32))
    from neuroimagen.training.models.format import ModelFormatError, save_model
    from neuroimagen.training.models.pixel import PixelEncoder

    with pytest.raises(ModelFormatError, match="model folder not found"):
        LinearWindowDecoder.load(tmp_path / "nope")
    save_model(PixelEncoder(n_spatial_filters=2, hidden_dim=0, feature_dim=4), tmp_path / "other")
    with pytest.raises(ModelFormatError, match="holds a PixelEncoder, not a LinearWindowDecoder"):
        LinearWindowDecoder.load(tmp_path / "other")


def test_window_features_shape_and_values():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 40)).astype(np.float32)
    f = window_features(x, np.array([1, 3]), bin_samples=20)
    assert f.shape == (3, 2 * 2 + 4)
    np.testing.assert_allclose(f[0, 0], x[0, 1, :20].mean(), rtol=1e-6)
    np.testing.assert_allclose(f[0, -1], np.log(x[0, 3].astype(np.float64).var() + 1e-12))

"""The extractor models: shapes and dtypes of the shared interface, the model format, MAE -> semantic init."""

from __future__ import annotations

import inspect

import pytest
import torch

from neuroimagen.training import config as tc
from neuroimagen.training.models.format import ModelFormatError, load_model, save_model
from neuroimagen.training.models.mae import MaskedEEGAutoencoder
from neuroimagen.training.models.nice import NICEEncoder
from neuroimagen.training.models.pixel import FeaturePixelEncoder, FMRIPixelEncoder, PixelEncoder
from neuroimagen.training.models.saliency import SaliencyDiscriminator, SaliencyGenerator
from neuroimagen.training.models.semantic import (
    FeatureSemanticExtractor,
    FMRISemanticExtractor,
    SemanticExtractor,
    class_scores,
)

ENC = dict(dim=16, depth=1, n_heads=2, mlp_ratio=2.0)


def _eeg(b=3, t=440, seed=0):
    return torch.randn(b, 128, t, generator=torch.Generator().manual_seed(seed))


def _tiny_models():
    torch.manual_seed(0)
    return [
        (MaskedEEGAutoencoder(**ENC, decoder_dim=8, decoder_depth=1, decoder_n_heads=2), _eeg()),
        (SemanticExtractor(**ENC, n_tokens=5, width=12), _eeg()),
        (PixelEncoder(n_spatial_filters=4, n_temporal_filters=1, hidden_dim=0, feature_dim=8), _eeg()),
        (NICEEncoder(n_filters=4, proj_dim=12), _eeg()),
        (SaliencyGenerator(feature_dim=8, base_channels=16, image_size=16, noise_dim=3), torch.randn(3, 8)),
        (FMRIPixelEncoder(n_voxels=20, hidden_dim=8, n_layers=1, feature_dim=6), torch.randn(3, 20)),
        (FMRISemanticExtractor(n_voxels=20, hidden_dim=8, n_layers=1, n_tokens=4, width=6, token_dim=4),
         torch.randn(3, 20)),
    ]


@torch.no_grad()
def test_interface_shapes_and_ranges():
    torch.manual_seed(0)
    x = _eeg()
    f = PixelEncoder(n_spatial_filters=4, hidden_dim=0, feature_dim=8).eval()(x)
    assert f.shape == (3, 8) and f.dtype == torch.float32
    torch.testing.assert_close(f.norm(dim=1), torch.ones(3))
    tokens, pooled = SemanticExtractor(**ENC, n_tokens=77, width=24).eval()(x)
    assert tokens.shape == (3, 77, 24) and pooled.shape == (3, 24)
    # 512-sample windows (the stream layer's resample) work the same way
    tokens, _ = SemanticExtractor(**ENC, n_times=512, n_tokens=7, width=8).eval()(_eeg(t=512))
    assert tokens.shape == (3, 7, 8)
    gen = SaliencyGenerator(feature_dim=8, base_channels=16, image_size=32, noise_dim=4).eval()
    img = gen(f)
    assert img.shape == (3, 3, 32, 32) and img.dtype == torch.float32
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    # deterministic at inference: no z means the zero z
    torch.testing.assert_close(gen(f), gen(f, torch.zeros(3, 4)))
    assert not torch.allclose(gen(f), gen(f, torch.ones(3, 4)))
    logits = SaliencyDiscriminator(feature_dim=8, base_channels=4, image_size=32)(img, f)
    assert logits.shape == (3,)
    e = NICEEncoder(n_filters=4, proj_dim=12).eval()(x)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))


def test_class_scores_are_cosine_similarities():
    pooled = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    classes = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, -1.0]])
    s = class_scores(pooled, classes)
    expected = torch.tensor([[1.0, 2**-0.5, 0.0], [0.0, 2**-0.5, -1.0]])
    torch.testing.assert_close(s, expected)
    with pytest.raises(ValueError, match="width"):
        class_scores(pooled, torch.zeros(3, 5))


@pytest.mark.parametrize("index", range(7))
def test_every_model_round_trips_through_the_model_format(tmp_path, index):
    model, x = _tiny_models()[index]
    model.eval()
    back = load_model(type(model), save_model(model, tmp_path / "m"))
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    out_a, out_b = model(x), back(x)
    if hasattr(out_a, "loss"):  # MAE: same masks from the same generator
        out_a = model(x, generator=torch.Generator().manual_seed(1)).pred
        out_b = back(x, generator=torch.Generator().manual_seed(1)).pred
    for a, b in zip(out_a if isinstance(out_a, tuple) else (out_a,),
                    out_b if isinstance(out_b, tuple) else (out_b,), strict=True):
        torch.testing.assert_close(a, b)


def test_loader_refuses_a_folder_of_another_size(tmp_path):
    save_model(SemanticExtractor(**ENC, n_tokens=5, width=12), tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    cfg.write_text(cfg.read_text().replace('"width": 12', '"width": 10'))
    with pytest.raises(ModelFormatError, match="mis-shaped"):
        load_model(SemanticExtractor, tmp_path / "m")


def test_mae_loss_is_the_mse_of_the_masked_patches_only():
    torch.manual_seed(0)
    mae = MaskedEEGAutoencoder(**ENC, decoder_dim=8, decoder_depth=1, decoder_n_heads=2)
    x = _eeg()
    out = mae(x, generator=torch.Generator().manual_seed(3))
    assert out.mask.shape == (3, 110)
    assert torch.all(out.mask.sum(1) == 110 - round(110 * 0.25))
    per_patch = ((out.pred - mae.patchify(x)) ** 2).mean(-1)
    torch.testing.assert_close(out.loss, (per_patch * out.mask).sum() / out.mask.sum())
    # patchify is the exact reshaping: patch k of sample b holds samples 4k..4k+3 of every channel
    p = mae.patchify(x)
    torch.testing.assert_close(p[1, 5].reshape(4, 128).T, x[1, :, 20:24])


def test_semantic_extractor_takes_over_the_mae_encoder_exactly():
    torch.manual_seed(0)
    mae = MaskedEEGAutoencoder(**ENC, decoder_dim=8, decoder_depth=1, decoder_n_heads=2).eval()
    sem = SemanticExtractor(**ENC, n_tokens=5, width=12).eval()
    x = _eeg()
    assert not torch.allclose(sem.encode(x), mae.encode(x))
    sem.load_mae_encoder(mae)
    torch.testing.assert_close(sem.encode(x), mae.encode(x))
    other = MaskedEEGAutoencoder(dim=32, depth=1, n_heads=2, decoder_dim=8, decoder_depth=1, decoder_n_heads=2)
    with pytest.raises(ValueError, match="does not fit"):
        sem.load_mae_encoder(other)


@pytest.mark.parametrize(
    ("section", "cls", "from_data"),
    [
        (tc.MAEModelConfig, MaskedEEGAutoencoder, set()),
        (tc.PixelModelConfig, PixelEncoder, set()),
        (tc.NICEModelConfig, NICEEncoder, set()),
        (tc.SemanticModelConfig, SemanticExtractor, {"n_tokens", "width"}),
        (tc.FMRIPixelModelConfig, FMRIPixelEncoder, {"n_voxels"}),
        (tc.FMRISemanticModelConfig, FMRISemanticExtractor, {"n_voxels", "n_tokens", "width"}),
        (tc.SaliencyGeneratorConfig, SaliencyGenerator, {"feature_dim"}),
        (tc.SaliencyDiscriminatorConfig, SaliencyDiscriminator, {"feature_dim", "image_size"}),
    ],
)
def test_preset_model_sections_mirror_the_constructors(section, cls, from_data):
    params = inspect.signature(cls.__init__).parameters
    ctor = {k: p.default for k, p in params.items() if k != "self"}
    assert set(section.model_fields) | from_data == set(ctor)
    for name, field in section.model_fields.items():
        assert field.default == ctor[name], name


def _feature_fixture(n_per_class=30, k=4, n_ch=6, n_t=40, seed=0):
    """Windows whose class is a per-class waveform on the channels, in noise; class embeddings."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(k).repeat_interleave(n_per_class)
    templates = torch.randn(k, n_ch, n_t, generator=g)
    x = 0.5 * templates[labels] + torch.randn(len(labels), n_ch, n_t, generator=g)
    tokens = torch.randn(k, 3, 8, generator=g)
    pooled = torch.nn.functional.normalize(tokens.mean(1) + 0.5, dim=-1)  # correlated, like the twin's
    return x, labels, tokens, pooled


def test_feature_semantic_extractor_closed_form_is_the_ridge_classifier():
    """The code is sklearn's ridge on one-hot labels; cosine scores rank as the code; tokens = code @ T."""
    import numpy as np
    from sklearn.linear_model import Ridge

    x, labels, tokens, pooled = _feature_fixture()
    k = len(pooled)
    model = FeatureSemanticExtractor(n_channels=6, n_times=40, bin_samples=5, n_classes=k, n_tokens=3,
                                     width=8, token_rank=k - 1).eval()
    model.fit_closed_form(x, labels, tokens, pooled, alpha=10.0)
    # 1. the code: the reference ridge (scikit-learn) on the standardised features
    f = model.features(x).double().numpy()
    fs = (f - f.mean(0)) / f.std(0)
    ref = Ridge(alpha=10.0).fit(fs, np.eye(k)[labels.numpy()]).predict(fs)
    with torch.no_grad():
        code = model.class_code(x)
        out_tokens, out_pooled = model(x)
    np.testing.assert_allclose(code.numpy(), ref, atol=2e-4)
    # 2. cosine class scores rank the classes exactly as the code (the dual-basis pooled head)
    np.testing.assert_allclose((out_pooled @ pooled.T).numpy(), code.numpy(), atol=2e-4)
    assert torch.equal(class_scores(out_pooled, pooled).argmax(1), code.argmax(1))
    assert (code.argmax(1) == labels).float().mean() > 0.9  # the fixture is decodable
    # 3. tokens: the code mixes the class tokens (rank k - 1 is exact)
    torch.testing.assert_close(out_tokens, torch.einsum("bk,knw->bnw", code, tokens), atol=2e-4, rtol=1e-4)


def test_feature_semantic_extractor_round_trips_and_refuses_bad_input(tmp_path):
    x, labels, tokens, pooled = _feature_fixture()
    model = FeatureSemanticExtractor(n_channels=6, n_times=40, bin_samples=5, channels=[0, 2, 4], n_classes=4,
                                     n_tokens=3, width=8, token_rank=2, hidden_dim=5).eval()
    model.fit_closed_form(x, labels, tokens, pooled, alpha=1.0)
    save_model(model, tmp_path / "m")
    back = load_model(FeatureSemanticExtractor, tmp_path / "m")
    for a, b in zip(model(x[:5]), back(x[:5]), strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ModelFormatError, match="not a SemanticExtractor"):
        load_model(SemanticExtractor, tmp_path / "m")
    with pytest.raises(ValueError, match=r"expected windows \(B, 6, 40\)"):
        model(x[:, :5])
    with pytest.raises(ValueError, match="class embeddings must be"):
        model.fit_closed_form(x, labels, tokens[:3], pooled, alpha=1.0)
    with pytest.raises(ValueError, match="token_rank"):
        FeatureSemanticExtractor(n_classes=4, token_rank=5)


def test_feature_pixel_encoder_and_linear_head_generator_decode_in_closed_form():
    """Encoder = sklearn's ridge on the features; the linear-head generator starts as mean + code @ basis."""
    import numpy as np
    from sklearn.linear_model import Ridge

    x, labels, _, _ = _feature_fixture()
    targets = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))[labels]
    enc = FeaturePixelEncoder(n_channels=6, n_times=40, bin_samples=5, feature_dim=3).eval()
    enc.fit_closed_form(x, targets, alpha=5.0)
    f = enc.features(x).double().numpy()
    ref = Ridge(alpha=5.0).fit((f - f.mean(0)) / f.std(0), targets.numpy()).predict((f - f.mean(0)) / f.std(0))
    with torch.no_grad():
        code = enc(x)
    np.testing.assert_allclose(code.numpy(), ref, atol=2e-4)
    gen = SaliencyGenerator(feature_dim=3, base_channels=16, image_size=16, linear_head=True).eval()
    basis, mean = 0.1 * torch.randn(3, 3, 16, 16), torch.full((3, 16, 16), 0.5)
    gen.set_linear_basis(basis, mean)
    with torch.no_grad():
        img = gen(code[:4])
    torch.testing.assert_close(img, (mean + torch.einsum("bk,kchw->bchw", code[:4], basis)).clamp(0, 1))
    with pytest.raises(ValueError, match="no linear head"):
        SaliencyGenerator(feature_dim=3, base_channels=16, image_size=16).set_linear_basis(basis, mean)
    with pytest.raises(ValueError, match="targets must be"):
        enc.fit_closed_form(x, targets[:, :2], alpha=1.0)


def test_feature_semantic_extractor_token_temperature_sharpens_the_token_mix(tmp_path):
    """softmax(code / T) mixes the class tokens; pooled and the class scores are unchanged; it round-trips."""
    x, labels, tokens, pooled = _feature_fixture()
    k = len(pooled)
    kw = dict(n_channels=6, n_times=40, bin_samples=5, n_classes=k, n_tokens=3, width=8, token_rank=k - 1)
    plain = FeatureSemanticExtractor(**kw).eval()
    plain.fit_closed_form(x, labels, tokens, pooled, alpha=10.0)
    sharp = FeatureSemanticExtractor(**kw, token_temperature=0.05).eval()
    sharp.load_state_dict(plain.state_dict())
    with torch.no_grad():
        code = plain.class_code(x)
        (_, p_plain), (t_sharp, p_sharp) = plain(x), sharp(x)
    torch.testing.assert_close(p_sharp, p_plain)
    mix = torch.softmax(code / 0.05, -1)
    torch.testing.assert_close(t_sharp, torch.einsum("bk,knw->bnw", mix, tokens), atol=2e-4, rtol=1e-4)
    # a tiny temperature gives the decoded class's own tokens
    sharp.register_to_config(token_temperature=1e-4)
    with torch.no_grad():
        t_top = sharp(x)[0]
    torch.testing.assert_close(t_top, tokens[code.argmax(1)], atol=2e-4, rtol=1e-4)
    save_model(sharp, tmp_path / "m")
    back = load_model(FeatureSemanticExtractor, tmp_path / "m")
    assert back.config.token_temperature == 1e-4
    torch.testing.assert_close(back(x[:5])[0], t_top[:5])
    with pytest.raises(ValueError, match="token_temperature"):
        FeatureSemanticExtractor(**kw, token_temperature=0.0)

"""Metrics against independent references (scipy, numpy, torchmetrics' own SSIM), and each can fail."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from neuroimagen.training.eval.metrics import (
    clip_similarity,
    frechet_distance,
    inception_score,
    pcc,
    retrieval_accuracy,
    ssim,
)
from neuroimagen.training.eval.nway import n_way_top_k_accuracy, n_way_top_k_from_logits


def smooth_images(n: int, size: int = 48, seed: int = 0) -> torch.Tensor:
    """Natural-ish images: blurred noise, so SSIM has structure to measure."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 3, size, size))
    x = gaussian_filter(x, sigma=(0, 0, 2.5, 2.5))
    x = (x - x.min()) / (x.max() - x.min())
    return torch.from_numpy(x.astype(np.float32))


# --------------------------------------------------------------------------- SSIM


def ssim_reference(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=0), re-derived with scipy: Gaussian
    filter (truncate 3.5 -> 11 taps), reflect mode, crop 5 pixels each side, mean over channels."""
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vals = []
    for ch in range(a.shape[0]):
        x, y = a[ch].astype(np.float64), b[ch].astype(np.float64)

        def f(z):
            return gaussian_filter(z, sigma=1.5, truncate=3.5, mode="reflect")

        ux, uy = f(x), f(y)
        vx, vy, vxy = f(x * x) - ux * ux, f(y * y) - uy * uy, f(x * y) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        vals.append(s[5:-5, 5:-5].mean())
    return float(np.mean(vals))


def test_ssim_of_identical_images_is_one():
    x = smooth_images(3)
    np.testing.assert_allclose(ssim(x, x), 1.0, atol=1e-12)


def test_ssim_matches_scipy_reference():
    x = smooth_images(4, seed=1)
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    ours = ssim(x, y)
    ref = [ssim_reference(x[i].numpy(), y[i].numpy()) for i in range(4)]
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_ssim_falls_monotonically_with_noise_and_blur():
    x = smooth_images(2, seed=3)
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=gen)
    by_noise = [ssim(x, (x + s * noise).clamp(0, 1)).mean() for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
    assert all(a > b for a, b in zip(by_noise, by_noise[1:], strict=False)), by_noise
    blurred = [
        ssim(x, torch.from_numpy(gaussian_filter(x.numpy(), sigma=(0, 0, s, s)))).mean()
        for s in (0.5, 1.0, 2.0, 4.0)
    ]
    assert all(a > b for a, b in zip(blurred, blurred[1:], strict=False)), blurred
    unrelated = ssim(x, smooth_images(2, seed=99)).mean()
    assert unrelated < 0.3


def test_ssim_rejects_mismatched_or_tiny_images():
    with pytest.raises(ValueError, match="shape"):
        ssim(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 32, 31))
    with pytest.raises(ValueError, match="window"):
        ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


# --------------------------------------------------------------------------- PCC


def test_pcc_matches_numpy_and_detects_inversion():
    x = smooth_images(3, seed=4)
    y = smooth_images(3, seed=5)
    ref = [np.corrcoef(x[i].numpy().ravel(), y[i].numpy().ravel())[0, 1] for i in range(3)]
    np.testing.assert_allclose(pcc(x, y), ref, atol=1e-9)
    np.testing.assert_allclose(pcc(x, 0.5 * x + 0.2), 1.0, atol=1e-9)  # affine invariant
    np.testing.assert_allclose(pcc(x, 1 - x), -1.0, atol=1e-9)
    assert np.isnan(pcc(x[:1], torch.full_like(x[:1], 0.5)))[0]


# --------------------------------------------------------------------------- n-way top-k


def test_n_way_random_predictions_score_chance():
    gen = torch.Generator().manual_seed(0)
    n_images, n_classes = 400, 100
    true = torch.randint(0, n_classes, (n_images,), generator=gen)
    logits = torch.randn(n_images, n_classes, generator=gen)
    for n_way, top_k in ((50, 1), (10, 1), (50, 5)):
        res = n_way_top_k_from_logits(logits, true, n_way=n_way, top_k=top_k, n_trials=50)
        chance = top_k / n_way
        # per-image accuracies are ~independent across images: binomial-ish standard error
        se = np.sqrt(chance * (1 - chance) / n_images)
        assert abs(res.mean - chance) < 4 * se + 0.01, (n_way, top_k, res.mean)


def test_n_way_perfect_and_adversarial_predictions():
    n_classes = 40
    true = torch.arange(n_classes).repeat(3)
    perfect = nn.functional.one_hot(true, n_classes).float() * 10
    assert n_way_top_k_from_logits(perfect, true, n_way=40).mean == 1.0
    assert n_way_top_k_from_logits(perfect, true, n_way=5, n_trials=20).mean == 1.0
    worst = -perfect  # true class is the least likely one
    assert n_way_top_k_from_logits(worst, true, n_way=5, top_k=4).mean == 0.0
    # a constant prediction must not win on ties
    assert n_way_top_k_from_logits(torch.zeros(3, 10), torch.tensor([0, 1, 2]), n_way=5).mean == 0


def test_n_way_with_all_classes_equals_a_direct_rank_count():
    # with n_way == n_classes there is nothing random: success iff the true class's
    # rank among all classes is < top_k (independent computation via argsort)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 20, generator=gen)
    true = torch.randint(0, 20, (300,), generator=gen)
    order = torch.argsort(logits, dim=1, descending=True)
    rank = (order == true[:, None]).float().argmax(dim=1)
    for k in (1, 3):
        res = n_way_top_k_from_logits(logits, true, n_way=20, top_k=k, n_trials=3)
        assert res.mean == pytest.approx(float((rank < k).float().mean()))


def test_n_way_is_seeded():
    gen = torch.Generator().manual_seed(2)
    logits, true = torch.randn(50, 30, generator=gen), torch.randint(0, 30, (50,), generator=gen)
    a = n_way_top_k_from_logits(logits, true, n_way=10, seed=7)
    b = n_way_top_k_from_logits(logits, true, n_way=10, seed=7)
    c = n_way_top_k_from_logits(logits, true, n_way=10, seed=8)
    np.testing.assert_array_equal(a.per_image, b.per_image)
    assert not np.array_equal(a.per_image, c.per_image)


def test_n_way_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_way"):
        n_way_top_k_from_logits(torch.zeros(2, 10), torch.tensor([0, 1]), n_way=11)
    with pytest.raises(ValueError, match="top_k"):
        n_way_top_k_from_logits(torch.zeros(2, 10), torch.tensor([0, 1]), n_way=5, top_k=5)


class ColourClassifier(nn.Module):
    """A fixed 'classifier' over 30 colour prototypes: logits = -distance to the mean colour."""

    def __init__(self, n_classes: int = 30, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("protos", torch.rand(n_classes, 3, generator=gen))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.mean(dim=(2, 3))
        return -torch.cdist(mean, self.protos) * 50


def test_n_way_on_images_perfect_vs_wrong_reconstructions():
    clf = ColourClassifier()
    # ground truths: flat images in the prototype colours (+ texture)
    protos = clf.protos
    gt = protos[:, :, None, None].expand(30, 3, 32, 32).clone()
    gt = (gt + 0.05 * smooth_images(30, size=32, seed=5) - 0.025).clamp(0, 1)
    perfect = n_way_top_k_accuracy(clf, gt, gt.clone(), n_way=10, n_trials=20)
    assert perfect.mean == 1.0
    np.testing.assert_array_equal(perfect.true_class, np.arange(30))
    # reconstructions of the wrong class: true class never wins
    wrong = n_way_top_k_accuracy(clf, gt, gt.roll(1, dims=0), n_way=10, n_trials=20)
    assert wrong.mean < 0.2


# --------------------------------------------------------------------------- retrieval


def test_retrieval_matches_bruteforce_and_scores_chance_for_noise():
    gen = torch.Generator().manual_seed(3)
    cand = torch.randn(200, 32, generator=gen)
    # perfect predictions (scaled: cosine ignores the norm)
    res = retrieval_accuracy(3 * cand, cand)
    assert res["top1"] == 1.0 and res["top5"] == 1.0 and res["n_candidates"] == 200
    # noisy predictions: compare with an independent numpy ranking
    pred = cand + 1.2 * torch.randn(200, 32, generator=gen)
    a = pred.numpy() / np.linalg.norm(pred.numpy(), axis=1, keepdims=True)
    b = cand.numpy() / np.linalg.norm(cand.numpy(), axis=1, keepdims=True)
    order = np.argsort(-(a @ b.T), axis=1)
    ref1 = np.mean(order[:, 0] == np.arange(200))
    ref5 = np.mean([i in order[i, :5] for i in range(200)])
    res = retrieval_accuracy(pred, cand)
    assert res["top1"] == pytest.approx(ref1) and res["top5"] == pytest.approx(ref5)
    assert 0.05 < res["top1"] < 1.0
    # unrelated predictions: chance (1/200, 5/200)
    noise = torch.randn(2000, 32, generator=gen)
    targets = torch.randint(0, 200, (2000,), generator=gen)
    res = retrieval_accuracy(noise, cand, targets=targets)
    assert res["top1"] < 0.015 and res["top5"] < 0.045


def test_retrieval_with_candidate_subsets():
    gen = torch.Generator().manual_seed(4)
    cand = torch.randn(100, 16, generator=gen)
    assert retrieval_accuracy(cand, cand, n_candidates=10, n_trials=5)["top1"] == 1.0
    noise = torch.randn(100, 16, generator=gen)
    res = retrieval_accuracy(noise, cand, n_candidates=10, n_trials=20, top_k=(1,))
    assert abs(res["top1"] - 0.1) < 0.04 and res["n_candidates"] == 10


# --------------------------------------------------------------------------- CLIP-like similarity


class TinyClipLike(nn.Module):
    """A random CLIP-shaped image tower: conv stem -> pooled -> projection."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 5, stride=2), nn.GELU(), nn.Conv2d(16, 32, 3))
        self.proj = nn.Linear(32, 24, bias=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.stem(images * 2 - 1).mean(dim=(2, 3)))


def test_clip_similarity_with_a_tiny_encoder():
    enc = TinyClipLike()
    x = smooth_images(6, seed=6)
    np.testing.assert_allclose(clip_similarity(enc, x, x), 1.0, atol=1e-9)
    with torch.no_grad():
        ref = nn.functional.cosine_similarity(enc(x), enc(1 - x)).double().numpy()
    sims = clip_similarity(enc, x, 1 - x)
    np.testing.assert_allclose(sims, ref, atol=1e-5)
    assert (sims < 0.999).all()


def test_clip_image_encoder_wrapper_resizes_and_normalises():
    from types import SimpleNamespace

    from neuroimagen.training.eval.metrics import ClipImageEncoder

    seen = {}

    class FakeClipVision(nn.Module):  # transformers' CLIPVisionModelWithProjection interface
        def forward(self, pixel_values):
            seen["x"] = pixel_values
            return SimpleNamespace(image_embeds=pixel_values.mean(dim=(2, 3)))

    enc = ClipImageEncoder(FakeClipVision(), image_size=24)
    x = torch.full((2, 3, 40, 30), 0.5)
    emb = enc(x)
    assert seen["x"].shape == (2, 3, 24, 24) and emb.shape == (2, 3)
    expected = (0.5 - torch.tensor(ClipImageEncoder.MEAN)) / torch.tensor(ClipImageEncoder.STD)
    torch.testing.assert_close(emb[0], expected)


def test_load_clip_without_a_model_says_why(tmp_path):
    from neuroimagen.training.eval.metrics import load_clip_image_encoder

    with pytest.raises((ImportError, FileNotFoundError), match="transformers|not found"):
        load_clip_image_encoder(tmp_path / "no-such-clip")


# --------------------------------------------------------------------------- FID / IS


class TinyFeatures(nn.Module):
    """A random conv feature network standing in for Inception's pool3 (8-d)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.Tanh(), nn.Conv2d(8, 8, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).mean(dim=(2, 3))


def fid_reference(f1: np.ndarray, f2: np.ndarray) -> float:
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_is_zero_for_identical_sets_and_grows_with_shift():
    net = TinyFeatures()
    x = smooth_images(64, size=32, seed=7)
    assert abs(frechet_distance(x, x, feature_extractor=net)) < 1e-6
    fids = [
        frechet_distance(x, (x + shift).clamp(0, 1), feature_extractor=net)
        for shift in (0.05, 0.15, 0.3)
    ]
    assert 0 < fids[0] < fids[1] < fids[2], fids
    # agrees with an independent scipy computation on the same features
    y = smooth_images(64, size=32, seed=8) * 0.7
    with torch.no_grad():
        ref = fid_reference(net(x).double().numpy(), net(y).double().numpy())
    assert frechet_distance(x, y, feature_extractor=net) == pytest.approx(ref, rel=1e-3, abs=1e-6)


def test_fid_without_weights_says_why():
    x = smooth_images(4, size=16)
    with pytest.raises((ValueError, ImportError, FileNotFoundError), match="Inception|feature"):
        frechet_distance(x, x)


class FixedLogits(nn.Module):
    """A 'classifier' whose logits are read off the image: class = the brightest of 10 columns."""

    def __init__(self, sharpness: float) -> None:
        super().__init__()
        self.sharpness = sharpness

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cols = images.mean(dim=(1, 2))  # (n, w)
        return self.sharpness * cols.reshape(images.shape[0], 10, -1).mean(-1)


def column_images(classes: torch.Tensor, w: int = 40) -> torch.Tensor:
    x = torch.zeros(classes.shape[0], 3, 8, w)
    for i, c in enumerate(classes):
        x[i, :, :, c * 4 : c * 4 + 4] = 1.0
    return x


def test_inception_score_extremes_and_reference():
    classes = torch.arange(10).repeat(10)
    # confident, evenly spread classes: IS ~ number of classes
    mean, _ = inception_score(column_images(classes), FixedLogits(200.0), splits=1)
    assert mean == pytest.approx(10.0, rel=1e-3)
    # every image the same class: IS = 1 (no diversity)
    mean, _ = inception_score(
        column_images(torch.zeros(100, dtype=torch.long)), FixedLogits(200.0), splits=1
    )
    assert mean == pytest.approx(1.0, abs=1e-6)
    # moderate sharpness against an independent numpy formula (one split: order-free)
    imgs = column_images(classes) * torch.rand(
        100, 1, 1, 1, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        p = torch.softmax(FixedLogits(5.0)(imgs).double(), dim=1).numpy()
    ref = np.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(0, keepdims=True))), axis=1)))
    mean, std = inception_score(imgs, FixedLogits(5.0), splits=1)
    assert mean == pytest.approx(ref, rel=1e-4) and std == 0.0

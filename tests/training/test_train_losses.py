"""The extractor losses against brute-force references, and the saliency centroid."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from neuroimagen.training.eval.metrics import ssim
from neuroimagen.training.eval.saliency import centroid_hemifield, object_centroid
from neuroimagen.training.train.losses import (
    diff_augment,
    group_spread,
    info_nce,
    ssim_loss,
    triplet_semi_hard,
)


def _reference_semi_hard(f: np.ndarray, y: np.ndarray, margin: float) -> float:
    d = ((f[:, None] - f[None]) ** 2).sum(-1)
    losses = []
    for a, p in itertools.permutations(range(len(y)), 2):
        if y[a] != y[p]:
            continue
        negs = [n for n in range(len(y)) if y[n] != y[a]]
        semi = [d[a, n] for n in negs if d[a, n] > d[a, p]]
        dn = min(semi) if semi else max(d[a, n] for n in negs)
        losses.append(max(0.0, d[a, p] - dn + margin))
    return float(np.mean(losses))


def test_triplet_semi_hard_equals_the_brute_force_rule():
    g = torch.Generator().manual_seed(0)
    f = torch.nn.functional.normalize(torch.randn(12, 5, generator=g), dim=1)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    got = float(triplet_semi_hard(f, y, 0.3))
    assert abs(got - _reference_semi_hard(f.double().numpy(), y.numpy(), 0.3)) < 1e-5
    # well separated groups: no loss
    sep = torch.nn.functional.normalize(torch.eye(4)[y] + 1e-3 * torch.randn(12, 4, generator=g), dim=1)
    assert float(triplet_semi_hard(sep, y, 0.3)) == 0.0


def test_group_spread_is_lower_for_separated_groups():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    collapsed = torch.nn.functional.normalize(torch.ones(6, 3), dim=1)
    spread = torch.eye(3)[y]
    assert float(group_spread(spread, y)) < float(group_spread(collapsed, y))


def test_info_nce_prefers_aligned_features_and_counts_duplicates_as_positives():
    targets = torch.eye(4)[[0, 1, 1, 2]]
    ids = torch.tensor([0, 1, 1, 2])
    scale = torch.tensor(np.log(10.0))
    aligned = info_nce(targets.clone(), targets, ids, scale)
    shuffled = info_nce(targets[[3, 0, 1, 2]], targets, ids, scale)
    assert float(aligned) < float(shuffled)
    # the two rows with the same target do not push each other away: swapping them changes nothing
    torch.testing.assert_close(info_nce(targets[[0, 2, 1, 3]], targets, ids, scale), aligned)


def test_ssim_loss_equals_the_evaluation_ssim():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 24, generator=g)
    y = (x + 0.1 * torch.randn(2, 3, 24, 24, generator=g)).clamp(0, 1)
    ref = 1 - ssim(x, y).mean()
    assert abs(float(ssim_loss(x, y)) - ref) < 1e-5
    xg = x.clone().requires_grad_(True)
    ssim_loss(xg, y).backward()
    assert xg.grad is not None and torch.isfinite(xg.grad).all()


def test_diff_augment_keeps_shapes_and_gradients():
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    out = diff_augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_object_centroid_finds_the_object_and_its_hemifield():
    img = torch.full((2, 3, 40, 40), 0.5)
    img[0, :, 8:16, 4:12] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]  # left, upper
    img[1, :, 20:30, 28:36] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]  # right, lower
    c = object_centroid(img)
    np.testing.assert_allclose(c[0], [8 / 40, 12 / 40], atol=1e-9)
    np.testing.assert_allclose(c[1], [32 / 40, 25 / 40], atol=1e-9)
    assert centroid_hemifield(img).tolist() == [0, 1]
    # an image equal to its background has its centroid in the middle
    np.testing.assert_allclose(object_centroid(torch.full((1, 3, 8, 8), 0.3))[0], [0.5, 0.5])

"""Losses of the extractor stages (torch only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["diff_augment", "group_spread", "info_nce", "ssim_loss", "triplet_semi_hard"]


def _sq_dist(f: torch.Tensor) -> torch.Tensor:
    g = f @ f.T
    d = g.diag()[:, None] + g.diag()[None, :] - 2 * g
    return d.clamp_min(0)


def triplet_semi_hard(features: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    """Batch triplet loss with semi-hard negative mining (FaceNet; TensorFlow Addons' rule).

    For every anchor-positive pair (same label), the negative is the closest one farther
    than the positive (``d_ap < d_an``); if there is none, the farthest negative. Loss:
    mean over pairs of ``relu(d_ap - d_an + margin)`` with squared Euclidean distances.

    Parameters
    ----------
    features : (B, D) float
    labels : (B,) int64
    """
    d = _sq_dist(features.float())
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos = same & ~eye
    if not pos.any():
        return features.sum() * 0.0
    neg = ~same
    a, p = pos.nonzero(as_tuple=True)
    d_ap = d[a, p]
    d_an = d[a]  # (P, B)
    inf = torch.finfo(d.dtype).max
    semi = neg[a] & (d_an > d_ap[:, None])
    closest_semi = torch.where(semi, d_an, torch.full_like(d_an, inf)).min(dim=1).values
    farthest = torch.where(neg[a], d_an, torch.full_like(d_an, -inf)).max(dim=1).values
    chosen = torch.where(semi.any(dim=1), closest_semi, farthest)
    valid = neg[a].any(dim=1)
    loss = F.relu(d_ap - chosen + margin)
    return loss[valid].mean() if valid.any() else features.sum() * 0.0


def group_spread(features: torch.Tensor, labels: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Keeps label groups from collapsing into one cluster: uniformity of the group centroids.

    ``log mean_{i != j} exp(-t * |c_i - c_j|^2)`` over the L2-normalised centroid of each
    label present in the batch (Wang & Isola's uniformity, on centroids); lower is more spread.
    """
    uniq, inv = labels.unique(return_inverse=True)
    if len(uniq) < 2:
        return features.sum() * 0.0
    cent = torch.zeros(len(uniq), features.shape[1], device=features.device, dtype=torch.float32)
    cent.index_add_(0, inv, features.float())
    cent = F.normalize(cent, dim=-1)
    d = _sq_dist(cent)
    off = ~torch.eye(len(uniq), dtype=torch.bool, device=features.device)
    return torch.log(torch.exp(-t * d[off]).mean())


def info_nce(features: torch.Tensor, targets: torch.Tensor, target_ids: torch.Tensor,
             logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) of features vs their targets; items with the same target are all positives.

    Parameters
    ----------
    features : (B, D), targets : (B, D) (normalised here)
    target_ids : (B,) int64, which target each row has (duplicates are positives, not negatives)
    logit_scale : () log of the inverse temperature (learnable)
    """
    f = F.normalize(features.float(), dim=-1)
    t = F.normalize(targets.float(), dim=-1)
    logits = logit_scale.exp().clamp(max=100) * f @ t.T
    pos = (target_ids[:, None] == target_ids[None, :]).float()

    def one_side(lg: torch.Tensor) -> torch.Tensor:
        log_p = lg.log_softmax(dim=1)
        return -((log_p * pos).sum(1) / pos.sum(1)).mean()

    return 0.5 * (one_side(logits) + one_side(logits.T))


def _gauss(win: int, sigma: float, device, dtype) -> torch.Tensor:
    x = torch.arange(win, device=device, dtype=dtype) - (win - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_loss(x: torch.Tensor, y: torch.Tensor, win: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """``1 - SSIM`` (the standard Gaussian-window SSIM, images in [0, 1]), differentiable, mean over the batch."""
    c = x.shape[1]
    g = _gauss(win, sigma, x.device, torch.float32)
    k = (g[:, None] * g[None, :]).expand(c, 1, win, win).contiguous()
    x, y = x.float(), y.float()

    def blur(img: torch.Tensor) -> torch.Tensor:
        return F.conv2d(img, k, groups=c)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return 1 - s.mean()


def diff_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """DiffAugment (Zhao et al. 2020): colour, translation (1/8) and cutout (1/2), differentiable.

    Applied to real and generated images alike before the discriminator.
    """
    b, _, h, w = x.shape
    dev = x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator).to(dev)

    # colour: brightness, saturation, contrast
    x = x + (rand(b, 1, 1, 1) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (rand(b, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * (rand(b, 1, 1, 1) + 0.5) + mean
    # translation by up to 1/8 of the side, zero padded
    s = max(1, h // 8)
    pad = F.pad(x, (s, s, s, s))
    dx = (rand(b) * (2 * s + 1)).long().clamp(max=2 * s)
    dy = (rand(b) * (2 * s + 1)).long().clamp(max=2 * s)
    rows = (torch.arange(h, device=dev)[None, :] + dy[:, None])[:, None, :, None].expand(b, x.shape[1], h, w + 2 * s)
    pad = pad.gather(2, rows)
    cols = (torch.arange(w, device=dev)[None, :] + dx[:, None])[:, None, None, :].expand(b, x.shape[1], h, w)
    x = pad.gather(3, cols)
    # cutout: one square of half the side, zeroed
    ch, cw = h // 2, w // 2
    oy = (rand(b) * (h - ch + 1)).long()
    ox = (rand(b) * (w - cw + 1)).long()
    yy = torch.arange(h, device=dev)[None, :, None]
    xx = torch.arange(w, device=dev)[None, None, :]
    keep = ~(((yy >= oy[:, None, None]) & (yy < (oy + ch)[:, None, None]))
             & ((xx >= ox[:, None, None]) & (xx < (ox + cw)[:, None, None])))
    return x * keep[:, None].to(x.dtype)

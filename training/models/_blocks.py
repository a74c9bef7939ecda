"""Building blocks shared by the EEG models (torch only)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

__all__ = ["PatchEmbed1D", "TransformerStack", "binned_features", "ridge_fit", "sincos_pos_embed"]


def sincos_pos_embed(n_positions: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sine-cosine position embedding (MAE), shape (n_positions, dim), float32."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    omega = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    emb = torch.zeros(n_positions, dim, dtype=torch.float64)
    emb[:, 0::2] = torch.sin(pos * omega)
    emb[:, 1::2] = torch.cos(pos * omega[: dim // 2])
    return emb.float()


class PatchEmbed1D(nn.Module):
    """Non-overlapping patches over time, all channels at once (DreamDiffusion's PatchEmbed1D).

    (B, n_channels, n_times) -> (B, n_times // patch_size, dim).
    """

    def __init__(self, n_channels: int, n_times: int, patch_size: int, dim: int) -> None:
        super().__init__()
        if n_times % patch_size:
            raise ValueError(f"n_times={n_times} is not a multiple of patch_size={patch_size}")
        self.n_patches = n_times // patch_size
        self.proj = nn.Conv1d(n_channels, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        return self.proj(eeg).transpose(1, 2)


class TransformerStack(nn.Module):
    """``depth`` pre-norm transformer blocks (GELU MLP) and a final LayerNorm, batch first."""

    def __init__(self, dim: int, depth: int, n_heads: int, mlp_ratio: float, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim={dim} is not divisible by n_heads={n_heads}")
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, n_heads, int(dim * mlp_ratio), dropout=dropout, activation="gelu",
                batch_first=True, norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def binned_features(eeg: torch.Tensor, picks: torch.Tensor, bin_samples: int, log_variance: bool) -> torch.Tensor:
    """The linear decoder's window features in torch (see ``linear_decoder.window_features``).

    eeg (B, n_channels, n_times) -> (B, len(picks) * (n_times // bin_samples) [+ n_channels]):
    the mean of each ``bin_samples`` bin of the picked channels, then every channel's log-variance.
    """
    n_bins = eeg.shape[-1] // bin_samples
    binned = eeg[:, picks, : n_bins * bin_samples].reshape(
        eeg.shape[0], len(picks), n_bins, bin_samples).mean(-1).flatten(1)
    if not log_variance:
        return binned
    logvar = torch.log(eeg.float().var(dim=-1, unbiased=False) + 1e-12).to(binned.dtype)
    return torch.cat([binned, logvar], dim=1)


def ridge_fit(features: torch.Tensor, targets: torch.Tensor, alpha: float) -> dict[str, torch.Tensor]:
    """Ridge regression in closed form (float64, ``torch.linalg``) on standardised features.

    features (N, F), targets (N, D) -> ``mean``, ``scale`` (F,) of the features, ``weight`` (F, D)
    and ``bias`` (D,) (the targets' mean: the intercept is not penalised), so that
    ``(x - mean) / scale @ weight + bias`` predicts the targets.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if len(features) != len(targets):
        raise ValueError(f"{len(features)} feature rows but {len(targets)} target rows")
    f, y = features.double(), targets.double()
    mean, scale = f.mean(0), f.std(0, unbiased=False).clamp_min(1e-8)
    fs = (f - mean) / scale
    y_mean = y.mean(0)
    _, weight = next(ridge_path(fs, y - y_mean, (alpha,)))
    return {"mean": mean, "scale": scale, "weight": weight, "bias": y_mean}


def ridge_path(fs: torch.Tensor, y: torch.Tensor, alphas: Sequence[float],
               w0: torch.Tensor | None = None) -> Iterator[tuple[float, torch.Tensor]]:
    """Yield ``(alpha, weight (F, D))`` minimising ``||fs w - y||^2 + alpha ||w - w0||^2`` for each alpha.

    ``fs`` (N, F) and ``y`` (N, D) float64, centred (the intercept is fitted apart).
    With ``w0``, the solution is ``w0`` plus the ridge fit of the residual ``y - fs w0``.
    One eigendecomposition serves every alpha: of ``fs fs^T`` (N x N) when N <= F, else of ``fs^T fs``;
    a single alpha is one linear solve of the smaller of the two systems instead (several times cheaper).
    """
    r = y if w0 is None else y - fs @ w0
    n, f = fs.shape
    if len(alphas) == 1:
        (a,) = alphas
        if n <= f:
            w = fs.T @ torch.linalg.solve(fs @ fs.T + a * torch.eye(n, dtype=fs.dtype), r)
        else:
            w = torch.linalg.solve(fs.T @ fs + a * torch.eye(f, dtype=fs.dtype), fs.T @ r)
        yield a, w if w0 is None else w + w0
        return
    if n <= f:
        s, u = torch.linalg.eigh(fs @ fs.T)
        ur, s = u.T @ r, s.clamp_min(0)
        for a in alphas:
            w = fs.T @ (u @ (ur / (s + a)[:, None]))
            yield a, w if w0 is None else w + w0
    else:
        s, v = torch.linalg.eigh(fs.T @ fs)
        vr, s = v.T @ (fs.T @ r), s.clamp_min(0)
        for a in alphas:
            w = v @ (vr / (s + a)[:, None])
            yield a, w if w0 is None else w + w0

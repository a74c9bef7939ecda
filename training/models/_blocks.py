"""Building blocks shared by the EEG models (torch only)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PatchEmbed1D", "TransformerStack", "sincos_pos_embed"]


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

"""NICE (Song et al. 2024): a contrastive EEG encoder trained with InfoNCE against image/text embeddings.

Temporal convolution -> average pooling -> spatial convolution -> projection
(linear + residual GELU MLP + LayerNorm), and a learnable temperature
(``logit_scale``, CLIP's parametrisation: logits = exp(logit_scale) * cosine).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

__all__ = ["NICEEncoder"]


class NICEEncoder(ModelMixin, ConfigMixin):
    """EEG window (B, n_channels, n_times) float32 -> embedding (B, proj_dim), unit L2 norm.

    Parameters
    ----------
    n_channels, n_times : window shape
    n_filters : temporal and spatial filters (40 in NICE)
    temporal_kernel, pool_kernel, pool_stride : (25, 51, 5) in NICE at 250 Hz
    proj_dim : the target embedding width (e.g. 768 for CLIP ViT-L/14, or the twin's pooled width)
    dropout, init_temperature
    """

    @register_to_config
    def __init__(
        self,
        n_channels: int = 128,
        n_times: int = 440,
        n_filters: int = 40,
        temporal_kernel: int = 25,
        pool_kernel: int = 51,
        pool_stride: int = 5,
        proj_dim: int = 768,
        dropout: float = 0.5,
        init_temperature: float = 0.07,
    ) -> None:
        super().__init__()
        self.temporal = nn.Conv2d(1, n_filters, (1, temporal_kernel))
        self.pool = nn.AvgPool2d((1, pool_kernel), (1, pool_stride))
        self.bn1 = nn.BatchNorm2d(n_filters)
        self.spatial = nn.Conv2d(n_filters, n_filters, (n_channels, 1))
        self.bn2 = nn.BatchNorm2d(n_filters)
        self.drop = nn.Dropout(dropout)
        n_t = (n_times - temporal_kernel + 1 - pool_kernel) // pool_stride + 1
        if n_t < 1:
            raise ValueError(f"n_times={n_times} is too short for the temporal kernel and pooling")
        self.linear = nn.Linear(n_filters * n_t, proj_dim)
        self.residual = nn.Sequential(nn.GELU(), nn.Linear(proj_dim, proj_dim), nn.Dropout(dropout))
        self.norm = nn.LayerNorm(proj_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        x = F.elu(self.bn1(self.pool(self.temporal(eeg[:, None]))))
        x = self.drop(F.elu(self.bn2(self.spatial(x))))
        x = self.linear(x.flatten(1))
        return F.normalize(self.norm(x + self.residual(x)), dim=-1)

"""NeuroImagen's pixel-level feature extractor: EEG -> an L2-normalised feature vector.

Trained with a triplet loss (semi-hard mining) plus a term that keeps classes
apart (``training.train.losses``). Its features drive the saliency generator.
Architecture: a spatial convolution over all channels, depthwise temporal
convolutions, average pooling in time, and a projection.

:class:`FMRIPixelEncoder` is the fMRI variant (an MLP over voxels).
:class:`FeaturePixelEncoder` is the closed-form variant: the linear decoder's
features mapped by ridge regression to the principal-component coefficients of
the stimulus images (what a :class:`~neuroimagen.training.models.saliency.SaliencyGenerator`
with ``linear_head`` decodes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ._blocks import binned_features, ridge_fit

__all__ = ["FMRIPixelEncoder", "FeaturePixelEncoder", "PixelEncoder"]


class PixelEncoder(ModelMixin, ConfigMixin):
    """EEG window (B, n_channels, n_times) float32 -> features (B, feature_dim), unit L2 norm.

    A spatial convolution first (all channels -> ``n_spatial_filters`` virtual channels),
    then ``n_temporal_filters`` depthwise temporal filters per virtual channel, ELU,
    average pooling in time and a projection: the EEGNet order, cheap enough for CPUs.

    Parameters
    ----------
    n_channels, n_times : window shape
    n_spatial_filters : first convolution, across all channels
    n_temporal_filters, temporal_kernel : depthwise temporal filters per spatial filter
    pool : average-pooling length in samples (20 = 20 ms at 1 kHz)
    hidden_dim : 0 for a linear projection, else one hidden GELU layer
    feature_dim, dropout
    """

    @register_to_config
    def __init__(
        self,
        n_channels: int = 128,
        n_times: int = 440,
        n_temporal_filters: int = 2,
        temporal_kernel: int = 25,
        n_spatial_filters: int = 32,
        pool: int = 20,
        hidden_dim: int = 256,
        feature_dim: int = 128,
        dropout: float = 0.25,
    ) -> None:
        super().__init__()
        n_virtual = n_spatial_filters * n_temporal_filters
        self.spatial = nn.Sequential(nn.Conv1d(n_channels, n_spatial_filters, 1), nn.BatchNorm1d(n_spatial_filters))
        self.temporal = nn.Sequential(
            nn.Conv1d(n_spatial_filters, n_virtual, temporal_kernel, padding=temporal_kernel // 2,
                      groups=n_spatial_filters),
            nn.BatchNorm1d(n_virtual),
            nn.ELU(),
            nn.AvgPool1d(pool),
            nn.Dropout(dropout),
        )
        n_flat = n_virtual * (n_times // pool)
        if hidden_dim:
            self.proj = nn.Sequential(nn.Linear(n_flat, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                      nn.Linear(hidden_dim, feature_dim))
        else:
            self.proj = nn.Linear(n_flat, feature_dim)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        x = self.temporal(self.spatial(eeg))
        return F.normalize(self.proj(x.flatten(1)), dim=-1)


class FMRIPixelEncoder(ModelMixin, ConfigMixin):
    """fMRI voxels (B, n_voxels) -> features (B, feature_dim), unit L2 norm; an MLP."""

    @register_to_config
    def __init__(self, n_voxels: int = 4096, hidden_dim: int = 512, n_layers: int = 2,
                 feature_dim: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = n_voxels
        for _ in range(n_layers):
            layers += [nn.Linear(d, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU(), nn.Dropout(dropout)]
            d = hidden_dim
        self.trunk = nn.Sequential(*layers, nn.Linear(d, feature_dim))

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.trunk(voxels), dim=-1)


class FeaturePixelEncoder(ModelMixin, ConfigMixin):
    """EEG window (B, n_channels, n_times) -> features (B, feature_dim): a linear map of the decoder's features.

    The features of :func:`~neuroimagen.training.models.linear_decoder.window_features` (every
    channel's ``bin_samples`` bins, then every channel's log-variance), standardised and mapped
    by one matrix. :meth:`fit_closed_form` fits that matrix by ridge regression (``torch.linalg``)
    to per-window targets, e.g. the principal-component coefficients of the stimulus image; the
    output is not normalised (it is a regression, unlike :class:`PixelEncoder`'s unit vectors).
    """

    @register_to_config
    def __init__(self, n_channels: int = 128, n_times: int = 440, bin_samples: int = 20,
                 log_variance: bool = True, feature_dim: int = 32) -> None:
        super().__init__()
        if bin_samples <= 0 or n_times // bin_samples == 0:
            raise ValueError(f"bin_samples={bin_samples} must be in 1..n_times ({n_times})")
        self.register_buffer("picks", torch.arange(n_channels), persistent=False)
        n_features = n_channels * (n_times // bin_samples) + (n_channels if log_variance else 0)
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_scale", torch.ones(n_features))
        self.proj = nn.Linear(n_features, feature_dim)

    def features(self, eeg: torch.Tensor) -> torch.Tensor:
        """Raw features (B, n_features) of windows (B, n_channels, n_times)."""
        c = self.config
        if eeg.ndim != 3 or eeg.shape[1:] != (c.n_channels, c.n_times):
            raise ValueError(f"expected windows (B, {c.n_channels}, {c.n_times}), got {tuple(eeg.shape)}")
        return binned_features(eeg, self.picks, c.bin_samples, c.log_variance)

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        return self.proj((self.features(eeg) - self.feature_mean) / self.feature_scale)

    @torch.no_grad()
    def fit_closed_form(self, eeg: torch.Tensor, targets: torch.Tensor, alpha: float,
                        batch_size: int = 512) -> None:
        """Ridge regression of the standardised features on ``targets`` (N, feature_dim)."""
        if targets.ndim != 2 or targets.shape[1] != self.config.feature_dim:
            raise ValueError(f"targets must be (N, {self.config.feature_dim}), got {tuple(targets.shape)}")
        f = torch.cat([self.features(eeg[i:i + batch_size]) for i in range(0, len(eeg), batch_size)])
        fit = ridge_fit(f, targets, alpha)
        self.feature_mean.copy_(fit["mean"].float())
        self.feature_scale.copy_(fit["scale"].float())
        self.proj.weight.copy_(fit["weight"].T.float())
        self.proj.bias.copy_(fit["bias"].float())

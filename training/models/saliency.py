"""The saliency generator: pixel-level features -> a coarse image (where, how big, what colour).

A conditional GAN (NeuroImagen): :class:`SaliencyGenerator` maps the pixel
encoder's features (B, feature_dim) (plus an optional noise vector) to an
image (B, 3, S, S) in [0, 1]; :class:`SaliencyDiscriminator` is a projection
discriminator conditioned on the same features. At inference the generator is
deterministic: without an explicit ``z`` the noise input is zero. Its output is
what img2img starts from.
"""

from __future__ import annotations

import math

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

__all__ = ["SaliencyDiscriminator", "SaliencyGenerator"]


def _n_doublings(image_size: int) -> int:
    n = int(round(math.log2(image_size / 4)))
    if image_size < 8 or 4 * 2**n != image_size:
        raise ValueError(f"image_size must be 4 * 2**k and >= 8, got {image_size}")
    return n


class SaliencyGenerator(ModelMixin, ConfigMixin):
    """features (B, feature_dim) [+ z (B, noise_dim)] -> image (B, 3, S, S) float32 in [0, 1].

    Parameters
    ----------
    feature_dim : the pixel encoder's feature width
    noise_dim : 0 (deterministic) or the width of the optional noise input
    base_channels : channels at 8x8; halved at each doubling (at least 16)
    image_size : S, 4 * 2**k (64 default)
    linear_head : add a linear map features -> image (3 * S * S) to the convolutional output,
        which then starts at zero; :meth:`set_linear_basis` sets it in closed form (e.g. the
        principal components of the training images, when the features are their coefficients)
    """

    @register_to_config
    def __init__(self, feature_dim: int = 128, noise_dim: int = 0, base_channels: int = 256,
                 image_size: int = 64, linear_head: bool = False) -> None:
        super().__init__()
        n_up = _n_doublings(image_size)
        self.fc = nn.Sequential(nn.Linear(feature_dim + noise_dim, base_channels * 16), nn.GELU())
        blocks: list[nn.Module] = []
        c = base_channels
        for _ in range(n_up):
            c_out = max(16, c // 2)
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
            ]
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.to_rgb = nn.Conv2d(c, 3, 3, padding=1)
        self.linear: nn.Linear | None = None
        if linear_head:
            self.linear = nn.Linear(feature_dim, 3 * image_size * image_size)
            nn.init.zeros_(self.to_rgb.weight)
            nn.init.zeros_(self.to_rgb.bias)

    @torch.no_grad()
    def set_linear_basis(self, basis: torch.Tensor, mean: torch.Tensor) -> None:
        """The linear head: image = mean + features @ basis (+ the convolutional residual), clipped to [0, 1].

        basis : (feature_dim, 3, S, S); mean : (3, S, S)
        """
        s = self.config.image_size
        if self.linear is None:
            raise ValueError("this SaliencyGenerator has no linear head (linear_head=False)")
        if basis.shape != (self.config.feature_dim, 3, s, s) or mean.shape != (3, s, s):
            raise ValueError(f"basis must be ({self.config.feature_dim}, 3, {s}, {s}) and mean (3, {s}, {s}), "
                             f"got {tuple(basis.shape)} and {tuple(mean.shape)}")
        self.linear.weight.copy_(basis.reshape(len(basis), -1).T)
        self.linear.bias.copy_(mean.reshape(-1))

    def forward(self, features: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        nd = self.config.noise_dim
        if nd:
            if z is None:
                z = features.new_zeros(features.shape[0], nd)
            features = torch.cat([features, z], dim=1)
        x = self.fc(features).reshape(features.shape[0], self.config.base_channels, 4, 4)
        out = self.to_rgb(self.blocks(x))
        if self.linear is None:
            return torch.sigmoid(out)
        s = self.config.image_size
        return (self.linear(features[:, : self.config.feature_dim]).reshape(-1, 3, s, s) + out).clamp(0, 1)


class SaliencyDiscriminator(ModelMixin, ConfigMixin):
    """image (B, 3, S, S) in [0, 1], features (B, feature_dim) -> realness logit (B,).

    A projection discriminator: ``linear(h) + <embed(features), h>`` over the
    pooled convolutional features ``h``.
    """

    @register_to_config
    def __init__(self, feature_dim: int = 128, base_channels: int = 32, image_size: int = 64) -> None:
        super().__init__()
        n_down = _n_doublings(image_size)
        layers: list[nn.Module] = []
        c_in, c = 3, base_channels
        for _ in range(n_down):
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in, c = c, min(c * 2, 512)
        self.convs = nn.Sequential(*layers)
        self.out = nn.Linear(c_in, 1)
        self.embed = nn.Linear(feature_dim, c_in, bias=False)

    def forward(self, images: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        h = self.convs(images * 2 - 1).sum(dim=(2, 3))
        return self.out(h)[:, 0] + (self.embed(features) * h).sum(dim=1)

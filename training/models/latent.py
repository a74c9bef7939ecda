"""The low-level latent path: regress brain activity onto the VAE latent, decode with the frozen decoder.

As in fMRI-to-image work (Takagi & Nishimoto; Ozcelik's Brain-Diffuser), a
small regressor maps the preprocessed window straight to the autoencoder's
(scaled) latent of the seen image. Decoded with the frozen VAE/TAESD decoder it
gives a blurry layout image that can replace the GAN saliency as the img2img
init image; :meth:`Img2ImgFrame.__call__` takes either.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

__all__ = ["BrainToLatent"]


class BrainToLatent(ModelMixin, ConfigMixin):
    """EEG window (B, n_channels, n_times) -> scaled VAE latent (B, latent_channels, h, w).

    Parameters
    ----------
    n_channels, n_times : int
        The window the model takes (the bundle checks them against its stream contract).
    latent_channels, latent_size : int
        The autoencoder's latent shape (4 and image_size / scale factor).
    hidden : int
        Width of the spatial-temporal front end.
    n_fmri_voxels : int | None
        fMRI variant: a (B, n_voxels) input, mapped linearly (``n_channels``/``n_times`` unused).

    Notes
    -----
    A spatial filter bank (channels -> hidden), a strided temporal convolution, then a
    linear map to the latent: ridge-like capacity, which is what a few thousand trials
    support.
    """

    @register_to_config
    def __init__(
        self,
        n_channels: int = 128,
        n_times: int = 440,
        latent_channels: int = 4,
        latent_size: int = 8,
        hidden: int = 32,
        n_fmri_voxels: int | None = None,
    ) -> None:
        super().__init__()
        n_out = latent_channels * latent_size * latent_size
        if n_fmri_voxels is not None:
            self.front = torch.nn.Identity()
            n_feat = n_fmri_voxels
        else:
            self.front = torch.nn.Sequential(
                torch.nn.Conv1d(n_channels, hidden, 1),
                torch.nn.Conv1d(hidden, hidden, 25, stride=10, groups=hidden),
                torch.nn.GELU(),
                torch.nn.Flatten(),
            )
            n_feat = hidden * ((n_times - 25) // 10 + 1)
        self.head = torch.nn.Sequential(torch.nn.Dropout(0.1), torch.nn.Linear(n_feat, n_out))

    def forward(self, eeg: torch.Tensor) -> torch.Tensor:
        """(B, n_channels, n_times) float32 (or (B, n_voxels)) -> (B, latent_channels, h, w)."""
        c = self.config
        return self.head(self.front(eeg)).view(-1, c.latent_channels, c.latent_size, c.latent_size)

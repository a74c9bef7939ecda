"""Masked signal pretraining of EEG windows (DreamDiffusion's MAE).

A window (B, n_channels, n_times) is cut into ``n_times / patch_size`` time
patches (each patch holds every channel), 75 % of the patches are masked, the
encoder sees the visible ones, the decoder reconstructs every patch, and the
loss is the mean squared error over the masked patches only.

Sizes: the paper's encoder is dim 1024, depth 24, 16 heads (decoder 512, depth
8, 16 heads); ``configs/train/mae-*.yaml`` hold tiny, demo and paper presets.
The encoder (:meth:`MaskedEEGAutoencoder.encoder_state_dict`) initialises
:class:`~neuroimagen.training.models.semantic.SemanticExtractor` built with the
same ``dim``, ``depth``, ``n_heads``, ``patch_size``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ._blocks import PatchEmbed1D, TransformerStack, sincos_pos_embed

__all__ = ["MAEOutput", "MaskedEEGAutoencoder", "random_patch_mask"]

#: prefixes of the encoder's tensors (what a SemanticExtractor takes over)
ENCODER_PREFIXES = ("patch_embed.", "cls_token", "encoder.")


@dataclass
class MAEOutput:
    """loss: () masked-patch MSE; pred: (B, n_patches, patch_size * n_channels); mask: (B, n_patches), 1 = masked."""

    loss: torch.Tensor
    pred: torch.Tensor
    mask: torch.Tensor


def random_patch_mask(
    batch: int, n_patches: int, ratio: float, generator: torch.Generator | None = None, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random masks keeping ``round(n_patches * (1 - ratio))`` patches.

    Returns
    -------
    keep : (B, n_keep) int64, indices of the visible patches (sorted per row by noise)
    mask : (B, n_patches) float32, 1 where masked
    """
    n_keep = max(1, int(round(n_patches * (1.0 - ratio))))
    noise = torch.rand(batch, n_patches, generator=generator)  # CPU generator: same masks on any device
    order = noise.argsort(dim=1).to(device)
    keep = order[:, :n_keep]
    mask = torch.ones(batch, n_patches, device=device)
    mask.scatter_(1, keep, 0.0)
    return keep, mask


class MaskedEEGAutoencoder(ModelMixin, ConfigMixin):
    """DreamDiffusion's masked autoencoder over EEG time patches.

    Parameters
    ----------
    n_channels, n_times : window shape (128 x 440, or 512 after the stream layer's resample)
    patch_size : samples per time patch (4)
    dim, depth, n_heads : encoder width, blocks, heads
    decoder_dim, decoder_depth, decoder_n_heads : decoder sizes
    mlp_ratio : MLP width / dim
    mask_ratio : fraction of patches masked in training (0.75)
    """

    @register_to_config
    def __init__(
        self,
        n_channels: int = 128,
        n_times: int = 440,
        patch_size: int = 4,
        dim: int = 1024,
        depth: int = 24,
        n_heads: int = 16,
        decoder_dim: int = 512,
        decoder_depth: int = 8,
        decoder_n_heads: int = 16,
        mlp_ratio: float = 4.0,
        mask_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed1D(n_channels, n_times, patch_size, dim)
        n_patches = self.patch_embed.n_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_pos_embed(n_patches + 1, dim)[None], persistent=False)
        self.encoder = TransformerStack(dim, depth, n_heads, mlp_ratio)
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.register_buffer(
            "decoder_pos_embed", sincos_pos_embed(n_patches + 1, decoder_dim)[None], persistent=False
        )
        self.decoder = TransformerStack(decoder_dim, decoder_depth, decoder_n_heads, mlp_ratio)
        self.decoder_pred = nn.Linear(decoder_dim, patch_size * n_channels)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)

    @property
    def n_patches(self) -> int:
        return self.patch_embed.n_patches

    def patchify(self, eeg: torch.Tensor) -> torch.Tensor:
        """(B, n_channels, n_times) -> (B, n_patches, patch_size * n_channels) targets."""
        b, c, t = eeg.shape
        p = self.config.patch_size
        return eeg.reshape(b, c, t // p, p).permute(0, 2, 3, 1).reshape(b, t // p, p * c)

    def encode(self, eeg: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder tokens: (B, 1 + n_visible, dim), the class token first (all patches if ``keep`` is None)."""
        x = self.patch_embed(eeg) + self.pos_embed[:, 1:]
        if keep is not None:
            x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return self.encoder(torch.cat([cls, x], dim=1))

    def forward(
        self, eeg: torch.Tensor, mask_ratio: float | None = None, generator: torch.Generator | None = None
    ) -> MAEOutput:
        """Mask, encode, decode; the loss is the MSE over masked patches.

        Parameters
        ----------
        eeg : (B, n_channels, n_times) float32, normalised windows
        mask_ratio : default: the config's
        generator : seeds the masks (reproducible evaluation and resumable training)
        """
        ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        b = eeg.shape[0]
        keep, mask = random_patch_mask(b, self.n_patches, ratio, generator, device=eeg.device)
        latent = self.encode(eeg, keep)
        # decoder: visible tokens back in place, mask tokens elsewhere
        y = self.decoder_embed(latent)
        full = self.mask_token.expand(b, self.n_patches, -1).clone()
        full = full.scatter(1, keep[..., None].expand(-1, -1, y.shape[-1]), y[:, 1:].to(full.dtype))
        y = torch.cat([y[:, :1], full], dim=1) + self.decoder_pos_embed
        pred = self.decoder_pred(self.decoder(y)[:, 1:])
        target = self.patchify(eeg)
        per_patch = ((pred.float() - target.float()) ** 2).mean(dim=-1)
        loss = (per_patch * mask).sum() / mask.sum()
        return MAEOutput(loss=loss, pred=pred, mask=mask)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's tensors (patch embedding, class token, transformer), keyed as in the model."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(ENCODER_PREFIXES)}

"""CLIP-style voting: of K candidate reconstructions keep the one closest to the predicted semantics.

On real data the image encoder is CLIP's (its image embedding against the
semantic extractor's pooled output, both in CLIP space). On the twin, which has
no CLIP, :class:`ImageEncoder` is a small CNN trained contrastively to the
twin's class targets (``training.train.diffusion.train_image_encoder``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

__all__ = ["ImageEncoder", "vote"]


class ImageEncoder(ModelMixin, ConfigMixin):
    """Image (B, 3, S, S) in [0, 1] -> L2-normalised embedding (B, width) in the conditioning space.

    Parameters
    ----------
    width : int
        The semantic extractor's pooled width (768 for the twin's targets).
    channels : tuple of int
        Conv widths; each stage halves the resolution.
    """

    @register_to_config
    def __init__(self, width: int = 768, channels: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        c_in = 3
        for c in channels:
            layers += [torch.nn.Conv2d(c_in, c, 3, stride=2, padding=1), torch.nn.GroupNorm(4, c), torch.nn.SiLU()]
            c_in = c
        self.convs = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(c_in, width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.convs(images * 2 - 1).mean(dim=(2, 3))
        return F.normalize(self.head(x), dim=-1)


@torch.no_grad()
def vote(encoder: torch.nn.Module, candidates: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick, per sample, the candidate whose image embedding is closest to the predicted semantics.

    Parameters
    ----------
    encoder : image (N, 3, H, W) -> embedding (N, W)
    candidates : torch.Tensor (K, B, 3, H, W) in [0, 1]
        K candidates (seeds, strengths) for each of B samples.
    pooled : torch.Tensor (B, W)
        The semantic extractor's pooled output.

    Returns
    -------
    best : torch.Tensor (B, 3, H, W)
    index : torch.Tensor int64 (B,)
        Which candidate won, per sample.
    """
    k, b = candidates.shape[:2]
    emb = encoder(candidates.flatten(0, 1)).view(k, b, -1)
    sims = (F.normalize(emb, dim=-1) * F.normalize(pooled, dim=-1)[None]).sum(-1)  # (K, B)
    index = sims.argmax(dim=0)
    return candidates[index, torch.arange(b)], index

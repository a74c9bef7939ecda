"""The sample-level semantic extractor: EEG -> the generator's conditioning space.

One window (B, n_channels, n_times) becomes ``tokens`` (B, n_tokens, width)
(77 x 768 for Stable Diffusion 1.x; smaller for tiny generators) and a
``pooled`` vector (B, width). The encoder is DreamDiffusion's: time patches of
every channel, a class token, sine-cosine positions and a transformer; it can
start from a pretrained :class:`~neuroimagen.training.models.mae.MaskedEEGAutoencoder`
of the same sizes (:meth:`SemanticExtractor.load_mae_encoder`). The heads are
DreamDiffusion's conditioning mapper: a 1x1 convolution over the token axis
(n_patches + 1 -> n_tokens) and a linear map dim -> width; the pooled vector
is a linear map of all tokens, each reduced to a few features (positions kept).

Class scores (the top-k shown live) are cosine similarities of ``pooled`` to
each class's pooled embedding: :func:`class_scores`.

:class:`FMRISemanticExtractor` is the fMRI variant: an MLP over voxels with the
same outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ._blocks import PatchEmbed1D, TransformerStack, sincos_pos_embed

__all__ = ["FMRISemanticExtractor", "SemanticExtractor", "class_scores"]


def class_scores(pooled: torch.Tensor, class_pooled: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each pooled vector to each class embedding.

    Parameters
    ----------
    pooled : (B, W) float
    class_pooled : (K, W) float

    Returns
    -------
    (B, K) float32 in [-1, 1]
    """
    if pooled.shape[-1] != class_pooled.shape[-1]:
        raise ValueError(f"pooled width {pooled.shape[-1]} != class embedding width {class_pooled.shape[-1]}")
    return F.normalize(pooled.float(), dim=-1) @ F.normalize(class_pooled.float(), dim=-1).T


class _Heads(nn.Module):
    """Tokens: DreamDiffusion's mapper. Pooled: every token reduced to ``pool_dim``, flattened, mapped.

    The pooled head keeps each token's position (a mean over tokens would discard when
    things happen, which is where the class lives in an evoked response).
    """

    def __init__(self, n_in_tokens: int, dim: int, n_tokens: int, width: int, pool_dim: int = 16) -> None:
        super().__init__()
        self.channel_mapper = nn.Conv1d(n_in_tokens, n_tokens, kernel_size=1)
        self.dim_mapper = nn.Linear(dim, width)
        self.pool_norm = nn.LayerNorm(dim)
        self.pool_reduce = nn.Linear(dim, pool_dim)
        self.pool_proj = nn.Linear(n_in_tokens * pool_dim, width)

    def forward(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.dim_mapper(self.channel_mapper(latent))
        pooled = self.pool_proj(self.pool_reduce(self.pool_norm(latent)).flatten(1))
        return tokens, pooled


class SemanticExtractor(ModelMixin, ConfigMixin):
    """EEG window -> (tokens (B, n_tokens, width), pooled (B, width)).

    Parameters
    ----------
    n_channels, n_times : window shape
    patch_size, dim, depth, n_heads, mlp_ratio : the encoder (as MaskedEEGAutoencoder's)
    dropout : inside the transformer blocks and on the latent
    n_tokens, width : the conditioning shape (77 x 768 for SD 1.x)
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
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        n_tokens: int = 77,
        width: int = 768,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed1D(n_channels, n_times, patch_size, dim)
        n_patches = self.patch_embed.n_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.cls_token, std=0.02)
        self.register_buffer("pos_embed", sincos_pos_embed(n_patches + 1, dim)[None], persistent=False)
        self.encoder = TransformerStack(dim, depth, n_heads, mlp_ratio, dropout)
        self.latent_dropout = nn.Dropout(dropout)
        self.heads = _Heads(n_patches + 1, dim, n_tokens, width)

    def encode(self, eeg: torch.Tensor) -> torch.Tensor:
        """Encoder tokens (B, n_patches + 1, dim), the class token first."""
        x = self.patch_embed(eeg) + self.pos_embed[:, 1:]
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return self.encoder(torch.cat([cls, x], dim=1))

    def forward(self, eeg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """eeg (B, n_channels, n_times) float32 -> tokens (B, n_tokens, width), pooled (B, width)."""
        return self.heads(self.latent_dropout(self.encode(eeg)))

    def load_mae_encoder(self, mae: nn.Module) -> None:
        """Copy a MaskedEEGAutoencoder's encoder (strict: every encoder tensor, same shapes)."""
        from .mae import ENCODER_PREFIXES

        ours = {k: v for k, v in self.state_dict().items() if k.startswith(ENCODER_PREFIXES)}
        theirs = mae.encoder_state_dict()
        missing, unexpected = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        shapes = [k for k in set(ours) & set(theirs) if ours[k].shape != theirs[k].shape]
        if missing or unexpected or shapes:
            raise ValueError(
                "the MAE encoder does not fit this SemanticExtractor: "
                f"missing {missing[:4]}, unexpected {unexpected[:4]}, mis-shaped {sorted(shapes)[:4]} "
                "(patch_size, dim, depth, n_heads, mlp_ratio, n_channels and n_times must match)"
            )
        self.load_state_dict(theirs, strict=False)


class FMRISemanticExtractor(ModelMixin, ConfigMixin):
    """fMRI voxels (B, n_voxels) -> (tokens (B, n_tokens, width), pooled (B, width)); an MLP."""

    @register_to_config
    def __init__(
        self,
        n_voxels: int = 4096,
        hidden_dim: int = 1024,
        n_layers: int = 2,
        dropout: float = 0.1,
        n_tokens: int = 77,
        width: int = 768,
        token_dim: int = 64,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = n_voxels
        for _ in range(n_layers):
            layers += [nn.Linear(d, hidden_dim), nn.LayerNorm(hidden_dim), nn.GELU(), nn.Dropout(dropout)]
            d = hidden_dim
        self.trunk = nn.Sequential(*layers)
        self.to_tokens = nn.Linear(d, n_tokens * token_dim)
        self.heads = _Heads(n_tokens, token_dim, n_tokens, width)

    def forward(self, voxels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(voxels)
        latent = self.to_tokens(h).reshape(h.shape[0], self.config.n_tokens, self.config.token_dim)
        return self.heads(latent)

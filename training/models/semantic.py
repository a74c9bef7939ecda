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

:class:`FeatureSemanticExtractor` is the same interface on the linear decoder's
features (binned evoked time course + log-variance): a linear class code, initialised in closed form
(:meth:`FeatureSemanticExtractor.fit_closed_form`: ridge regression with
``torch.linalg``), an optional residual MLP, and two linear heads from the
code, the token head low rank (``token_rank``) so the model folder stays small.

:class:`FMRISemanticExtractor` is the fMRI variant: an MLP over voxels with the
same outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ._blocks import PatchEmbed1D, TransformerStack, binned_features, ridge_fit, sincos_pos_embed

__all__ = ["FMRISemanticExtractor", "FeatureSemanticExtractor", "SemanticExtractor", "class_scores"]


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


class FeatureSemanticExtractor(ModelMixin, ConfigMixin):
    """EEG window -> (tokens, pooled) through the linear decoder's features and a class code.

    Forward pass (all linear unless ``hidden_dim`` > 0)::

        x (B, C, T) -> mean of each ``bin_samples`` bin of
        ``channels`` (+ every channel's log-variance) -> standardise (fixed) -> code (B, K)
        [+ residual MLP] -> tokens = code @ token_coef @ token_basis + token_bias
                         -> pooled = code @ pooled_basis

    The features are those of :func:`~neuroimagen.training.models.linear_decoder.window_features`
    (the ``data baseline`` decoder; ``channels`` None bins every channel, not only the posterior ones).

    :meth:`fit_closed_form` sets every tensor from training windows and labels: the
    standardisation, the code as ridge regression of the features on one-hot labels
    (so the code is the ridge classifier's scores, summing to 1), the token head as the
    class token embeddings (low rank: their first ``token_rank`` principal components;
    ``code @ tokens`` is then the ridge regression of the features on the tokens), and the
    pooled head as the dual basis of the class pooled embeddings, ``(E E^T)^-1 E``, so
    that ``pooled . E_k = code_k``: the cosine class scores rank the classes as the ridge
    classifier does (a pooled head regressed on E itself would mix similar classes).

    Parameters
    ----------
    n_channels, n_times : window shape
    bin_samples : samples per time bin (20 = 20 ms at 1 kHz)
    channels : channels whose binned time course is used (None: all)
    log_variance : append every channel's log-variance over the window
    n_classes : width of the code (the number of classes)
    hidden_dim : width of the residual MLP (0: none); its last layer starts at zero
    dropout : on the standardised features, in training
    n_tokens, width : the conditioning shape (77 x 768 for SD 1.x)
    token_rank : rank of the token head (<= n_classes)
    token_temperature : None (default): the tokens mix the class tokens by the raw code. A
        temperature: by ``softmax(code / token_temperature)`` instead, a sharpened convex mix
        (near the top class's tokens for a small temperature), on the manifold of class tokens a
        generator was trained on. ``pooled`` and the class scores are unchanged either way.
    """

    @register_to_config
    def __init__(
        self,
        n_channels: int = 128,
        n_times: int = 440,
        bin_samples: int = 20,
        channels: list[int] | None = None,
        log_variance: bool = True,
        n_classes: int = 40,
        hidden_dim: int = 0,
        dropout: float = 0.0,
        n_tokens: int = 77,
        width: int = 768,
        token_rank: int = 16,
        token_temperature: float | None = None,
    ) -> None:
        super().__init__()
        if token_temperature is not None and not token_temperature > 0:
            raise ValueError(f"token_temperature must be > 0 or None, got {token_temperature}")
        if bin_samples <= 0 or n_times // bin_samples == 0:
            raise ValueError(f"bin_samples={bin_samples} must be in 1..n_times ({n_times})")
        if not 0 < token_rank <= n_classes:
            raise ValueError(f"token_rank={token_rank} must be in 1..n_classes ({n_classes})")
        picks = list(range(n_channels)) if channels is None else [int(c) for c in channels]
        if not picks or min(picks) < 0 or max(picks) >= n_channels:
            raise ValueError(f"channels must index 0..{n_channels - 1}, got {channels}")
        self.register_buffer("picks", torch.tensor(picks, dtype=torch.long), persistent=False)
        n_features = len(picks) * (n_times // bin_samples) + (n_channels if log_variance else 0)
        self.n_features = n_features
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_scale", torch.ones(n_features))
        self.feature_dropout = nn.Dropout(dropout)
        self.code = nn.Linear(n_features, n_classes)
        self.mlp: nn.Module | None = None
        if hidden_dim > 0:
            self.mlp = nn.Sequential(nn.Linear(n_features, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(hidden_dim, n_classes))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
        self.token_coef = nn.Linear(n_classes, token_rank, bias=False)
        self.token_basis = nn.Parameter(torch.randn(token_rank, n_tokens * width) / (n_tokens * width) ** 0.5)
        self.token_bias = nn.Parameter(torch.zeros(n_tokens * width))
        self.pooled_basis = nn.Linear(n_classes, width, bias=False)

    def features(self, eeg: torch.Tensor) -> torch.Tensor:
        """Raw (unstandardised) features (B, n_features) float32 of windows (B, n_channels, n_times)."""
        c = self.config
        if eeg.ndim != 3 or eeg.shape[1:] != (c.n_channels, c.n_times):
            raise ValueError(f"expected windows (B, {c.n_channels}, {c.n_times}), got {tuple(eeg.shape)}")
        return binned_features(eeg, self.picks, c.bin_samples, c.log_variance)

    def class_code(self, eeg: torch.Tensor) -> torch.Tensor:
        """The class code (B, n_classes): ridge scores of each class (+ the residual MLP's)."""
        f = self.feature_dropout((self.features(eeg) - self.feature_mean) / self.feature_scale)
        code = self.code(f)
        if self.mlp is not None:
            code = code + self.mlp(f)
        return code

    def forward(self, eeg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """eeg (B, n_channels, n_times) float32 -> tokens (B, n_tokens, width), pooled (B, width)."""
        code = self.class_code(eeg)
        mix = code if self.config.token_temperature is None else torch.softmax(code / self.config.token_temperature, -1)
        tokens = self.token_coef(mix) @ self.token_basis + self.token_bias
        return tokens.reshape(code.shape[0], self.config.n_tokens, self.config.width), self.pooled_basis(code)

    @torch.no_grad()
    def fit_closed_form(
        self,
        eeg: torch.Tensor,
        labels: torch.Tensor,
        class_tokens: torch.Tensor,
        class_pooled: torch.Tensor,
        alpha: float,
        batch_size: int = 512,
    ) -> None:
        """Set every tensor in closed form from training windows (see the class notes).

        Parameters
        ----------
        eeg : (N, n_channels, n_times) float32 training windows
        labels : (N,) int64 class of each window, in 0..n_classes-1
        class_tokens : (n_classes, n_tokens, width) the class token embeddings
        class_pooled : (n_classes, width) the class pooled embeddings
        alpha : ridge penalty on the standardised features
        """
        c = self.config
        k = c.n_classes
        if class_tokens.shape != (k, c.n_tokens, c.width) or class_pooled.shape != (k, c.width):
            raise ValueError(f"class embeddings must be ({k}, {c.n_tokens}, {c.width}) and ({k}, {c.width}), "
                             f"got {tuple(class_tokens.shape)} and {tuple(class_pooled.shape)}")
        # 1. features; 2. code: ridge on one-hot labels (the intercept, the mean code, unpenalised)
        f = torch.cat([self.features(eeg[i:i + batch_size]) for i in range(0, len(eeg), batch_size)])
        fit = ridge_fit(f, torch.nn.functional.one_hot(labels.long(), k), alpha)
        self.feature_mean.copy_(fit["mean"].float())
        self.feature_scale.copy_(fit["scale"].float())
        self.code.weight.copy_(fit["weight"].T.float())
        self.code.bias.copy_(fit["bias"].float())
        # 3. token head: the class tokens' mean + their first token_rank principal components
        t = class_tokens.double().reshape(k, -1)
        t_mean = t.mean(0)
        u, s, vt = torch.linalg.svd(t - t_mean, full_matrices=False)
        r = c.token_rank
        self.token_coef.weight.copy_((u[:, :r] * s[:r]).T.float())
        self.token_basis.copy_(vt[:r].float())
        self.token_bias.copy_(t_mean.float())  # the code sums to 1, so the mean passes through once
        # 4. pooled head: the dual basis of the class pooled embeddings (pooled . E_k = code_k)
        e = class_pooled.double()
        self.pooled_basis.weight.copy_(torch.linalg.lstsq(e @ e.T, e).solution.T.float())

"""Pixel-level and embedding-level reconstruction metrics.

Images everywhere in this module are float32 torch tensors shaped
``(n_images, 3, height, width)`` with values in ``[0, 1]`` (RGB). Functions
return one value per image (a 1-D float64 numpy array) unless they say
otherwise; reports average them.

What is here:

- :func:`ssim` -- Gaussian-window SSIM (Wang et al. 2004), window 11, sigma
  1.5, K1=0.01, K2=0.03, population covariances, per channel then averaged:
  the settings of ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, channel_axis=-1)`` that MinD-Vis and
  DreamDiffusion report, computed on the valid (unpadded) region.
- :func:`pcc` -- Pearson correlation of the flattened pixels of each pair.
- :func:`retrieval_accuracy` -- top-k retrieval by cosine similarity among
  candidates (NICE's 200-way zero-shot protocol).
- :func:`clip_similarity` -- cosine of image embeddings from any encoder
  (CLIP when :func:`load_clip_image_encoder` finds ``transformers`` and a local
  model folder).
- :func:`frechet_distance` and :func:`inception_score` -- torchmetrics' FID
  and IS with a pluggable feature network (real Inception weights need
  ``torch-fidelity`` and a local weights file; a clear error says so).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

#: Anything mapping images (n, 3, h, w) float32 in [0, 1] to (n, d) float embeddings.
ImageEncoder = Callable[[torch.Tensor], torch.Tensor]


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"image batches differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.ndim != 4:
        raise ValueError(
            f"expected images shaped (n, channels, height, width), got {tuple(x.shape)}"
        )


def gaussian_window(win_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian, shape (win_size,), float64."""
    coords = torch.arange(win_size, dtype=torch.float64) - (win_size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """Structural similarity per image pair.

    Parameters
    ----------
    x, y : torch.Tensor
        (n, c, h, w) float images; ``h`` and ``w`` must be >= ``win_size``.
    data_range : float
        Dynamic range of the pixel values (1.0 for [0, 1] images).

    Returns
    -------
    np.ndarray
        (n,) float64, the mean SSIM map over the valid region and the channels;
        1.0 for identical images.
    """
    _check_pair(x, y)
    n, c, h, w = x.shape
    if h < win_size or w < win_size:
        raise ValueError(f"images of {h}x{w} pixels are smaller than the SSIM window ({win_size})")
    g = gaussian_window(win_size, sigma)
    kernel = (g[:, None] * g[None, :]).expand(c, 1, win_size, win_size).contiguous()
    x = x.to(torch.float64)
    y = y.to(torch.float64)

    def blur(img: torch.Tensor) -> torch.Tensor:
        # valid convolution == reflect-pad, filter, crop the padding (skimage, torchmetrics)
        return F.conv2d(img, kernel, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return s.mean(dim=(1, 2, 3)).numpy()


def pcc(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Pearson correlation coefficient of the flattened pixels of each pair.

    Returns
    -------
    np.ndarray
        (n,) float64 in [-1, 1]; NaN where an image is constant (zero variance).
    """
    _check_pair(x, y)
    a = x.reshape(x.shape[0], -1).to(torch.float64)
    b = y.reshape(y.shape[0], -1).to(torch.float64)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denom = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(dim=1) / denom
    r[denom == 0] = float("nan")
    return r.numpy()


# --------------------------------------------------------------------------- embeddings


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, d) x (m, d) -> (n, m) cosine similarities, float64."""
    a = F.normalize(a.to(torch.float64), dim=-1)
    b = F.normalize(b.to(torch.float64), dim=-1)
    return a @ b.T


def retrieval_accuracy(
    pred_emb: torch.Tensor,
    cand_emb: torch.Tensor,
    targets: Sequence[int] | torch.Tensor | None = None,
    top_k: Sequence[int] = (1, 5),
    n_candidates: int | None = None,
    n_trials: int = 1,
    seed: int = 0,
) -> dict[str, float]:
    """Top-k retrieval of the right candidate by cosine similarity.

    NICE's zero-shot protocol: each predicted embedding (from EEG, or from a
    reconstruction) is compared with the embeddings of all candidates (e.g. the
    200 test images); it succeeds at k when its own candidate is among the k
    most similar.

    Parameters
    ----------
    pred_emb : torch.Tensor
        (n, d) predicted embeddings.
    cand_emb : torch.Tensor
        (m, d) candidate embeddings.
    targets : sequence of int, optional
        (n,) index into the candidates of each prediction's true candidate;
        default ``arange(n)`` (candidate i belongs to prediction i).
    n_candidates : int, optional
        Draw this many candidates per trial (the true one + random others)
        instead of using all ``m``; averaged over ``n_trials`` (seeded).

    Returns
    -------
    dict
        ``{"top1": ..., "top5": ..., "n_candidates": m_or_n_candidates}``; k larger
        than the candidate count is left out.
    """
    n, m = pred_emb.shape[0], cand_emb.shape[0]
    tgt = torch.arange(n) if targets is None else torch.as_tensor(targets, dtype=torch.long)
    if tgt.shape != (n,):
        raise ValueError(f"targets must have shape ({n},), got {tuple(tgt.shape)}")
    if n and (tgt.min() < 0 or tgt.max() >= m):
        raise ValueError(
            f"targets must index the {m} candidates, got range [{tgt.min()}, {tgt.max()}]"
        )
    sim = cosine_similarity_matrix(pred_emb, cand_emb)  # (n, m)
    size = m if n_candidates is None else int(n_candidates)
    if not 1 <= size <= m:
        raise ValueError(f"n_candidates={n_candidates} must be in [1, {m}]")
    ks = [k for k in top_k if k <= size]
    hits = {k: 0.0 for k in ks}
    gen = torch.Generator().manual_seed(seed)
    trials = 1 if n_candidates is None else n_trials
    for i in range(n):
        t = int(tgt[i])
        for _ in range(trials):
            if n_candidates is None:
                scores = sim[i]
                true_score = scores[t]
            else:
                others = torch.tensor([j for j in range(m) if j != t])
                pick = others[torch.randperm(m - 1, generator=gen)[: size - 1]]
                scores = torch.cat([sim[i, t : t + 1], sim[i, pick]])
                true_score = scores[0]
            # rank = number of candidates strictly more similar (ties count in its favour)
            rank = int((scores > true_score).sum())
            for k in ks:
                hits[k] += float(rank < k)
    denom = max(n * trials, 1)
    out: dict[str, float] = {f"top{k}": hits[k] / denom for k in ks}
    out["n_candidates"] = size
    return out


def clip_similarity(encoder: ImageEncoder, gt: torch.Tensor, pred: torch.Tensor) -> np.ndarray:
    """Cosine similarity of the image embeddings of each (ground truth, reconstruction) pair.

    Returns
    -------
    np.ndarray
        (n,) float64 in [-1, 1].
    """
    _check_pair(gt, pred)
    with torch.no_grad():
        a, b = encoder(gt), encoder(pred)
    return F.cosine_similarity(a.to(torch.float64), b.to(torch.float64), dim=-1).numpy()


class ClipImageEncoder(torch.nn.Module):
    """CLIP image tower (``transformers``) as an :data:`ImageEncoder`.

    Resizes to the model's input size and applies CLIP's mean/std
    normalisation itself, so callers pass plain [0, 1] RGB images.
    """

    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, model: torch.nn.Module, image_size: int) -> None:
        super().__init__()
        self.model = model.eval()
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(
            images, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False
        )
        x = (x.clamp(0, 1) - self.mean) / self.std
        return self.model(pixel_values=x).image_embeds


def _require_torchmetrics() -> None:
    """FID and IS use torchmetrics, which a plain install does not include: say how to get it."""
    import importlib.util

    if importlib.util.find_spec("torchmetrics") is None:
        raise ImportError(
            "FID/IS need the 'torchmetrics' package: pip install 'neuroimagen[train]' "
            "(or pip install torchmetrics)"
        )


def load_clip_image_encoder(path: str | Path) -> ClipImageEncoder:
    """Load a CLIP vision model (with projection) from a local folder.

    Nothing is downloaded: ``path`` must hold a ``transformers`` CLIP model
    (config.json + weights), e.g. a saved ``openai/clip-vit-large-patch14``.

    Raises
    ------
    ImportError
        ``transformers`` is not installed (``pip install transformers``).
    FileNotFoundError
        ``path`` is not a folder.
    """
    path = Path(path)
    try:
        from transformers import CLIPVisionModelWithProjection
    except ImportError as exc:
        raise ImportError(
            "CLIP similarity needs the 'transformers' package (pip install transformers) "
            f"to load the CLIP model at {path}"
        ) from exc
    if not path.is_dir():
        raise FileNotFoundError(
            f"CLIP model folder not found: {path} (weights are never downloaded)"
        )
    model = CLIPVisionModelWithProjection.from_pretrained(path, local_files_only=True)
    return ClipImageEncoder(model, int(model.config.image_size))


# --------------------------------------------------------------------------- FID / IS


class _Uint8Inception(torch.nn.Module):
    """torch-fidelity's Inception-v3 (uint8 input) behind a float [0, 1] interface."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images.clamp(0, 1) * 255).round().to(torch.uint8))


def load_inception_v3(weights: str | Path, feature: str = "2048") -> torch.nn.Module:
    """Inception-v3 of the FID/IS literature from a local weights file.

    Parameters
    ----------
    weights : path
        torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``; never downloaded.
    feature : str
        ``"2048"`` (pool3 features, for FID) or ``"logits_unbiased"`` (for IS).

    Returns
    -------
    torch.nn.Module
        Maps (n, 3, h, w) float32 in [0, 1] to (n, 2048) features or (n, 1008) logits.

    Raises
    ------
    ImportError
        torch-fidelity is not installed.
    FileNotFoundError
        the weights file is missing.
    """
    _require_torchmetrics()
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if not _TORCH_FIDELITY_AVAILABLE:
        raise ImportError(
            "FID/IS with the real Inception-v3 needs 'torch-fidelity' (pip install torch-fidelity) "
            "and its weights file; or pass feature_extractor=<torch.nn.Module>"
        )
    if not Path(weights).is_file():
        raise FileNotFoundError(
            f"Inception-v3 weights file not found: {weights} (weights are never downloaded)"
        )
    from torchmetrics.image.fid import NoTrainInceptionV3

    net = NoTrainInceptionV3(
        name="inception-v3-compat",
        features_list=[feature],
        feature_extractor_weights_path=str(weights),
    )
    return _Uint8Inception(net).eval()


class _Float64(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).to(torch.float64)


def _feature_module(
    feature_extractor: torch.nn.Module | None, inception_weights: str | Path | None, feature: str
) -> torch.nn.Module:
    if feature_extractor is not None:
        return feature_extractor
    if inception_weights is None:
        raise ValueError(
            "FID/IS need a feature_extractor module or inception_weights=PATH "
            "(the Inception-v3 weights are never downloaded)"
        )
    return load_inception_v3(inception_weights, feature)


def frechet_distance(
    real: torch.Tensor,
    fake: torch.Tensor,
    feature_extractor: torch.nn.Module | None = None,
    inception_weights: str | Path | None = None,
    batch_size: int = 64,
) -> float:
    """Fréchet distance between the feature distributions of two image sets (FID).

    Parameters
    ----------
    real, fake : torch.Tensor
        (n, 3, h, w) float32 in [0, 1]; at least 2 images each.
    feature_extractor : torch.nn.Module, optional
        Maps float [0, 1] images to (n, d) features. None: Inception-v3 pool3
        (2048-d) from torch-fidelity with ``inception_weights``.

    Returns
    -------
    float
        FID (>= 0; ~0 for identical sets).
    """
    _require_torchmetrics()
    from torchmetrics.image.fid import FrechetInceptionDistance

    if real.shape[0] < 2 or fake.shape[0] < 2:
        raise ValueError("FID needs at least 2 real and 2 fake images")
    feature = _feature_module(feature_extractor, inception_weights, "2048")
    # normalize=True + a custom module: torchmetrics passes our float images through unchanged
    metric = FrechetInceptionDistance(
        feature=feature, normalize=True, input_img_size=tuple(real.shape[1:])
    )
    with torch.no_grad():
        for i in range(0, real.shape[0], batch_size):
            metric.update(real[i : i + batch_size], real=True)
        for i in range(0, fake.shape[0], batch_size):
            metric.update(fake[i : i + batch_size], real=False)
        return float(metric.compute().clamp_min(0.0))


def inception_score(
    images: torch.Tensor,
    feature_extractor: torch.nn.Module | None = None,
    inception_weights: str | Path | None = None,
    splits: int = 10,
    seed: int = 0,
) -> tuple[float, float]:
    """Inception score (mean, std over ``splits``) of an image set.

    Parameters
    ----------
    images : torch.Tensor
        (n, 3, h, w) float32 in [0, 1].
    feature_extractor : torch.nn.Module, optional
        Maps float [0, 1] images to (n, n_classes) logits. None: Inception-v3
        logits from torch-fidelity with ``inception_weights``.
    splits : int
        Number of splits (clipped to the number of images).

    Returns
    -------
    (float, float)
        IS mean and std; 1.0 when every image gets the same class distribution,
        up to ``n_classes`` for confident, evenly spread classes.
    """
    _require_torchmetrics()
    from torchmetrics.image.inception import InceptionScore

    feature = _feature_module(feature_extractor, inception_weights, "logits_unbiased")
    splits = max(1, min(splits, images.shape[0]))
    # normalize=False: torchmetrics hands our float images to the module untouched;
    # float64 logits so that tiny class probabilities do not underflow to 0 (0 * log 0 = NaN)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        warnings.filterwarnings(
            "ignore", message=".*degrees of freedom.*"
        )  # splits=1: std undefined
        metric = InceptionScore(feature=_Float64(feature), splits=splits, normalize=False)
        with torch.no_grad(), torch.random.fork_rng():
            torch.manual_seed(seed)  # IS shuffles before splitting
            metric.update(images)
            mean, std = metric.compute()
    std_value = float(std) if splits > 1 else 0.0
    return float(mean), std_value

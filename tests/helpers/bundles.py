"""Tiny random model bundles for the real-time engine (the get_dummy_components pattern).

Every member is a real model class of the bundle's frame (pixel encoder,
saliency generator, semantic extractor, conditioning projection, UNet, TAESD,
LCM scheduler) at toy size with fixed seeds, written with
``training.models.bundle.write_bundle`` and loaded back through it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import LCMScheduler

from helpers.diffusion import tiny_taesd, tiny_unet
from neuroimagen.stream.config import NormalizationConfig, PreprocessingConfig, WindowingConfig
from neuroimagen.stream.montage import montage_ch_names
from neuroimagen.stream.preprocessing import NormStats
from neuroimagen.training.models.bundle import (
    FrameSettings,
    Provenance,
    StreamContract,
    TwinProvenance,
    write_bundle,
)
from neuroimagen.training.models.img2img import ConditioningProjection
from neuroimagen.training.models.pixel import PixelEncoder
from neuroimagen.training.models.saliency import SaliencyGenerator
from neuroimagen.training.models.semantic import SemanticExtractor

MONTAGE = "brainproducts-RNP-BA-128"
N_TOKENS, WIDTH, FEATURES, CROSS = 5, 24, 16, 16


def tiny_members(n_channels: int = 128, n_times: int = 440, image_size: int = 32, seed: int = 0) -> dict:
    """{name: (role, model)} of a tiny random frame."""
    torch.manual_seed(seed)
    return {
        "pixel_encoder": ("pixel_encoder", PixelEncoder(
            n_channels=n_channels, n_times=n_times, n_temporal_filters=4, temporal_kernel=9,
            n_spatial_filters=8, pool=20, hidden_dim=0, feature_dim=FEATURES, dropout=0.0)),
        "saliency": ("saliency", SaliencyGenerator(feature_dim=FEATURES, base_channels=32, image_size=image_size)),
        "semantic": ("semantic", SemanticExtractor(
            n_channels=n_channels, n_times=n_times, patch_size=20, dim=32, depth=1, n_heads=2,
            n_tokens=N_TOKENS, width=WIDTH)),
        "projection": ("projection", ConditioningProjection(WIDTH, CROSS, n_tokens=N_TOKENS)),
        "unet": ("unet", tiny_unet(cross_attention_dim=CROSS, time_cond_proj_dim=8, seed=seed)),
        "autoencoder": ("autoencoder", tiny_taesd(seed=seed)),
    }


def write_tiny_bundle(
    out: str | Path,
    *,
    ch_names: list[str] | None = None,
    sfreq_hz: float = 1000.0,
    preprocessing: PreprocessingConfig | None = None,
    windowing: WindowingConfig | None = None,
    norm_stats: NormStats | None = None,
    class_names: list[str] | None = None,
    twin: TwinProvenance | None = None,
    seed: int = 0,
    members: dict | None = None,
    class_embeddings: dict | None = None,
) -> Path:
    """Write a tiny random bundle; returns its folder.

    Defaults: the 128-channel montage at 1 kHz, window normalisation, sliding
    windows of 440 samples, 6 classes; :func:`tiny_members` and random class
    embeddings unless ``members`` / ``class_embeddings`` are given.
    """
    ch_names = list(ch_names or montage_ch_names(MONTAGE))
    class_names = list(class_names or [f"class{i}" for i in range(6)])
    windowing = windowing or WindowingConfig(mode="sliding", n_times=440, hop_s=0.1)
    preprocessing = preprocessing or PreprocessingConfig(normalization=NormalizationConfig(mode="window"))
    gen = torch.Generator().manual_seed(seed)
    k = len(class_names)
    write_bundle(
        out,
        name="tiny-random",
        description="tiny random models for tests (no training)",
        stream=StreamContract(ch_names=tuple(ch_names), sfreq_hz=sfreq_hz),
        preprocessing=preprocessing,
        windowing=windowing,
        norm_stats=norm_stats,
        members=members or tiny_members(len(ch_names), preprocessing.resample_n_times or windowing.n_times,
                                        seed=seed),
        data={"class_embeddings": class_embeddings or {"tokens": torch.randn(k, N_TOKENS, WIDTH, generator=gen),
                                                       "pooled": torch.randn(k, WIDTH, generator=gen)}},
        class_names=class_names,
        scheduler=LCMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        generator=FrameSettings(unet="unet", autoencoder="autoencoder", projection="projection",
                                strength=0.7, num_inference_steps=2),
        provenance=Provenance(data="random (tests)", seed=seed, twin=twin),
    )
    return Path(out)


def feature_members(twin_dir: str | Path, n_classes: int, image_size: int = 32, alpha: float = 1e4,
                    seed: int = 0) -> tuple[dict, dict]:
    """Feature* extractors fitted in closed form on a twin's training split, as the demo presets fit them.

    Returns ``(members, class_embeddings)``: the embedded default's extractor classes
    (FeaturePixelEncoder with a linear-head SaliencyGenerator on the training images'
    principal components, FeatureSemanticExtractor) at toy size, the rest of
    :func:`tiny_members`, and random class embeddings (tokens, pooled).
    """
    from neuroimagen.training.models.pixel import FeaturePixelEncoder
    from neuroimagen.training.models.semantic import FeatureSemanticExtractor
    from neuroimagen.training.train.data import load_images, load_trials

    train = load_trials(twin_dir, ("train",))
    n_channels, n_times = train.x.shape[1:]
    gen = torch.Generator().manual_seed(seed)
    emb = {"tokens": torch.randn(n_classes, N_TOKENS, WIDTH, generator=gen),
           "pooled": torch.randn(n_classes, WIDTH, generator=gen)}
    semantic = FeatureSemanticExtractor(n_channels=n_channels, n_times=n_times, n_classes=n_classes,
                                        n_tokens=N_TOKENS, width=WIDTH, token_rank=n_classes)
    semantic.fit_closed_form(train.x, train.label, emb["tokens"], emb["pooled"], alpha=alpha)
    # the saliency stage's features path: PCA coefficients of the training images, decoded by the linear head
    images = load_images(twin_dir, train.images, image_size)
    flat = images.double().reshape(len(images), -1)
    mean = flat.mean(0)
    vt = torch.linalg.svd(flat - mean, full_matrices=False).Vh[:FEATURES]
    pixel = FeaturePixelEncoder(n_channels=n_channels, n_times=n_times, feature_dim=FEATURES)
    pixel.fit_closed_form(train.x, ((flat - mean) @ vt.T).float()[train.image_index], alpha=alpha)
    saliency = SaliencyGenerator(feature_dim=FEATURES, base_channels=32, image_size=image_size, linear_head=True)
    saliency.set_linear_basis(vt.float().reshape(FEATURES, 3, image_size, image_size),
                              mean.float().reshape(3, image_size, image_size))
    members = tiny_members(n_channels, n_times, image_size, seed)
    members.update(pixel_encoder=("pixel_encoder", pixel.eval()), saliency=("saliency", saliency.eval()),
                   semantic=("semantic", semantic.eval()))
    return members, emb


def write_twin_bundle(out: str | Path, twin_dir: str | Path, seed: int = 0, features: bool = False) -> Path:
    """A tiny bundle with a twin's contract, preprocessing, marker windowing and classes.

    Random conv extractors, or with ``features`` the Feature* extractors fitted on the
    twin's training split (:func:`feature_members`): the embedded default's classes.
    """
    root = Path(twin_dir)
    meta = json.loads((root / "twin.json").read_text())
    stats = meta["norm_stats"]
    members, emb = feature_members(root, len(meta["class_names"]), seed=seed) if features else (None, None)
    return write_tiny_bundle(
        out,
        ch_names=list(meta["ch_names"]),
        sfreq_hz=float(meta["sfreq"]),
        preprocessing=PreprocessingConfig.model_validate(meta["preprocessing"]),
        windowing=WindowingConfig(mode="marker", n_times=int(meta["n_times"]),
                                  marker_offset_samples=int(meta["marker_offset_samples"]), hop_s=0.1),
        norm_stats=NormStats(np.asarray(stats["mean"]), np.asarray(stats["std"])),
        class_names=list(meta["class_names"]),
        twin=TwinProvenance(preset=meta["preset"], seed=int(meta["config"]["seed"]),
                            version=str(meta.get("version", "1")), config=meta["config"]),
        seed=seed,
        members=members,
        class_embeddings=emb,
    )

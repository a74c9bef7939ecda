"""Random-weight bundles at real sizes, so frame speed is measurable without any weights.

``tiny``: the demo's sizes (the generator preset of ``training.train.generator``: a
TAESD-shaped autoencoder with 32 channels, a (32, 64) UNet with cross-attention width
64 and an LCM guidance embedding, 64 px; small extractors, 77 x 768 tokens).
``sd15`` / ``sd21``: Stable Diffusion 1.5 / 2.1 (SD-Turbo's UNet) configs at 512 px
with SD's AutoencoderKL and the extractors at their DreamDiffusion/NeuroImagen sizes.
Random weights: the timings are real, the images are noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, LCMScheduler, UNet2DConditionModel

from neuroimagen.stream.config import NormalizationConfig, PreprocessingConfig, WindowingConfig
from neuroimagen.stream.montage import montage_ch_names
from neuroimagen.training.models.bundle import (
    FrameSettings,
    Provenance,
    StreamContract,
    write_bundle,
)
from neuroimagen.training.models.img2img import ConditioningProjection
from neuroimagen.training.models.pixel import PixelEncoder
from neuroimagen.training.models.saliency import SaliencyGenerator
from neuroimagen.training.models.semantic import SemanticExtractor

__all__ = ["MODEL_SIZES", "write_random_bundle"]

ModelSize = Literal["tiny", "sd15", "sd21"]
MODEL_SIZES = ("tiny", "sd15", "sd21")
N_TOKENS, WIDTH = 77, 768

_SD_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
_SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=512,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)


def _generator(size: ModelSize) -> tuple[UNet2DConditionModel, torch.nn.Module, int]:
    if size == "tiny":
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=64, attention_head_dim=8, norm_num_groups=8, time_cond_proj_dim=32,
        )
        vae = AutoencoderTiny(encoder_block_out_channels=(32,) * 3, decoder_block_out_channels=(32,) * 3,
                              num_encoder_blocks=(1, 1, 1), num_decoder_blocks=(1, 1, 1), latent_channels=4)
        return unet, vae, 64
    if size == "sd15":
        unet = UNet2DConditionModel(**_SD_UNET, cross_attention_dim=768, attention_head_dim=8)
    elif size == "sd21":
        unet = UNet2DConditionModel(**_SD_UNET, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                    use_linear_projection=True)
    else:
        raise ValueError(f"model size must be one of {MODEL_SIZES}, got {size!r}")
    return unet, AutoencoderKL(**_SD_VAE, scaling_factor=0.18215), 512


def write_random_bundle(out: str | Path, size: ModelSize = "tiny", *, seed: int = 0,
                        n_classes: int = 40) -> Path:
    """Write a bundle of random-weight models at ``size``; returns its folder.

    The stream contract is the 128-channel montage at 1 kHz with 440-sample windows.
    """
    torch.manual_seed(seed)
    ch_names = montage_ch_names("brainproducts-RNP-BA-128")
    n_ch, n_times = len(ch_names), 440
    small = size == "tiny"
    semantic = (SemanticExtractor(n_channels=n_ch, n_times=n_times, patch_size=20, dim=64, depth=2, n_heads=4,
                                  n_tokens=N_TOKENS, width=WIDTH) if small
                else SemanticExtractor(n_channels=n_ch, n_times=n_times, n_tokens=N_TOKENS, width=WIDTH))
    unet, vae, image_size = _generator(size)
    cross = unet.config.cross_attention_dim
    members = {
        "pixel_encoder": ("pixel_encoder", PixelEncoder(n_channels=n_ch, n_times=n_times)),
        "saliency": ("saliency", SaliencyGenerator(base_channels=64 if small else 256, image_size=64)),
        "semantic": ("semantic", semantic),
        "projection": ("projection", ConditioningProjection(WIDTH, cross, n_tokens=N_TOKENS)),
        "unet": ("unet", unet.eval()),
        "autoencoder": ("autoencoder", vae.eval()),
    }
    gen = torch.Generator().manual_seed(seed)
    write_bundle(
        out, name=f"random-{size}", description=f"random weights at {size} sizes (benchmarks only)",
        stream=StreamContract(ch_names=tuple(ch_names), sfreq_hz=1000.0),
        preprocessing=PreprocessingConfig(normalization=NormalizationConfig(mode="window")),
        windowing=WindowingConfig(mode="sliding", n_times=n_times, hop_s=0.1),
        members=members,
        data={"class_embeddings": {"tokens": torch.randn(n_classes, N_TOKENS, WIDTH, generator=gen),
                                   "pooled": torch.randn(n_classes, WIDTH, generator=gen)}},
        class_names=[f"class{i}" for i in range(n_classes)],
        scheduler=LCMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
        generator=FrameSettings(unet="unet", autoencoder="autoencoder", projection="projection",
                                strength=0.6, num_inference_steps=2 if small else 4, image_size=image_size),
        provenance=Provenance(data="none (random weights)", seed=seed),
    )
    return Path(out)

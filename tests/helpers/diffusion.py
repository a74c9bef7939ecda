"""Tiny random diffusion components (the diffusers get_dummy_components pattern)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel


def tiny_unet(
    *, cross_attention_dim: int = 16, sd2: bool = False, time_cond_proj_dim: int | None = None,
    seed: int = 0, cross_attention_first: bool = False, pooled: bool = False,
) -> UNet2DConditionModel:
    """SD1-shaped (attention_head_dim int) or SD2-shaped (per-block heads, linear projection).

    ``pooled``: the conditioning is also attention-pooled into the time embedding (diffusers'
    ``addition_embed_type="text"``, the generator config's ``unet_pooled_conditioning``).
    """
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(16, 32),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        # cross_attention_first: cross-attention at full resolution (the fine-tuning test)
        down_block_types=(
            ("CrossAttnDownBlock2D", "DownBlock2D") if cross_attention_first
            else ("DownBlock2D", "CrossAttnDownBlock2D")
        ),
        up_block_types=(
            ("UpBlock2D", "CrossAttnUpBlock2D") if cross_attention_first
            else ("CrossAttnUpBlock2D", "UpBlock2D")
        ),
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=8,
        attention_head_dim=(2, 4) if sd2 else 4,
        use_linear_projection=sd2,
        time_cond_proj_dim=time_cond_proj_dim,
        **({"addition_embed_type": "text", "addition_embed_type_num_heads": 4} if pooled else {}),
    ).eval()


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    ).eval()


def tiny_taesd(seed: int = 0) -> AutoencoderTiny:
    torch.manual_seed(seed)
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    ).eval()

"""The EEG-conditioned img2img frame equals diffusers' own img2img pipelines.

Same tiny random components, scheduler config, seed and steps; the reference is
diffusers (StableDiffusionImg2ImgPipeline with text_encoder=None and the
projected conditioning as prompt_embeds; LatentConsistencyModelImg2ImgPipeline
for the distilled student), never our own earlier output.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EulerDiscreteScheduler,
    LatentConsistencyModelImg2ImgPipeline,
    LCMScheduler,
    StableDiffusionImg2ImgPipeline,
)
from helpers.diffusion import tiny_taesd, tiny_unet, tiny_vae

from neuroimagen.training.models.format import load_model, save_model
from neuroimagen.training.models.img2img import ConditioningProjection, Img2ImgFrame

pytest.importorskip("transformers")  # the SD pipelines import it even without a text encoder

IN_WIDTH, CROSS, N_TOKENS, SIZE = 24, 16, 7, 32


def _inputs(batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    saliency = torch.rand(batch, 3, SIZE, SIZE, generator=g)
    tokens = torch.randn(batch, N_TOKENS, IN_WIDTH, generator=g)
    return saliency, tokens


def _projection(learned_null: bool = False) -> ConditioningProjection:
    torch.manual_seed(3)
    proj = ConditioningProjection(IN_WIDTH, CROSS, N_TOKENS, learned_null=learned_null).eval()
    if learned_null:
        with torch.no_grad():
            proj.null_tokens.normal_()
    return proj


def _sd_pipeline(unet, vae, scheduler):
    return StableDiffusionImg2ImgPipeline(
        vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


SD1_SCHED = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                 steps_offset=1)


@pytest.mark.parametrize(
    ("shape", "sched_cls", "prediction", "encode_mode"),
    [
        ("sd1", DDIMScheduler, "epsilon", "sample"),
        ("sd1", EulerDiscreteScheduler, "epsilon", "sample"),
        ("sd2", DDIMScheduler, "v_prediction", "sample"),
        ("sd2", EulerDiscreteScheduler, "v_prediction", "sample"),
        ("sd1", DDPMScheduler, "epsilon", "sample"),  # ancestral: the eval's teacher_ddpm
        ("sd1-pooled", DDIMScheduler, "epsilon", "sample"),  # conditioning in the time embedding too
    ],
)
def test_frame_equals_diffusers_img2img(shape, sched_cls, prediction, encode_mode):
    unet = tiny_unet(cross_attention_dim=CROSS, sd2=shape == "sd2", pooled=shape == "sd1-pooled")
    vae, proj = tiny_vae(), _projection()
    saliency, tokens = _inputs()
    cfg = dict(SD1_SCHED, prediction_type=prediction)
    if sched_cls is EulerDiscreteScheduler:
        cfg.pop("clip_sample")
    frame = Img2ImgFrame(unet, vae, sched_cls(**cfg), proj, strength=0.75, num_inference_steps=8,
                         encode_mode=encode_mode)
    ours = frame(saliency, tokens, generator=torch.Generator().manual_seed(7))

    with torch.no_grad():
        embeds = proj(tokens)
    pipe = _sd_pipeline(unet, vae, sched_cls(**cfg))
    ref = pipe(
        prompt_embeds=embeds, image=saliency, strength=0.75, num_inference_steps=8, guidance_scale=1.0,
        generator=torch.Generator().manual_seed(7), output_type="pt",
    ).images
    assert ours.shape == ref.shape == (2, 3, SIZE, SIZE)
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
    # the strength matters: a different one gives a different image
    other = frame(saliency, tokens, generator=torch.Generator().manual_seed(7), strength=0.3)
    assert not torch.allclose(other, ref, atol=1e-3)


def test_guidance_with_learned_null_equals_diffusers_cfg():
    unet, vae, proj = tiny_unet(cross_attention_dim=CROSS), tiny_vae(), _projection(learned_null=True)
    saliency, tokens = _inputs()
    sched = dict(SD1_SCHED)
    frame = Img2ImgFrame(unet, vae, DDIMScheduler(**sched), proj, strength=0.6, num_inference_steps=6,
                         guidance_scale=3.0, encode_mode="sample")
    ours = frame(saliency, tokens, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        embeds, null = proj(tokens), proj.null_embeds(2)
    ref = _sd_pipeline(unet, vae, DDIMScheduler(**sched))(
        prompt_embeds=embeds, negative_prompt_embeds=null, image=saliency, strength=0.6,
        num_inference_steps=6, guidance_scale=3.0, generator=torch.Generator().manual_seed(2),
        output_type="pt",
    ).images
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


def test_guidance_without_null_conditioning_is_refused():
    with pytest.raises(ValueError, match="learned null"):
        Img2ImgFrame(tiny_unet(cross_attention_dim=CROSS), tiny_vae(), DDIMScheduler(), _projection(),
                     guidance_scale=2.0)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_student_equals_diffusers_lcm_img2img(steps):
    unet = tiny_unet(cross_attention_dim=CROSS, time_cond_proj_dim=8)
    vae, proj = tiny_vae(), _projection()
    saliency, tokens = _inputs()
    sched = dict(SD1_SCHED, original_inference_steps=50)
    sched.pop("clip_sample")
    frame = Img2ImgFrame(unet, vae, LCMScheduler(**sched), proj, strength=0.8, num_inference_steps=steps,
                         guidance_scale=4.0, encode_mode="sample")
    ours = frame(saliency, tokens, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        embeds = proj(tokens)
    pipe = LatentConsistencyModelImg2ImgPipeline(
        vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=LCMScheduler(**sched),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    ref = pipe(
        prompt_embeds=embeds, image=saliency, strength=0.8, num_inference_steps=steps, guidance_scale=4.0,
        generator=torch.Generator().manual_seed(5), output_type="pt",
    ).images
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


def test_taesd_autoencoder_equals_diffusers():
    unet, vae, proj = tiny_unet(cross_attention_dim=CROSS), tiny_taesd(), _projection()
    saliency, tokens = _inputs()
    frame = Img2ImgFrame(unet, vae, DDIMScheduler(**SD1_SCHED), proj, strength=0.5, num_inference_steps=4)
    ours = frame(saliency, tokens, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        embeds = proj(tokens)
    ref = _sd_pipeline(unet, vae, DDIMScheduler(**SD1_SCHED))(
        prompt_embeds=embeds, image=saliency, strength=0.5, num_inference_steps=4, guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0), output_type="pt",
    ).images
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


def test_resize_and_mode_encoding():
    unet, vae, proj = tiny_unet(cross_attention_dim=CROSS), tiny_vae(), _projection()
    saliency, tokens = _inputs()
    small = torch.nn.functional.interpolate(saliency, size=(16, 16), mode="bilinear", antialias=True)
    frame = Img2ImgFrame(unet, vae, DDIMScheduler(**SD1_SCHED), proj, strength=0.5, num_inference_steps=4,
                         image_size=SIZE, encode_mode="mode")
    out = frame(small, tokens)
    assert out.shape == (2, 3, SIZE, SIZE)
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    # mode encoding is deterministic: the only randomness left is the noise
    a = frame(small, tokens, generator=torch.Generator().manual_seed(1))
    b = frame(small, tokens, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    # the noise buffer is reused, not reallocated, for a shape seen before
    n_buffers = len(frame._noise)
    frame(small, tokens)
    assert len(frame._noise) == n_buffers == 1


def test_conditioning_changes_the_output():
    unet, vae, proj = tiny_unet(cross_attention_dim=CROSS), tiny_vae(), _projection()
    saliency, tokens = _inputs()
    frame = Img2ImgFrame(unet, vae, DDIMScheduler(**SD1_SCHED), proj, strength=0.8, num_inference_steps=4)
    a = frame(saliency, tokens, generator=torch.Generator().manual_seed(1))
    b = frame(saliency, tokens.flip(0), generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, b, atol=1e-4)


def test_wrong_conditioning_width_is_refused():
    frame = Img2ImgFrame(tiny_unet(cross_attention_dim=CROSS), tiny_vae(), DDIMScheduler(), None)
    saliency, tokens = _inputs()
    with pytest.raises(ValueError, match="cross_attention_dim"):
        frame(saliency, tokens)


def test_projection_round_trips_in_the_model_format(tmp_path):
    proj = _projection(learned_null=True)
    loaded = load_model(ConditioningProjection, save_model(proj, tmp_path / "proj"))
    x = torch.randn(2, N_TOKENS, IN_WIDTH)
    assert torch.equal(loaded(x), proj(x))
    assert torch.equal(loaded.null_embeds(2), proj.null_embeds(2))
    # drop: p=1 gives the null conditioning for every sample, p=0 none
    embeds = proj(x)
    assert torch.equal(proj.drop(embeds, 1.0), proj.null_embeds(2))
    assert torch.equal(proj.drop(embeds, 0.0), embeds)

"""The embedded default's generator: a tiny TAESD-like autoencoder and a tiny latent diffusion
model trained on the twin's images, conditioned on the twin's class targets, then distilled
to 1-2 steps; and the bundle assembly that combines it with the extractor folders.

Stages (each writes its own folder under ``work_dir`` and a ``done.json``; a finished
stage is skipped on the next run, so the build is resumable)::

    autoencoder/   AutoencoderTiny trained to reconstruct the train-split images
    teacher/       UNet2DConditionModel + ConditioningProjection (learned null), epsilon, DDPM
    student/       LCM-distilled UNet (time_cond_proj_dim) + the same projection
    voting/        ImageEncoder trained contrastively to the class targets (optional)

The image prior: the generator needs no EEG, only images of the classes. Besides the
twin's train-split images it can train on ``prior_images_per_class`` more images per class
drawn by the twin's own renderer (:func:`~neuroimagen.training.data.twin.stimuli.sample_layouts`,
:func:`~neuroimagen.training.data.twin.stimuli.render_image`, the twin's image size and JPEG
encoding) with layouts from ``prior_seed``, a seed stream disjoint from the twin's: 16 images
per class are too few for a diffusion model to learn to draw a class. Held-out (val, test)
images are never used; the layouts are continuous random draws, so no prior image repeats one.

:func:`assemble_bundle` then writes a bundle from the extractor folders (pixel encoder,
saliency generator, semantic extractor: the extractors issue's outputs), this generator
and the twin's stream contract, preprocessing, windowing and normalisation statistics.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderTiny,
    DDIMScheduler,
    DDPMScheduler,
    LCMScheduler,
    UNet2DConditionModel,
)
from pydantic import Field

from neuroimagen.stream.config import FrozenConfig
from neuroimagen.training.models.format import load_model, save_model
from neuroimagen.training.models.img2img import ConditioningProjection, Img2ImgFrame
from neuroimagen.training.models.voting import ImageEncoder

from .diffusion import (
    DreamDiffusionFinetuner,  # noqa: F401 (the EEG-conditioned stage reuses the same loss)
    FrameEndpoints,
    LCMDistiller,
    encode_images,
    make_student,
    train_image_encoder,
)

__all__ = [
    "FrameSpec",
    "GeneratorConfig",
    "assemble_bundle",
    "build_generator",
    "load_twin_images",
    "render_prior_images",
    "tiny_autoencoder",
    "tiny_unet",
]

logger = logging.getLogger(__name__)

DONE = "done.json"
SCHEDULER_KW = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


class GeneratorConfig(FrozenConfig):
    """Sizes and budgets of the tiny generator (the demo preset's defaults)."""

    image_size: int = Field(64, description="training and output resolution (px)")
    latent_channels: int = 4
    ae_channels: int = 32
    ae_steps: int = 1500
    unet_channels: tuple[int, int] = (32, 64)
    cross_attention_dim: int = 64
    attention_head_dim: int = 8
    unet_cross_attention: Literal["inner", "all"] = Field(
        "inner", description="UNet levels with cross-attention to the conditioning: the inner (coarsest) "
        "one, or all (the outer level too, where a small object's shape is drawn)")
    unet_pooled_conditioning: bool = Field(
        False, description="also add the attention-pooled conditioning to the UNet's time embedding "
        "(diffusers' addition_embed_type='text', as in DeepFloyd IF), so every block, not only the "
        "cross-attention levels, is conditioned on what to draw")
    unet_steps: int = 3000
    teacher_snr_gamma: float | None = Field(
        None, gt=0, description="Min-SNR loss weighting of the teacher (Hang et al. 2023): each timestep's "
        "epsilon loss weighted by min(SNR, gamma) / SNR, so low-noise steps stop dominating; None: unweighted")
    distill_steps: int = 800
    time_cond_proj_dim: int = 32
    distill_w_max: float = Field(0.0, ge=0, description="guided distillation: w ~ U(0, w_max) against the "
                                 "teacher's learned null conditioning (the frame's guidance_scale is 1 + w)")
    distill_endpoint_weight: float = Field(
        0.0, ge=0, description="weight of the frame term (training.train.diffusion.FrameEndpoints): the "
        "student's live frame (the bundle's strength, steps, guidance) regressed on the teacher's frame at "
        "teacher_steps from the same coarse init and noise. 0: consistency distillation only")
    distill_endpoint_samples: int = Field(2048, ge=10, description="init images of the frame term (10 % held "
                                          "out to measure the student-teacher distance before and after)")
    distill_endpoint_coarse: int = Field(8, ge=1, description="the frame term's init images are the training "
                                         "images area-down-sampled by this factor and back (saliency-like)")
    num_ddim_timesteps: int = 50
    voting_epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    prior_images_per_class: int = Field(0, ge=0, description="the image prior: this many more images per class "
                                        "rendered by the twin's renderer (0: the twin's train images only)")
    prior_seed: int = Field(7919, description="seed of the prior's layouts (spawned apart from the twin's seed)")
    max_minutes_per_stage: float = Field(20.0, gt=0, description="a stage stops early past this budget")
    stage_minutes: dict[Literal["autoencoder", "teacher", "student"], float] = Field(
        default_factory=dict, description="per-stage budgets (minutes) in place of max_minutes_per_stage")


class FrameSpec(FrozenConfig):
    """The live frame a student is made for (a bundle's frame settings)."""

    strength: float = Field(0.6, gt=0, le=1)
    num_inference_steps: int = Field(1, ge=1)
    guidance_scale: float = Field(1.0, ge=1, description="the LCM student's embedded guidance (1 + w)")


def tiny_autoencoder(cfg: GeneratorConfig) -> AutoencoderTiny:
    """A TAESD-shaped autoencoder, 4x down-sampling (64 px -> 16 x 16 x 4)."""
    c = cfg.ae_channels
    return AutoencoderTiny(
        encoder_block_out_channels=(c, c, c),
        decoder_block_out_channels=(c, c, c),
        num_encoder_blocks=(1, 1, 1),
        num_decoder_blocks=(1, 1, 1),
        latent_channels=cfg.latent_channels,
    )


def tiny_unet(cfg: GeneratorConfig) -> UNet2DConditionModel:
    c0, c1 = cfg.unet_channels
    outer = "CrossAttn" if cfg.unet_cross_attention == "all" else ""
    pooled = ({"addition_embed_type": "text",
               "addition_embed_type_num_heads": max(1, cfg.cross_attention_dim // cfg.attention_head_dim)}
              if cfg.unet_pooled_conditioning else {})
    return UNet2DConditionModel(
        sample_size=cfg.image_size // 4,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        block_out_channels=(c0, c1),
        layers_per_block=1,
        down_block_types=(f"{outer}DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", f"{outer}UpBlock2D"),
        cross_attention_dim=cfg.cross_attention_dim,
        attention_head_dim=cfg.attention_head_dim,
        norm_num_groups=8,
        **pooled,
    )


def teacher_frame(unet: UNet2DConditionModel, vae: AutoencoderTiny, projection: ConditioningProjection,
                  scheduler_config: Mapping[str, Any], frame: FrameSpec, teacher_steps: int,
                  image_size: int | None = None, seed: int = 0,
                  sampler: Literal["ddim", "ddpm"] = "ddim") -> Img2ImgFrame:
    """The teacher's frame as the evaluation runs it: ``teacher_steps`` of DDIM (the deterministic ODE
    the distillation follows) or of DDPM (ancestral), the frame's strength, classifier-free guidance
    against the learned null at the student's guidance scale (the guidance the student was distilled
    to reproduce; 1 without a learned null)."""
    guidance = frame.guidance_scale if projection.null_tokens is not None else 1.0
    scheduler = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}[sampler].from_config(scheduler_config)
    return Img2ImgFrame(unet, vae, scheduler, projection,
                        strength=frame.strength, num_inference_steps=teacher_steps, guidance_scale=guidance,
                        image_size=image_size, seed=seed)


def student_frame(unet: UNet2DConditionModel, vae: AutoencoderTiny, projection: ConditioningProjection | None,
                  scheduler: LCMScheduler, frame: FrameSpec, image_size: int | None = None,
                  seed: int = 0) -> Img2ImgFrame:
    """The student's frame: the bundle's (LCM, the frame's strength, steps and embedded guidance)."""
    return Img2ImgFrame(unet, vae, scheduler, projection, strength=frame.strength,
                        num_inference_steps=frame.num_inference_steps, guidance_scale=frame.guidance_scale,
                        image_size=image_size, seed=seed)


def noise_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULER_KW, prediction_type="epsilon")


def lcm_scheduler(cfg: GeneratorConfig) -> LCMScheduler:
    return LCMScheduler(**SCHEDULER_KW, prediction_type="epsilon", original_inference_steps=cfg.num_ddim_timesteps)


# --------------------------------------------------------------------------- data


def load_twin_images(twin_dir: str | Path, image_size: int) -> dict[str, Any]:
    """The twin's images with class labels, split parts (by image) and class targets.

    Returns
    -------
    dict
        ``images`` (N, 3, S, S) float32 in [0, 1], ``labels`` (N,) int64, ``stems`` (N,),
        ``part`` (N,) int64 (0 train, 1 val, 2 test), ``tokens`` (K, 77, 768),
        ``pooled`` (K, 768), ``meta`` (twin.json).
    """
    from safetensors.torch import load_file

    from .data import load_images

    twin = Path(twin_dir)
    meta = json.loads((twin / "twin.json").read_text())
    wnids = meta["wnids"]
    n_img = meta["sizes"]["n_images_per_class"]
    stems = [f"{wnids[i // n_img]}_{i % n_img + 1}" for i in range(len(wnids) * n_img)]
    images = load_images(twin, stems, image_size)  # the twin's own reader
    labels = torch.arange(len(stems)) // n_img
    # the split is by image: every trial of an image is in one part
    ds = torch.load(twin / meta["files"]["eeg"], weights_only=False)
    splits = torch.load(twin / meta["files"]["splits"], weights_only=False)["splits"][0]
    part = torch.full((len(stems),), -1, dtype=torch.long)
    for j, name in enumerate(("train", "val", "test")):
        for trial in splits[name]:
            part[ds["dataset"][trial]["image"]] = j
    targets = load_file(str(twin / meta["files"]["targets"]))
    return {
        "images": images, "labels": labels, "stems": stems, "part": part,
        "tokens": targets["class_embeddings"].float(), "pooled": targets["class_pooled"].float(),
        "meta": meta,
    }


def render_prior_images(meta: dict, n_per_class: int, image_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The image prior: ``n_per_class`` new images of each twin class, drawn as the twin draws its own.

    Parameters
    ----------
    meta : the twin's ``twin.json`` (classes, image size)
    n_per_class : images per class
    image_size : output side (px), resized as :func:`~neuroimagen.training.eval.images.load_image` does
    seed : the layouts' seed; its stream is ``SeedSequence([seed, twin seed, 1])``, never the twin's own
        ``SeedSequence(twin seed)`` spawn, so the layouts are other draws than the twin's images

    Returns
    -------
    images (K * n_per_class, 3, S, S) float32 in [0, 1], labels (K * n_per_class,) int64
    """
    import io

    from neuroimagen.training.data.twin.stimuli import render_image, sample_layouts
    from neuroimagen.training.eval.images import load_image

    n_cls, px = int(meta["sizes"]["n_classes"]), int(meta["sizes"]["image_size_px"])
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(meta["seed"]), 1]))
    out = []
    for c in range(n_cls):
        for lay in sample_layouts(n_per_class, rng):
            buf = io.BytesIO()
            render_image(c, lay, px).save(buf, format="JPEG", quality=92)  # the twin's files are JPEG 92
            buf.seek(0)
            out.append(load_image(buf, size=image_size))  # read back as the twin's files are read
    labels = torch.arange(n_cls).repeat_interleave(n_per_class)
    return torch.stack(out).contiguous(), labels


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Horizontal flips only: position is information in the twin (it drives the EEG)."""
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


# --------------------------------------------------------------------------- stages


def _stage_done(folder: Path) -> dict | None:
    f = folder / DONE
    return json.loads(f.read_text()) if f.is_file() else None


def _finish(folder: Path, info: dict) -> dict:
    (folder / DONE).write_text(json.dumps(info, indent=1))
    return info


def _minutes(cfg: GeneratorConfig, stage: str) -> float:
    return float(cfg.stage_minutes.get(stage, cfg.max_minutes_per_stage))


def _budget(cfg: GeneratorConfig, stage: str) -> Callable[[], bool]:
    t0 = time.monotonic()
    return lambda: time.monotonic() - t0 > 60 * _minutes(cfg, stage)


def _cosine_lr(cfg: GeneratorConfig, opt: torch.optim.Optimizer, lr: float, n_steps: int,
               stage: str) -> Callable[[int], None]:
    """Cosine decay over whichever runs out first, the steps or the stage's time budget.

    On a slow or shared CPU the time budget ends a stage early; the learning rate has then
    still decayed to (near) zero, as it would have at the last step.
    """
    t0 = time.monotonic()
    budget_s = 60 * _minutes(cfg, stage)

    def update(step: int) -> None:
        p = min(1.0, max(step / max(n_steps, 1), (time.monotonic() - t0) / budget_s))
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * p))

    return update


def train_autoencoder(cfg: GeneratorConfig, images: torch.Tensor, out: Path,
                      progress: Callable[[str], None]) -> dict:
    """Stage 1: reconstruct the images (L1 + MSE), then set ``scaling_factor`` to unit latent std."""
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    vae = tiny_autoencoder(cfg).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr * 2)
    set_lr = _cosine_lr(cfg, opt, cfg.lr * 2, cfg.ae_steps, "autoencoder")
    over = _budget(cfg, "autoencoder")
    loss = torch.tensor(float("nan"))
    step = 0
    for step in range(cfg.ae_steps):
        set_lr(step)
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=g)
        x = _augment(images[idx], g) * 2 - 1
        lat = vae.encoder(x)
        rec = vae.decoder(lat)
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + 1e-4 * lat.pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0:
            progress(f"autoencoder step {step}/{cfg.ae_steps} loss {float(loss.detach()):.4f}")
        if over():
            break
    vae.eval()
    with torch.no_grad():
        lat = torch.cat([vae.encode(c * 2 - 1).latents for c in images.split(64)])
        scale = float(1.0 / lat.std())
        rec = torch.cat([vae.decode(lat_c).sample for lat_c in lat.split(64)])
        mse = float(F.mse_loss((rec / 2 + 0.5).clamp(0, 1), images))
    vae.register_to_config(scaling_factor=scale)
    save_model(vae, out / "autoencoder")
    return _finish(out, {"steps": step + 1, "loss": float(loss.detach()), "recon_mse": mse, "scaling_factor": scale})


def min_snr_weights(scheduler: DDPMScheduler, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights of an epsilon model, one per training timestep: min(SNR, gamma) / SNR.

    1 where the noise dominates (SNR <= gamma), gamma / SNR below: the low-noise steps, whose
    epsilon is easy and whose loss would otherwise dominate the gradient (Hang et al. 2023).
    """
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    return snr.clamp(max=gamma) / snr


def train_teacher(cfg: GeneratorConfig, latents: torch.Tensor, tokens: torch.Tensor, out: Path,
                  progress: Callable[[str], None]) -> dict:
    """Stage 2: the class-conditioned latent diffusion teacher (epsilon), 10 % null-conditioning drop."""
    torch.manual_seed(cfg.seed + 1)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    unet = tiny_unet(cfg).train()
    proj = ConditioningProjection(tokens.shape[-1], cfg.cross_attention_dim, tokens.shape[1], learned_null=True).train()
    sched = noise_scheduler()
    params = list(unet.parameters()) + list(proj.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    set_lr = _cosine_lr(cfg, opt, cfg.lr, cfg.unet_steps, "teacher")
    over = _budget(cfg, "teacher")
    snr_weight = None if cfg.teacher_snr_gamma is None else min_snr_weights(sched, cfg.teacher_snr_gamma)
    losses: list[float] = []
    step = 0
    for step in range(cfg.unet_steps):
        set_lr(step)
        idx = torch.randint(0, len(latents), (cfg.batch_size,), generator=g)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), generator=g)
        embeds = proj.drop(proj(tokens[idx]), 0.1, g)
        pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=embeds).sample
        per_sample = (pred - noise).pow(2).mean(dim=(1, 2, 3))
        loss = (per_sample * snr_weight[t]).mean() if snr_weight is not None else per_sample.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % 100 == 0:
            progress(f"teacher step {step}/{cfg.unet_steps} loss {np.mean(losses[-100:]):.4f}")
        if over():
            break
    save_model(unet.eval(), out / "unet")
    save_model(proj.eval(), out / "projection")
    sched.save_config(str(out / "scheduler"))
    return _finish(out, {"steps": step + 1, "loss_last100": float(np.mean(losses[-100:]))})


def _coarse(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Saliency-like init images: area-down-sampled by ``factor`` and bilinearly back."""
    if factor <= 1:
        return images
    small = F.interpolate(images, scale_factor=1 / factor, mode="area")
    return F.interpolate(small, size=images.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)


def _frame_endpoints(cfg: GeneratorConfig, teacher: UNet2DConditionModel, student: UNet2DConditionModel,
                     vae: AutoencoderTiny, proj: ConditioningProjection, images: torch.Tensor,
                     tokens: torch.Tensor, frame: FrameSpec, teacher_steps: int,
                     g: torch.Generator) -> FrameEndpoints:
    """The frame term's endpoints: coarse (flipped at random) training images under their class tokens."""
    idx = torch.randint(0, len(images), (cfg.distill_endpoint_samples,), generator=g)
    init = _coarse(_augment(images[idx], g), cfg.distill_endpoint_coarse)
    latents = encode_images(vae, init)
    with torch.no_grad():
        embeds = proj(tokens[idx])
    t_frame = teacher_frame(teacher, vae, proj, noise_scheduler().config, frame, teacher_steps)
    s_frame = student_frame(student, vae, None, lcm_scheduler(cfg), frame)
    student.train().requires_grad_(True)  # the frame froze it (realtime's use); it is the one trained here
    return FrameEndpoints(t_frame, s_frame, latents, embeds, g)


def distill_student(cfg: GeneratorConfig, teacher_dir: Path, latents: torch.Tensor, tokens: torch.Tensor,
                    out: Path, progress: Callable[[str], None], *, vae: AutoencoderTiny | None = None,
                    images: torch.Tensor | None = None, image_tokens: torch.Tensor | None = None,
                    frame: FrameSpec | None = None, teacher_steps: int = 25) -> dict:
    """Stage 3: latent consistency distillation of the teacher to a 1-2 step student.

    With ``cfg.distill_endpoint_weight`` > 0 each step adds the frame term
    (:class:`~neuroimagen.training.train.diffusion.FrameEndpoints`): the student's ``frame``
    regressed on the teacher's, from coarse versions of ``images`` (encoded by ``vae``) under
    ``image_tokens``. 10 % of its endpoints are held out; their student-teacher distance before
    and after distillation is recorded.
    """
    torch.manual_seed(cfg.seed + 2)
    g = torch.Generator().manual_seed(cfg.seed + 2)
    teacher = load_model(UNet2DConditionModel, teacher_dir / "unet")
    proj = load_model(ConditioningProjection, teacher_dir / "projection")
    student = make_student(teacher, cfg.time_cond_proj_dim).train()
    endpoints, info = None, {}
    if cfg.distill_endpoint_weight > 0:
        if vae is None or images is None or image_tokens is None or frame is None:
            raise ValueError("distill_endpoint_weight > 0 needs the autoencoder, the images, their tokens and "
                             "the frame settings")
        t0 = time.monotonic()
        endpoints = _frame_endpoints(cfg, teacher, student, vae, proj, images, image_tokens, frame,
                                     teacher_steps, g)
        n_held = max(1, len(endpoints) // 10)
        held, fit = torch.arange(n_held), torch.arange(n_held, len(endpoints))
        info["endpoint_mse_before"] = endpoints.distance(held)
        progress(f"frame term: {len(endpoints)} teacher frames ({teacher_steps} DDIM steps, strength "
                 f"{frame.strength}) in {time.monotonic() - t0:.0f} s; held-out student-teacher MSE "
                 f"{info['endpoint_mse_before']:.4f}")
    distiller = LCMDistiller(teacher, student, noise_scheduler(), num_ddim_timesteps=cfg.num_ddim_timesteps,
                             lr=cfg.lr * 0.5, loss="huber", ema_decay=0.95, w_range=(0.0, cfg.distill_w_max))
    guided = cfg.distill_w_max > 0 and proj.null_tokens is not None
    over = _budget(cfg, "student")
    losses: list[float] = []
    step = 0
    for step in range(cfg.distill_steps):
        idx = torch.randint(0, len(latents), (cfg.batch_size,), generator=g)
        with torch.no_grad():
            embeds = proj(tokens[idx])
            null = proj.null_embeds(len(idx)) if guided else None
        extra = None
        if endpoints is not None:
            pick = fit[torch.randint(0, len(fit), (cfg.batch_size,), generator=g)]
            extra = lambda pick=pick: cfg.distill_endpoint_weight * endpoints.loss(pick, g)  # noqa: E731
        losses.append(distiller.step(latents[idx], embeds, null_embeds=null, generator=g, extra_loss=extra))
        if step % 50 == 0:
            progress(f"distill step {step}/{cfg.distill_steps} loss {np.mean(losses[-50:]):.5f}")
        if over():
            break
    if endpoints is not None:
        # the shipped UNet is the EMA target: measure that one on the held-out endpoints
        endpoints.student_frame.unet = distiller.target
        info["endpoint_mse_after"] = endpoints.distance(held)
        progress(f"frame term: held-out student-teacher MSE {info['endpoint_mse_before']:.4f} -> "
                 f"{info['endpoint_mse_after']:.4f}")
    save_model(distiller.target.eval(), out / "unet")  # the EMA target, as LCM ships
    lcm_scheduler(cfg).save_config(str(out / "scheduler"))
    return _finish(out, {"steps": step + 1, "loss_last50": float(np.mean(losses[-50:])), **info})


def train_voting(cfg: GeneratorConfig, images: torch.Tensor, labels: torch.Tensor, pooled: torch.Tensor,
                 out: Path) -> dict:
    """Stage 4: the small image encoder for CLIP-style voting, contrastive to the class targets."""
    torch.manual_seed(cfg.seed + 3)
    enc = ImageEncoder(width=pooled.shape[-1], channels=(16, 32, 64))
    fit = train_image_encoder(enc, images, labels, pooled, n_epochs=cfg.voting_epochs, batch_size=cfg.batch_size,
                              lr=cfg.lr * 3, seed=cfg.seed, augment=_augment)
    save_model(enc, out / "image_encoder")
    return _finish(out, {"epochs": cfg.voting_epochs, "loss": fit.losses[-1]})


#: the GeneratorConfig fields each stage's result depends on (its own and its inputs')
_DATA_FIELDS = ("image_size", "seed", "batch_size", "lr", "prior_images_per_class", "prior_seed")
_STAGE_FIELDS = {
    "autoencoder": _DATA_FIELDS + ("latent_channels", "ae_channels", "ae_steps"),
    "voting": _DATA_FIELDS + ("voting_epochs",),
}
_STAGE_FIELDS["teacher"] = _STAGE_FIELDS["autoencoder"] + (
    "unet_channels", "cross_attention_dim", "attention_head_dim", "unet_cross_attention", "unet_pooled_conditioning",
    "teacher_snr_gamma", "unet_steps")
_STAGE_FIELDS["student"] = _STAGE_FIELDS["teacher"] + (
    "distill_steps", "time_cond_proj_dim", "distill_w_max", "num_ddim_timesteps", "distill_endpoint_weight",
    "distill_endpoint_samples", "distill_endpoint_coarse")


def _stage_keys(cfg: GeneratorConfig, frame: FrameSpec | None, teacher_steps: int) -> dict[str, dict]:
    """What each stage was trained with: the config fields it depends on and its time budgets."""
    dump = cfg.model_dump(mode="json")
    keys: dict[str, dict] = {}
    for stage, fields in _STAGE_FIELDS.items():
        keys[stage] = {f: dump[f] for f in fields}
    chain = ("autoencoder", "teacher", "student")  # each trains on the one before it
    for i, stage in enumerate(chain):
        keys[stage]["minutes"] = {s: _minutes(cfg, s) for s in chain[:i + 1]}
    if cfg.distill_endpoint_weight > 0:
        keys["student"]["frame"] = frame.model_dump(mode="json") if frame is not None else None
        keys["student"]["teacher_steps"] = teacher_steps
    return keys


def _check_stage_key(folder: Path, done: dict, key: dict) -> None:
    """Refuse to resume past a finished stage that was trained with another config."""
    have = done.get("config")
    if have is None:  # a build from before stages recorded their config: nothing to compare
        logger.warning("%s: finished without a recorded config; resuming without checking it", folder)
        return
    diff = [f"{k} was {have.get(k)!r}, now {v!r}" for k, v in key.items() if have.get(k) != v]
    diff += [f"{k} was {v!r}, now unset" for k, v in have.items() if k not in key]
    if diff:
        raise ValueError(f"{folder}: finished with another generator config ({'; '.join(diff)}); delete that "
                         "folder (and the stages after it) to retrain it, or use a new --out")


def build_generator(
    twin_dir: str | Path,
    work_dir: str | Path,
    cfg: GeneratorConfig | None = None,
    *,
    stages: tuple[str, ...] = ("autoencoder", "teacher", "student", "voting"),
    progress: Callable[[str], None] | None = None,
    targets: tuple[torch.Tensor, torch.Tensor] | None = None,
    frame: FrameSpec | None = None,
    teacher_steps: int = 25,
) -> dict[str, dict]:
    """Run the generator stages that are not done yet; returns each stage's ``done.json``.

    Trains on the twin's train-split images only (val and test images stay held out).
    ``targets`` (tokens (K, n_tokens, width), pooled (K, width)) replaces the twin's full
    77 x 768 class targets: pass the ones the semantic extractor was trained to predict.
    ``frame`` and ``teacher_steps``: the live frame the student is made for and the teacher's
    steps (the distillation's frame term, ``cfg.distill_endpoint_weight``).
    """
    cfg = cfg or GeneratorConfig()
    say = progress or (lambda msg: logger.info(msg))
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "generator_config.json").write_text(cfg.model_dump_json(indent=1))
    data = load_twin_images(twin_dir, cfg.image_size)
    if targets is not None:
        data["tokens"], data["pooled"] = targets[0].float(), targets[1].float()
    train = data["part"] == 0
    images, labels = data["images"][train], data["labels"][train]
    if cfg.prior_images_per_class > 0:
        prior, prior_labels = render_prior_images(data["meta"], cfg.prior_images_per_class, cfg.image_size,
                                                  cfg.prior_seed)
        say(f"image prior: {len(prior)} rendered images (seed {cfg.prior_seed}) + {len(images)} twin train images")
        images, labels = torch.cat([images, prior]), torch.cat([labels, prior_labels])
    tokens = data["tokens"][labels]
    results: dict[str, dict] = {}
    keys = _stage_keys(cfg, frame, teacher_steps)

    def run(name: str, train: Callable[[Path], dict]) -> None:
        folder = work / name
        done = _stage_done(folder)
        if done is not None:
            _check_stage_key(folder, done, keys[name])
        elif name in stages:
            folder.mkdir(exist_ok=True)
            done = _finish(folder, {**train(folder), "config": keys[name]})
        results[name] = done or {}

    # 1. autoencoder
    run("autoencoder", lambda folder: train_autoencoder(cfg, images, folder, say))
    if "teacher" not in stages and "student" not in stages:
        return results
    vae = load_model(AutoencoderTiny, work / "autoencoder" / "autoencoder")
    flipped = images.flip(-1)
    latents = encode_images(vae, torch.cat([images, flipped]))
    tokens2 = torch.cat([tokens, tokens])
    # 2. teacher, 3. student, 4. voting encoder
    run("teacher", lambda folder: train_teacher(cfg, latents, tokens2, folder, say))
    run("student", lambda folder: distill_student(cfg, work / "teacher", latents, tokens2, folder, say, vae=vae,
                                                  images=images, image_tokens=tokens, frame=frame,
                                                  teacher_steps=teacher_steps))
    run("voting", lambda folder: train_voting(cfg, images, labels, data["pooled"], folder))
    return results


# --------------------------------------------------------------------------- bundle


def assemble_bundle(
    out_dir: str | Path,
    *,
    twin_dir: str | Path,
    generator_dir: str | Path,
    extractors: Mapping[str, str | Path],
    frame: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    commands: tuple[str, ...] = (),
    name: str = "neuroimagen-demo",
    class_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Any:
    """Write the bundle: extractor folders + the generator + the twin's stream contract and chain.

    Parameters
    ----------
    extractors : {role: model folder}
        ``pixel_encoder``, ``saliency``, ``semantic`` (the extractors issue's outputs), each
        in the one model format; copied in as members named by role.
    frame : FrameSettings fields overriding the defaults (strength, steps, image_size, ...)
    class_embeddings : (tokens (K, n_tokens, width), pooled (K, width)), optional
        The targets the semantic extractor predicts (default: the twin's 77 x 768 ones).
    """
    from neuroimagen.stream.config import PreprocessingConfig, WindowingConfig
    from neuroimagen.stream.preprocessing import NormStats
    from neuroimagen.training.models.bundle import (
        FrameSettings,
        Provenance,
        StreamContract,
        TwinProvenance,
        write_bundle,
    )
    from neuroimagen.training.models.img2img import load_scheduler

    twin, gen = Path(twin_dir), Path(generator_dir)
    meta = json.loads((twin / "twin.json").read_text())
    from safetensors.torch import load_file

    if class_embeddings is None:
        targets = load_file(str(twin / meta["files"]["targets"]))
        class_embeddings = (targets["class_embeddings"], targets["class_pooled"])
    members: dict[str, tuple[str, Any]] = {role: (role, Path(p)) for role, p in extractors.items()}
    members["unet"] = ("unet", gen / "student" / "unet")
    members["autoencoder"] = ("autoencoder", gen / "autoencoder" / "autoencoder")
    members["projection"] = ("projection", gen / "teacher" / "projection")
    if (gen / "voting" / "image_encoder").is_dir():
        members["image_encoder"] = ("voting_image_encoder", gen / "voting" / "image_encoder")
    gcfg = GeneratorConfig.model_validate_json((gen / "generator_config.json").read_text())
    settings = FrameSettings(**{"unet": "unet", "autoencoder": "autoencoder", "projection": "projection",
                                "num_inference_steps": 2, "strength": 0.6, "image_size": gcfg.image_size,
                                **dict(frame or {})})
    windowing = WindowingConfig(mode="marker", n_times=meta["n_times"],
                                marker_offset_samples=meta["marker_offset_samples"])
    return write_bundle(
        out_dir,
        name=name,
        description="Tiny extractors + tiny latent diffusion (TAESD-like autoencoder, LCM-distilled UNet) "
                    "trained on the synthetic EEG-ImageNet twin",
        stream=StreamContract(ch_names=tuple(meta["ch_names"]), sfreq_hz=float(meta["sfreq"]),
                              units=meta.get("units", "V")),
        preprocessing=PreprocessingConfig.model_validate(meta["preprocessing"]),
        windowing=windowing,
        norm_stats=NormStats.from_dict(meta["norm_stats"]),
        members=members,
        data={"class_embeddings": {"tokens": class_embeddings[0].contiguous(),
                                   "pooled": class_embeddings[1].contiguous()}},
        class_names=meta["class_names"],
        scheduler=load_scheduler(gen / "student" / "scheduler", subfolder=None),
        generator=settings,
        provenance=Provenance(
            data=f"synthetic twin at {twin}", seed=gcfg.seed,
            twin=TwinProvenance(preset=meta["preset"], seed=meta["seed"], version=meta["version"],
                                config=meta.get("config")),
            commands=commands,
        ),
        metrics=dict(metrics or {}),
    )

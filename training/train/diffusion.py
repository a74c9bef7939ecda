"""Training the generator: DreamDiffusion fine-tuning, latent consistency distillation,
the low-level latent path and the image encoder for CLIP-style voting.

Minimal, self-contained loops (plain torch, one device): the shared trainer
infrastructure (run folders, resume, accelerate) comes with the extractors
issue, and these steps are written so that its trainer can call them. Each
``*_step`` function does one optimisation step on one batch and returns the
loss; the ``train_*`` functions loop over tensors held in memory (the twin is
small) with a seeded generator.

Models are passed in; the EEG encoder is any ``nn.Module`` mapping
``eeg (B, n_channels, n_times) -> (tokens (B, n_tokens, width), pooled (B, width))``
(the extractors issue's ``SemanticExtractor``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny, DDPMScheduler, UNet2DConditionModel

from neuroimagen.training.models.format import file_sha256
from neuroimagen.training.models.img2img import ConditioningProjection, guidance_scale_embedding
from neuroimagen.training.models.voting import ImageEncoder

__all__ = [
    "DDIMSolver",
    "DreamDiffusionFinetuner",
    "FrameEndpoints",
    "LCMDistiller",
    "apply_finetune_checkpoint",
    "contrastive_step",
    "cross_attention_parameters",
    "ddim_solve",
    "encode_images",
    "make_student",
    "save_finetune_checkpoint",
    "train_brain_to_latent",
    "train_image_encoder",
]

logger = logging.getLogger(__name__)

Autoencoder = AutoencoderKL | AutoencoderTiny
CROSS_ATTENTION_KEY = ".attn2."


# --------------------------------------------------------------------------- shared


@torch.no_grad()
@torch.no_grad()
def encode_images(vae: Autoencoder, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] -> scaled latents (N, C, H/f, W/f) (the distribution's mean).

    The VAE is frozen in every stage, so latents are computed once per dataset.
    """
    out = []
    for chunk in images.split(batch_size):
        enc = vae.encode(chunk * 2 - 1)
        lat = enc.latent_dist.mode() if hasattr(enc, "latent_dist") else enc.latents
        out.append(lat * vae.config.scaling_factor)
    return torch.cat(out)


def _target(scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    if kind == "sample":
        return latents
    raise ValueError(f"unknown prediction_type {kind!r}")


# --------------------------------------------------------------------------- fine-tuning


def cross_attention_parameters(unet: UNet2DConditionModel) -> dict[str, torch.nn.Parameter]:
    """The UNet's cross-attention parameters (``attn2`` of every transformer block), by name."""
    return {n: p for n, p in unet.named_parameters() if CROSS_ATTENTION_KEY in n}


class DreamDiffusionFinetuner:
    """Jointly train the EEG encoder, the conditioning projection and the UNet's cross-attention.

    Everything else (the rest of the UNet, the VAE) is frozen. The loss is the standard
    denoising loss on VAE latents of the seen images, under the projected EEG tokens;
    ``null_drop`` of the samples get the learned null conditioning instead (when the
    projection has one), which enables classifier-free guidance later.

    Parameters
    ----------
    encoder : nn.Module
        ``eeg -> (tokens, pooled)``.
    projection : ConditioningProjection
    unet : UNet2DConditionModel
    noise_scheduler : DDPMScheduler
        The training schedule (betas, prediction_type) of the UNet.
    lr, lr_encoder : float
        Learning rates of the cross-attention + projection, and of the encoder.
    null_drop : float
    """

    def __init__(
        self,
        encoder: torch.nn.Module,
        projection: ConditioningProjection,
        unet: UNet2DConditionModel,
        noise_scheduler: DDPMScheduler,
        *,
        lr: float = 1e-4,
        lr_encoder: float = 1e-4,
        null_drop: float = 0.1,
        weight_decay: float = 0.0,
    ) -> None:
        self.encoder, self.projection, self.unet = encoder, projection, unet
        self.noise_scheduler = noise_scheduler
        self.null_drop = null_drop
        unet.requires_grad_(False)
        self.cross_params = cross_attention_parameters(unet)
        if not self.cross_params:
            raise ValueError("the UNet has no cross-attention (attn2) parameters to fine-tune")
        for p in self.cross_params.values():
            p.requires_grad_(True)
        encoder.requires_grad_(True)
        projection.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(
            [
                {"params": list(self.cross_params.values()) + list(projection.parameters()), "lr": lr},
                {"params": list(encoder.parameters()), "lr": lr_encoder},
            ],
            weight_decay=weight_decay,
        )

    def loss(
        self,
        eeg: torch.Tensor,
        latents: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Denoising loss of one batch: eeg (B, n_channels, n_times), latents (B, C, h, w) scaled."""
        bsz = latents.shape[0]
        if noise is None:
            noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype)
        if timesteps is None:
            n_train = self.noise_scheduler.config.num_train_timesteps
            timesteps = torch.randint(0, n_train, (bsz,), generator=generator)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        tokens, _ = self.encoder(eeg)
        embeds = self.projection(tokens)
        if self.unet.training or self.encoder.training:
            embeds = self.projection.drop(embeds, self.null_drop, generator)
        pred = self.unet(noisy, timesteps, encoder_hidden_states=embeds, return_dict=False)[0]
        return F.mse_loss(pred, _target(self.noise_scheduler, latents, noise, timesteps))

    def step(self, eeg: torch.Tensor, latents: torch.Tensor, **kwargs) -> float:
        """One optimisation step; returns the loss before it."""
        self.unet.train()
        self.encoder.train()
        loss = self.loss(eeg, latents, **kwargs)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def save_finetune_checkpoint(
    folder: str | Path,
    encoder: torch.nn.Module,
    projection: ConditioningProjection,
    unet: UNet2DConditionModel,
    *,
    base_unet_sha256: str | None = None,
) -> Path:
    """Save only what fine-tuning changed: the encoder, the projection, the UNet's cross-attention.

    ``unet_cross_attention.safetensors`` holds the ``attn2`` tensors; the rest of the UNet is
    the (unchanged) base model, identified by ``base_unet_sha256`` when given.
    """
    from diffusers import ModelMixin
    from safetensors.torch import save_file

    from neuroimagen.training.models.format import save_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(encoder, ModelMixin):
        save_model(encoder, folder / "encoder")
    else:
        save_file({k: v.detach().contiguous() for k, v in encoder.state_dict().items()},
                  str(folder / "encoder.safetensors"))
    save_model(projection, folder / "projection")
    cross = {k: v.detach().contiguous() for k, v in unet.state_dict().items() if CROSS_ATTENTION_KEY in k}
    meta = {"base_unet_sha256": base_unet_sha256} if base_unet_sha256 else {}
    save_file(cross, str(folder / "unet_cross_attention.safetensors"), metadata=meta)
    return folder


def apply_finetune_checkpoint(unet: UNet2DConditionModel, folder: str | Path, *, base_unet: str | Path | None = None) -> None:
    """Load the cross-attention tensors of a checkpoint into ``unet`` (strictly: all of them, same shapes).

    ``base_unet`` (a weights file): refuse a checkpoint made on another base UNet.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(folder) / "unet_cross_attention.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if base_unet is not None and meta.get("base_unet_sha256"):
        digest = file_sha256(base_unet)
        if digest != meta["base_unet_sha256"]:
            raise ValueError(f"{path}: made on base UNet {meta['base_unet_sha256'][:12]}..., not {digest[:12]}...")
    delta = load_file(str(path))
    state = unet.state_dict()
    expected = {k for k in state if CROSS_ATTENTION_KEY in k}
    problems = sorted(expected ^ set(delta)) + sorted(
        k for k in set(delta) & expected if delta[k].shape != state[k].shape
    )
    if problems:
        raise ValueError(f"{path}: cross-attention tensors do not match the UNet: {problems[:8]}")
    unet.load_state_dict(delta, strict=False)


# --------------------------------------------------------------------------- LCM distillation


def _extract(a: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    return a.to(t.device)[t].reshape(-1, *([1] * (ndim - 1)))


class DDIMSolver:
    """The teacher's ODE solver on a skipping schedule (LCM's DDIM solver).

    Parameters
    ----------
    alphas_cumprod : torch.Tensor (num_train_timesteps,)
    num_ddim_timesteps : int
        Must equal the student's LCMScheduler ``original_inference_steps``.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, num_ddim_timesteps: int = 50) -> None:
        n_train = alphas_cumprod.shape[0]
        step_ratio = n_train // num_ddim_timesteps
        self.ddim_timesteps = torch.from_numpy(
            (np.arange(1, num_ddim_timesteps + 1) * step_ratio).round().astype(np.int64) - 1
        )
        self.step_ratio = step_ratio
        self.alphas_cumprod = alphas_cumprod.float()
        prev = torch.cat([self.alphas_cumprod[:1], self.alphas_cumprod[self.ddim_timesteps[:-1]]])
        self.ddim_alphas_cumprod_prev = prev

    def step(self, pred_x0: torch.Tensor, pred_noise: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        a_prev = _extract(self.ddim_alphas_cumprod_prev, index, pred_x0.ndim)
        return a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * pred_noise


def _x0_and_eps(
    model_output: torch.Tensor, t: torch.Tensor, sample: torch.Tensor, kind: str, alphas_cumprod: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    a = _extract(alphas_cumprod, t, sample.ndim).sqrt()
    s = _extract(1 - alphas_cumprod, t, sample.ndim).sqrt()
    if kind == "epsilon":
        eps = model_output
        return (sample - s * eps) / a, eps
    if kind == "v_prediction":
        return a * sample - s * model_output, a * model_output + s * sample
    if kind == "sample":
        x0 = model_output
        return x0, (sample - a * x0) / s
    raise ValueError(f"unknown prediction_type {kind!r}")


@torch.no_grad()
def ddim_solve(
    unet: UNet2DConditionModel,
    noisy: torch.Tensor,
    t_start: int,
    embeds: torch.Tensor,
    noise_scheduler: DDPMScheduler,
    n_steps: int = 25,
    null_embeds: torch.Tensor | None = None,
    guidance_scale: float = 1.0,
) -> torch.Tensor:
    """The teacher's deterministic DDIM (PF-ODE) solution from ``noisy`` at ``t_start`` to a clean latent.

    ``n_steps`` evenly spaced steps from ``t_start`` down to 0, then x0 of the last: the
    reference a consistency student is distilled towards (same start, same noise).
    """
    ac = noise_scheduler.alphas_cumprod.float()
    kind = noise_scheduler.config.prediction_type
    ts = torch.linspace(t_start, 0, n_steps + 1).round().long()
    x = noisy
    bsz = x.shape[0]
    x0 = x
    for i in range(n_steps):
        t = ts[i].repeat(bsz)
        out = unet(x, t, encoder_hidden_states=embeds, return_dict=False)[0]
        x0, eps = _x0_and_eps(out, t, x, kind, ac)
        if null_embeds is not None and guidance_scale != 1.0:
            out_u = unet(x, t, encoder_hidden_states=null_embeds, return_dict=False)[0]
            x0_u, eps_u = _x0_and_eps(out_u, t, x, kind, ac)
            x0, eps = x0_u + guidance_scale * (x0 - x0_u), eps_u + guidance_scale * (eps - eps_u)
        if i < n_steps - 1:
            a_next = ac[ts[i + 1]]
            x = a_next.sqrt() * x0 + (1 - a_next).sqrt() * eps
    return x0


def boundary_scalings(t: torch.Tensor, sigma_data: float = 0.5, timestep_scaling: float = 10.0):
    """LCM's consistency boundary condition (c_skip, c_out), as LCMScheduler evaluates it."""
    scaled = timestep_scaling * t.float()
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def make_student(teacher: UNet2DConditionModel, time_cond_proj_dim: int = 32) -> UNet2DConditionModel:
    """A consistency student: the teacher's architecture and weights plus a guidance (w) embedding.

    The w-embedding projection starts at zero, so the student begins as the teacher.
    """
    config = dict(teacher.config)
    # diffusers re-applies defaults to the keys listed here: drop it, or the new key is ignored
    config.pop("_use_default_values", None)
    config["time_cond_proj_dim"] = time_cond_proj_dim
    student = UNet2DConditionModel.from_config(config)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or any("cond_proj" not in k for k in missing):
        raise ValueError(f"student and teacher differ beyond the w embedding: {missing} {unexpected}")
    if student.time_embedding.cond_proj is None:
        raise ValueError("the student UNet was built without a w embedding (time_cond_proj_dim)")
    torch.nn.init.zeros_(student.time_embedding.cond_proj.weight)
    return student.to(teacher.device, teacher.dtype)


class LCMDistiller:
    """Latent consistency distillation of a (fine-tuned) teacher into a 1-4 step student.

    As in LCM (Luo et al. 2023; diffusers' ``train_lcm_distill_sd``): sample a skipping-
    schedule step, take one teacher DDIM step (with guidance ``w`` when the projection
    has a learned null conditioning), and train the student so that its consistency
    function agrees with an EMA target at the earlier step.

    Parameters
    ----------
    teacher : UNet2DConditionModel (frozen)
    student : UNet2DConditionModel with ``time_cond_proj_dim`` (see :func:`make_student`)
    noise_scheduler : DDPMScheduler of the teacher (betas, prediction_type)
    num_ddim_timesteps : int (50: the LCMScheduler's ``original_inference_steps``)
    w_range : (w_min, w_max)
        Guidance weights sampled per sample (``w = guidance_scale - 1``); (0, 0) without a
        learned null conditioning.
    ema_decay : float
    lr : float
    """

    def __init__(
        self,
        teacher: UNet2DConditionModel,
        student: UNet2DConditionModel,
        noise_scheduler: DDPMScheduler,
        *,
        num_ddim_timesteps: int = 50,
        w_range: tuple[float, float] = (0.0, 0.0),
        ema_decay: float = 0.95,
        lr: float = 1e-4,
        timestep_scaling: float = 10.0,
        loss: str = "huber",
        huber_c: float = 0.001,
    ) -> None:
        if student.config.time_cond_proj_dim is None:
            raise ValueError("the student needs time_cond_proj_dim (make_student)")
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = student
        self.target = copy.deepcopy(student).eval().requires_grad_(False)
        self.noise_scheduler = noise_scheduler
        self.kind = noise_scheduler.config.prediction_type
        self.alphas_cumprod = noise_scheduler.alphas_cumprod.float()
        self.solver = DDIMSolver(self.alphas_cumprod, num_ddim_timesteps)
        self.w_range = w_range
        self.ema_decay = ema_decay
        self.timestep_scaling = timestep_scaling
        self.loss_kind, self.huber_c = loss, huber_c
        self.optimizer = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)

    def _consistency(self, unet, x, t, embeds, w_emb):
        out = unet(x, t, timestep_cond=w_emb, encoder_hidden_states=embeds, return_dict=False)[0]
        x0, _ = _x0_and_eps(out, t, x, self.kind, self.alphas_cumprod)
        c_skip, c_out = boundary_scalings(t, timestep_scaling=self.timestep_scaling)
        shape = (-1,) + (1,) * (x.ndim - 1)
        return c_skip.reshape(shape) * x + c_out.reshape(shape) * x0

    def step(
        self,
        latents: torch.Tensor,
        embeds: torch.Tensor,
        null_embeds: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        extra_loss: Callable[[], torch.Tensor] | None = None,
    ) -> float:
        """One distillation step on clean latents (B, C, h, w) and projected conditioning (B, n, D).

        ``extra_loss`` (e.g. :meth:`FrameEndpoints.loss`) is evaluated with the student in
        training mode and added to the consistency loss before the one backward pass.
        """
        bsz = latents.shape[0]
        self.student.train()
        # 1. a skipping-schedule step and its earlier neighbour
        index = torch.randint(0, len(self.solver.ddim_timesteps), (bsz,), generator=generator)
        start_t = self.solver.ddim_timesteps[index]
        t = (start_t - self.solver.step_ratio).clamp(min=0)
        noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype)
        noisy = self.noise_scheduler.add_noise(latents, noise, start_t)
        w_min, w_max = self.w_range
        w = w_min + (w_max - w_min) * torch.rand(bsz, generator=generator)
        w_emb = guidance_scale_embedding(w, self.student.config.time_cond_proj_dim).to(latents)
        # 2. the student's consistency output at the later step
        pred = self._consistency(self.student, noisy, start_t, embeds, w_emb)
        # 3. one (guided) teacher DDIM step, then the EMA target at the earlier step
        with torch.no_grad():
            out = self.teacher(noisy, start_t, encoder_hidden_states=embeds, return_dict=False)[0]
            x0, eps = _x0_and_eps(out, start_t, noisy, self.kind, self.alphas_cumprod)
            if null_embeds is not None and w_max > 0:
                out_u = self.teacher(noisy, start_t, encoder_hidden_states=null_embeds, return_dict=False)[0]
                x0_u, eps_u = _x0_and_eps(out_u, start_t, noisy, self.kind, self.alphas_cumprod)
                wb = w.reshape(-1, 1, 1, 1)
                x0, eps = x0 + wb * (x0 - x0_u), eps + wb * (eps - eps_u)
            x_prev = self.solver.step(x0, eps, index)
            target = self._consistency(self.target, x_prev, t, embeds, w_emb)
        if self.loss_kind == "huber":
            loss = torch.mean(torch.sqrt((pred.float() - target.float()) ** 2 + self.huber_c**2) - self.huber_c)
        else:
            loss = F.mse_loss(pred.float(), target.float())
        if extra_loss is not None:
            loss = loss + extra_loss()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.student.parameters(), 1.0)
        self.optimizer.step()
        # 4. EMA target
        with torch.no_grad():
            for p_t, p_s in zip(self.target.parameters(), self.student.parameters(), strict=True):
                p_t.mul_(self.ema_decay).add_(p_s.detach(), alpha=1 - self.ema_decay)
        return float(loss.detach())


class FrameEndpoints:
    """What the teacher's frame makes of coarse init images, for the student's frame to reproduce.

    Consistency distillation trains the student on one teacher step at a time from clean
    latents. The live frame is another task: from a coarse init image (the saliency),
    noised to the frame's strength, a 1-2 step LCM run under the frame's guidance. This
    holds, for a fixed set of init latents, conditionings and noises, the teacher's frame
    at many DDIM steps (its classifier-free guidance against the learned null, the
    evaluation's protocol) and the same init noised to the student's first timestep;
    :meth:`loss` runs the student's frame (:class:`Img2ImgFrame.denoise`, the code realtime
    runs) from there, with gradients, and returns the MSE to the teacher's latents.

    Parameters
    ----------
    teacher_frame, student_frame : Img2ImgFrame
        The teacher (DDIM, ``num_inference_steps`` >= 25, guidance) and the student (LCM)
        at one strength. The student frame's UNet is the one being trained.
    init_latents : (N, C, h, w) scaled latents of the init images
    embeds : (N, n, D) projected conditioning of each
    generator : seeds the noises; ``batch_size`` bounds the teacher's batches
    """

    def __init__(self, teacher_frame, student_frame, init_latents: torch.Tensor, embeds: torch.Tensor,
                 generator: torch.Generator, batch_size: int = 128) -> None:
        self.student_frame = student_frame
        t_teacher, t_student = teacher_frame.timesteps(), student_frame.timesteps()
        noise = torch.randn(init_latents.shape, generator=generator, dtype=init_latents.dtype)
        targets = []
        with torch.no_grad():
            for z, e, n in zip(init_latents.split(batch_size), embeds.split(batch_size), noise.split(batch_size),
                               strict=True):
                x = teacher_frame.scheduler.add_noise(z, n, t_teacher[:1].repeat(len(z)))
                targets.append(teacher_frame.denoise(x, e, t_teacher))
            self.noisy = student_frame.scheduler.add_noise(init_latents, noise, t_student[:1].repeat(len(noise)))
        self.targets = torch.cat(targets)
        self.embeds = embeds
        self.t_teacher, self.t_student = t_teacher, t_student

    def __len__(self) -> int:
        return len(self.targets)

    def loss(self, index: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE between the student's frame and the teacher's on the endpoints ``index``."""
        frame = self.student_frame
        out = frame.denoise(self.noisy[index], self.embeds[index], frame.timesteps(), generator)
        return F.mse_loss(out.float(), self.targets[index].float())

    @torch.no_grad()
    def distance(self, index: torch.Tensor | None = None, seed: int = 0) -> float:
        """The same MSE without gradients (a held-out measure before and after training)."""
        index = torch.arange(len(self)) if index is None else index
        return float(self.loss(index, torch.Generator().manual_seed(seed)))


# --------------------------------------------------------------------------- low-level latent path


@dataclass
class FitResult:
    losses: list[float]


def train_brain_to_latent(
    model: torch.nn.Module,
    eeg: torch.Tensor,
    latents: torch.Tensor,
    *,
    n_epochs: int = 50,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Regress EEG windows (N, n_channels, n_times) onto scaled VAE latents (N, C, h, w) (MSE)."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for epoch in range(n_epochs):
        model.train()
        total, n = 0.0, 0
        for idx in torch.randperm(len(eeg), generator=g).split(batch_size):
            loss = F.mse_loss(model(eeg[idx]), latents[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        losses.append(total / n)
        if progress is not None:
            progress(epoch, losses[-1])
    model.eval()
    return FitResult(losses)


# --------------------------------------------------------------------------- voting encoder


def contrastive_step(
    encoder: ImageEncoder,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    class_pooled: torch.Tensor,
    temperature: float = 0.07,
) -> float:
    """CLIP-style step: images (B, 3, S, S) against all K class targets (K, W), cross-entropy on labels."""
    encoder.train()
    emb = encoder(images)
    logits = emb @ F.normalize(class_pooled, dim=-1).T / temperature
    loss = F.cross_entropy(logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train_image_encoder(
    encoder: ImageEncoder,
    images: torch.Tensor,
    labels: torch.Tensor,
    class_pooled: torch.Tensor,
    *,
    n_epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> FitResult:
    """Train the voting image encoder contrastively to the twin's class targets.

    On real data the image encoder is CLIP's; the twin has no CLIP, so this small
    encoder is trained to map each image to its class's pooled target.
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(encoder.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    for _ in range(n_epochs):
        total, n = 0.0, 0
        for idx in torch.randperm(len(images), generator=g).split(batch_size):
            x = images[idx] if augment is None else augment(images[idx], g)
            total += contrastive_step(encoder, opt, x, labels[idx], class_pooled) * len(idx)
            n += len(idx)
        losses.append(total / n)
    encoder.eval()
    return FitResult(losses)


def iterate_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterable[torch.Tensor]:
    """Shuffled index batches over ``n`` items, forever."""
    while True:
        yield from torch.randperm(n, generator=generator).split(batch_size)

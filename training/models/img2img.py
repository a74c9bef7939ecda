"""The inference-time frame: EEG-conditioned img2img (NeuroImagen's combination step).

One frame turns a saliency image and the sample-level conditioning into a
reconstruction::

    saliency (B, 3, S, S) in [0, 1]
      -> resize to (H, W)                        (bilinear, antialiased)
      -> VAE / TAESD encode, x scaling_factor    (AutoencoderKL or AutoencoderTiny)
      -> add noise at strength s                 (scheduler.add_noise at the first kept timestep)
      -> denoise with the UNet                   (conditioning = prompt_embeds)
      -> decode                                  -> (B, 3, H, W) in [0, 1]

The steps are those of diffusers' ``StableDiffusionImg2ImgPipeline`` (and, for
consistency schedulers such as ``LCMScheduler``, of
``LatentConsistencyModelImg2ImgPipeline``), run on the components directly so
that realtime and export share this code and no pipeline object is built per
frame. The tests compare the frame with those pipelines, same components,
scheduler, seed and steps.

The conditioning is the semantic extractor's ``tokens`` (B, n_tokens, width),
mapped to the UNet's ``cross_attention_dim`` by a learned
:class:`ConditioningProjection`, so a tiny UNet can take the twin's 768-wide
targets. Classifier-free guidance is off by default (``guidance_scale`` 1: there
is no text encoder); with a learned null conditioning (trained by dropping the
conditioning for 10 % of samples) it can be turned on.

Only torch and diffusers' model/scheduler classes are imported here.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    ConfigMixin,
    ModelMixin,
    SchedulerMixin,
    UNet2DConditionModel,
)
from diffusers.configuration_utils import register_to_config

__all__ = [
    "ConditioningProjection",
    "Img2ImgFrame",
    "guidance_scale_embedding",
    "load_autoencoder",
    "load_scheduler",
    "load_unet",
    "vae_scale_factor",
]

Autoencoder = AutoencoderKL | AutoencoderTiny


class ConditioningProjection(ModelMixin, ConfigMixin):
    """Map extractor tokens (B, n_tokens, in_width) to the UNet's cross-attention width.

    Parameters
    ----------
    in_width : int
        Width of the extractor's tokens (768 for the twin's targets and CLIP-L).
    out_width : int
        The UNet's ``cross_attention_dim``.
    n_tokens : int
        Tokens per sample (77); the learned null conditioning has this length.
    learned_null : bool
        Hold a learned null conditioning (n_tokens, out_width) for classifier-free
        guidance; trained by replacing the conditioning of ~10 % of samples with it.
    identity_init : bool
        With ``in_width == out_width``: start as the identity (an SD UNet already
        speaks the extractor's 768-wide CLIP space), else a scaled random matrix.

    Notes
    -----
    A LayerNorm-free linear map: the extractor's tokens are trained into the
    target space already; the projection only changes width.
    """

    @register_to_config
    def __init__(
        self,
        in_width: int = 768,
        out_width: int = 768,
        n_tokens: int = 77,
        learned_null: bool = False,
        identity_init: bool = True,
    ) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(in_width, out_width)
        if identity_init and in_width == out_width:
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(out_width))
                self.proj.bias.zero_()
        self.null_tokens = (
            torch.nn.Parameter(torch.zeros(n_tokens, out_width)) if learned_null else None
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, n_tokens, in_width) -> prompt_embeds (B, n_tokens, out_width)."""
        return self.proj(tokens)

    def null_embeds(self, batch_size: int) -> torch.Tensor:
        """The learned null conditioning, (batch_size, n_tokens, out_width)."""
        if self.null_tokens is None:
            raise ValueError(
                "this ConditioningProjection has no learned null conditioning (learned_null=False): "
                "classifier-free guidance needs one"
            )
        return self.null_tokens.unsqueeze(0).expand(batch_size, -1, -1)

    def drop(self, embeds: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Training: replace each sample's conditioning by the null one with probability ``p``."""
        if self.null_tokens is None or p <= 0:
            return embeds
        keep = torch.rand(embeds.shape[0], generator=generator, device=embeds.device) >= p
        null = self.null_embeds(embeds.shape[0]).to(embeds.dtype)
        return torch.where(keep[:, None, None], embeds, null)


def guidance_scale_embedding(w: torch.Tensor, embedding_dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embedding of the guidance weight (LCM's ``w`` conditioning), (B, embedding_dim).

    The same function as diffusers' pipelines' ``get_guidance_scale_embedding``.
    """
    w = w * 1000.0
    half_dim = embedding_dim // 2
    emb = math.log(10000.0) / (half_dim - 1)
    emb = torch.exp(torch.arange(half_dim, dtype=dtype) * -emb)
    emb = w.to(dtype)[:, None] * emb[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    if embedding_dim % 2 == 1:
        emb = F.pad(emb, (0, 1))
    return emb


def vae_scale_factor(vae: Autoencoder) -> int:
    """Pixels per latent cell: 2 ** (number of down-sampling stages)."""
    if isinstance(vae, AutoencoderTiny):
        return 2 ** (len(vae.config.encoder_block_out_channels) - 1)
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _consistency_scheduler(scheduler: SchedulerMixin) -> bool:
    """LCM-style schedulers take ``strength`` themselves and return the denoised sample."""
    return "strength" in inspect.signature(scheduler.set_timesteps).parameters


class Img2ImgFrame:
    """One EEG-conditioned img2img frame: saliency + conditioning -> reconstruction.

    Parameters
    ----------
    unet : UNet2DConditionModel
        Epsilon or v-prediction (the scheduler's ``prediction_type`` says which).
    vae : AutoencoderKL | AutoencoderTiny
    scheduler : any diffusers scheduler (DDIM, Euler, DPM-Solver, LCM, ...)
        Used in place; give each frame its own scheduler instance.
    projection : ConditioningProjection | None
        None: the conditioning passed in is already ``cross_attention_dim`` wide.
    strength : float in (0, 1]
        How far into the noise schedule the saliency latent is pushed.
    num_inference_steps : int
        Steps of the full schedule; ``int(steps * strength)`` of them run (LCM: the
        scheduler decides from ``strength``).
    guidance_scale : float
        1: no guidance (default). > 1 with a plain UNet: classifier-free guidance against
        the projection's learned null conditioning. With a UNet that has
        ``time_cond_proj_dim`` (an LCM student) the scale is embedded instead, as LCM does.
    image_size : (H, W) | int | None
        Resolution the saliency is resized to before encoding (None: keep its size,
        rounded down to a multiple of the VAE's scale factor, as diffusers does).
    encode_mode : "sample" | "mode"
        AutoencoderKL: draw from the latent distribution (as the diffusers pipelines do)
        or take its mean (deterministic). AutoencoderTiny has one latent either way.
    seed : int
        Seed of the frame's own generator, used when a call passes none.
    device, dtype : where the frame runs (default: the UNet's).

    Notes
    -----
    Threading: one frame is used by one thread (the inference worker); the scheduler,
    the generator and the noise buffers are per-frame state.

    The noise is drawn into a buffer allocated once per latent shape. The scheduler's
    ``set_timesteps`` runs every call: it resets the scheduler's step index (and the
    history of multistep schedulers) and costs microseconds.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: Autoencoder,
        scheduler: SchedulerMixin,
        projection: ConditioningProjection | None = None,
        *,
        strength: float = 0.6,
        num_inference_steps: int = 4,
        guidance_scale: float = 1.0,
        image_size: int | Sequence[int] | None = None,
        encode_mode: Literal["sample", "mode"] = "mode",
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if encode_mode not in ("sample", "mode"):
            raise ValueError(f"encode_mode must be 'sample' or 'mode', got {encode_mode!r}")
        self.unet, self.vae, self.scheduler, self.projection = unet, vae, scheduler, projection
        self.device = torch.device(device) if device is not None else unet.device
        self.dtype = dtype if dtype is not None else unet.dtype
        for module in (unet, vae, projection):
            if module is not None:
                # casting only when it changes something: diffusers warns on every .to(dtype=...)
                # (it checks for the keyword, so dtype=None warns too)
                if dtype is not None and module.dtype != dtype:
                    module.to(dtype=dtype)
                module.to(device=self.device).eval().requires_grad_(False)
        self.strength = float(strength)
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.image_size = tuple(image_size) if image_size is not None else None
        self.encode_mode = encode_mode
        self.scale_factor = vae_scale_factor(vae)
        self.consistency = _consistency_scheduler(scheduler)
        self.time_cond_dim = unet.config.time_cond_proj_dim
        cross = unet.config.cross_attention_dim
        self.cross_attention_dim = cross[0] if isinstance(cross, list | tuple) else cross
        if projection is not None and projection.config.out_width != self.cross_attention_dim:
            raise ValueError(
                f"projection out_width {projection.config.out_width} != UNet cross_attention_dim "
                f"{self.cross_attention_dim}"
            )
        if self.do_classifier_free_guidance and (projection is None or projection.null_tokens is None):
            raise ValueError(
                f"guidance_scale {guidance_scale} > 1 needs a projection with a learned null "
                "conditioning (learned_null=True); there is no text encoder for an empty prompt"
            )
        step_params = set(inspect.signature(scheduler.step).parameters)
        self._step_takes_generator = "generator" in step_params
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self._noise: dict[tuple[Any, ...], torch.Tensor] = {}
        self._w_embedding: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------------ pieces

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self.guidance_scale > 1.0 and self.time_cond_dim is None

    def output_size(self, saliency_hw: Sequence[int]) -> tuple[int, int]:
        """(H, W) of the encoded image: ``image_size`` or the input's, a multiple of the scale factor."""
        h, w = self.image_size or tuple(saliency_hw)
        f = self.scale_factor
        return (h // f) * f, (w // f) * f

    def preprocess(self, saliency: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [0, 1] -> (B, 3, H, W) in [-1, 1] at the encoding resolution."""
        if saliency.ndim != 4 or saliency.shape[1] != 3:
            raise ValueError(f"saliency must be (B, 3, S, S), got {tuple(saliency.shape)}")
        image = saliency.to(device=self.device, dtype=self.dtype)
        size = self.output_size(image.shape[-2:])
        if tuple(image.shape[-2:]) != size:
            image = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
        return image * 2.0 - 1.0

    def encode(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> scaled latents (B, C, H/f, W/f)."""
        out = self.vae.encode(image)
        if hasattr(out, "latent_dist"):
            dist = out.latent_dist
            latents = dist.sample(generator) if self.encode_mode == "sample" else dist.mode()
        else:
            latents = out.latents
        return latents * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> (B, 3, H, W) float in [0, 1]."""
        image = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return (image / 2 + 0.5).clamp(0, 1)

    def conditioning(self, tokens: torch.Tensor) -> torch.Tensor:
        """Extractor tokens (B, n_tokens, width) -> prompt_embeds (B, n_tokens, cross_attention_dim)."""
        tokens = tokens.to(device=self.device, dtype=self.dtype)
        embeds = self.projection(tokens) if self.projection is not None else tokens
        if embeds.shape[-1] != self.cross_attention_dim:
            raise ValueError(
                f"conditioning width {embeds.shape[-1]} != UNet cross_attention_dim "
                f"{self.cross_attention_dim} (add a ConditioningProjection)"
            )
        return embeds

    def timesteps(self, strength: float | None = None) -> torch.Tensor:
        """Set the scheduler up for one frame; return the timesteps that run.

        As the pipelines do: the full schedule of ``num_inference_steps``, of which the last
        ``int(steps * strength)`` run (consistency schedulers get ``strength`` themselves).
        """
        strength = self.strength if strength is None else strength
        n = self.num_inference_steps
        if self.consistency:
            self.scheduler.set_timesteps(n, device=self.device, strength=strength)
            return self.scheduler.timesteps
        self.scheduler.set_timesteps(n, device=self.device)
        init_timestep = min(int(n * strength), n)
        t_start = max(n - init_timestep, 0)
        order = self.scheduler.order
        timesteps = self.scheduler.timesteps[t_start * order:]
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(t_start * order)
        if len(timesteps) == 0:
            raise ValueError(
                f"strength {strength} x {n} steps runs no denoising step; raise either"
            )
        return timesteps

    def _noise_like(self, latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        key = (tuple(latents.shape), latents.dtype, latents.device)
        buf = self._noise.get(key)
        if buf is None:
            buf = self._noise[key] = torch.empty(key[0], dtype=latents.dtype, device=latents.device)
        return torch.randn(key[0], generator=generator, dtype=latents.dtype, device=latents.device, out=buf)

    def _timestep_cond(self, batch_size: int) -> torch.Tensor | None:
        if self.time_cond_dim is None:
            return None
        emb = self._w_embedding.get(batch_size)
        if emb is None:
            w = torch.tensor(self.guidance_scale - 1).repeat(batch_size)
            emb = guidance_scale_embedding(w, self.time_cond_dim).to(device=self.device, dtype=self.dtype)
            self._w_embedding[batch_size] = emb
        return emb

    def denoise(
        self,
        latents: torch.Tensor,
        embeds: torch.Tensor,
        timesteps: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Run the kept timesteps from noisy ``latents`` under ``embeds``; return clean latents."""
        batch_size = latents.shape[0]
        cfg = self.do_classifier_free_guidance
        if cfg:
            null = self.projection.null_embeds(batch_size).to(embeds.dtype)
            embeds = torch.cat([null, embeds])
        timestep_cond = self._timestep_cond(batch_size)
        step_kwargs = {"generator": generator} if self._step_takes_generator else {}
        denoised = latents
        for t in timesteps:
            model_input = torch.cat([latents] * 2) if cfg else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            pred = self.unet(
                model_input, t, encoder_hidden_states=embeds, timestep_cond=timestep_cond, return_dict=False
            )[0]
            if cfg:
                uncond, cond = pred.chunk(2)
                pred = uncond + self.guidance_scale * (cond - uncond)
            out = self.scheduler.step(pred, t, latents, **step_kwargs, return_dict=True)
            latents = out.prev_sample
            if self.consistency:
                denoised = out.denoised
        return denoised if self.consistency else latents

    # ------------------------------------------------------------------ the frame

    @torch.no_grad()
    def __call__(
        self,
        saliency: torch.Tensor,
        tokens: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        strength: float | None = None,
        output: Literal["image", "latent"] = "image",
    ) -> torch.Tensor:
        """Reconstruct one batch.

        Parameters
        ----------
        saliency : torch.Tensor, float32 (B, 3, S, S) in [0, 1]
            The saliency image (or any init image: the low-level latent path's decode).
        tokens : torch.Tensor, float32 (B, n_tokens, width)
            The semantic extractor's tokens (projected here to ``cross_attention_dim``).
        generator : torch.Generator | None
            Randomness of the encode sample, the noise and stochastic schedulers
            (default: the frame's own generator).
        strength : float | None
            Override the frame's strength for this call.
        output : "image" | "latent"

        Returns
        -------
        torch.Tensor
            float32 (B, 3, H, W) in [0, 1], or the clean latents (B, C, H/f, W/f).
        """
        if tokens.shape[0] != saliency.shape[0]:
            raise ValueError(f"batch sizes differ: saliency {saliency.shape[0]}, tokens {tokens.shape[0]}")
        generator = self.generator if generator is None else generator
        # 1. conditioning (before the image: the pipelines draw no randomness for it)
        embeds = self.conditioning(tokens)
        # 2. timesteps for this strength; the first kept one sets the noise level
        timesteps = self.timesteps(strength)
        # 3. resize, encode, add noise at that level
        latents = self.encode(self.preprocess(saliency), generator)
        noise = self._noise_like(latents, generator)
        latents = self.scheduler.add_noise(latents, noise, timesteps[:1].repeat(latents.shape[0]))
        # 4. denoise under the conditioning, 5. decode
        latents = self.denoise(latents, embeds, timesteps, generator)
        return latents if output == "latent" else self.decode(latents)


# --------------------------------------------------------------------------- loading


def _load_kwargs(local_files_only: bool, subfolder: str | None) -> dict[str, Any]:
    kw: dict[str, Any] = {"local_files_only": local_files_only}
    if subfolder:
        kw["subfolder"] = subfolder
    return kw


def load_unet(path: str | Path, *, subfolder: str | None = "unet", local_files_only: bool = True) -> UNet2DConditionModel:
    """The UNet of an SD 1.x / 2.x / Turbo checkpoint: a local folder or a hub id (from the local cache).

    Third-party checkpoints load with diffusers' ``from_pretrained`` (their configs carry keys
    of other diffusers versions); our own folders load strictly with ``format.load_model``.
    """
    return UNet2DConditionModel.from_pretrained(str(path), **_load_kwargs(local_files_only, subfolder)).eval()


def load_autoencoder(
    path: str | Path, *, subfolder: str | None = "vae", local_files_only: bool = True
) -> Autoencoder:
    """An AutoencoderKL (SD's VAE) or AutoencoderTiny (TAESD), chosen by the folder's ``_class_name``."""
    from diffusers.configuration_utils import ConfigMixin as _Config

    config = _Config.load_config(str(path), **_load_kwargs(local_files_only, subfolder))
    cls = AutoencoderTiny if config.get("_class_name") == "AutoencoderTiny" else AutoencoderKL
    return cls.from_pretrained(str(path), **_load_kwargs(local_files_only, subfolder)).eval()


def load_scheduler(
    path: str | Path, *, subfolder: str | None = "scheduler", cls: str | None = None, local_files_only: bool = True
) -> SchedulerMixin:
    """A scheduler from its ``scheduler_config.json``; ``cls`` swaps in another diffusers scheduler class.

    E.g. ``cls="LCMScheduler"`` on an SD folder gives LCM's timesteps with SD's betas.
    """
    import diffusers

    # any scheduler class reads the file (scheduler_config.json) as a plain dict
    config = diffusers.DDPMScheduler.load_config(str(path), **_load_kwargs(local_files_only, subfolder))
    name = cls or config.get("_class_name")
    sched_cls = getattr(diffusers, str(name), None)
    if sched_cls is None or not (isinstance(sched_cls, type) and issubclass(sched_cls, SchedulerMixin)):
        raise ValueError(f"{path}: {name!r} is not a diffusers scheduler class")
    return sched_cls.from_config(config)

"""The img2img frame around exported networks (shared by the onnxruntime and TensorRT backends)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from neuroimagen.training.models.bundle import ArtifactEntry, FrameSettings
from neuroimagen.training.models.img2img import Img2ImgFrame, _consistency_scheduler

#: the parts an exported frame needs (projection only when the bundle has one)
FRAME_PARTS = ("vae_encoder", "unet", "vae_decoder")
EXTRACTOR_PARTS = ("pixel_encoder", "saliency", "semantic")


def exported_parts(manifest: Any) -> list[str]:
    """The parts an exported frame needs: extractors, VAE halves, UNet (+ the projection when the generator has one)."""
    return [*EXTRACTOR_PARTS, *FRAME_PARTS] + (["projection"] if manifest.generator and
                                               manifest.generator.projection else [])


def onnx_gaps(manifest: Any, entries: Mapping[str, ArtifactEntry], precision: str) -> tuple[list[str], list[str]]:
    """What keeps a bundle's ONNX graphs (``entries``, by part) from running the frame at ``precision``.

    Returns ``(missing, other_precisions)``: the needed parts with no graph, and the
    precisions of the graphs present that differ from ``precision`` (sorted); both
    empty when the graphs serve the frame.
    """
    needed = exported_parts(manifest)
    missing = [p for p in needed if p not in entries]
    return missing, sorted({entries[p].precision for p in needed if p in entries} - {precision})

# one exported network: {input name: array} -> {output name: array} (arrays may be reused buffers)
Runner = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


class _UNet:
    """The UNet call the frame makes, on an exported network."""

    def __init__(self, run: Runner, with_cond: bool) -> None:
        self._run, self._with_cond = run, with_cond

    def __call__(self, sample: torch.Tensor, t: torch.Tensor, *, encoder_hidden_states: torch.Tensor,
                 timestep_cond: torch.Tensor | None = None, return_dict: bool = False) -> tuple[torch.Tensor]:
        feeds = {
            "sample": sample.numpy(),
            "timestep": np.asarray(t, dtype=np.float32).reshape(1),
            "encoder_hidden_states": encoder_hidden_states.numpy(),
        }
        if self._with_cond:
            feeds["timestep_cond"] = timestep_cond.numpy()
        return (torch.from_numpy(self._run(feeds)["noise_pred"]),)


class ExportedFrame(Img2ImgFrame):
    """:class:`Img2ImgFrame` whose projection, VAE and UNet are exported networks (CPU tensors).

    The timesteps, noise, scheduler steps and guidance embedding are the parent's code,
    unchanged; :meth:`encode`, :meth:`decode` and :meth:`conditioning` call the runners.

    Parameters
    ----------
    runners : {part: Runner}
        ``vae_encoder``, ``unet``, ``vae_decoder`` and, when ``settings.projection`` is set,
        ``projection``.
    entries : {part: ArtifactEntry}
        Their manifest entries (shapes, the VAE's scaling factor).
    scheduler : the bundle's scheduler
    settings : the bundle's FrameSettings
    """

    def __init__(self, runners: Mapping[str, Runner], entries: Mapping[str, ArtifactEntry],
                 scheduler: Any, settings: FrameSettings) -> None:
        # no super().__init__(): it would place torch modules; the exported networks replace them
        if settings.guidance_scale > 1 and "timestep_cond" not in entries["unet"].inputs:
            raise ValueError("classifier-free guidance is not exported (the learned null conditioning "
                             "is not a graph); export a bundle with guidance_scale 1 or an LCM student")
        self._runners = dict(runners)
        self.unet = _UNet(runners["unet"], "timestep_cond" in entries["unet"].inputs)
        self.vae = self.projection = None
        self.scheduler = scheduler
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.strength = float(settings.strength)
        self.num_inference_steps = int(settings.num_inference_steps)
        self.guidance_scale = float(settings.guidance_scale)
        size = settings.image_size
        self.image_size = (size, size) if size is not None else None
        self.encode_mode = settings.encode_mode
        enc = entries["vae_encoder"]
        self.scaling_factor = float(enc.attributes["scaling_factor"])
        self._kl = enc.attributes.get("kind") == "kl"
        self.scale_factor = enc.inputs["image"].shape[-1] // enc.outputs["latent_mean"].shape[-1]
        self.consistency = _consistency_scheduler(scheduler)
        cond = entries["unet"].inputs.get("timestep_cond")
        self.time_cond_dim = cond.shape[-1] if cond is not None else None
        self.cross_attention_dim = entries["unet"].inputs["encoder_hidden_states"].shape[-1]
        self._has_projection = settings.projection is not None
        import inspect

        self._step_takes_generator = "generator" in inspect.signature(scheduler.step).parameters
        self.generator = torch.Generator().manual_seed(settings.seed)
        self._noise: dict[tuple[Any, ...], torch.Tensor] = {}
        self._w_embedding: dict[int, torch.Tensor] = {}

    def encode(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        out = self._runners["vae_encoder"]({"image": image.contiguous().numpy()})
        mean = torch.from_numpy(out["latent_mean"])
        if self._kl and self.encode_mode == "sample":
            # DiagonalGaussianDistribution.sample: mean + std * randn (same generator, same draw)
            std = torch.from_numpy(out["latent_std"])
            mean = mean + std * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        scaled = (latents / self.scaling_factor).contiguous().numpy()
        return torch.from_numpy(self._runners["vae_decoder"]({"latents": scaled})["image"])

    def conditioning(self, tokens: torch.Tensor) -> torch.Tensor:
        if self._has_projection:
            embeds = self._runners["projection"]({"tokens": tokens.contiguous().numpy()})["prompt_embeds"]
            embeds = torch.from_numpy(embeds.copy())  # the buffer is reused by the next call
        else:
            embeds = tokens
        if embeds.shape[-1] != self.cross_attention_dim:
            raise ValueError(f"conditioning width {embeds.shape[-1]} != UNet cross_attention_dim "
                             f"{self.cross_attention_dim}")
        return embeds


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (torch.nn.functional.normalize, eps 1e-12), float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

"""The four extractor stages (``neuroimagen train mae|contrastive|saliency|semantic``).

Each stage trains on a twin split by image (``block_splits_by_image_all.pth``):
``train`` (or ``train+val``) to fit, ``val`` for the metrics logged during and
after training; the ``test`` images stay unseen (the measurements use them).
The fMRI variants (``modality="fmri"``) train the same way on the twin's
synthetic voxels.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..config import (
    ContrastiveStageConfig,
    MAEStageConfig,
    SaliencyStageConfig,
    SemanticStageConfig,
)
from .common import RunContext, StepContext, iter_minibatches, make_lr_lambda
from .data import TwinTrials, load_images, load_trials, load_twin_targets
from .losses import diff_augment, group_spread, info_nce, ssim_loss, triplet_semi_hard

__all__ = ["ContrastiveStage", "MAEStage", "SaliencyStage", "SemanticStage", "build_stage"]

logger = logging.getLogger(__name__)

EVAL_BATCH = 256


def _optimizer(params, lr: float, weight_decay: float):
    return torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr, weight_decay=weight_decay)


def _scheduler(opt, cfg):
    return torch.optim.lr_scheduler.LambdaLR(opt, make_lr_lambda(cfg))


def _train_parts(data_cfg) -> tuple[str, ...]:
    return ("train", "val") if data_cfg.train_on == "train+val" else ("train",)


@torch.no_grad()
def _batched(fn, x: torch.Tensor, device) -> list:
    outs = [fn(x[s].to(device)) for s in iter_minibatches(len(x), EVAL_BATCH)]
    if isinstance(outs[0], tuple):
        return [torch.cat([o[k].float().cpu() for o in outs]) for k in range(len(outs[0]))]
    return [torch.cat([o.float().cpu() for o in outs])]


class _Base:
    name = ""

    def __init__(self, config, twin_dir: str | Path, modality: str = "eeg") -> None:
        self.config = config
        self.twin_dir = Path(twin_dir)
        self.modality = modality
        self.train: TwinTrials | None = None
        self.val: TwinTrials | None = None

    def _load(self, train_parts: tuple[str, ...] | None = None) -> None:
        d = self.config.data
        kw = {"split_index": d.split_index, "resample_n_times": d.resample_n_times, "modality": self.modality}
        self.train = load_trials(self.twin_dir, train_parts or _train_parts(d), **kw)
        self.val = load_trials(self.twin_dir, ("val",), **kw)

    def n_train(self) -> int:
        return len(self.train)

    def _input_shape(self) -> dict[str, int]:
        if self.modality == "fmri":
            return {"n_voxels": int(self.train.x.shape[1])}
        return {"n_channels": int(self.train.x.shape[1]), "n_times": int(self.train.x.shape[2])}

    def _check_shape(self, model_cfg) -> dict[str, Any]:
        cfg = model_cfg.model_dump()
        shape = self._input_shape()
        for k in ("n_channels", "n_times"):
            if k in shape and cfg.get(k) != shape[k]:
                logger.info("%s: %s set to the data's %d (preset had %s)", self.name, k, shape[k], cfg.get(k))
                cfg[k] = shape[k]
        return cfg

    def save_samples(self, folder: Path, step: int) -> None:
        return None

    def _unwrap(self, model):
        return self.acc.unwrap_model(model)


# --------------------------------------------------------------------------- MAE


class MAEStage(_Base):
    """Masked signal pretraining on windows without labels (train part; test too if configured)."""

    name = "mae"

    def __init__(self, config: MAEStageConfig, twin_dir, modality: str = "eeg") -> None:
        if modality != "eeg":
            raise ValueError("the MAE stage pretrains on EEG windows only")
        super().__init__(config, twin_dir, modality)

    def setup(self, ctx: RunContext) -> None:
        from neuroimagen.training.models.mae import MaskedEEGAutoencoder

        parts = _train_parts(self.config.data)
        if self.config.data.include_test_unlabelled:
            parts = (*parts, "test")
        self._load(parts)
        self.acc = ctx.accelerator
        self.mean_window = self.train.x.mean(dim=0)  # the mean predictor's output
        model = MaskedEEGAutoencoder(**self._check_shape(self.config.model))
        t = self.config.trainer
        opt = _optimizer(model.parameters(), t.lr, t.weight_decay)
        self.model, self.opt, self.sched = self.acc.prepare(model, opt, _scheduler(opt, t))

    def batch(self, idx, device):
        return {"eeg": self.train.x[idx].to(device)}

    def checkpointed(self):
        return [self.model, self.opt, self.sched]

    def accumulate_models(self):
        return [self.model]

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        out = self.model(batch["eeg"], generator=ctx.generator)
        ctx.backward_and_step(out.loss, self.opt, [self.model], self.sched)
        return {"loss": out.loss.item()}

    def evaluate(self) -> dict[str, float]:
        return mae_heldout_loss(self._unwrap(self.model), self.val.x, self.mean_window, self.acc.device)

    def export(self, folder: Path) -> dict[str, Path]:
        from neuroimagen.training.models.format import save_model

        return {"mae": save_model(self._unwrap(self.model), folder / "mae")}


def interpolate_masked(eeg: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Linear interpolation in time of each channel across the masked samples.

    eeg (B, C, T); visible (B, T) bool -> (B, C, T): visible samples kept, masked ones the straight
    line between the nearest visible samples before and after (held flat at the window's ends).
    """
    b, c, t = eeg.shape
    idx = torch.arange(t, device=eeg.device).expand(b, t)
    prev = torch.where(visible, idx, torch.full_like(idx, -1)).cummax(dim=1).values
    nxt = torch.where(visible, idx, torch.full_like(idx, t)).flip(1).cummin(dim=1).values.flip(1)
    prev, nxt = torch.where(prev < 0, nxt, prev), torch.where(nxt >= t, prev, nxt)
    w = ((idx - prev) / (nxt - prev).clamp_min(1)).to(eeg.dtype)[:, None]
    gather = lambda i: eeg.gather(2, i[:, None].expand(b, c, t))  # noqa: E731
    return gather(prev) * (1 - w) + gather(nxt) * w


@torch.no_grad()
def mae_heldout_loss(model, x: torch.Tensor, mean_window: torch.Tensor, device, seed: int = 1234) -> dict:
    """Masked-patch MSE of the model and of two baselines, on the same seeded masks.

    The mean predictor outputs the training set's mean window for every masked patch; the
    interpolation predictor adds to it the linear interpolation in time of each channel's
    residual (window - mean) from the visible samples around each masked span.
    """
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    tot_m = tot_b = tot_i = n = 0.0
    mean_w = mean_window[None].to(device)
    mean_p = model.patchify(mean_w)
    p = model.config.patch_size
    for s in iter_minibatches(len(x), EVAL_BATCH):
        eeg = x[s].to(device)
        out = model(eeg, generator=gen)
        target = model.patchify(eeg)
        base = ((mean_p - target) ** 2).mean(-1)
        visible = (out.mask == 0).repeat_interleave(p, dim=1)
        interp = model.patchify(mean_w + interpolate_masked(eeg - mean_w, visible))
        k = out.mask.sum()
        tot_m += float(out.loss) * float(k)
        tot_b += float((base * out.mask).sum())
        tot_i += float((((interp - target) ** 2).mean(-1) * out.mask).sum())
        n += float(k)
    return {"masked_mse": tot_m / n, "mean_predictor_mse": tot_b / n, "ratio": tot_m / tot_b,
            "interp_predictor_mse": tot_i / n, "ratio_to_interp": tot_m / tot_i}


# --------------------------------------------------------------------------- contrastive


def _group_labels(t: TwinTrials, keys: list[str]) -> torch.Tensor:
    """One integer per trial that is equal exactly when all ``keys`` labels are."""
    cols = {"class": t.label, "hemifield": t.hemifield, "quadrant": t.quadrant, "image": t.image_index}
    g = torch.zeros(len(t), dtype=torch.long)
    for k in keys:
        c = cols[k]
        g = g * (int(c.max()) + 1) + c
    return g


class ContrastiveStage(_Base):
    """The pixel encoder (triplet, semi-hard, + group spread) or NICE (InfoNCE vs the class embeddings)."""

    name = "contrastive"

    def __init__(self, config: ContrastiveStageConfig, twin_dir, modality: str = "eeg") -> None:
        if modality == "fmri" and config.encoder != "pixel":
            raise ValueError("the fMRI contrastive variant is the pixel encoder (encoder: pixel)")
        super().__init__(config, twin_dir, modality)

    def setup(self, ctx: RunContext) -> None:
        from neuroimagen.training.models.nice import NICEEncoder
        from neuroimagen.training.models.pixel import FMRIPixelEncoder, PixelEncoder

        self._load()
        self.acc = ctx.accelerator
        c = self.config
        if self.modality == "fmri":
            model = FMRIPixelEncoder(**self._input_shape(), **c.fmri.model_dump())
            self.model_name = "fmri_pixel_encoder"
        elif c.encoder == "pixel":
            model = PixelEncoder(**self._check_shape(c.pixel))
            self.model_name = "pixel_encoder"
        else:
            model = NICEEncoder(**self._check_shape(c.nice))
            self.model_name = "nice_encoder"
            self.targets = load_twin_targets(self.twin_dir)
            if model.config.proj_dim != self.targets.pooled.shape[1]:
                raise ValueError(f"nice.proj_dim={model.config.proj_dim} must equal the targets' width "
                                 f"{self.targets.pooled.shape[1]}")
        self.groups = _group_labels(self.train, c.loss.triplet_label)
        t = c.trainer
        opt = _optimizer(model.parameters(), t.lr, t.weight_decay)
        self.model, self.opt, self.sched = self.acc.prepare(model, opt, _scheduler(opt, t))

    def batch(self, idx, device):
        return {"x": self.train.x[idx].to(device), "group": self.groups[idx].to(device),
                "label": self.train.label[idx].to(device)}

    def checkpointed(self):
        return [self.model, self.opt, self.sched]

    def accumulate_models(self):
        return [self.model]

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        f = self.model(batch["x"])
        lc = self.config.loss
        if self.model_name == "nice_encoder":
            targets = self.targets.pooled.to(f.device)[batch["label"]]
            scale = self._unwrap(self.model).logit_scale
            loss = info_nce(f, targets, batch["label"], scale)
            ctx.backward_and_step(loss, self.opt, [self.model], self.sched)
            return {"loss": loss.item(), "temperature": float(1 / scale.detach().exp())}
        else:
            f_all, g_all, l_all = f, batch["group"], batch["label"]
            world = self.acc.num_processes
            if world > 1:
                # mining and the spread term see the global batch; the gathered copy carries no
                # gradient, so this process's own rows go back in, and the loss is scaled by the
                # world size because DDP averages (not sums) the per-process gradients
                r = self.acc.process_index
                f_all = self.acc.gather(f)
                f_all = torch.cat([f_all[: r * len(f)], f, f_all[(r + 1) * len(f):]])
                g_all, l_all = self.acc.gather(g_all), self.acc.gather(l_all)
            trip = triplet_semi_hard(f_all, g_all, lc.triplet_margin)
            spread = group_spread(f_all, l_all, lc.spread_t)
            loss = trip + lc.spread_weight * spread
            ctx.backward_and_step(loss * world, self.opt, [self.model], self.sched)
            return {"loss": loss.item(), "triplet": trip.item(), "spread": spread.item()}

    def evaluate(self) -> dict[str, float]:
        model = self._unwrap(self.model).eval()
        fv = _batched(model, self.val.x, self.acc.device)[0]
        if self.model_name == "nice_encoder":
            sims = F.normalize(fv, dim=-1) @ F.normalize(self.targets.pooled, dim=-1).T
            return {"top1": float((sims.argmax(1) == self.val.label).float().mean())}
        ft = _batched(model, self.train.x, self.acc.device)[0]
        out = {}
        for key, lab_t, lab_v in (("class", self.train.label, self.val.label),
                                  ("hemifield", self.train.hemifield, self.val.hemifield)):
            k = int(lab_t.max()) + 1
            cent = F.normalize(torch.zeros(k, ft.shape[1]).index_add_(0, lab_t, ft), dim=-1)
            out[f"{key}_centroid_acc"] = float(((fv @ cent.T).argmax(1) == lab_v).float().mean())
        return out

    def export(self, folder: Path) -> dict[str, Path]:
        from neuroimagen.training.models.format import save_model

        return {self.model_name: save_model(self._unwrap(self.model), folder / self.model_name)}


# --------------------------------------------------------------------------- saliency


class SaliencyStage(_Base):
    """The conditional GAN: pixel features -> coarse image (adversarial + SSIM + L1, DiffAugment)."""

    name = "saliency"

    def __init__(self, config: SaliencyStageConfig, twin_dir, encoder_path: str | Path | None,
                 modality: str = "eeg") -> None:
        super().__init__(config, twin_dir, modality)
        if config.features is not None:
            if encoder_path is not None:
                raise ValueError("this saliency preset fits its own pixel encoder (features: set); "
                                 "drop --encoder")
            if modality != "eeg" or not config.generator.linear_head:
                raise ValueError("the features pixel path needs EEG and generator.linear_head: true")
            if config.loss.encoder_lr_ratio > 0:
                raise ValueError("the features pixel encoder is fitted in closed form; set loss.encoder_lr_ratio=0")
        elif encoder_path is None:
            raise ValueError("the saliency stage needs --encoder (a pixel encoder model folder)")
        self.encoder_path = Path(encoder_path) if encoder_path is not None else None
        self.closed_form: dict | None = None

    def setup(self, ctx: RunContext) -> None:
        from neuroimagen.training.models.format import load_model
        from neuroimagen.training.models.pixel import FMRIPixelEncoder, PixelEncoder
        from neuroimagen.training.models.saliency import SaliencyDiscriminator, SaliencyGenerator

        self._load()
        self.acc = ctx.accelerator
        c = self.config
        size = c.generator.image_size
        self.train_images = load_images(self.twin_dir, self.train.images, size)
        self.val_images = load_images(self.twin_dir, self.val.images, size)
        if c.features is not None:
            encoder, gen = self._closed_form(size)
            feat_dim = encoder.config.feature_dim
        else:
            enc_cls = FMRIPixelEncoder if self.modality == "fmri" else PixelEncoder
            encoder = load_model(enc_cls, self.encoder_path)
            feat_dim = encoder.config.feature_dim
            gen = SaliencyGenerator(feature_dim=feat_dim, **c.generator.model_dump())
        disc = SaliencyDiscriminator(feature_dim=feat_dim, image_size=size, **c.discriminator.model_dump())
        t = c.trainer
        self.finetune = c.loss.encoder_lr_ratio > 0
        g_params = [{"params": list(gen.parameters()), "lr": t.lr}]
        if self.finetune:
            g_params.append({"params": list(encoder.parameters()), "lr": t.lr * c.loss.encoder_lr_ratio})
        else:
            encoder.requires_grad_(False)
            self.train_feats = _batched(encoder.eval(), self.train.x, "cpu")[0]
        opt_g = torch.optim.AdamW(g_params, betas=(0.5, 0.999), weight_decay=t.weight_decay)
        opt_d = torch.optim.AdamW(disc.parameters(), lr=t.lr * c.loss.d_lr_ratio, betas=(0.5, 0.999))
        lam = make_lr_lambda(t)
        sg = torch.optim.lr_scheduler.LambdaLR(opt_g, [lam] * len(g_params))
        sd = torch.optim.lr_scheduler.LambdaLR(opt_d, lam)
        if self.finetune:
            (self.encoder, self.gen, self.disc, self.opt_g, self.opt_d, self.sched_g,
             self.sched_d) = self.acc.prepare(encoder, gen, disc, opt_g, opt_d, sg, sd)
        else:
            self.encoder = encoder.to(self.acc.device)
            self.gen, self.disc, self.opt_g, self.opt_d, self.sched_g, self.sched_d = self.acc.prepare(
                gen, disc, opt_g, opt_d, sg, sd)

    def _closed_form(self, size: int):
        """A FeaturePixelEncoder + linear-head generator fitted in closed form; the val images pick alpha."""
        from neuroimagen.training.models.pixel import FeaturePixelEncoder
        from neuroimagen.training.models.saliency import SaliencyGenerator

        f = self.config.features
        # 1. principal components of the training images (each distinct image once)
        flat = self.train_images.double().reshape(len(self.train_images), -1)
        mean = flat.mean(0)
        r = min(f.n_components, len(flat) - 1)
        vt = torch.linalg.svd(flat - mean, full_matrices=False).Vh[:r]
        coefs = ((flat - mean) @ vt.T).float()[self.train.image_index]
        encoder = FeaturePixelEncoder(**self._input_shape(), bin_samples=f.bin_samples,
                                      log_variance=f.log_variance, feature_dim=r)
        gen = SaliencyGenerator(feature_dim=r, **self.config.generator.model_dump())
        gen.set_linear_basis(vt.float().reshape(r, 3, size, size), mean.float().reshape(3, size, size))
        # 2. ridge per penalty; keep the best on val (SSIM + PCC + hemifield accuracy: the three measures)
        best = None
        for alpha in f.ridge_alphas:
            encoder.fit_closed_form(self.train.x, coefs, alpha)
            m = self._image_metrics(encoder.eval(), gen.eval(), "cpu")
            logger.info("saliency closed form: alpha %g -> val %s", alpha, m)
            if best is None or _saliency_score(m) > _saliency_score(best[0]):
                best = (m, alpha, {k: v.clone() for k, v in encoder.state_dict().items()})
        encoder.load_state_dict(best[2])
        self.closed_form = {"metrics": best[0], "alpha": best[1],
                            "gen": {k: v.clone() for k, v in gen.state_dict().items()}}
        return encoder, gen

    def _image_metrics(self, enc, gen, device) -> dict[str, float]:
        from neuroimagen.training.eval.metrics import pcc, ssim
        from neuroimagen.training.eval.saliency import centroid_hemifield

        pred = _batched(lambda b: gen(enc(b)), self.val.x, device)[0]
        truth = self.val_images[self.val.image_index]
        return {"ssim": float(np.mean(ssim(pred, truth))), "pcc": float(np.nanmean(pcc(pred, truth))),
                "hemifield_acc": float(np.mean(centroid_hemifield(pred) == self.val.hemifield.numpy()))}

    def batch(self, idx, device):
        out = {"image": self.train_images[self.train.image_index[idx]].to(device)}
        if self.finetune:
            out["x"] = self.train.x[idx].to(device)
        else:
            out["features"] = self.train_feats[idx].to(device)
        return out

    def checkpointed(self):
        objs = [self.gen, self.disc, self.opt_g, self.opt_d, self.sched_g, self.sched_d]
        return [self.encoder, *objs] if self.finetune else objs

    def accumulate_models(self):
        return [self.encoder, self.gen, self.disc] if self.finetune else [self.gen, self.disc]

    def _noise(self, n: int, gen: torch.Generator) -> torch.Tensor | None:
        nd = self.config.generator.noise_dim
        return torch.randn(n, nd, generator=gen).to(self.acc.device) if nd else None

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        lc = self.config.loss
        real = batch["image"]
        feats = self.encoder(batch["x"]) if self.finetune else batch["features"]
        fake = self.gen(feats, self._noise(len(real), ctx.generator))

        def aug(img):
            return diff_augment(img, ctx.generator) if lc.diffaugment else img

        # 1. discriminator (hinge)
        d_loss = torch.tensor(0.0, device=real.device)
        if lc.adversarial_weight > 0:
            d_real = self.disc(aug(real), feats.detach())
            d_fake = self.disc(aug(fake.detach()), feats.detach())
            d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
            ctx.backward_and_step(d_loss, self.opt_d, [self.disc], self.sched_d)
        # 2. generator: adversarial + SSIM + L1 to the true stimulus
        adv = -self.disc(aug(fake), feats).mean() if lc.adversarial_weight > 0 else fake.sum() * 0
        s = ssim_loss(fake, real)
        l1 = (fake - real).abs().mean()
        g_loss = lc.adversarial_weight * adv + lc.ssim_weight * s + lc.l1_weight * l1
        models = [self.gen, self.encoder] if self.finetune else [self.gen]
        ctx.backward_and_step(g_loss, self.opt_g, models, self.sched_g)
        self.opt_d.zero_grad(set_to_none=True)  # the generator's pass left gradients in D
        return {"loss": g_loss.item(), "d_loss": d_loss.item(), "adv": adv.item(),
                "ssim": 1 - s.item(), "l1": l1.item()}

    def generate(self, x: torch.Tensor) -> torch.Tensor:
        """Saliency images (n, 3, S, S) of windows x (eval mode, zero noise), on the CPU."""
        enc = self._unwrap(self.encoder).eval()
        gen = self._unwrap(self.gen).eval()
        return _batched(lambda b: gen(enc(b)), x, self.acc.device)[0]

    def _keep_closed_form(self, m: dict[str, float]) -> bool:
        return _saliency_score(m) <= _saliency_score(self.closed_form["metrics"])

    def evaluate(self) -> dict[str, float]:
        out = self._image_metrics(self._unwrap(self.encoder).eval(), self._unwrap(self.gen).eval(), self.acc.device)
        if self.closed_form is not None:
            # the features path keeps the closed-form generator unless the GAN beat it on val
            out.update({f"closed_form_{k}": v for k, v in self.closed_form["metrics"].items()})
            out["closed_form_alpha"] = self.closed_form["alpha"]
            out["kept_closed_form"] = float(self._keep_closed_form(out))
        return out

    def save_samples(self, folder: Path, step: int) -> None:
        n = min(8, len(self.val))
        pred = self.generate(self.val.x[:n])
        truth = self.val_images[self.val.image_index[:n]]
        save_grid(torch.cat([truth, pred]), folder / f"step-{step:07d}.png", n_cols=n)

    def export(self, folder: Path) -> dict[str, Path]:
        from neuroimagen.training.models.format import save_model

        gen = self._unwrap(self.gen)
        if self.closed_form is not None:
            m = self._image_metrics(self._unwrap(self.encoder).eval(), gen.eval(), self.acc.device)
            if self._keep_closed_form(m):
                logger.info("saliency: keeping the closed-form generator (val %s; the GAN reached %s)",
                            self.closed_form["metrics"], m)
                import copy

                gen = copy.deepcopy(gen)
                gen.load_state_dict(self.closed_form["gen"])
        out = {"saliency_generator": save_model(gen, folder / "saliency_generator"),
               "saliency_discriminator": save_model(self._unwrap(self.disc), folder / "saliency_discriminator")}
        if self.closed_form is not None:
            out["pixel_encoder"] = save_model(self._unwrap(self.encoder), folder / "pixel_encoder")
        if self.finetune:
            name = "fmri_pixel_encoder" if self.modality == "fmri" else "pixel_encoder"
            out[name] = save_model(self._unwrap(self.encoder), folder / name)
        return out


def _saliency_score(m: dict[str, float]) -> float:
    """What the features path maximises on val: SSIM + PCC + hemifield accuracy."""
    return m["ssim"] + m["pcc"] + m["hemifield_acc"]


def save_grid(images: torch.Tensor, path: Path, n_cols: int) -> Path:
    """Images (n, 3, h, w) in [0, 1] as one PNG grid, ``n_cols`` per row."""
    from PIL import Image

    n, _, h, w = images.shape
    n_rows = -(-n // n_cols)
    grid = torch.ones(3, n_rows * h, n_cols * w)
    for i in range(n):
        r, c = divmod(i, n_cols)
        grid[:, r * h:(r + 1) * h, c * w:(c + 1) * w] = images[i].clamp(0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


# --------------------------------------------------------------------------- semantic


class SemanticStage(_Base):
    """EEG -> conditioning tokens + pooled: squared L2 to the class targets (+ CLIP-style InfoNCE)."""

    name = "semantic"

    def __init__(self, config: SemanticStageConfig, twin_dir, modality: str = "eeg",
                 init_mae: str | Path | None = None) -> None:
        if init_mae is not None and modality != "eeg":
            raise ValueError("--init-mae applies to the EEG semantic extractor only")
        super().__init__(config, twin_dir, modality)
        self.init_mae = Path(init_mae) if init_mae else None

    def setup(self, ctx: RunContext) -> None:
        from neuroimagen.training.models.semantic import FMRISemanticExtractor, SemanticExtractor

        self._load()
        self.acc = ctx.accelerator
        c = self.config
        self.targets = load_twin_targets(self.twin_dir, width=c.width, n_tokens=c.n_tokens, seed=c.trainer.seed)
        n_tok, width = self.targets.tokens.shape[1:]
        self.train_label = self.train.label
        if c.loss.shuffle_labels:
            g = torch.Generator().manual_seed(c.trainer.seed + 1)
            self.train_label = self.train.label[torch.randperm(len(self.train), generator=g)]
        self.closed_form: dict | None = None
        if self.modality == "fmri":
            model = FMRISemanticExtractor(**self._input_shape(), n_tokens=n_tok, width=width,
                                          **c.fmri.model_dump())
            self.model_name = "fmri_semantic_extractor"
        elif c.features is not None:
            if self.init_mae is not None:
                raise ValueError("--init-mae initialises the transformer encoder; this preset uses the "
                                 "features front end (features: set), which has none")
            model = self._closed_form_model(n_tok, width)
            self.model_name = "semantic_extractor"
        else:
            model = SemanticExtractor(**self._check_shape(c.model), n_tokens=n_tok, width=width)
            self.model_name = "semantic_extractor"
            if self.init_mae is not None:
                from neuroimagen.training.models.format import load_model
                from neuroimagen.training.models.mae import MaskedEEGAutoencoder

                model.load_mae_encoder(load_model(MaskedEEGAutoencoder, self.init_mae))
                logger.info("semantic extractor encoder initialised from %s", self.init_mae)
        t = c.trainer
        opt = _optimizer(model.parameters(), t.lr, t.weight_decay)
        self.model, self.opt, self.sched = self.acc.prepare(model, opt, _scheduler(opt, t))

    def _closed_form_model(self, n_tok: int, width: int):
        """A FeatureSemanticExtractor fitted in closed form, its ridge penalty picked on the val images."""
        from neuroimagen.stream.montage import channel_positions
        from neuroimagen.training.data.twin.baseline import POSTERIOR_Y_M
        from neuroimagen.training.models.semantic import FeatureSemanticExtractor

        f = self.config.features
        shape = self._input_shape()
        n_cls = self.train.n_classes
        channels = None
        if f.channels == "posterior":
            channels = [int(i) for i in np.flatnonzero(channel_positions()[:, 1] < POSTERIOR_Y_M)]
        model = FeatureSemanticExtractor(
            **shape, bin_samples=f.bin_samples, channels=channels, log_variance=f.log_variance,
            n_classes=n_cls, hidden_dim=f.hidden_dim, dropout=f.dropout, n_tokens=n_tok, width=width,
            token_rank=min(f.token_rank, n_cls),
        )
        # ridge per penalty; the val images pick it (ties: the smaller penalty)
        best = None
        for alpha in f.ridge_alphas:
            model.fit_closed_form(self.train.x, self.train_label, self.targets.tokens, self.targets.pooled,
                                  alpha=alpha)
            top1 = self._top1(model.eval())
            logger.info("semantic closed form: alpha %g -> val top-1 %.4f", alpha, top1)
            if best is None or top1 > best[0]:
                best = (top1, alpha, {k: v.clone() for k, v in model.state_dict().items()})
        model.load_state_dict(best[2])
        self.closed_form = {"top1": best[0], "alpha": best[1], "state": best[2]}
        return model

    def _top1(self, model) -> float:
        from neuroimagen.training.models.semantic import class_scores

        pooled = _batched(model, self.val.x, "cpu")[1]
        return float((class_scores(pooled, self.targets.pooled).argmax(1) == self.val.label).float().mean())

    def batch(self, idx, device):
        return {"x": self.train.x[idx].to(device), "label": self.train_label[idx].to(device)}

    def checkpointed(self):
        return [self.model, self.opt, self.sched]

    def accumulate_models(self):
        return [self.model]

    def train_step(self, batch, ctx: StepContext) -> dict[str, float]:
        lc = self.config.loss
        tokens, pooled = self.model(batch["x"])
        tt = self.targets.tokens.to(tokens.device)[batch["label"]]
        tp = self.targets.pooled.to(tokens.device)[batch["label"]]
        l2 = ((tokens.float() - tt) ** 2).mean() + lc.pooled_l2_weight * ((pooled.float() - tp) ** 2).sum(-1).mean()
        logits = F.normalize(pooled.float(), dim=-1) @ F.normalize(self.targets.pooled.to(tokens.device), dim=-1).T
        ce = F.cross_entropy(logits / lc.temperature, batch["label"])
        loss = lc.l2_weight * l2 + lc.contrastive_weight * ce
        ctx.backward_and_step(loss, self.opt, [self.model], self.sched)
        return {"loss": loss.item(), "l2": l2.item(), "contrastive": ce.item()}

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens, pooled) of inputs x, eval mode, on the CPU."""
        model = self._unwrap(self.model).eval()
        tokens, pooled = _batched(model, x, self.acc.device)
        return tokens, pooled

    def _metrics(self, model) -> dict[str, float]:
        from neuroimagen.training.models.semantic import class_scores

        tokens, pooled = _batched(model.eval(), self.val.x, self.acc.device)
        scores = class_scores(pooled, self.targets.pooled)
        lab = self.val.label
        top5 = scores.topk(min(5, scores.shape[1]), dim=1).indices
        return {"top1": float((scores.argmax(1) == lab).float().mean()),
                "top5": float((top5 == lab[:, None]).any(1).float().mean()),
                "token_mse": float(((tokens - self.targets.tokens[lab]) ** 2).mean())}

    def evaluate(self) -> dict[str, float]:
        out = self._metrics(self._unwrap(self.model))
        if self.closed_form is not None:
            # the features front end keeps the closed-form fit unless fine-tuning beat it on val
            out = {**out, "closed_form_top1": self.closed_form["top1"], "closed_form_alpha": self.closed_form["alpha"],
                   "kept_closed_form": float(out["top1"] <= self.closed_form["top1"])}
        return out

    def export(self, folder: Path) -> dict[str, Path]:
        import copy

        from neuroimagen.training.models.format import save_model

        model = self._unwrap(self.model)
        if self.closed_form is not None and self._metrics(model)["top1"] <= self.closed_form["top1"]:
            logger.info("semantic: keeping the closed-form fit (val top-1 %.4f; fine-tuning did not beat it)",
                        self.closed_form["top1"])
            model = copy.deepcopy(model)
            model.load_state_dict(self.closed_form["state"])
        return {self.model_name: save_model(model, folder / self.model_name)}



def build_stage(name: str, config, twin_dir, modality: str = "eeg", encoder: str | Path | None = None,
                init_mae: str | Path | None = None):
    """The stage object for ``neuroimagen train <name>``."""
    if name == "mae":
        return MAEStage(config, twin_dir, modality)
    if name == "contrastive":
        return ContrastiveStage(config, twin_dir, modality)
    if name == "saliency":
        return SaliencyStage(config, twin_dir, encoder, modality)
    if name == "semantic":
        return SemanticStage(config, twin_dir, modality, init_mae)
    raise ValueError(f"unknown stage {name!r}")

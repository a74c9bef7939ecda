"""Held-out scoring of a trained bundle's parts (``train bundle``'s eval stage).

Every held-out trial (the twin's val and test images: neither the extractors nor the
generator trained on them) is reconstructed several ways, each written as PNGs under
``eval/<method>/`` and scored with ``neuroimagen eval images``' own code (n-way top-1 with
the stimulus classifier, SSIM), so ``neuroimagen eval images --gt eval/gt --pred eval/student``
reproduces the numbers:

``student``      the bundle's frame: LCM student, the preset's strength and 1-2 steps
``teacher_ddpm`` the teacher UNet sampled as it was trained (DDPM, ancestral: fresh noise at every
                 step, as the student's multi-step LCM sampling re-injects noise), ``teacher_steps``
                 steps of the full schedule, same strength, classifier-free guidance at the
                 student's guidance scale against the learned null conditioning
``teacher_ddim`` the same teacher on its deterministic ODE (DDIM): what consistency distillation
                 and the frame term follow
``autoencoder``  decode(encode(saliency)): what the diffusion has to beat
``shuffled``     the student with the conditioning of another trial: ``eval.shuffles`` random
                 derangements, each trial's figures averaged over them (``shuffled/`` holds the
                 first, ``shuffled_<k>/`` the others)
``saliency``     the saliency image alone
``class_mean``   the mean training image of the decoded class (semantic top-1)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

METHODS = ("student", "teacher_ddpm", "teacher_ddim", "autoencoder", "shuffled", "saliency", "class_mean")
TEACHERS = ("teacher_ddpm", "teacher_ddim")


def _save_pngs(images: torch.Tensor, folder: Path, stems: list[str]) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    arr = (images.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for a, stem in zip(arr, stems, strict=True):
        Image.fromarray(a).save(folder / f"{stem}.png")


def _batched(fn, *xs: torch.Tensor, batch_size: int = 32) -> Any:
    outs = [fn(*(x[i:i + batch_size] for x in xs)) for i in range(0, xs[0].shape[0], batch_size)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
    return torch.cat(outs)


def _shuffled(k: int) -> str:
    """The folder (and report name) of the k-th shuffle: ``shuffled``, then ``shuffled_1``, ..."""
    return "shuffled" if k == 0 else f"shuffled_{k}"


def _derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """A uniformly random permutation with no fixed point (every trial gets another trial's conditioning)."""
    if n < 2:
        raise ValueError("a derangement needs at least 2 trials")
    while True:  # rejection: about e tries
        perm = torch.randperm(n, generator=generator)
        if not bool((perm == torch.arange(n)).any()):
            return perm


@torch.no_grad()
def evaluate_bundle_parts(
    twin_dir: Path,
    extractors: Mapping[str, str | Path],
    generator_dir: Path,
    targets: tuple[torch.Tensor, torch.Tensor],
    classifier_path: Path,
    out_dir: Path,
    cfg: Any,
) -> dict[str, Any]:
    """Reconstruct the held-out trials with each method and score them; returns ``metrics`` and ``methods``.

    ``metrics`` (what the manifest records): per method ``<method>_nway_top1`` and
    ``<method>_ssim`` (means over trials) with standard errors, the paired margins
    ``margin_vs_autoencoder`` (student minus decode(encode(saliency)), n-way top-1) and
    ``margin_shuffled_vs_autoencoder`` with their paired standard errors, the semantic
    extractor's class top-1 on these trials, and the trial count.
    """
    from diffusers import AutoencoderTiny, UNet2DConditionModel

    from neuroimagen.training.eval.report import grid_rows_from_report, make_grid, run_image_eval
    from neuroimagen.training.models.bundle import load_model_folder
    from neuroimagen.training.models.format import load_model
    from neuroimagen.training.models.img2img import (
        ConditioningProjection,
        Img2ImgFrame,
        load_scheduler,
    )
    from neuroimagen.training.models.saliency import SaliencyGenerator
    from neuroimagen.training.models.semantic import class_scores
    from neuroimagen.training.train.data import load_images, load_trials
    from neuroimagen.training.train.generator import load_twin_images, student_frame, teacher_frame

    ev, gcfg = cfg.eval, cfg.generator
    torch.manual_seed(ev.seed)
    # 1. held-out trials and their true images
    trials = load_trials(twin_dir, tuple(ev.parts))
    n = len(trials) if ev.max_trials is None else min(ev.max_trials, len(trials))
    x = trials.x[:n]
    image_stems = [trials.images[int(i)] for i in trials.image_index[:n]]
    stems = [f"{s}_trial{i:03d}" for i, s in enumerate(image_stems)]
    size = gcfg.image_size
    truth = load_images(twin_dir, image_stems, size)
    # 2. the extractors
    pix = load_model_folder(extractors["pixel_encoder"])  # PixelEncoder or FeaturePixelEncoder
    sal = load_model(SaliencyGenerator, extractors["saliency"]).eval()
    sem = load_model_folder(extractors["semantic"])  # SemanticExtractor or FeatureSemanticExtractor
    saliency = _batched(lambda e: sal(pix(e)), x)
    tokens, pooled = _batched(sem, x)
    scores = class_scores(pooled, targets[1])
    pred_class = scores.argmax(1)
    # 3. the frames: student (the bundle's) and the teacher (DDPM and DDIM, many steps)
    vae = load_model(AutoencoderTiny, generator_dir / "autoencoder" / "autoencoder")
    proj = load_model(ConditioningProjection, generator_dir / "teacher" / "projection")
    student_unet = load_model(UNet2DConditionModel, generator_dir / "student" / "unet")
    teacher_unet = load_model(UNet2DConditionModel, generator_dir / "teacher" / "unet")
    student = student_frame(student_unet, vae, proj, load_scheduler(generator_dir / "student" / "scheduler",
                                                                     subfolder=None),
                            cfg.frame, image_size=size, seed=ev.seed)
    teacher_config = load_scheduler(generator_dir / "teacher" / "scheduler", subfolder=None).config
    teachers = {f"teacher_{kind}": teacher_frame(teacher_unet, vae, proj, teacher_config, cfg.frame, ev.teacher_steps,
                                                 image_size=size, seed=ev.seed, sampler=kind)
                for kind in ("ddpm", "ddim")}
    guidance = teachers["teacher_ddim"].guidance_scale

    def run(frame: Img2ImgFrame, cond: torch.Tensor) -> torch.Tensor:
        g = torch.Generator().manual_seed(ev.seed)
        return _batched(lambda s, t: frame(s, t, generator=g), saliency, cond)

    g_perm = torch.Generator().manual_seed(ev.seed)
    perms = [_derangement(n, g_perm) for _ in range(ev.shuffles)]
    data = load_twin_images(twin_dir, size)
    train = data["part"] == 0
    means = torch.stack([data["images"][train & (data["labels"] == k)].mean(0) for k in range(len(targets[1]))])
    recon = {
        "student": run(student, tokens),
        **{name: run(frame, tokens) for name, frame in teachers.items()},
        "autoencoder": _batched(lambda s: student.decode(student.encode(student.preprocess(s))), saliency),
        **{_shuffled(k): run(student, tokens[perm]) for k, perm in enumerate(perms)},
        "saliency": torch.nn.functional.interpolate(saliency, size=(size, size), mode="bilinear",
                                                    align_corners=False).clamp(0, 1),
        "class_mean": means[pred_class],
    }
    # 4. PNGs, scored by `eval images`' own code
    _save_pngs(truth, out_dir / "gt", stems)
    for name, images in recon.items():
        _save_pngs(images, out_dir / name, stems)
    n_classes = len(targets[1])
    reports = {}
    for name in (*METHODS, *(_shuffled(k) for k in range(1, ev.shuffles))):
        reports[name] = run_image_eval(out_dir / "gt", out_dir / name, out_dir / "saliency",
                                       classifier_path=classifier_path, n_way=min(ev.n_way, n_classes),
                                       n_trials=ev.n_trials, image_size=size, seed=ev.seed,
                                       json_path=out_dir / f"{name}.json")
    make_grid(grid_rows_from_report(reports["student"], 16, spread=True), out_dir / "grid.png",
              title="held-out twin trials: truth | saliency | reconstruction (student)")
    # 5. means, standard errors and paired margins
    per = {name: {"nway": np.array([r["n_way_acc"] for r in rep["per_image"]]),
                  "ssim": np.array([r["ssim"] for r in rep["per_image"]])}
           for name, rep in reports.items()}
    # the shuffled conditioning: each trial's figures averaged over the derangements
    shuffles = [per.pop(_shuffled(k)) for k in range(ev.shuffles)]
    per["shuffled"] = {m: np.mean([sh[m] for sh in shuffles], axis=0) for m in ("nway", "ssim")}

    def se(a: np.ndarray) -> float:
        return float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")

    metrics: dict[str, float] = {"eval_n_trials": float(n), "n_way": float(min(ev.n_way, n_classes)),
                                 "semantic_top1": float((pred_class == trials.label[:n]).float().mean()),
                                 "strength": float(cfg.frame.strength),
                                 "student_steps": float(cfg.frame.num_inference_steps),
                                 "teacher_steps": float(ev.teacher_steps), "teacher_guidance": float(guidance),
                                 "shuffles": float(ev.shuffles)}
    for name, p in per.items():
        for m, a in p.items():
            metrics[f"{name}_{m}"] = float(a.mean())
            metrics[f"{name}_{m}_se"] = se(a)
    for name in ("student", *TEACHERS, "shuffled"):
        d = per[name]["nway"] - per["autoencoder"]["nway"]
        metrics[f"margin_{name}_vs_autoencoder"] = float(d.mean())
        metrics[f"margin_{name}_vs_autoencoder_se"] = se(d)
    # the distillation's gap: student minus each teacher, paired per trial
    for name in TEACHERS:
        for m in ("nway", "ssim"):
            d = per["student"][m] - per[name][m]
            metrics[f"gap_student_vs_{name}_{m}"] = float(d.mean())
            metrics[f"gap_student_vs_{name}_{m}_se"] = se(d)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return {"metrics": metrics, "methods": list(METHODS), "stems": stems[:4]}

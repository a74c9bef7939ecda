"""Evaluate a folder of reconstructions against their ground truth; JSON + PNG grid reports.

:func:`evaluate_images` computes whatever the inputs allow: SSIM and PCC
always; n-way top-k with a classifier; CLIP similarity and retrieval with an
image encoder; FID and IS with a feature network. :func:`write_json` and
:func:`make_grid` write what a person reads.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .images import load_batch, load_image, match_by_stem
from .metrics import (
    ImageEncoder,
    clip_similarity,
    frechet_distance,
    inception_score,
    pcc,
    retrieval_accuracy,
    ssim,
)
from .nway import Classifier, n_way_top_k_accuracy

logger = logging.getLogger(__name__)


def _summary(values: np.ndarray) -> dict[str, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(finite.mean()), "std": float(finite.std()), "n": int(finite.size)}


def evaluate_images(
    gt_dir: str | Path,
    pred_dir: str | Path,
    saliency_dir: str | Path | None = None,
    classifier: Classifier | None = None,
    n_way: int = 50,
    top_k: int = 1,
    n_trials: int = 50,
    clip_encoder: ImageEncoder | None = None,
    feature_extractor: torch.nn.Module | None = None,
    is_extractor: torch.nn.Module | None = None,
    image_size: int = 256,
    seed: int = 0,
) -> dict:
    """Score reconstructions against ground truth, pairing files by stem.

    Parameters
    ----------
    gt_dir, pred_dir : path
        Folders of images (searched recursively); ``<stem>.<ext>`` pairs.
    saliency_dir : path, optional
        Saliency maps by the same stems (only listed in the report; drawn in the grid).
    classifier : callable, optional
        images -> logits, for n-way top-k accuracy. ``n_way`` is lowered to the
        classifier's class count (with a warning) when it has fewer classes.
    clip_encoder : callable, optional
        images -> embeddings, for CLIP similarity and retrieval (each
        reconstruction among all ground-truth images).
    feature_extractor : torch.nn.Module, optional
        images -> features for FID (ground truth as the real set).
    is_extractor : torch.nn.Module, optional
        images -> logits for the Inception score of the reconstructions.
    image_size : int
        Both sides are resized to ``image_size`` x ``image_size`` before scoring.

    Returns
    -------
    dict
        JSON-ready: ``n_pairs``, ``stems``, ``image_size``, ``ssim``/``pcc``
        summaries, optional ``n_way``, ``clip_similarity``, ``retrieval``,
        ``fid``, ``inception_score`` entries, ``per_image`` rows, ``skipped``
        (metric -> why it was not computed), ``unmatched``.
    """
    # 1. pair files and load them at a common size
    pairs = match_by_stem(gt_dir, pred_dir, saliency_dir)
    gt = load_batch(pairs.gt, image_size)
    pred = load_batch(pairs.pred, image_size)
    n = len(pairs.stems)
    per_image: list[dict] = [{"stem": s} for s in pairs.stems]
    report: dict = {
        "n_pairs": n,
        "image_size": image_size,
        "gt_dir": str(gt_dir),
        "pred_dir": str(pred_dir),
        "seed": seed,
        "unmatched": {"gt": pairs.unmatched_gt, "pred": pairs.unmatched_pred},
        "skipped": {},
    }

    # 2. pixel-level metrics
    s, r = ssim(gt, pred), pcc(gt, pred)
    report["ssim"], report["pcc"] = _summary(s), _summary(r)
    for row, si, ri in zip(per_image, s, r, strict=True):
        row["ssim"], row["pcc"] = float(si), float(ri)

    # 3. semantic: n-way top-k with the classifier
    if classifier is None:
        report["skipped"]["n_way"] = "no classifier given"
    else:
        with torch.no_grad():
            n_classes = int(classifier(gt[:1]).shape[1])
        used_n_way = min(n_way, n_classes)
        if used_n_way < n_way:
            logger.warning(
                "n-way: the classifier has %d classes; using %d-way instead of %d-way",
                n_classes,
                used_n_way,
                n_way,
            )
        res = n_way_top_k_accuracy(
            classifier, gt, pred, n_way=used_n_way, top_k=top_k, n_trials=n_trials, seed=seed
        )
        report["n_way"] = res.as_dict() | {"requested_n_way": n_way, "n_classes": n_classes}
        names = getattr(classifier, "class_names", None)
        for row, acc, t in zip(per_image, res.per_image, res.true_class, strict=True):
            row["n_way_acc"] = float(acc)
            row["true_class"] = names[int(t)] if names else int(t)

    # 4. embeddings: CLIP similarity and retrieval among the ground truths
    if clip_encoder is None:
        report["skipped"]["clip"] = "no CLIP encoder given"
    else:
        c = clip_similarity(clip_encoder, gt, pred)
        report["clip_similarity"] = _summary(c)
        for row, ci in zip(per_image, c, strict=True):
            row["clip_similarity"] = float(ci)
        with torch.no_grad():
            report["retrieval"] = retrieval_accuracy(
                clip_encoder(pred), clip_encoder(gt), seed=seed
            )

    # 5. distribution-level: FID (gt = real) and IS of the reconstructions
    if feature_extractor is None:
        report["skipped"]["fid"] = "no feature extractor given"
    elif n < 2:
        report["skipped"]["fid"] = "needs at least 2 pairs"
    else:
        report["fid"] = frechet_distance(gt, pred, feature_extractor=feature_extractor)
    if is_extractor is None:
        report["skipped"]["inception_score"] = "no classifier network given"
    else:
        # the usual 10 splits assume thousands of images; keep >= 50 images per split
        splits = max(1, min(10, n // 50))
        mean, std = inception_score(pred, feature_extractor=is_extractor, splits=splits, seed=seed)
        report["inception_score"] = {"mean": mean, "std": std, "splits": splits}

    report["stems"] = pairs.stems
    report["saliency"] = [str(p) if p else None for p in pairs.saliency]
    report["per_image"] = per_image
    return report


def _clean(obj):
    """Make a report JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(report: dict, path: str | Path) -> Path:
    """Write a report as indented JSON (NaN written as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- PNG grid

_BG = (255, 255, 255)
_FG = (20, 20, 20)
_MISSING = (225, 225, 225)


def _to_pil(img: torch.Tensor, cell: int):
    from PIL import Image

    arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr).resize((cell, cell), Image.Resampling.BICUBIC)


def make_grid(
    rows: Sequence[dict],
    path: str | Path,
    cell: int = 160,
    title: str | None = None,
) -> Path:
    """Draw a labelled PNG: one row per sample, columns ground truth | saliency | reconstruction.

    Parameters
    ----------
    rows : sequence of dict
        Each ``{"gt": path|tensor, "pred": path|tensor, "saliency": path|tensor|None,
        "label": str}``; tensors are (3, h, w) float32 in [0, 1]. The saliency
        column is drawn only if some row has one (a grey cell marks a missing map).
    path : path
        Output PNG.
    cell : int
        Side of each image cell in pixels.

    Returns
    -------
    Path
        The written file.
    """
    from PIL import Image, ImageDraw, ImageFont

    def as_img(x):
        if x is None:
            return None
        return _to_pil(x if isinstance(x, torch.Tensor) else load_image(x), cell)

    with_saliency = any(r.get("saliency") is not None for r in rows)
    cols = ["ground truth"] + (["saliency"] if with_saliency else []) + ["reconstruction"]
    font = ImageFont.load_default(size=12)
    pad, header_h, caption_h = 8, 22, 16
    draw_probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_h = 22 if title else 0
    texts = [str(r.get("label", "")) for r in rows] + ([title] if title else [])
    label_w = max((draw_probe.textlength(t, font=font) for t in texts), default=0)
    width = int(max(pad + len(cols) * (cell + pad), 2 * pad + label_w))
    height = title_h + header_h + len(rows) * (cell + caption_h + pad) + pad
    canvas = Image.new("RGB", (width, height), _BG)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, 4), title, fill=_FG, font=font)
    for j, name in enumerate(cols):
        x0 = pad + j * (cell + pad)
        tw = draw.textlength(name, font=font)
        draw.text((x0 + (cell - tw) / 2, title_h + 5), name, fill=_FG, font=font)
    for i, row in enumerate(rows):
        y0 = title_h + header_h + i * (cell + caption_h + pad)
        imgs = (
            [row.get("gt")] + ([row.get("saliency")] if with_saliency else []) + [row.get("pred")]
        )
        for j, src in enumerate(imgs):
            x0 = pad + j * (cell + pad)
            img = as_img(src)
            if img is None:
                draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=_MISSING)
                draw.text((x0 + 6, y0 + cell / 2 - 6), "(none)", fill=_FG, font=font)
            else:
                canvas.paste(img, (x0, y0))
        draw.text((pad, y0 + cell + 2), str(row.get("label", "")), fill=_FG, font=font)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path


def grid_rows_from_report(report: dict, max_rows: int = 16, spread: bool = False) -> list[dict]:
    """Grid rows (files + a caption with the per-image scores) for :func:`make_grid`.

    The first ``max_rows`` images by stem, or with ``spread`` ``max_rows`` evenly spaced over all
    of them (stems sort by class, so the grid then shows many classes, not the first one).
    """
    from .images import index_images

    gt_files = index_images(report["gt_dir"])
    pred_files = index_images(report["pred_dir"])
    pairs = list(zip(report["per_image"], report["saliency"], strict=True))
    if spread and len(pairs) > max_rows:
        pairs = [pairs[round(i * (len(pairs) - 1) / (max_rows - 1))] for i in range(max_rows)]
    rows = []
    for row, sal in pairs[:max_rows]:
        parts = [row["stem"], f"SSIM {row['ssim']:.2f}", f"PCC {row['pcc']:.2f}"]
        if "n_way_acc" in row:
            parts.append(f"n-way {row['n_way_acc']:.2f} (gt class: {row['true_class']})")
        if "clip_similarity" in row:
            parts.append(f"CLIP {row['clip_similarity']:.2f}")
        rows.append(
            {
                "gt": gt_files[row["stem"]],
                "pred": pred_files[row["stem"]],
                "saliency": Path(sal) if sal else None,
                "label": "  |  ".join(parts),
            }
        )
    return rows


def run_image_eval(
    gt_dir: str | Path,
    pred_dir: str | Path,
    saliency_dir: str | Path | None = None,
    classifier_path: str | Path | None = None,
    clip_path: str | Path | None = None,
    inception_weights: str | Path | None = None,
    json_path: str | Path | None = None,
    grid_path: str | Path | None = None,
    n_way: int = 50,
    top_k: int = 1,
    n_trials: int = 50,
    image_size: int = 256,
    seed: int = 0,
    max_grid_rows: int = 16,
) -> dict:
    """What ``neuroimagen eval images`` does: load the optional models, evaluate, write the reports.

    ``classifier_path`` is a model folder from :func:`~.nway.save_classifier`;
    ``clip_path`` a local transformers CLIP folder; ``inception_weights``
    torch-fidelity's Inception-v3 weights file (enables FID and IS). A model
    that cannot be loaded is an error, never silently skipped.

    Returns
    -------
    dict
        The :func:`evaluate_images` report (also written to ``json_path``).
    """
    from .metrics import load_clip_image_encoder, load_inception_v3
    from .nway import load_classifier

    # 1. the optional models
    classifier = load_classifier(classifier_path) if classifier_path else None
    clip = load_clip_image_encoder(clip_path) if clip_path else None
    fid_net = load_inception_v3(inception_weights, "2048") if inception_weights else None
    is_net = load_inception_v3(inception_weights, "logits_unbiased") if inception_weights else None
    # 2. the metrics
    report = evaluate_images(
        gt_dir,
        pred_dir,
        saliency_dir,
        classifier=classifier,
        n_way=n_way,
        top_k=top_k,
        n_trials=n_trials,
        clip_encoder=clip,
        feature_extractor=fid_net,
        is_extractor=is_net,
        image_size=image_size,
        seed=seed,
    )
    if classifier_path:
        report["classifier"] = str(classifier_path)
    # 3. the reports
    if grid_path:
        make_grid(
            grid_rows_from_report(report, max_grid_rows),
            grid_path,
            title=f"reconstructions: {pred_dir}   |   ground truth: {gt_dir}",
        )
        report["grid"] = str(grid_path)
    if json_path:
        write_json(report, json_path)
    return report


def summary_lines(report: dict) -> list[str]:
    """A few human-readable lines summarising an :func:`evaluate_images` report."""
    lines = [f"{report['n_pairs']} pairs at {report['image_size']} px"]
    for key in ("ssim", "pcc", "clip_similarity"):
        if key in report:
            lines.append(f"{key}: {report[key]['mean']:.4f} +/- {report[key]['std']:.4f}")
    if "n_way" in report:
        nw = report["n_way"]
        lines.append(
            f"{nw['n_way']}-way top-{nw['top_k']}: {nw['mean']:.4f} +/- {nw['std']:.4f} "
            f"(chance {nw['chance']:.4f})"
        )
    if "retrieval" in report:
        r = report["retrieval"]
        lines.append(
            ", ".join(f"{k} {v:.4f}" for k, v in r.items() if k.startswith("top"))
            + f" among {r['n_candidates']}"
        )
    if "fid" in report:
        lines.append(f"FID: {report['fid']:.3f}")
    if "inception_score" in report:
        lines.append(f"IS: {report['inception_score']['mean']:.3f}")
    for key, why in report.get("skipped", {}).items():
        lines.append(f"skipped {key}: {why}")
    return lines

"""``neuroimagen train bundle``: every part of a bundle trained on the twin, staged and resumable.

Stages, each in its own folder under ``out_dir`` with a ``done.json`` (a finished stage
is skipped on the next run; an unfinished extractor stage resumes from its checkpoint)::

    twin/          the synthetic twin (made here unless ``--twin`` names an existing one)
    contrastive/   the pixel encoder (``train contrastive``)
    saliency/      the saliency GAN on that encoder (``train saliency``)
    semantic/      the semantic extractor (``train semantic``)
    generator/     tiny TAESD-like autoencoder, UNet teacher, LCM student, voting encoder
    classifier/    the stimulus classifier that scores n-way top-1 (``eval train-classifier``)
    bundle/        the assembled bundle (manifest with provenance and metrics)
    eval/          held-out reconstructions, ``eval.json``, ``grid.png``

The preset (``configs/train/bundle-<name>.yaml`` or a YAML file) names each extractor
stage's own preset, the generator's sizes, the frame settings and the evaluation.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from neuroimagen.stream.config import FrozenConfig
from neuroimagen.training.config import TwinConfig

from .generator import FrameSpec, GeneratorConfig

__all__ = [
    "BUNDLE_PRESETS",
    "BundleBuildConfig",
    "build_bundle",
    "load_bundle_preset",
]

logger = logging.getLogger(__name__)

BUNDLE_PRESETS = ("tiny", "demo", "full")
DONE = "done.json"


class ExtractorSpec(FrozenConfig):
    """One extractor stage: its own preset (tiny|demo|paper or a YAML file) and overrides."""

    preset: str = "demo"
    params: tuple[str, ...] = Field((), description="key=value overrides, as --param")


class SemanticSpec(ExtractorSpec):
    """The semantic stage, and how the bundle's copy of its model mixes the class tokens."""

    token_temperature: float | None = Field(
        None, gt=0, description="None: the extractor as trained. A temperature: the bundle's semantic "
        "extractor (a FeatureSemanticExtractor) mixes the class tokens by softmax(code / T) "
        "(its token_temperature), near the decoded class's own tokens for a small T")


class EvalSpec(FrozenConfig):
    """How the bundle is scored on held-out twin images (the split parts in ``parts``)."""

    parts: tuple[Literal["val", "test"], ...] = ("val", "test")
    n_way: int = Field(50, ge=2, description="lowered to the number of classes")
    n_trials: int = 50
    teacher_steps: int = Field(25, ge=1, description="the teacher's DDPM->DDIM steps (>= 25 in the issue)")
    classifier_epochs: int = 60
    classifier_image_size: int = 48
    shuffles: int = Field(5, ge=1, description="random derangements of the conditioning for the shuffled "
                          "control; each trial's figures are averaged over them")
    max_trials: int | None = Field(None, ge=2, description="score only the first n held-out trials (tests)")
    seed: int = 0


class BundleBuildConfig(FrozenConfig):
    """``neuroimagen train bundle``: the whole embedded-default recipe."""

    stage: Literal["bundle"] = "bundle"
    name: str = "neuroimagen-demo"
    twin: TwinConfig = TwinConfig()
    contrastive: ExtractorSpec = ExtractorSpec()
    saliency: ExtractorSpec = ExtractorSpec()
    semantic: SemanticSpec = SemanticSpec()
    generator: GeneratorConfig = GeneratorConfig()
    frame: FrameSpec = FrameSpec()
    eval: EvalSpec = EvalSpec()


def load_bundle_preset(preset: str | Path = "demo", overrides: tuple[str, ...] = ()) -> BundleBuildConfig:
    """The validated recipe: a shipped preset (tiny|demo|full) or a YAML file, then ``key=value`` overrides."""
    from neuroimagen.training.config import load_preset

    return load_preset(BundleBuildConfig, "bundle", preset, BUNDLE_PRESETS, overrides)


# --------------------------------------------------------------------------- stages


def _done(folder: Path) -> dict | None:
    f = folder / DONE
    return json.loads(f.read_text()) if f.is_file() else None


def _finish(folder: Path, info: dict) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE).write_text(json.dumps(info, indent=1, default=str))
    return info


def _twin(cfg: BundleBuildConfig, twin_dir: Path, say: Callable[[str], None]) -> dict:
    """Make the preset's twin in ``twin_dir``, or check that the one there is that twin."""
    from neuroimagen.training.data.twin import make_twin

    meta_path = twin_dir / "twin.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        want = cfg.twin.model_dump(mode="json")
        have = meta.get("config", {})
        diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
        if diff:
            raise ValueError(f"{twin_dir} is another twin than the preset's: "
                             + ", ".join(f"{k} is {a!r}, the preset says {b!r}" for k, (a, b) in diff.items()))
        say(f"twin: using {twin_dir}")
        return meta
    say(f"twin: making the {cfg.twin.preset} twin (seed {cfg.twin.seed}) in {twin_dir}")
    return make_twin(twin_dir, cfg.twin)


def _extractor(stage: str, spec: ExtractorSpec, twin_dir: Path, run_dir: Path, resume: bool,
               say: Callable[[str], None], **kwargs: Any) -> dict:
    """One extractor stage through the same code as ``neuroimagen train <stage>``."""
    from neuroimagen.training.config import load_stage_config
    from neuroimagen.training.train.common import run_stage
    from neuroimagen.training.train.data import twin_info
    from neuroimagen.training.train.stages import build_stage

    cfg = load_stage_config(stage, spec.preset, spec.params)
    if (done := _done(run_dir)) is not None:
        from neuroimagen.stream.config import dump_yaml

        if (run_dir / "config.yaml").read_text() != dump_yaml(cfg.model_dump(mode="json")):
            raise ValueError(f"{run_dir}: finished with another {stage} config than the preset's; "
                             "delete that folder to retrain it, or use a new --out")
        say(f"{stage}: done ({run_dir})")
        return done
    say(f"{stage}: training ({spec.preset}, {cfg.trainer.max_steps} steps) in {run_dir}")
    t0 = time.perf_counter()
    st = build_stage(stage, cfg, twin_dir, "eeg", **kwargs)
    info = {**twin_info(twin_dir), "modality": "eeg", "preset": spec.preset, "params": list(spec.params)}
    result = run_stage(st, run_dir, resume=resume, data_info=info, progress=False)
    if result["step"] < cfg.trainer.max_steps:  # pragma: no cover - run_stage trains to the end
        raise RuntimeError(f"{stage}: stopped at step {result['step']} of {cfg.trainer.max_steps}")
    return _finish(run_dir, {"models": result["models"], "eval": result["eval"], "steps": result["step"],
                             "train_s": round(time.perf_counter() - t0, 1),
                             "semantic_width": getattr(cfg, "width", None),
                             "semantic_n_tokens": getattr(cfg, "n_tokens", None),
                             "semantic_seed": cfg.trainer.seed})


def _targets(twin_dir: Path, semantic: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The class targets the semantic extractor was trained to predict (the bundle's class embeddings)."""
    from neuroimagen.training.train.data import load_twin_targets

    t = load_twin_targets(twin_dir, width=semantic["semantic_width"], n_tokens=semantic["semantic_n_tokens"],
                          seed=semantic["semantic_seed"])
    return t.tokens, t.pooled


def _semantic_for_bundle(spec: SemanticSpec, trained: Path, folder: Path) -> Path:
    """The semantic extractor the bundle ships: the trained one, or a copy with its token temperature set.

    The temperature is a setting of the model itself (its config), so the bundle's forward is
    the same in realtime, export and the held-out evaluation.
    """
    if spec.token_temperature is None:
        return trained
    from neuroimagen.training.models.bundle import load_model_folder
    from neuroimagen.training.models.format import save_model
    from neuroimagen.training.models.semantic import FeatureSemanticExtractor

    model = load_model_folder(trained)
    if not isinstance(model, FeatureSemanticExtractor):
        raise ValueError(f"semantic.token_temperature needs a FeatureSemanticExtractor; {trained} holds a "
                         f"{type(model).__name__}")
    model.register_to_config(token_temperature=float(spec.token_temperature))
    return save_model(model, folder / "semantic_extractor")


def _classifier(cfg: BundleBuildConfig, twin_dir: Path, folder: Path, say: Callable[[str], None]) -> Path:
    from neuroimagen.training.eval.nway import save_classifier, train_stimulus_classifier

    path = folder / "model"
    if _done(folder) is None:
        say(f"classifier: training the n-way stimulus classifier ({cfg.eval.classifier_epochs} epochs)")
        t0 = time.perf_counter()
        model = train_stimulus_classifier(twin_dir, image_size=cfg.eval.classifier_image_size,
                                          n_epochs=cfg.eval.classifier_epochs, seed=cfg.eval.seed)
        save_classifier(model, path)
        _finish(folder, {"train_s": round(time.perf_counter() - t0, 1)})
    return path


def build_bundle(
    cfg: BundleBuildConfig,
    out_dir: str | Path,
    *,
    twin_dir: str | Path | None = None,
    resume: bool = True,
    commands: tuple[str, ...] = (),
    progress: Callable[[str], None] | None = None,
    only: Literal["extractors", "generator"] | None = None,
) -> dict[str, Any]:
    """Train every part on the twin, score it on held-out images and write the bundle.

    Parameters
    ----------
    cfg : the recipe (:func:`load_bundle_preset`)
    out_dir : the build folder (stages below it; ``bundle/`` is the result)
    twin_dir : an existing twin of the preset's config, or where to make it (default ``out_dir/twin``)
    resume : False starts every stage over (the folder must then not hold a finished build)
    only : run just the extractor stages or just the generator stages, then return (two
        processes can build one folder side by side; a last full call scores and assembles)

    Returns
    -------
    dict
        ``bundle`` (its folder), ``stage_s`` (seconds per stage, this call), ``metrics``.
    """
    from neuroimagen.training.config import load_stage_config
    from neuroimagen.training.train.generator import assemble_bundle, build_generator

    say = progress or logger.info
    out = Path(out_dir)
    if not resume and out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; resume the build there or choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "bundle_config.json").write_text(cfg.model_dump_json(indent=1))
    twin = Path(twin_dir) if twin_dir is not None else out / "twin"
    times: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        res = fn()
        times[name] = round(time.perf_counter() - t0, 1)
        return res

    # 1. the twin; 2.-4. the extractors, through the extractor stages' own code
    timed("twin", lambda: _twin(cfg, twin, say))
    if only == "generator":
        sem_cfg = load_stage_config("semantic", cfg.semantic.preset, cfg.semantic.params)
        targets = _targets(twin, {"semantic_width": sem_cfg.width, "semantic_n_tokens": sem_cfg.n_tokens,
                                  "semantic_seed": sem_cfg.trainer.seed})
        gen = timed("generator", lambda: build_generator(twin, out / "generator", cfg.generator, progress=say,
                                                         targets=targets, frame=cfg.frame,
                                                         teacher_steps=cfg.eval.teacher_steps))
        return {"bundle": None, "stage_s": times, "metrics": {}, "generator": gen}
    if load_stage_config("saliency", cfg.saliency.preset, cfg.saliency.params).features is not None:
        # this saliency preset fits its own pixel encoder (closed form): no contrastive stage
        con = {"models": {}}
        sal = timed("saliency", lambda: _extractor("saliency", cfg.saliency, twin, out / "saliency", resume, say))
    else:
        con = timed("contrastive", lambda: _extractor("contrastive", cfg.contrastive, twin,
                                                       out / "contrastive", resume, say))
        sal = timed("saliency", lambda: _extractor("saliency", cfg.saliency, twin, out / "saliency", resume, say,
                                                   encoder=con["models"]["pixel_encoder"]))
    sem = timed("semantic", lambda: _extractor("semantic", cfg.semantic, twin, out / "semantic", resume, say))
    if only == "extractors":
        return {"bundle": None, "stage_s": times, "metrics": {}, "generator": {}}
    targets = _targets(twin, sem)
    # 5. the generator: autoencoder, teacher, LCM student, voting encoder (each resumable)
    gen_dir = out / "generator"
    gen = timed("generator", lambda: build_generator(twin, gen_dir, cfg.generator, progress=say, targets=targets,
                                                     frame=cfg.frame, teacher_steps=cfg.eval.teacher_steps))
    # 6. the bundle, then 7. its held-out evaluation (written into the manifest's metrics)
    # a saliency run that fine-tuned the encoder (loss.encoder_lr_ratio > 0) exports the encoder it trained with
    pixel = sal["models"].get("pixel_encoder") or con["models"]["pixel_encoder"]
    semantic = _semantic_for_bundle(cfg.semantic, Path(sem["models"]["semantic_extractor"]), out / "semantic_tokens")
    extractors = {"pixel_encoder": pixel, "saliency": sal["models"]["saliency_generator"], "semantic": semantic}
    frame = cfg.frame.model_dump()
    classifier = timed("classifier", lambda: _classifier(cfg, twin, out / "classifier", say))

    def evaluate() -> dict:
        if (done := _done(out / "eval")) is not None:
            return done
        from .bundle_eval import evaluate_bundle_parts

        say("eval: reconstructing the held-out trials (student, teacher, baselines)")
        res = evaluate_bundle_parts(twin, extractors, gen_dir, targets, classifier, out / "eval", cfg)
        return _finish(out / "eval", res)

    report = timed("eval", evaluate)
    metrics = {k: float(v) for k, v in report["metrics"].items()}
    provenance_cmds = tuple(commands) + (f"stage seconds: {json.dumps({**_stage_seconds(out), **times})}",)
    bundle_dir = out / "bundle"
    if bundle_dir.exists():
        import shutil

        shutil.rmtree(bundle_dir)  # always re-assembled: it is cheap and carries this call's metrics
    timed("assemble", lambda: assemble_bundle(
        bundle_dir, twin_dir=twin, generator_dir=gen_dir, extractors=extractors, frame=frame,
        metrics=metrics, commands=provenance_cmds, name=cfg.name, class_embeddings=targets))
    (out / "stage_seconds.json").write_text(json.dumps(times, indent=1))
    return {"bundle": str(bundle_dir), "stage_s": times, "metrics": metrics, "generator": gen}


def _stage_seconds(out: Path) -> dict[str, float]:
    """Training seconds recorded by earlier calls (so a resumed build still reports every stage)."""
    res: dict[str, float] = {}
    for name in ("contrastive", "saliency", "semantic"):
        if (done := _done(out / name)) is not None:
            res[f"{name}_train_s"] = float(done.get("train_s", np.nan))
    return res

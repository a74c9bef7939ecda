"""``neuroimagen train ...``: the extractor stages, on accelerate.

Each command: load the stage preset (``--preset tiny|demo|paper`` or a YAML
file, then ``--param key=value``), build the stage on a twin folder, and run
it in ``--out`` (resuming from the last checkpoint there). Multi-process:
``accelerate launch $(which neuroimagen) train ...`` (or ``torchrun``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from ._common import common_options

_PRESET_HELP = "tiny (tests, seconds), demo (the embedded default), paper (the papers' sizes), or a YAML file."


@click.group()
def train() -> None:
    """Train the extractors (mae, contrastive, saliency, semantic), or a whole bundle (bundle).

    Presets live in configs/train/<stage>-<preset>.yaml. Every run folder holds
    config.yaml, run.json, metrics.csv, checkpoints/, samples/ (image stages),
    model/<name>/ (config.json + safetensors) and eval.json.
    """


def _stage_command(stage: str, summary: str, fmri: bool, extra: list | None = None):
    def decorate(func):
        @train.command(stage, help=summary)
        @click.argument("twin_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
        @click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
                      help="Run folder (created; an existing run resumes from its last checkpoint).")
        @click.option("--preset", default="demo", show_default=True, help=_PRESET_HELP)
        @click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                      help="Override one preset value, e.g. --param trainer.max_steps=100 (repeatable).")
        @click.option("--modality", type=click.Choice(["eeg", "fmri"] if fmri else ["eeg"]), default="eeg",
                      show_default=True, help="fmri: the voxel variant, on <twin>/fmri (data make-voxels).")
        @click.option("--resume/--no-resume", default=True, show_default=True,
                      help="Continue from the last checkpoint in --out.")
        @click.option("--stop-after-steps", type=click.IntRange(min=1), default=None,
                      help="Checkpoint and stop after this many steps in total (resume later).")
        @click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                      help="Also write the result (steps, model folders, metrics) here.")
        @common_options
        def command(twin_dir, out_dir, preset, params, modality, resume, stop_after_steps, json_path,
                    cfg_data, **kwargs):
            _run(stage, twin_dir, out_dir, preset, params, modality, resume, stop_after_steps, json_path,
                 **kwargs)

        for opt in reversed(extra or []):
            command = opt(command)
        return command

    return decorate


def _run(stage, twin_dir, out_dir, preset, params, modality, resume, stop_after_steps, json_path,
         encoder=None, init_mae=None) -> None:
    from rich.console import Console

    from neuroimagen.stream.config import ConfigError
    from neuroimagen.training.config import load_stage_config
    from neuroimagen.training.train.common import run_stage
    from neuroimagen.training.train.data import twin_info
    from neuroimagen.training.train.stages import build_stage

    try:
        cfg = load_stage_config(stage, preset, params)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        st = build_stage(stage, cfg, twin_dir, modality, encoder=encoder, init_mae=init_mae)
        info = {**twin_info(twin_dir), "modality": modality, "preset": str(preset), "params": list(params)}
        if encoder:
            info["encoder"] = str(encoder)
        if init_mae:
            info["init_mae"] = str(init_mae)
        result = run_stage(st, out_dir, resume=resume, data_info=info, stop_after_steps=stop_after_steps)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    if os.environ.get("RANK", "0") != "0":
        return  # one report per run, from the main process
    console = Console()
    console.print(f"{stage}: {result['step']} steps in {result['train_s']:.1f} s -> {out_dir}")
    for name, folder in result["models"].items():
        console.print(f"  {name}: {folder}")
    for k, v in result["eval"].items():
        console.print(f"  val {k}: {v:.4f}" if isinstance(v, float) else f"  val {k}: {v}")
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))


_ENCODER = click.option("--encoder", type=click.Path(exists=True, file_okay=False, path_type=Path),
                        default=None, help="The pixel encoder model folder (RUN/model/pixel_encoder); "
                        "not with a preset that sets `features:` (it fits its own).")
_INIT_MAE = click.option("--init-mae", type=click.Path(exists=True, file_okay=False, path_type=Path),
                         default=None, help="Initialise the encoder from a MAE model folder (RUN/model/mae).")


@_stage_command("mae", "Masked signal pretraining (DreamDiffusion MAE) on unlabelled windows.", fmri=False)
def mae() -> None:  # pragma: no cover - body replaced by the decorator
    """See the decorator."""


@_stage_command("contrastive", "Contrastive EEG encoder: the pixel encoder (triplet) or NICE (InfoNCE).",
                fmri=True)
def contrastive() -> None:  # pragma: no cover
    """See the decorator."""


@_stage_command("saliency", "The saliency GAN: pixel features -> a coarse image (where, how big, what colour).",
                fmri=True, extra=[_ENCODER])
def saliency() -> None:  # pragma: no cover
    """See the decorator."""


@_stage_command("semantic", "The semantic extractor: EEG -> conditioning tokens + pooled (class top-k).",
                fmri=True, extra=[_INIT_MAE])
def semantic() -> None:  # pragma: no cover
    """See the decorator."""


@train.command("bundle")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Build folder: one sub-folder per stage; the bundle is OUT/bundle.")
@click.option("--preset", default="demo", show_default=True,
              help="tiny (tests, seconds), demo (the embedded default), full (the demo recipe with a larger "
                   "latent and teacher options, on the 40-class full twin; about 83 min on one CPU core), or a YAML file "
                   "(configs/train/bundle-<preset>.yaml).")
@click.option("--twin", "twin_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The preset's twin if it exists there, else made there [default: OUT/twin].")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Override one preset value, e.g. --param frame.strength=0.7 (repeatable).")
@click.option("--resume/--no-resume", default=True, show_default=True,
              help="Skip finished stages and continue unfinished ones from their checkpoints.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the result (bundle folder, seconds per stage, metrics) here.")
@click.option("--only", type=click.Choice(["extractors", "generator"]), default=None,
              help="Run just these stages and stop (run the other in a second process on the same --out; "
                   "a last call without --only scores and assembles).")
@common_options
def bundle_command(out_dir: Path, preset: str, twin_dir: Path | None, params: tuple[str, ...], resume: bool,
                   json_path: Path | None, only: str | None, cfg_data: dict) -> None:
    """Train every part of a bundle on the synthetic twin and assemble it (staged, resumable).

    \b
    Stages: twin, contrastive (pixel encoder), saliency, semantic, generator (tiny autoencoder,
    UNet teacher, LCM student, voting encoder), classifier (n-way scoring), eval (held-out
    reconstructions vs decode(encode(saliency)), the class mean and the teacher), bundle.
    Check the result with `neuroimagen bundle verify OUT/bundle`.
    """
    import shlex

    from rich.console import Console

    from neuroimagen.stream.config import ConfigError
    from neuroimagen.training.train.bundle_build import build_bundle, load_bundle_preset

    try:
        cfg = load_bundle_preset(preset, params)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    console = Console()
    args = ["--preset", str(preset), "--out", str(out_dir)]
    args += ["--twin", str(twin_dir)] if twin_dir is not None else []
    args += [a for p in params for a in ("--param", p)]
    command = "neuroimagen train bundle " + " ".join(shlex.quote(a) for a in args)
    try:
        result = build_bundle(cfg, out_dir, twin_dir=twin_dir, resume=resume, commands=(command,),
                              progress=lambda msg: console.print(msg, highlight=False), only=only)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    if only is not None:
        console.print(f"{only} stages done in {out_dir}: "
                      + ", ".join(f"{k} {v:.0f} s" for k, v in result["stage_s"].items()))
        return
    console.print(f"bundle: {result['bundle']}")
    console.print("seconds per stage (this call): "
                  + ", ".join(f"{k} {v:.0f}" for k, v in result["stage_s"].items()))
    m = result["metrics"]
    console.print(f"held-out {int(m['eval_n_trials'])} trials, {int(m['n_way'])}-way top-1 (+/- SE) | SSIM:")
    for name in ("student", "teacher_ddpm", "teacher_ddim", "autoencoder", "shuffled", "saliency", "class_mean"):
        console.print(f"  {name:12s} {m[f'{name}_nway']:.3f} +/- {m[f'{name}_nway_se']:.3f} | "
                      f"{m[f'{name}_ssim']:.3f}")
    console.print(f"  student - decode(encode(saliency)): {m['margin_student_vs_autoencoder']:+.3f} "
                  f"+/- {m['margin_student_vs_autoencoder_se']:.3f}; shuffled conditioning: "
                  f"{m['margin_shuffled_vs_autoencoder']:+.3f} +/- {m['margin_shuffled_vs_autoencoder_se']:.3f}")
    for teacher in ("teacher_ddpm", "teacher_ddim"):
        console.print(f"  student - {teacher}: {m[f'gap_student_vs_{teacher}_nway']:+.3f} top-1, "
                      f"{m[f'gap_student_vs_{teacher}_ssim']:+.3f} +/- {m[f'gap_student_vs_{teacher}_ssim_se']:.3f} SSIM")
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2, default=str))
@train.command("calibrate")
@click.option("--session", "session_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Session folder (neuroimagen present, or stream simulate-session).")
@click.option("--bundle", "bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="BASE bundle (only read).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="NEW bundle folder (must not exist or be empty).")
@click.option("--budget", "budget_s", type=click.FloatRange(min=1.0), default=600.0, show_default=True,
              help="Seconds for the whole adaptation (split between the methods).")
@click.option("--max-steps", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Optimizer steps per method at most.")
@click.option("--method", "methods", multiple=True,
              type=click.Choice(["subject_layer", "heads", "restandardise", "refit", "refit_prior"]),
              help="Methods to try (default: those that fit the bundle's extractors: subject_layer and heads "
                   "for the convolutional ones, refit and refit_prior for the feature ones, which also take "
                   "restandardise; the best on validation is kept).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the calibration report here.")
@common_options
def calibrate(session_dir, bundle_dir, out_dir, budget_s, max_steps, methods, seed, json_path, cfg_data) -> None:
    """Adapt BASE to the subject of a recorded session (subject layer, heads, or a closed-form refit); write NEW."""
    import shlex
    import sys

    from neuroimagen.training.models.bundle import BundleError
    from neuroimagen.training.train.calibrate import CalibrationError
    from neuroimagen.training.train.calibrate import calibrate as run_calibration

    try:
        report = run_calibration(session_dir, bundle_dir, out_dir, budget_s=budget_s, max_steps=max_steps,
                                 methods=methods or None, seed=seed,
                                 command="neuroimagen " + shlex.join(sys.argv[1:]))
    except (CalibrationError, BundleError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    b, a = report["before"], report["after"]
    click.echo(f"{out_dir}: kept {report['kept']}; held-out top-1 {b['top1']:.3f} -> {a['top1']:.3f}, "
               f"SSIM {b['ssim']:.3f} -> {a['ssim']:.3f} ({report['n_test']} test trials of "
               f"{report['n_trials']}); {report['calibration_s']:.1f} s")
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=1))

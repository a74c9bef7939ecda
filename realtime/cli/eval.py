"""``neuroimagen eval ...``: metrics, reports and the split-leak check."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import common_options

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_FILE_IN = click.Path(exists=True, dir_okay=False, path_type=Path)
_FILE_OUT = click.Path(dir_okay=False, path_type=Path)


@click.group(name="eval")
def eval_() -> None:
    """Evaluate reconstructions: n-way top-k, SSIM/PCC, retrieval, CLIP, IS/FID; leak checks."""


@eval_.command("images")
@click.option(
    "--gt", "gt_dir", type=_DIR, required=True, help="Ground-truth images (matched by file stem)."
)
@click.option("--pred", "pred_dir", type=_DIR, required=True, help="Reconstructed images.")
@click.option(
    "--saliency",
    "saliency_dir",
    type=_DIR,
    default=None,
    help="Saliency maps (same stems), drawn in the grid.",
)
@click.option(
    "--json", "json_path", type=_FILE_OUT, default=None, help="Write the full report here."
)
@click.option(
    "--grid",
    "grid_path",
    type=_FILE_OUT,
    default=None,
    help="Write a PNG grid: ground truth | saliency | reconstruction.",
)
@click.option(
    "--classifier",
    "classifier_path",
    type=_DIR,
    default=None,
    help="Stimulus classifier model folder (eval train-classifier) for n-way top-k.",
)
@click.option("--n-way", type=click.IntRange(min=2), default=50, show_default=True)
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--n-trials",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Random class draws per image.",
)
@click.option(
    "--clip",
    "clip_path",
    type=_DIR,
    default=None,
    help="Local transformers CLIP model folder: CLIP similarity + retrieval.",
)
@click.option(
    "--inception-weights",
    type=_FILE_IN,
    default=None,
    help="torch-fidelity Inception-v3 weights file: FID + IS.",
)
@click.option("--image-size", type=click.IntRange(min=11), default=256, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-grid-rows", type=click.IntRange(min=1), default=16, show_default=True)
@common_options
def images(cfg_data: dict, **kwargs) -> None:
    """Score reconstructions against ground truth (whatever the given models allow)."""
    from neuroimagen.training.eval.report import run_image_eval, summary_lines

    try:
        report = run_image_eval(**kwargs)
    except (FileNotFoundError, ValueError, ImportError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in summary_lines(report):
        click.echo(line)


@eval_.command("leak")
@click.option(
    "--eeg",
    "eeg_path",
    type=_FILE_IN,
    required=True,
    help="EEG-ImageNet eeg_*.pth (or the twin's).",
)
@click.option(
    "--splits", "splits_path", type=_FILE_IN, required=True, help="block_splits_by_image_*.pth"
)
@click.option("--split-index", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "json_path", type=_FILE_OUT, default=None, help="Write the report here.")
@click.option(
    "--fail-on-leak", is_flag=True, help="Exit with status 1 when train and test share blocks."
)
@common_options
def leak(
    cfg_data: dict,
    eeg_path: Path,
    splits_path: Path,
    split_index: int,
    json_path: Path | None,
    fail_on_leak: bool,
) -> None:
    """Warn when train and test share recording blocks (the block-design confound)."""
    from neuroimagen.training.eval.leak import check_eeg_imagenet_leak
    from neuroimagen.training.eval.report import write_json

    try:
        report = check_eeg_imagenet_leak(eeg_path, splits_path, split_index)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if json_path:
        write_json(report, json_path)
    b = report["blocks"]
    click.echo(
        f"train {report['n_train']} / test {report['n_test']} samples; "
        f"{b['n_shared_groups']} of {b['n_test_groups']} test blocks shared with train "
        f"({100 * b['test_fraction_shared']:.1f}% of test samples)"
    )
    if report["leak"]:
        click.echo("LEAK: " + "; ".join(report["warnings"]))
    elif report.get("inconclusive"):
        click.echo("INCONCLUSIVE: " + "; ".join(report["warnings"]))
    else:
        click.echo("no leak")
    if fail_on_leak and report["leak"]:
        raise SystemExit(1)


@eval_.command("train-classifier")
@click.argument("twin_dir", type=_DIR)
@click.option("--out", "out_path", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Classifier model folder to write (config.json + safetensors).")
@click.option("--image-size", type=click.IntRange(min=8), default=48, show_default=True)
@click.option("--n-epochs", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@common_options
def train_classifier(
    cfg_data: dict, twin_dir: Path, out_path: Path, image_size: int, n_epochs: int, seed: int
) -> None:
    """Train the small stimulus classifier for n-way top-k on a twin (TWIN_DIR/images/<wnid>/*.JPEG)."""
    from neuroimagen.training.eval.nway import save_classifier, train_stimulus_classifier

    try:
        model = train_stimulus_classifier(
            twin_dir, image_size=image_size, n_epochs=n_epochs, seed=seed
        )
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    save_classifier(model, out_path)
    click.echo(f"wrote {out_path} ({len(model.class_ids)} classes)")


@eval_.command("extractors")
@click.argument("twin_dir", type=_DIR)
@click.option("--semantic", type=_DIR, default=None,
              help="Semantic extractor model folder (SemanticExtractor or FeatureSemanticExtractor).")
@click.option("--pixel-encoder", type=_DIR, default=None, help="PixelEncoder model folder.")
@click.option("--saliency", type=_DIR, default=None, help="SaliencyGenerator model folder.")
@click.option("--mae", type=_DIR, default=None, help="MaskedEEGAutoencoder model folder.")
@click.option("--semantic-shuffled", type=_DIR, default=None,
              help="Semantic extractor trained with loss.shuffle_labels=true (the control).")
@click.option("--oracle/--no-oracle", default=False, show_default=True,
              help="Also run the twin's oracle decoder; report class top-1 as a fraction of it.")
@click.option("--split-index", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "json_path", type=_FILE_OUT, default=None)
@common_options
def extractors(cfg_data: dict, twin_dir: Path, semantic, pixel_encoder, saliency, mae, semantic_shuffled,
               oracle: bool, split_index: int, json_path: Path | None) -> None:
    """Held-out (test images) figures of trained extractors on a twin, next to the linear baseline."""
    import json

    from neuroimagen.training.eval.extractors import evaluate_extractors

    res = evaluate_extractors(twin_dir, semantic=semantic, pixel_encoder=pixel_encoder, saliency=saliency,
                              mae=mae, split_index=split_index, semantic_shuffled=semantic_shuffled,
                              oracle=oracle)
    click.echo(json.dumps(res, indent=2))
    if json_path is not None:
        json_path.write_text(json.dumps(res, indent=2))

"""``neuroimagen data ...``: datasets and the synthetic twin."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import common_options


@click.group()
def data() -> None:
    """Datasets: inspect real ones, make the synthetic EEG-ImageNet twin, run baselines."""


@data.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@common_options
def inspect_file(file: Path, cfg_data: dict) -> None:
    """Show what a dataset file holds: kind, counts, shapes, classes, subjects.

    Knows EEG-ImageNet .pth files and splits, Things-EEG2 .npy, fMRI betas,
    caption JSON, class-name YAML and any recording MNE or XDF can read.
    """
    from rich.console import Console
    from rich.table import Table

    from neuroimagen.training.data._io import DatasetFileError
    from neuroimagen.training.data.inspect import inspect_dataset_file

    try:
        info = inspect_dataset_file(file)
    except DatasetFileError as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(title=str(file), show_header=False)
    for key, value in info.items():
        table.add_row(key, str(value))
    Console().print(table)


@data.command("make-twin")
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
    help="Output folder (created; twin files in it are overwritten).",
)
@click.option(
    "--preset", type=click.Choice(["small", "full"]), default=None,
    help="small: 10 classes x 20 images, 2 subjects; full: 40 x 50, 2 subjects "
    "[default: training.twin.preset].",
)
@click.option("--seed", type=int, default=None, help="Generator seed [default: training.twin.seed].")
@click.option(
    "--order", type=click.Choice(["rapid", "block"]), default=None,
    help="Presentation order; block reproduces EEG-ImageNet's block-design confound "
    "[default: training.twin.order].",
)
@click.option(
    "--class-snr", type=click.FloatRange(min=0), default=None,
    help="Class component SNR; 0 leaves no class content [default: training.twin.class_snr].",
)
@click.option(
    "--bundle", "bundle_path", default=None,
    help="Make the twin this bundle was trained on (its manifest's whole twin config): a bundle "
    "folder, or 'embedded' for the embedded default. Not with --preset/--seed/--order/--class-snr.",
)
@common_options
def make_twin_cmd(out_dir: Path, preset: str | None, seed: int | None, order: str | None,
                  class_snr: float | None, bundle_path: str | None, cfg_data: dict) -> None:
    """Generate the synthetic EEG-ImageNet twin: stimuli, raw FIF sessions, .pth files, targets.

    Example: neuroimagen data make-twin --preset small --seed 0 --out twin-small;
    neuroimagen data make-twin --bundle embedded --out twin (the embedded default's twin)
    """
    from rich.console import Console

    from neuroimagen.stream.config import StreamConfig
    from neuroimagen.training.config import TrainingConfig
    from neuroimagen.training.data.twin import make_twin

    from ._common import section

    stream_cfg = section(StreamConfig, cfg_data, "stream")
    train_cfg = section(TrainingConfig, cfg_data, "training")
    update = {k: v for k, v in (("preset", preset), ("seed", seed), ("order", order),
                                ("class_snr", class_snr)) if v is not None}
    twin_cfg = train_cfg.twin.model_copy(update=update)
    if bundle_path is not None:
        twin_cfg = _bundle_twin_config(bundle_path, update)
    console = Console(stderr=True)
    with console.status("making the twin") as status:
        meta = make_twin(out_dir, twin_cfg, stream_cfg.preprocessing,
                         caption_template=train_cfg.data.caption_template,
                         progress=lambda msg: status.update(msg))
    sizes = meta["sizes"]
    console.print(
        f"twin written to {out_dir}: {sizes['n_classes']} classes x {sizes['n_images_per_class']} "
        f"images, {sizes['n_subjects']} subject(s), order {meta['config']['order']}, seed {meta['seed']}"
    )


def _bundle_twin_config(bundle_path: str, update: dict):
    """The TwinConfig a bundle's manifest records (``--bundle``)."""
    from neuroimagen.realtime.embedded import embedded_bundle
    from neuroimagen.training.config import TwinConfig
    from neuroimagen.training.models.bundle import BundleError, read_manifest

    if update:
        raise click.UsageError(f"--bundle takes the whole twin config from the bundle; drop --{', --'.join(update)}"
                               .replace("_", "-"))
    path = embedded_bundle() if bundle_path == "embedded" else Path(bundle_path)
    if path is None:
        raise click.ClickException("this install has no embedded bundle; pass a bundle folder to --bundle")
    try:
        twin = read_manifest(path).provenance.twin
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    if twin is None:
        raise click.ClickException(f"bundle {path} was not trained on the synthetic twin (its manifest names none)")
    return TwinConfig.model_validate(twin.twin_config())


@data.command("baseline")
@click.argument("twin_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--evaluation", type=click.Choice(["cv", "split"]), default="cv", show_default=True,
    help="cv: k-fold grouped by image over all trials; split: the splits file's train -> test.",
)
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True)
@click.option("--split-index", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the results here.")
@common_options
def baseline_cmd(twin_dir: Path, evaluation: str, folds: int, split_index: int,
                 json_path: Path | None, cfg_data: dict) -> None:
    """Linear single-trial baseline on a twin: class, hemifield, quadrant, shuffled-label control.

    Example: neuroimagen data baseline twin-small --json baseline.json
    """
    import json

    from rich.console import Console
    from rich.table import Table

    from neuroimagen.training.data.twin.baseline import run_baseline

    try:
        result = run_baseline(twin_dir, evaluation, folds, split_index)
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    table = Table(title=f"baseline on {twin_dir} ({evaluation}, split by image, "
                  f"{result['n_trials']} trials, {result['n_features']} features)")
    for col in ("task", "n-way", "accuracy", "chance", "x chance", "n test"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for r in result["rows"]:
        table.add_row(r["task"], str(r["n_classes"]), f"{r['accuracy']:.3f}", f"{r['chance']:.3f}",
                      f"{r['ratio']:.2f}", str(r["n_test"]))
    Console().print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))


@data.command("make-voxels")
@click.argument("twin_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--n-voxels", type=click.IntRange(min=2), default=512, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True, help="Trials per image.")
@click.option("--class-snr", type=click.FloatRange(min=0), default=0.5, show_default=True)
@click.option("--layout-snr", type=click.FloatRange(min=0), default=0.5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@common_options
def make_voxels_cmd(twin_dir: Path, n_voxels: int, repeats: int, class_snr: float, layout_snr: float,
                    seed: int, cfg_data: dict) -> None:
    """Synthetic fMRI voxels for a twin (TWIN_DIR/fmri): linear mixing of its stimulus factors + noise.

    Example: neuroimagen data make-voxels twin-small && neuroimagen train semantic twin-small --modality fmri ...
    """
    from rich.console import Console

    from neuroimagen.training.data.twin.voxels import make_voxel_twin

    meta = make_voxel_twin(twin_dir, n_voxels=n_voxels, n_repeats=repeats, class_snr=class_snr,
                           layout_snr=layout_snr, seed=seed)
    Console().print(f"{len(meta['images']) * repeats} voxel trials x {n_voxels} voxels -> {twin_dir}/fmri")


@data.command("oracle")
@click.argument("twin_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="test", show_default=True)
@click.option("--split-index", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--background-s", type=click.FloatRange(min=10), default=120.0, show_default=True,
              help="Seconds of simulated background for the noise covariance.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@common_options
def oracle_cmd(twin_dir: Path, split: str, split_index: int, background_s: float, json_path: Path | None,
               cfg_data: dict) -> None:
    """The oracle decoder's class accuracy on a twin: the ceiling every decoder is reported against.

    A matched filter with the twin's true class and layout templates, the subjects' gains and
    latencies, and the background covariance. Example: neuroimagen data oracle twin --split test
    """
    import json

    from rich.console import Console

    from neuroimagen.training.data.twin.oracle import run_oracle

    try:
        res = run_oracle(twin_dir, split, split_index, background_s=background_s)
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    Console().print(f"oracle on {twin_dir} ({split}, {res['n_test']} trials): class accuracy "
                    f"{res['accuracy']:.3f} (chance {res['chance']:.3f})")
    if json_path is not None:
        json_path.write_text(json.dumps(res, indent=2))

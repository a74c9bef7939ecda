"""``neuroimagen bundle ...``: verify and inspect model bundles."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._common import common_options

_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.group(name="bundle")
def bundle() -> None:
    """Verify and inspect model bundles (manifest, per-file sha256, stream contract)."""


@bundle.command("verify")
@click.argument("path", type=_DIR)
@click.option(
    "--external/--no-external",
    default=True,
    show_default=True,
    help="Also hash the external base models (SD weights) the bundle references.",
)
@common_options
def verify(cfg_data: dict, path: Path, external: bool) -> None:
    """Check every file of the bundle at PATH against its manifest; exit 1 naming what differs."""
    from neuroimagen.training.models.bundle import BundleError, verify_bundle

    try:
        manifest = verify_bundle(path, external=external)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    n_files = sum(len(m.files) for m in manifest.members) + len(manifest.files)
    click.echo(
        f"OK: {path}: bundle {manifest.name!r}, {len(manifest.members)} models, {n_files} files "
        f"match the manifest"
        + (f", {len(manifest.external)} external base model(s) checked" if external and manifest.external else "")
    )
    if manifest.simulated:
        click.echo("Note: this model was trained on SIMULATED EEG (the synthetic twin).")


@bundle.command("info")
@click.argument("path", type=_DIR)
@click.option("--json", "as_json", is_flag=True, help="Print the description as JSON.")
@common_options
def info(cfg_data: dict, path: Path, as_json: bool) -> None:
    """Models, sizes, stream contract, preprocessing, generator and metrics of the bundle at PATH."""
    from rich.console import Console
    from rich.table import Table

    from neuroimagen.training.models.bundle import BundleError, describe_bundle, read_manifest

    try:
        desc = describe_bundle(read_manifest(path))
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(desc, indent=1, default=str))
        return
    console = Console()
    console.print(f"[bold]{desc['name']}[/bold]  {desc['size']}  {desc['description']}")
    if desc["notice"]:
        console.print(f"[bold yellow]{desc['notice']}[/bold yellow]")
    models = Table(title="models")
    for col in ("name", "role", "class", "size", "parameters", "where"):
        models.add_column(col)
    for m in desc["models"]:
        models.add_row(m["name"], m["role"], m["class"], m["size"], f"{m['parameters']:,}", m["where"])
    console.print(models)
    for title in ("stream", "preprocessing", "generator", "metrics"):
        section = desc[title]
        if not section:
            continue
        table = Table(title=title, show_header=False)
        for k, v in section.items():
            table.add_row(k, f"{v:.4g}" if isinstance(v, float) else str(v))
        console.print(table)
    prov = desc["provenance"]
    console.print(f"provenance: data={prov['data']} seed={prov['seed']} twin={prov['twin']} "
                  f"created={prov['created_utc']}")
    for cmd in prov["commands"]:
        console.print(f"  $ {cmd}")
    console.print("Run 'neuroimagen bundle verify PATH' to check every file's sha256.")

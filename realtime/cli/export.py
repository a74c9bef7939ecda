"""``neuroimagen export``: ONNX (+ TensorRT engines) of a bundle, with parity."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import common_options, section


@click.command("export")
@click.option("--bundle", "bundle_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              required=True, help="Source bundle (only read; verified first).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The new bundle (must not exist or be empty). Omit with --tensorrt to build engines "
                   "for an already exported --bundle.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu",
              help="Where torch and onnxruntime run for the parity check (fp16 needs cuda).")
@click.option("--tensorrt", "tensorrt", is_flag=True,
              help="Also build TensorRT engines from the ONNX graphs (needs tensorrt + a CUDA GPU).")
@click.option("--engine-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where engines go (default: <bundle>.tensorrt/ beside the bundle, where realtime.backend=tensorrt reads them).")
@click.option("--rebuild-engines", is_flag=True,
              help="Rebuild engines whose manifest does not match this GPU, TensorRT, CUDA or the graphs.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the parity table as JSON here.")
@common_options
def export(cfg_data: dict, bundle_path: Path, out: Path | None, device: str, tensorrt: bool,
           engine_dir: Path | None, rebuild_engines: bool, json_path: Path | None) -> None:
    """Export every part of a bundle to ONNX, check parity, write a NEW bundle.

    \b
    ONNX: pixel encoder, saliency generator, semantic extractor, conditioning
    projection, VAE/TAESD encoder and decoder, UNet; opset from export.opset
    (default 18), torch's dynamo exporter (export.exporter), named inputs/outputs,
    dynamic batch for extractors, external data above export.external_data_mb,
    ONNX checker. onnxruntime is compared with torch on every part's outputs;
    the table is printed and each error is written into the new bundle's
    metrics (onnx_parity_<part>_<output>). Exceeding export.parity_atol
    (fp32, 1e-4 on unit-scale outputs; fp16: export.parity_atol_fp16) writes
    nothing and exits 1. Run it with: --set realtime.backend=onnxruntime.

    \b
    TensorRT (NOT YET VERIFIED ON A GPU): --tensorrt builds one engine per ONNX
    graph with the tensorrt Python API: fp16 (export.tensorrt.precision),
    an optimisation profile per input (batch 1..export.tensorrt.max_batch),
    a workspace limit and a timing cache kept in the engine folder. Each
    <part>.plan has a <part>.json manifest (TensorRT and CUDA versions, GPU
    compute capability, shapes, precision, ONNX sha256); an engine that does
    not match is refused with the reasons, by this command and by
    realtime.backend=tensorrt, and rebuilt with --rebuild-engines.
    Example: neuroimagen export --bundle B --out B2 --tensorrt --device cuda
    """
    import json

    from rich.console import Console
    from rich.table import Table

    from neuroimagen.export.config import ExportConfig

    cfg = section(ExportConfig, cfg_data, "export")
    target = bundle_path
    console = Console(stderr=True)
    if out is not None:
        from neuroimagen.export.onnx import export_bundle
        from neuroimagen.training.models.bundle import BundleError

        try:
            with console.status("exporting") as status:
                report = export_bundle(bundle_path, out, cfg, device=device,
                                       progress=lambda p: status.update(f"exporting {p} to ONNX"),
                                       command=f"neuroimagen export --bundle {bundle_path} --out {out}")
        except (BundleError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from None
        table = Table(title=f"onnxruntime vs torch ({cfg.precision}, atol {report.parity[0].atol:g}, "
                            f"{report.parity[0].provider})")
        for col in ("part", "output", "max abs error", "output scale", "scaled error", "ok"):
            table.add_column(col)
        for part, name, err, scale, scaled, ok in report.rows():
            table.add_row(part, name, f"{err:.2e}", f"{scale:.3f}", f"{scaled:.2e}", "ok" if ok else "FAIL")
        Console().print(table)
        if json_path is not None:
            json_path.write_text(json.dumps(
                [dict(zip(("part", "output", "max_abs_err", "scale", "scaled_err", "ok"), r, strict=True))
                 for r in report.rows()], indent=2), encoding="utf-8")
        click.echo(f"wrote {out}: {len(report.manifest.artifacts)} ONNX graphs, parity within "
                   f"{report.parity[0].atol:g}")
        target = out
    elif not tensorrt:
        raise click.UsageError("give --out NEW_BUNDLE (ONNX export) and/or --tensorrt (engines)")
    if tensorrt:
        from neuroimagen.export.tensorrt import build_engines

        try:
            results = build_engines(target, cfg.tensorrt, engine_dir=engine_dir, rebuild=rebuild_engines,
                                    progress=lambda p: click.echo(f"building TensorRT engine: {p}", err=True))
        except ImportError as exc:
            raise click.ClickException(f"--tensorrt needs the tensorrt package on a CUDA machine: {exc}") from None
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
        for r in results:
            click.echo(f"{r.part}: {r.action} {r.path}" + (f" ({'; '.join(r.reasons)})" if r.reasons else ""))

"""``neuroimagen demo``: the embedded default, no downloads."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ._common import common_options, section


def default_cache_dir() -> Path:
    base = os.environ.get("NEUROIMAGEN_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "neuroimagen" if base else Path.home() / ".cache" / "neuroimagen"


@click.command()
@click.option("--duration", type=float, default=60.0, show_default=True, help="Seconds to run.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the demo's twin and decoder are kept (default: ~/.cache/neuroimagen/demo).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Twin seed.")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Replay speed (1 = real time).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the final figures as JSON.")
@common_options
def demo(duration: float, workdir: Path | None, seed: int, speed: float, json_path: Path | None,
         cfg_data: dict) -> None:
    """Run the embedded default end to end: a synthetic-twin session streamed over LSL,
    windowed and decoded live (GUI where a display exists once the GUI lands; headless now).

    \b
    1. make the small synthetic twin (first run only, ~10 s; cached in --workdir)
    2. fit the linear baseline decoder on the twin's train split (first run only)
    3. replay a twin session as an LSL headset + marker stream, connect like a live
       client, cut marker-locked windows and decode each one; held-out images are scored
    """
    import json
    import logging

    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from neuroimagen.realtime.demo import DemoStats, run_demo
    from neuroimagen.stream.config import StreamConfig
    from neuroimagen.training.config import TwinConfig
    from neuroimagen.training.data.twin import make_twin
    from neuroimagen.training.data.twin.baseline import fit_decoder
    from neuroimagen.training.models.linear_decoder import LinearWindowDecoder

    log = logging.getLogger("neuroimagen.demo")
    console = Console()
    stream_cfg = section(StreamConfig, cfg_data, "stream")
    root = (workdir or default_cache_dir() / "demo") / f"twin-small-seed{seed}"

    # 1. the twin (cached)
    if not (root / "twin.json").is_file():
        console.print(f"[bold]1/3[/] making the small synthetic twin in {root} ...")
        make_twin(root, TwinConfig(preset="small", seed=seed))
    else:
        console.print(f"[bold]1/3[/] using the twin in {root}")

    # 2. the decoder (cached), fitted on the train split only
    decoder_path = root / "demo_decoder"
    if not (decoder_path / "config.json").is_file():
        console.print("[bold]2/3[/] fitting the linear decoder on the twin's train split ...")
        fit_decoder(root, split="train").save(decoder_path)
    decoder = LinearWindowDecoder.load(decoder_path)

    # 3. live
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    if has_display:
        log.warning("the GUI lands with its own issue; running headless in this terminal")
    console.print(f"[bold]3/3[/] streaming over LSL and decoding live for {duration:.0f} s "
                  f"(images the decoder was not fitted on are scored separately)")

    def table(stats: DemoStats) -> Table:
        s = stats.summary()
        t = Table(title="NeuroImagen demo: live decoding of a replayed twin session", show_header=False)

        def pct(v):
            return "-" if v is None else f"{100 * v:.0f} %"

        t.add_row("windows decoded", f"{s['n_windows']} ({s['n_heldout_windows']} of held-out images)")
        t.add_row("class top-1, held-out", f"{pct(s['class_top1_heldout'])} (chance {pct(s['chance_class_top1'])})")
        t.add_row("class top-3, held-out", pct(s["class_top3_heldout"]))
        t.add_row("hemifield, held-out", f"{pct(s['hemifield_heldout'])} (chance 50 %)")
        t.add_row("class top-1, images seen in fitting", pct(s["class_top1_seen"]))
        if stats.last:
            last = stats.last
            t.add_row("last window", f"{last['image']}: true '{last['true']}', top-3 {last['top']}")
        if s["latency_ms_p50"] is not None:
            t.add_row("latency (last sample -> prediction)",
                      f"p50 {s['latency_ms_p50']:.1f} ms, p99 {s['latency_ms_p99']:.1f} ms")
        t.add_row("dropped windows / lost samples", f"{s['n_dropped_windows']} / {s['n_lost_samples']}")
        return t

    with Live(table(DemoStats()), console=console, refresh_per_second=4, transient=False) as live:
        stats = run_demo(root, decoder, stream_cfg, duration,
                         on_update=lambda st: live.update(table(st)), speed=speed)
        live.update(table(stats))
    summary = stats.summary()
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2))
        console.print(f"figures written to {json_path}")
    if summary["n_windows"] == 0:
        raise click.ClickException("no window was decoded: the LSL stream was not received")

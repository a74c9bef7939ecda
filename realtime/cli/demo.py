"""``neuroimagen demo``: the embedded default, no downloads."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ._common import common_options, section, stop_on_signals


def default_cache_dir() -> Path:
    base = os.environ.get("NEUROIMAGEN_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base) / "neuroimagen" if base else Path.home() / ".cache" / "neuroimagen"


def bundle_twin_dir(twin: Any, workdir: Path | None = None, say: Callable[[str], None] | None = None,
                    make: bool = True) -> Path:
    """The twin a bundle was trained on (its manifest's ``provenance.twin``), made once and cached.

    The folder is ``WORKDIR/twin-<preset>-seed<seed>`` (``WORKDIR`` defaults to the cache's
    ``demo/``), with a hash of the config appended when the bundle's twin is not the plain
    preset, so two bundles' twins never share a folder. ``make=False`` only names it.
    """
    import hashlib
    import json

    from neuroimagen.training.config import TwinConfig
    from neuroimagen.training.data.twin import make_twin

    cfg = TwinConfig.model_validate(twin.twin_config())
    plain = TwinConfig(preset=cfg.preset, seed=cfg.seed)
    name = f"twin-{cfg.preset}-seed{cfg.seed}"
    if cfg != plain:
        digest = hashlib.sha256(json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
        name += f"-{digest[:8]}"
    root = (workdir or default_cache_dir() / "demo") / name
    if not make:
        return root
    if not (root / "twin.json").is_file():
        if say is not None:
            say(f"making the {cfg.preset} synthetic twin (seed {cfg.seed}) in {root} ...")
        make_twin(root, cfg)
    elif say is not None:
        say(f"using the twin in {root}")
    return root


@click.command()
@click.option("--duration", type=float, default=60.0, show_default=True, help="Seconds to run.")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the demo's twin and decoder are kept (default: ~/.cache/neuroimagen/demo).",
)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Twin seed (linear demo; a bundle names its own twin).")
@click.option("--speed", type=float, default=1.0, show_default=True, help="Replay speed (1 = real time).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the final figures as JSON too.")
@click.option("--bundle", "bundle_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Model bundle folder (default: realtime.bundle, else the embedded one).")
@click.option("--linear", is_flag=True,
              help="Decode with the linear baseline instead of a bundle (class, hemifield; no images).")
@click.option("--headless", is_flag=True, help="No GUI: the terminal table only (the GUI runs offscreen without a display).")
@click.option("--screenshot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="GUI: save the main window as PNG 1 s before --duration ends.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Session folder: frames, top-k, EEG, metrics.json (default: sessions/demo-<date>-<time>).")
@common_options
def demo(duration: float, workdir: Path | None, seed: int, speed: float, json_path: Path | None,
         bundle_path: Path | None, linear: bool, headless: bool, screenshot: Path | None,
         out_dir: Path | None, cfg_data: dict) -> None:
    """Run the embedded default end to end: a synthetic-twin session streamed over LSL and
    reconstructed live: in the GUI where a display exists, else (or with --headless) as a live
    terminal table; --screenshot renders the GUI offscreen where there is no display.

    \b
    With a bundle (--bundle, realtime.bundle, or the embedded one):
    1. make the bundle's twin (first run only; cached in --workdir)
    2. replay a twin session as an LSL headset + marker stream
    3. reconstruct every window with the real-time engine; held-out images are scored
       live (class accuracy, SSIM, n-way); --out gets the frames and metrics.json
    Without one, or with --linear: the same replay, decoded by the linear baseline (fitted
    once on the twin's train split).
    """
    from neuroimagen.realtime.config import RealtimeConfig
    from neuroimagen.realtime.embedded import embedded_bundle

    rt_cfg = section(RealtimeConfig, cfg_data, "realtime")
    if linear and bundle_path:
        raise click.UsageError("--linear and --bundle exclude each other")
    if not linear and (bundle_path or rt_cfg.bundle or embedded_bundle()):
        from .gui import has_display

        if not headless and screenshot is None and not has_display():
            # no screen to show a window on: the terminal table (--screenshot renders the GUI offscreen)
            click.echo("no display (DISPLAY, WAYLAND_DISPLAY and QT_QPA_PLATFORM are unset): running headless; "
                       "--screenshot FILE renders the GUI offscreen")
            headless = True
        _bundle_demo(duration, workdir, speed, json_path, bundle_path, headless, out_dir, cfg_data, rt_cfg,
                     screenshot)
    else:
        if screenshot is not None:
            raise click.UsageError("--screenshot needs the GUI, which needs a model bundle (--bundle, "
                                   "realtime.bundle or an embedded one), not --linear")
        _linear_demo(duration, workdir, seed, speed, json_path, cfg_data, out_dir)


def _bundle_demo(duration: float, workdir: Path | None, speed: float, json_path: Path | None,
                 bundle_path: Path | None, headless: bool, out_dir: Path | None, cfg_data: dict,
                 rt_cfg, screenshot: Path | None = None) -> None:
    import json
    import logging

    from rich.console import Console

    from neuroimagen.realtime.demo import run_bundle_demo
    from neuroimagen.stream.config import StreamConfig

    from .live import (
        default_session_dir,
        load_backend_or_fail,
        load_bundle_or_fail,
        resolved_config,
        run_with_table,
    )
    from .scoring import LiveScorer, twin_truth

    log = logging.getLogger("neuroimagen.demo")
    console = Console()
    stream_cfg = section(StreamConfig, cfg_data, "stream")
    bundle = load_bundle_or_fail(bundle_path, rt_cfg)
    twin = bundle.manifest.provenance.twin
    if twin is None:
        raise click.ClickException(
            f"bundle {bundle.manifest.name!r} was not trained on the synthetic twin, so the demo has no "
            "session to replay; use `neuroimagen run --bundle PATH` on a live or replayed stream"
        )
    # 1. the bundle's twin (cached)
    root = bundle_twin_dir(twin, workdir, say=lambda msg: console.print(f"[bold]1/3[/] {msg}"))
    from neuroimagen.training.models.bundle import twin_mismatches

    problems = twin_mismatches(json.loads((root / "twin.json").read_text()), bundle.manifest)
    if problems:
        raise click.ClickException(f"the twin in {root} is not the one bundle {bundle.manifest.name!r} was "
                                   "trained on: " + "; ".join(problems) + " (delete the folder to regenerate it)")
    console.print(f"    twin matches the bundle's manifest (preset {twin.preset}, seed {twin.seed}, "
                  f"version {twin.version}, normalisation statistics)")
    if bundle.manifest.simulated:
        console.print(f"[bold yellow]Note: bundle {bundle.manifest.name!r} was trained on SIMULATED EEG (the "
                      "synthetic twin); it does not decode real brains.[/]")
        log.warning("bundle %r was trained on SIMULATED EEG (the synthetic twin); it does not decode "
                    "real brains", bundle.manifest.name)
    # 2. the backend, warmed up by the engine; the true images for live scoring
    backend = load_backend_or_fail(bundle, rt_cfg)
    images, heldout = twin_truth(root)
    scorer = LiveScorer(bundle.manifest.class_names, images, heldout)
    out = out_dir or default_session_dir("demo")
    if not headless:
        backend.close()  # loaded above to fail early; the GUI's engine loads its own in its thread
        summary = _gui_demo(root, bundle, stream_cfg, rt_cfg, cfg_data, duration, speed, out, images, heldout,
                            screenshot)
        if json_path is not None:
            json_path.write_text(json.dumps(summary, indent=1, default=str))
        if "screenshot" in summary:
            console.print(f"screenshot saved: {summary['screenshot']}")
        console.print(f"GUI demo: {summary.get('n_frames', 0)} frames reconstructed, "
                      f"{summary.get('gui', {}).get('n_frames_shown', 0)} shown; session in {out}")
        if summary.get("gui_error"):
            raise click.ClickException(summary["gui_error"])
        if not summary.get("n_frames"):
            raise click.ClickException("no frame was reconstructed: the LSL stream was not received")
        return
    console.print(f"[bold]2/3[/] replaying a twin session over LSL; [bold]3/3[/] reconstructing every "
                  f"window live for {duration:.0f} s into {out}")
    config = resolved_config(cfg_data, stream=bundle.stream_config(stream_cfg), realtime=rt_cfg)
    summary: dict = {}
    stopped = run_with_table(
        f"NeuroImagen demo: {bundle.manifest.name} on a replayed twin session",
        lambda on_snapshot: run_bundle_demo(root, bundle, backend, stream_cfg, rt_cfg, out_dir=out,
                                            resolved_config=config, duration_s=duration, speed=speed,
                                            scorer=scorer, on_snapshot=on_snapshot, summary_out=summary),
        summary,
    )
    backend.close()
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=1, default=str))
    console.print(f"frames and metrics written to {out} (metrics.json)")
    if stopped.signum:
        stopped.exit(f"demo ended after {summary.get('n_frames', 0)} frames; session in {out}")
    if not summary.get("n_frames"):
        raise click.ClickException("no frame was reconstructed: the LSL stream was not received")


def _linear_demo(duration: float, workdir: Path | None, seed: int, speed: float, json_path: Path | None,
                 cfg_data: dict, out_dir: Path | None = None) -> None:
    """The replay decoded by the linear baseline (no bundle in this install)."""
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
    from .gui import has_display

    log.warning("decoding the replay with the linear baseline (--linear, or no model bundle in this install): "
                "no images are reconstructed")
    if has_display():  # where the bundle demo would open its window
        log.warning("the GUI needs a model bundle; the linear demo runs in this terminal")
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
        if s["timestamp_to_prediction_ms_p50"] is not None:
            t.add_row("end to end (last sample's timestamp -> prediction)",
                      f"p50 {s['timestamp_to_prediction_ms_p50']:.1f} ms, "
                      f"p99 {s['timestamp_to_prediction_ms_p99']:.1f} ms")
        if s["window_ready_ms_p50"] is not None:
            t.add_row("window ready (last sample pulled -> window)",
                      f"p50 {s['window_ready_ms_p50']:.2f} ms, p99 {s['window_ready_ms_p99']:.2f} ms")
        t.add_row("markers without a window / lost samples",
                  f"{s['n_markers_dropped']} / {s['n_lost_samples']}")
        return t

    stats = DemoStats()
    with stop_on_signals() as stopped, \
            Live(table(stats), console=console, refresh_per_second=4, transient=False) as live:
        try:
            run_demo(root, decoder, stream_cfg, duration,
                     on_update=lambda st: live.update(table(st)), speed=speed, stats=stats)
        except KeyboardInterrupt:  # SIGINT or SIGTERM: keep what was measured
            stats.interrupted = stopped.name or "SIGINT"
            stopped.signum = stopped.signum or signal.SIGINT
        live.update(table(stats))
    summary = stats.summary()
    if json_path is not None:
        json_path.write_text(json.dumps(summary, indent=2))
        if not stopped.signum:
            console.print(f"figures written to {json_path}")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    if stopped.signum:
        kept = f"figures so far written to {json_path}" if json_path is not None else "no --json file asked for"
        stopped.exit(f"demo ended after {summary['n_windows']} windows; {kept}")
    if summary["n_windows"] == 0:
        raise click.ClickException("no window was decoded: the LSL stream was not received")


def _gui_demo(root: Path, bundle, stream_cfg, rt_cfg, cfg_data: dict, duration: float, speed: float, out: Path,
              images: dict, heldout: set, screenshot: Path | None) -> dict:
    """The bundle demo in the GUI: the twin session replayed here, the window connected to it."""
    import json
    import uuid

    from neuroimagen.gui.app import run_gui
    from neuroimagen.gui.config import GuiConfig
    from neuroimagen.stream.config import ReplayConfig
    from neuroimagen.stream.readers import read_recording
    from neuroimagen.stream.replay import Player

    from .gui import choose_qt_platform, require_gui_packages
    from .live import resolved_config
    from .scoring import LiveScorer

    require_gui_packages()
    choose_qt_platform()
    gui_cfg = section(GuiConfig, cfg_data, "gui")
    meta = json.loads((root / "twin.json").read_text())
    name = f"neuroimagen-demo-{uuid.uuid4().hex[:8]}"
    player = Player(read_recording(root / meta["files"]["recordings"][0]), name=name,
                    cfg=ReplayConfig(speed=speed, loop=True))
    player.start()
    try:
        return run_gui(
            stream_cfg, rt_cfg, gui_cfg, bundle=bundle.path, stream_name=name, out_root=out,
            resolved_config=resolved_config(cfg_data, stream=bundle.stream_config(stream_cfg), realtime=rt_cfg,
                                            gui=gui_cfg),
            truth_images=images,
            scorer_factory=lambda _path: LiveScorer(bundle.manifest.class_names, images, heldout),
            scorer_spec={"twin": str(root)},
            duration_s=duration, screenshot=screenshot,
        )
    finally:
        player.stop()

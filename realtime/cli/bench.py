"""``neuroimagen bench ...``: benchmarks that print ratios measured in one run."""

from __future__ import annotations

import signal
from pathlib import Path

import click

from ._common import common_options, section, stop_on_signals


@click.group()
def bench() -> None:
    """Benchmarks (not tests): each prints its figures and the ratios against its goals."""


@bench.command("stream")
@click.option("--duration", "duration_s", type=float, default=30.0,
              help="seconds of 128-ch 1 kHz data pushed in the capacity phase")
@click.option("--latency-duration", "latency_duration_s", type=float, default=10.0,
              help="seconds of real-time streaming in the latency phase")
@click.option("--speed", type=float, default=0.0,
              help="capacity-phase push rate in x real time (0: as fast as the outlet can)")
@click.option("--chunk-size", type=int, default=32, help="samples per pushed chunk")
@click.option("--acquisition", type=click.Choice(["thread", "caller"]), default="caller",
              help="thread: inlet thread + pipeline worker; caller: the worker pulls and processes in one thread")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the full result as JSON here ('-' for stdout only)")
@common_options
def stream_bench(duration_s: float, latency_duration_s: float, speed: float, chunk_size: int,
                 acquisition: str, json_path: Path | None, cfg_data: dict) -> None:
    """Live chain: ingest capacity (x real time, lost samples) and window latency (p50/p99).

    Latency has two names: window ready (last sample pulled -> window ready; the
    goal's figure) and timestamp to ready (last sample's LSL timestamp -> window ready).
    """
    import json

    from neuroimagen.stream.bench import run_stream_bench
    from neuroimagen.stream.config import StreamConfig

    cfg = section(StreamConfig, cfg_data, "stream")
    result: dict = {}
    with stop_on_signals() as stopped:
        try:
            run_stream_bench(cfg, duration_s=duration_s, latency_duration_s=latency_duration_s,
                             speed=speed, chunk_size=chunk_size, acquisition=acquisition, out=result)
        except KeyboardInterrupt:
            stopped.signum = stopped.signum or signal.SIGINT
            result["interrupted"] = stopped.name
    if json_path is not None and str(json_path) == "-":
        click.echo(json.dumps(result, indent=2))
    elif json_path is not None:
        json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    if stopped.signum:
        done = [k for k in ("capacity", "latency") if k in result] or ["no phase"]
        kept = f"wrote {json_path}" if json_path is not None and str(json_path) != "-" else "no --json file asked for"
        stopped.exit(f"bench interrupted; {' and '.join(done)} finished; {kept}")
    if json_path is not None and str(json_path) == "-":
        return
    print_stream_bench(result)


def print_stream_bench(result: dict) -> None:
    """The bench's table: every figure needed to judge a run, with the machine's load."""
    from rich.console import Console
    from rich.table import Table

    cap, lat, goals = result["capacity"], result["latency"], result["goals"]
    m0, m1 = result["machine"], result.get("machine_after", {})
    table = Table(title=f"neuroimagen bench stream (128 ch @ 1 kHz, chunks of {result['chunk_size']}, "
                        f"acquisition: {result['acquisition']}, one run)")
    for col in ("figure", "measured", "goal", "ratio"):
        table.add_column(col)
    table.add_row("machine: CPUs / load average (1, 5, 15 min) before / after",
                  f"{m0['cpu_count']} / {m0['loadavg_1_5_15']} / {m1.get('loadavg_1_5_15')}", "", "")
    capacity = min(cap["x_realtime_wall"], cap["x_realtime_one_core_cpu"])
    table.add_row("ingest capacity (x real time, wall)", f"{cap['x_realtime_wall']:.1f}", "", "")
    table.add_row("ingest capacity (x real time, 1 core CPU)", f"{cap['x_realtime_one_core_cpu']:.1f}", "", "")
    table.add_row("ingest capacity (min of both)", f"{capacity:.1f}",
                  f">= {goals['capacity_x_realtime']:g}", f"{result['ratios']['capacity_vs_goal']:.2f}")
    table.add_row("lost samples (counter)", str(cap["n_lost_samples"]), "0",
                  "ok" if cap["n_lost_samples"] == 0 and cap["counter_exact"] else "LOSS")
    table.add_row("windows (capacity phase)", f"{cap['n_windows']}/{cap['n_windows_expected']}", "", "")
    table.add_row("window ready p50 (ms; last sample pulled -> window)", f"{lat['window_ready_ms_p50']:.3f}", "", "")
    table.add_row("window ready p99 (ms)", f"{lat['window_ready_ms_p99']:.3f}",
                  f"<= {goals['window_ready_ms_p99']:g}",
                  f"{result['ratios']['window_ready_p99_goal_vs_measured']:.2f}")
    table.add_row("window ready max (ms)", f"{lat['window_ready_ms_max']:.3f}", "", "")
    table.add_row("timestamp to ready p50 / p99 (ms; last sample's LSL timestamp -> window)",
                  f"{lat['timestamp_to_ready_ms_p50']:.2f} / {lat['timestamp_to_ready_ms_p99']:.2f}", "", "")
    table.add_row("windows measured (latency phase)", str(lat["n_windows_measured"]), "", "")
    table.add_row("meets goals", str(result["meets_goals"]), "", "")
    Console().print(table)


@bench.command("frame")
@click.option("--bundle", "bundle_path", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Bundle to measure (default: random weights at --model-size).")
@click.option("--model-size", type=click.Choice(["tiny", "sd15", "sd21"]), default="tiny",
              help="Without --bundle: random-weight models at the demo's sizes (tiny) or SD-1.5 / SD-2.1 "
                   "(SD-Turbo) sizes at 512 px. The SD sizes take seconds to minutes per frame on a CPU: "
                   "their default is 3 frames after 1 warm-up, and the ONNX export takes minutes.")
@click.option("--backend", "backends", multiple=True, type=click.Choice(["torch", "onnxruntime", "tensorrt"]),
              default=("torch", "onnxruntime"), help="Backends to measure, side by side (repeatable).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu")
@click.option("--threads", type=int, default=1, help="Intra-op threads of torch and onnxruntime (0: library default).")
@click.option("--n-frames", type=int, default=None, help="Timed frames per backend (default: 50 tiny, 3 SD sizes).")
@click.option("--n-warmup", type=int, default=None, help="Untimed frames first (default: 5 tiny, 1 SD sizes).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the full result as JSON here.")
@common_options
def frame_bench(bundle_path: Path | None, model_size: str, backends: tuple[str, ...], device: str, threads: int,
                n_frames: int | None, n_warmup: int | None, json_path: Path | None, cfg_data: dict) -> None:
    """One frame's latency per stage and end to end, per backend; our frame vs diffusers' pipeline.

    Prints, from one run: torch vs onnxruntime (ratio of end-to-end p50), diffusers'
    img2img pipeline vs our frame on the same components, scheduler and steps (ratio
    of p50), and the fastest backend's p99 against the 60 ms goal.
    """
    import json

    from rich.console import Console

    from .bench_frame import run_frame_bench

    sd = bundle_path is None and model_size != "tiny"
    console = Console(stderr=True)
    with console.status("bench frame") as status:
        result = run_frame_bench(
            bundle_path=bundle_path, model_size=model_size, backends=backends or ("torch", "onnxruntime"),
            device=device, threads=threads or None, n_frames=n_frames or (3 if sd else 50),
            n_warmup=n_warmup if n_warmup is not None else (1 if sd else 5), progress=status.update,
        )
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print_frame_bench(result)


def print_frame_bench(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    what = result["bundle"] or f"random weights, {result['model_size']}"
    table = Table(title=f"neuroimagen bench frame ({what}; {result['device']}, {result['threads']} thread(s), "
                        f"{result['n_frames']} frames after {result['n_warmup']} warm-up; one run)")
    for col in ("figure", "p50 ms", "p99 ms", "goal", "ratio"):
        table.add_column(col)
    m0, m1 = result["machine"], result["machine_after"]
    table.add_row("machine: CPUs / load average before / after",
                  f"{m0['cpu_count']} / {m0['loadavg_1_5_15']} / {m1['loadavg_1_5_15']}", "", "", "")
    for name, b in result["backends"].items():
        for stage in ("extractors", "diffusion", "end_to_end"):
            s = b[f"{stage}_ms"]
            table.add_row(f"{name}: {stage}", f"{s['p50']:.1f}", f"{s['p99']:.1f}", "", "")
    r, d = result["ratios"], result["diffusers"]
    if "torch_over_onnxruntime" in r:
        table.add_row("torch / onnxruntime (end to end p50)", "", "", "", f"{r['torch_over_onnxruntime']:.2f}")
    table.add_row("our frame (torch, diffusion stage)", f"{d['frame_ms']['p50']:.1f}", f"{d['frame_ms']['p99']:.1f}",
                  "", "")
    table.add_row(f"diffusers {d['pipeline']} (same components)", f"{d['pipeline_ms']['p50']:.1f}",
                  f"{d['pipeline_ms']['p99']:.1f}", "", "")
    table.add_row("diffusers pipeline / our frame (p50)", "", "", "> 1",
                  f"{r['diffusers_pipeline_over_our_frame']:.2f}")
    g = result["goals"]
    fast = result["backends"][g["fastest_backend"]]["end_to_end_ms"]
    table.add_row(f"fastest backend ({g['fastest_backend']}) end to end", f"{fast['p50']:.1f}", f"{fast['p99']:.1f}",
                  f"p99 <= {g['frame_p99_ms']:g}", f"{r['goal_over_fastest_p99']:.2f}")
    if "parity_max_abs_err" in result:
        table.add_row("ONNX parity (max abs error, all parts)", "", "", "<= 1e-4", f"{result['parity_max_abs_err']:.1e}")
    table.add_row("meets goals", str(g["frame_p99_met"] and g["faster_than_diffusers"]), "", "", "")
    Console().print(table)


@bench.command("gui")
@click.option("--bundle", "bundle_path", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Bundle of both engine runs (default: realtime.bundle, else the embedded one).")
@click.option("--recording", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Session replayed (looped) for the engine runs (default: the bundle's twin's first "
                   "recording, made in --workdir if needed).")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the bundle's twin is kept (default: the demo's, ~/.cache/neuroimagen/demo).")
@click.option("--duration", "duration_s", type=float, default=30.0, show_default=True,
              help="Seconds of each engine run (headless, then with the GUI).")
@click.option("--scope-duration", "scope_duration_s", type=float, default=10.0, show_default=True,
              help="Seconds of the scope-only phase (0: skip).")
@click.option("--rounds", type=int, default=1, show_default=True,
              help="Headless / GUI pairs, alternated (the load on a shared machine drifts).")
@click.option("--mode", type=click.Choice(["sliding", "marker"]), default=None,
              help="Windowing of both engine runs (default: the bundle's).")
@click.option("--hop", type=float, default=None, help="Sliding hop in seconds (default: the bundle's).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the full result as JSON here.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Logs and the runs' session folders (default: a temporary folder, removed).")
@common_options
def gui_bench(bundle_path: Path | None, recording: Path | None, workdir: Path | None, duration_s: float,
              scope_duration_s: float, rounds: int, mode: str | None, hop: float | None, json_path: Path | None,
              out_dir: Path | None, cfg_data: dict) -> None:
    """The GUI's scope frame rate (128 ch, 1 kHz, offscreen) and its cost to the engine.

    \b
    1. scope: the window alone on a simulated headset: redraws per second vs the 30 fps goal;
    2. engine cost: the same engine on a replayed twin session, headless (`run --headless`)
       and with the GUI attached (its engine process), alternated --rounds times:
       end-to-end p99 with the GUI over headless (every frame of the rounds pooled per mode;
       goal <= 1.10) and drops (goal 0).
    """
    import json
    import tempfile

    from rich.console import Console

    from neuroimagen.gui.bench import run_gui_bench
    from neuroimagen.gui.config import GuiConfig
    from neuroimagen.realtime.config import RealtimeConfig
    from neuroimagen.stream.config import StreamConfig

    from .demo import bundle_twin_dir
    from .gui import choose_qt_platform, require_gui_packages
    from .live import load_bundle_or_fail

    require_gui_packages()
    choose_qt_platform()
    stream_cfg = section(StreamConfig, cfg_data, "stream")
    rt_cfg = section(RealtimeConfig, cfg_data, "realtime")
    gui_cfg = section(GuiConfig, cfg_data, "gui")
    sets = []
    if mode is not None:
        rt_cfg = rt_cfg.model_copy(update={"mode": mode})
        sets.append(f"realtime.mode={mode}")
    if hop is not None:
        rt_cfg = rt_cfg.model_copy(update={"hop_s": hop})
        sets.append(f"realtime.hop_s={hop}")
    # the GUI's engine records no EEG (its Record button does): the headless run matches it
    rt_cfg = rt_cfg.model_copy(update={"session": rt_cfg.session.model_copy(update={"record_eeg": False})})
    bundle = load_bundle_or_fail(bundle_path, rt_cfg)
    if recording is None:
        twin = bundle.manifest.provenance.twin
        if twin is None:
            raise click.UsageError(f"bundle {bundle.manifest.name!r} names no twin: pass --recording FILE")
        root = bundle_twin_dir(twin, workdir)
        meta = json.loads((root / "twin.json").read_text())
        recording = root / meta["files"]["recordings"][0]
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="neuroimagen-bench-gui-") as tmp, console.status("bench gui") as status:
        result = run_gui_bench(stream_cfg, rt_cfg, gui_cfg, bundle=bundle.path, recording=recording,
                               duration_s=duration_s, scope_duration_s=scope_duration_s, rounds=rounds, sets=sets,
                               work_dir=out_dir or tmp, progress=status.update)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print_gui_bench(result)


def print_gui_bench(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    def f(v, fmt=".1f"):
        return "-" if v is None else format(v, fmt)

    m0, m1, r = result["machine"], result["machine_after"], result["ratios"]
    table = Table(title=f"neuroimagen bench gui (offscreen; {result['duration_s']:g} s engine runs, "
                        f"{result['rounds']} round(s); one run)")
    for col in ("figure", "measured", "goal", "ratio"):
        table.add_column(col)
    table.add_row("machine: CPUs / load average (1, 5, 15 min) before / after",
                  f"{m0['cpu_count']} / {m0['loadavg_1_5_15']} / {m1['loadavg_1_5_15']}", "", "")
    table.add_row("GUI thread's nice value (gui.nice; engines and streams keep the process's)",
                  str(result.get("gui_nice")), "", "")
    if "scope" in result:
        s = result["scope"]
        table.add_row(f"scope alone: redraws/s ({s['n_channels']} ch at {f(s['sfreq'], 'g')} Hz, "
                      f"raster {s['raster_size']})", f(s["fps_mean"]), ">= 30", f(r["scope_fps_over_goal"], ".2f"))
        table.add_row("scope alone: tick / paint median, paint p99 (ms)",
                      f"{f(s['tick_ms_median'], '.2f')} / {f(s['paint_ms_median'], '.2f')}, "
                      f"{f(s['paint_ms_p99'], '.2f')}", "", "")
        table.add_row("scope alone: GUI process CPU (cores)", f(s["cpu_cores"], ".2f"), "", "")
    for run in result["runs"]:
        extra = (f"; GUI {f(run['gui_cpu_cores'], '.2f')} cores, scope {f(run['scope_fps_mean'])} fps, "
                 f"{run['n_frames_shown']} frames shown" if run["mode"] == "gui"
                 else f"; engine {f(run['engine_cpu_cores'], '.2f')} cores")
        table.add_row(f"round {run['round']} {run['mode']}: end to end p50 / p95 / p99 (ms)",
                      f"{f(run['p50_ms'])} / {f(run['p95_ms'])} / {f(run['p99_ms'])}", "", "")
        table.add_row(f"round {run['round']} {run['mode']}: windows, frames, dropped{extra}",
                      f"{run['n_windows']}, {run['n_frames']}, {run['n_dropped']}", "0 dropped", "")
    p, n, pm = result["p99_ms_pooled"], result["n_frames_pooled"], result["p99_ms_median"]
    table.add_row(f"end to end p99, GUI / headless (every frame of the rounds pooled: {n['gui']} / "
                  f"{n['headless']} frames)", f"{f(p['gui'])} / {f(p['headless'])} ms",
                  "<= 1.10", f(r["p99_gui_over_headless"], ".2f"))
    table.add_row("end to end p99, GUI / headless (median of the runs' p99s)", f"{f(pm['gui'])} / "
                  f"{f(pm['headless'])} ms", "", f(pm["gui"] / pm["headless"] if pm["headless"] else float("nan"),
                                                   ".2f"))
    table.add_row("meets goals", str(result["meets_goals"]), "", "")
    Console().print(table)


@bench.command("calibrate")
@click.option("--twin", "twin_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The twin BASE was trained on.")
@click.option("--bundle", "bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="BASE (only read).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the session and the calibrated bundle (created).")
@click.option("--subject", "subject_seed", type=int, default=1000, show_default=True, help="New subject's seed.")
@click.option("--minutes", type=click.FloatRange(min=0.1), default=15.0, show_default=True)
@click.option("--passes", "n_passes", type=click.IntRange(min=1), default=6, show_default=True)
@click.option("--budget", "budget_s", type=click.FloatRange(min=1.0), default=600.0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@common_options
def calibrate_bench(twin_dir, bundle_dir, out_dir, subject_seed, minutes, n_passes, budget_s, json_path,
                    cfg_data) -> None:
    """A new twin subject: BASE on its own subjects, on the new one before and after calibration."""
    import json

    from rich.console import Console
    from rich.table import Table

    from neuroimagen.training.train.calibrate import CalibrationError, new_subject_bench

    try:
        r = new_subject_bench(twin_dir, bundle_dir, out_dir, subject_seed=subject_seed, minutes=minutes,
                              n_passes=n_passes, budget_s=budget_s)
    except CalibrationError as exc:
        raise click.ClickException(str(exc)) from None
    if json_path is not None:
        json_path.write_text(json.dumps(r, indent=1))
    table = Table(title=f"neuroimagen bench calibrate (subject {subject_seed}, {r['n_trials']} trials, "
                        f"{r['minutes_of_stimuli']:.1f} min; one run)")
    for col in ("figure", "own subjects", "new: before", "new: after", "gap recovered", "goal"):
        table.add_column(col)
    for k, label in (("top1", "class top-1 (held-out images)"), ("ssim", "saliency SSIM")):
        table.add_row(label, f"{r['own'][k]:.3f}", f"{r['before'][k]:.3f}", f"{r['after'][k]:.3f}",
                      "no gap" if r["recovered"][k] != r["recovered"][k] else f"{r['recovered'][k]:.2f}", ">= 0.50")
    table.add_row("calibration time (s)", "", "", f"{r['calibration_s']:.0f}", "", "<= 600 (2 CPU cores)")
    table.add_row("kept / test trials", "", "", f"{r['kept']} / {r['n_test_trials']}", "", "")
    table.add_row("CPUs / load average", f"{r['cpu_count']} / {r['loadavg_1_5_15']}", "", "", "", "")
    Console().print(table)

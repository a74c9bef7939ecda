"""``neuroimagen stream ...``: list, replay, simulate, record, finalize."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import click

from ._common import StopSignal, common_options, section, stop_on_signals
from ._design import design_options

logger = logging.getLogger(__name__)


@click.group()
def stream() -> None:
    """LSL streams: list, replay files, simulate a headset, record and finalize."""


def _run_until_done(runner) -> StopSignal:
    """Start ``runner``, wait for its end; SIGINT/SIGTERM stop it cleanly (returned, remembered)."""
    with stop_on_signals() as stopped:
        try:
            runner.start()
            while not runner.wait(0.2):
                pass
        except KeyboardInterrupt:
            if stopped.signum is None:  # a KeyboardInterrupt without our handler (not a signal)
                stopped.signum = signal.SIGINT
        finally:
            runner.stop()
    return stopped


@stream.command("replay")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="EEG outlet name (default: stream.replay.name); markers: <name>-markers.")
@click.option("--speed", type=float, default=None, help="Playback speed (default: stream.replay.speed).")
@click.option("--loop/--no-loop", default=None, help="Restart at the end, timestamps continuing.")
@click.option("--source-id", default=None,
              help="LSL source id (default: random); a fixed one makes a restarted replay the same stream to LSL.")
@common_options
def replay(file: Path, name: str | None, speed: float | None, loop: bool | None, source_id: str | None,
           cfg_data: dict) -> None:
    """Replay FILE (FIF, EDF, BDF, BrainVision, EEGLAB, XDF, EEG-ImageNet .pth) as LSL."""
    from neuroimagen.stream.config import ReplayConfig, StreamConfig
    from neuroimagen.stream.readers import RecordingError
    from neuroimagen.stream.replay import replay_file

    cfg = section(StreamConfig, cfg_data, "stream").replay
    updates = {k: v for k, v in {"speed": speed, "loop": loop}.items() if v is not None}
    if updates:
        cfg = ReplayConfig.model_validate({**cfg.model_dump(), **updates})
    try:
        player = replay_file(str(file), cfg, name=name, source_id=source_id)
    except (FileNotFoundError, RecordingError) as exc:
        raise click.ClickException(str(exc)) from None
    rec = player.recording
    logger.info(
        "replaying %s as '%s' (+ '%s-markers'): %d ch, %.6g Hz, %.1f s, %d markers, speed %g%s",
        file, player.name, player.name, rec.n_channels, rec.sfreq, rec.n_times / rec.sfreq,
        len(rec.markers), cfg.speed, ", looping" if cfg.loop else "",
    )
    stopped = _run_until_done(player)
    done = f"{player.n_pushed} samples, {player.n_markers_pushed} markers pushed"
    if stopped.signum:
        stopped.exit(f"replay closed its outlets after {done}")
    logger.info("replay done: %s", done)


@stream.command("simulate")
@click.option("--duration", "duration_s", type=float, default=None, help="Seconds to stream (default: until stopped).")
@click.option("--name", default=None, help="Stream name (default: stream.simulate.name).")
@click.option("--source-id", default=None,
              help="LSL source id (default: seed + random); a fixed one makes a restarted headset the same stream to LSL.")
@click.option("--twin-subject", "twin_subject", type=int, default=None, metavar="SEED",
              help="Be a new twin subject drawn from SEED: respond to the stimuli named by a marker stream "
                   "(needs --twin).")
@click.option("--twin", "twin_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The twin folder whose model and stimuli the subject uses (with --twin-subject).")
@click.option("--variation", type=click.Choice(["wide", "narrow"]), default="wide", show_default=True,
              help="How much the new subject differs from the twin's (training.data.twin.eeg).")
@click.option("--markers", "marker_stream", default=None,
              help="Marker stream the subject listens to (default: NAME-markers, the presenter's).")
@common_options
def simulate(duration_s: float | None, name: str | None, source_id: str | None, twin_subject: int | None,
             twin_dir: Path | None, variation: str, marker_stream: str | None, cfg_data: dict) -> None:
    """Simulated 128-ch 1 kHz headset (1/f + posterior alpha + line noise, in V) with stimulus markers.

    With --twin-subject SEED --twin DIR: a new twin subject that listens to the
    presenter's marker stream and, for every image shown, adds the twin's evoked
    response for it (this subject's topographies, latencies and gains) on top of
    the twin's background; it sends no markers of its own.
    """
    from neuroimagen.stream.config import StreamConfig
    from neuroimagen.stream.simulate import SimulatedHeadset

    cfg = section(StreamConfig, cfg_data, "stream").simulate
    if twin_subject is not None or twin_dir is not None:
        if twin_subject is None or twin_dir is None:
            raise click.UsageError("--twin-subject SEED and --twin DIR go together")
        from neuroimagen.training.data.twin.subject import SimulatedSubject, TwinSubjectSource

        try:
            src = TwinSubjectSource(twin_dir, twin_subject, variation)
        except (FileNotFoundError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        sim = SimulatedSubject(src, name=name or cfg.name, marker_stream=marker_stream,
                               duration_s=duration_s, source_id=source_id)
        logger.info("twin subject %d (%s variation) as '%s': %d ch at %g Hz, listening to '%s'",
                    twin_subject, variation, sim.name, len(src.ch_names), src.sfreq, sim.marker_stream)
        stopped = _run_until_done(sim)
        done = f"{sim.n_pushed} samples pushed, {sim.n_markers} markers heard ({sim.n_late} late)"
        if stopped.signum:
            stopped.exit(f"simulate closed its outlet after {done}")
        logger.info("simulate done: %s", done)
        return
    sim = SimulatedHeadset(cfg, duration_s=duration_s, name=name, source_id=source_id)
    logger.info("simulating '%s' (+ '%s-markers'): %d ch at %g Hz, seed %d",
                sim.name, sim.name, cfg.n_channels, cfg.sfreq_hz, cfg.seed)
    stopped = _run_until_done(sim)
    if stopped.signum:
        stopped.exit(f"simulate closed its outlets after {sim.n_pushed} samples")
    logger.info("simulate done: %d samples pushed", sim.n_pushed)


@stream.command("simulate-session")
@click.option("--twin", "twin_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The twin folder (model and stimuli).")
@click.option("--twin-subject", "twin_subject", type=int, required=True, metavar="SEED",
              help="The new subject's seed (as for `stream simulate --twin-subject`).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Session folder to write (created).")
@click.option("--variation", type=click.Choice(["wide", "narrow"]), default="wide", show_default=True)
@click.option("--name", default="NeuroImagenSubject", show_default=True, help="EEG stream name in the session.")
@design_options
@common_options
def simulate_session(twin_dir: Path, twin_subject: int, out_dir: Path, variation: str, name: str, design: dict,
                     cfg_data: dict) -> None:
    """Write a session of a new twin subject watching the presenter's schedule, offline.

    The same code path as `stream simulate --twin-subject` live (the same signal
    source fed the same markers), without waiting in real time: a session folder
    `train calibrate --session` reads.
    """
    from neuroimagen.stream.design import load_stimuli, make_schedule
    from neuroimagen.training.data.twin.subject import TwinSubjectSource
    from neuroimagen.training.data.twin.subject import simulate_session as simulate_offline

    try:
        stimuli = load_stimuli(twin_dir / "images")
        trials = make_schedule(stimuli, **design)
        src = TwinSubjectSource(twin_dir, twin_subject, variation)
        simulate_offline(out_dir, src, trials, name=name, stimuli_root=stimuli.root, design=design)
    except (FileNotFoundError, FileExistsError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    minutes = (trials[-1].onset_s if trials else 0.0) / 60.0
    click.echo(f"{out_dir}: {len(trials)} trials ({sum(t.test for t in trials)} of test images), "
               f"{minutes:.1f} min of stimuli, subject {twin_subject} ({variation})")


@stream.command("record")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder to record into (created).")
@click.option("--stream", "names", multiple=True, help="Stream name to record (repeatable; default: every visible stream).")
@click.option("--duration", "duration_s", type=float, default=None, help="Seconds to record (default: until stopped).")
@click.option("--markers/--no-markers", "with_markers", default=True,
              help="Also record the marker streams of each --stream (NAME-markers, NAME-Markers, NAME-annotations).")
@common_options
def record(out_dir: Path, names: tuple[str, ...], duration_s: float | None, with_markers: bool,
           cfg_data: dict) -> None:
    """Record LSL streams to OUT (append-only, crash-safe); finalize to FIF on a clean stop."""
    from neuroimagen.stream.config import StreamConfig
    from neuroimagen.stream.record import Recorder

    cfg = section(StreamConfig, cfg_data, "stream").record
    recorder = Recorder(out_dir, cfg, stream_names=names or None, duration_s=duration_s,
                        resolved_config=cfg_data, with_markers=with_markers)
    try:
        stopped = _run_until_done(recorder)
    except (LookupError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from None
    for label, path in recorder.finalized.items():
        logger.info("wrote %s: %s", label, path)
    stats = recorder.stats()
    if stats["n_gaps"]:
        logger.warning("%d gap(s) in the recording: %d samples, %.3f s in all (annotated in the FIF)",
                       stats["n_gaps"], stats["n_gap_samples"], stats["gap_seconds"])
    if stopped.signum:
        kept = ", ".join(str(p) for p in recorder.finalized.values()) or f"raw files in {out_dir}"
        stopped.exit(f"recording closed ({sum(recorder.n_samples.values())} samples); wrote {kept}")


@stream.command("finalize")
@click.argument("out_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--format", "formats", multiple=True, type=click.Choice(["fif", "xdf"]),
              help="What to write (default: stream.record.formats).")
@common_options
def finalize(out_dir: Path, formats: tuple[str, ...], cfg_data: dict) -> None:
    """Turn a recorder folder (even of a killed recorder) into FIF (+ XDF)."""
    from neuroimagen.stream.config import StreamConfig
    from neuroimagen.stream.record import finalize as finalize_dir

    cfg = section(StreamConfig, cfg_data, "stream").record
    try:
        written = finalize_dir(out_dir, formats=formats or cfg.formats, gap_threshold_s=cfg.gap_threshold_s)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    for label, path in written.items():
        click.echo(f"{label}: {path}")


@stream.command("list")
@click.option("--timeout", type=float, default=1.0, help="seconds to wait for streams to answer")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@common_options
def list_(timeout: float, as_json: bool, cfg_data: dict) -> None:
    """Every visible LSL stream: name, type, channels, rate, source_id, host."""
    from neuroimagen.stream.inlet import list_streams

    metas = list_streams(timeout=timeout)
    if as_json:
        import json

        fields = ("name", "stype", "n_channels", "sfreq", "channel_format", "source_id", "hostname")
        click.echo(json.dumps([{f: getattr(m, f) for f in fields} for m in metas], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"LSL streams ({len(metas)} found in {timeout:g} s)")
    for col in ("name", "type", "channels", "rate (Hz)", "format", "source_id", "host"):
        table.add_column(col, overflow="fold")  # wrap, never hide: names and ids get copied
    for m in metas:
        table.add_row(m.name, m.stype, str(m.n_channels), f"{m.sfreq:g}", m.channel_format,
                      m.source_id, m.hostname)
    Console().print(table)

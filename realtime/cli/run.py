"""``neuroimagen run``: the real-time engine on a live (or replayed) EEG stream."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import common_options, section


@click.command("run")
@click.option("--bundle", "bundle_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Model bundle folder (default: realtime.bundle, else the embedded one).")
@click.option("--stream", "stream_name", default=None,
              help="EEG stream name (default: stream.inlet.name; else the only visible EEG stream).")
@click.option("--headless", is_flag=True, help="No GUI: the terminal table only.")
@click.option("--duration", type=float, default=None, help="Seconds to run (default: until Ctrl-C).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Session folder (default: sessions/run-<date>-<time>).")
@click.option("--mode", type=click.Choice(["sliding", "marker"]), default=None,
              help="Windowing mode (default: realtime.mode, else the bundle's).")
@click.option("--hop", "hop_s", type=float, default=None, help="Sliding hop in seconds (default: the bundle's).")
@click.option("--stimuli", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="True images (any layout, paired by file stem with the markers' 'image'): live scoring.")
@common_options
def run(cfg_data: dict, bundle_path: Path | None, stream_name: str | None, headless: bool,
        duration: float | None, out_dir: Path | None, mode: str | None, hop_s: float | None,
        stimuli: Path | None) -> None:
    """Reconstruct images live from an EEG stream, into a session folder.

    \b
    1. the bundle (verified) and the configured backend (warmed up);
    2. the EEG stream: --stream, stream.inlet.name, or the only visible one
       (several visible and none named: refused, with the list);
    3. sliding windows at the hop (continuous) or one per stimulus marker;
    4. the session folder: resolved config, raw EEG + markers, every frame (PNG),
       decoded top-k (JSONL), metrics.json; live scores with --stimuli.
    """
    import logging

    from neuroimagen.realtime.config import RealtimeConfig
    from neuroimagen.realtime.live import (
        AmbiguousStreamError,
        live_stream_config,
        pick_eeg_stream,
        run_live,
    )
    from neuroimagen.stream.config import StreamConfig
    from neuroimagen.stream.contract import ContractError

    from .live import (
        default_session_dir,
        has_display,
        load_backend_or_fail,
        load_bundle_or_fail,
        resolved_config,
        run_with_table,
    )

    log = logging.getLogger("neuroimagen.run")
    stream_cfg = section(StreamConfig, cfg_data, "stream")
    rt_cfg = section(RealtimeConfig, cfg_data, "realtime")
    rt_cfg = rt_cfg.model_copy(update={k: v for k, v in (("mode", mode), ("hop_s", hop_s)) if v is not None})
    if not headless and has_display():
        log.warning("run is terminal-only; for the live view use `neuroimagen gui --stream NAME`")
    # 1. bundle and backend
    bundle = load_bundle_or_fail(bundle_path, rt_cfg)
    # 2. which stream
    name = stream_name or stream_cfg.inlet.name
    if name is None and stream_cfg.inlet.source_id is None:
        try:
            name = pick_eeg_stream(stream_cfg.inlet.stype or "EEG", timeout=2.0).name
        except AmbiguousStreamError as exc:
            raise click.UsageError(str(exc)) from None
        except LookupError as exc:
            raise click.ClickException(str(exc)) from None
    live_cfg = live_stream_config(bundle, stream_cfg, rt_cfg, eeg_name=name)
    backend = load_backend_or_fail(bundle, rt_cfg)
    # 3. live scoring against true images, when given
    scorer = None
    if stimuli is not None:
        from neuroimagen.training.eval.images import index_images

        from .scoring import LiveScorer

        scorer = LiveScorer(bundle.manifest.class_names, index_images(stimuli))
    out = out_dir or default_session_dir("run")
    config = resolved_config(cfg_data, stream=live_cfg, realtime=rt_cfg)
    summary: dict = {}
    try:
        stopped = run_with_table(
            f"NeuroImagen run: {name} -> {bundle.manifest.name}",
            lambda on_snapshot: run_live(bundle, backend, live_cfg, rt_cfg, out_dir=out,
                                         resolved_config=config, duration_s=duration, scorer=scorer,
                                         on_snapshot=on_snapshot, summary_out=summary),
            summary,
        )
    except (LookupError, ContractError, FileExistsError) as exc:
        # the stream is not there or does not fit the bundle: say which, no traceback
        raise click.ClickException(f"{exc} (session folder: {out})") from None
    finally:
        backend.close()
    click.echo(f"session written to {out} ({summary.get('n_frames', 0)} frames)")
    if stopped.signum:
        stopped.exit(f"run ended after {summary.get('n_frames', 0)} frames; session in {out}")

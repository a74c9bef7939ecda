"""``neuroimagen present``: the stimulus presenter (PyQt6), recording EEG and markers into a session."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from ._common import common_options, section
from ._design import design_options

logger = logging.getLogger(__name__)


@click.command("present")
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Stimulus folder: one subfolder per class (optional class_names.yaml, captions.json).")
@click.option("--twin", "twin_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Show a twin's stimuli (TWIN/images) instead of --images.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Session folder (created): session.json, the recording, <stream>_raw.fif.")
@click.option("--eeg-stream", default=None, help="EEG stream to record with the markers (required unless --no-record).")
@click.option("--record/--no-record", default=True, show_default=True, help="Record the EEG stream and the markers.")
@click.option("--marker-stream", default=None, help="Marker outlet name (default: EEG-STREAM-markers).")
@click.option("--bundle", "bundle_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Refuse now if the bundle you will calibrate has no targets for a class shown.")
@click.option("--stimulus", "stimulus_s", type=click.FloatRange(min=0.01), default=0.3, show_default=True,
              help="Seconds each image stays on.")
@click.option("--image-px", type=click.IntRange(min=8), default=400, show_default=True)
@click.option("--fullscreen/--window", default=False, show_default=True)
@click.option("--photodiode-px", type=click.IntRange(min=0), default=0, show_default=True,
              help="Photodiode patch side in pixels (0: none); white while a stimulus is on.")
@click.option("--photodiode-corner", type=click.Choice(["bottom-left", "bottom-right", "top-left", "top-right"]),
              default="bottom-left", show_default=True)
@click.option("--lead-in", "lead_in_s", type=click.FloatRange(min=0.0), default=2.0, show_default=True,
              help="Seconds of fixation before the first image.")
@design_options
@common_options
def present(images_dir: Path | None, twin_dir: Path | None, out_dir: Path, eeg_stream: str | None, record: bool,
            marker_stream: str | None, bundle_dir: Path | None, stimulus_s: float, image_px: int,
            fullscreen: bool, photodiode_px: int, photodiode_corner: str, lead_in_s: float, design: dict,
            cfg_data: dict) -> None:
    """Show images in a rapid-event design, send an LSL marker at every onset, record EEG + markers.

    Markers carry the replay markers' JSON (image, label, class, ...) and are
    timestamped at the frame flip (Qt frameSwapped); offscreen (no display)
    after the frame was rendered. Press Escape to stop early: what was shown is kept.
    """
    from neuroimagen.stream.config import StreamConfig
    from neuroimagen.stream.design import load_stimuli, make_schedule

    if (images_dir is None) == (twin_dir is None):
        raise click.UsageError("give exactly one of --images DIR and --twin DIR")
    if record and not eeg_stream:
        raise click.UsageError("--eeg-stream NAME is required to record (or pass --no-record)")
    try:
        stimuli = load_stimuli(images_dir or twin_dir / "images")
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if bundle_dir is not None:
        from neuroimagen.training.models.bundle import BundleError, read_manifest
        from neuroimagen.training.train.calibrate import CalibrationError, class_map

        try:
            class_map(stimuli.classes, stimuli.class_names, read_manifest(bundle_dir))
        except (BundleError, CalibrationError) as exc:
            raise click.ClickException(str(exc)) from None
    trials = make_schedule(stimuli, **design)
    if not trials:
        raise click.ClickException("the schedule is empty")
    from PyQt6 import QtWidgets

    from neuroimagen.gui.present import PresenterOptions, run_presenter

    rec_cfg = section(StreamConfig, cfg_data, "stream").record
    opts = PresenterOptions(stimulus_s=stimulus_s, image_px=image_px, fullscreen=fullscreen,
                            lead_in_s=lead_in_s, photodiode_px=photodiode_px,
                            photodiode_corner=photodiode_corner)
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(["neuroimagen-present"])  # noqa: F841 - kept alive
    logger.info("presenting %d trials (%.1f min) from %s%s", len(trials), trials[-1].onset_s / 60,
                stimuli.root, f", recording '{eeg_stream}'" if record else "")
    try:
        meta = run_presenter(
            trials, out_dir, eeg_stream=eeg_stream if record else None, opts=opts, marker_stream=marker_stream,
            session_meta={"stimuli": str(stimuli.root), "classes": list(stimuli.classes),
                          "class_names": list(stimuli.class_names), "design": design,
                          "qt_platform": os.environ.get("QT_QPA_PLATFORM", "")},
            record_cfg=rec_cfg, resolved_config=cfg_data,
        )
    except (FileExistsError, LookupError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    t = meta["timing"]
    click.echo(f"{out_dir}: {meta['n_shown']}/{meta['n_trials']} trials shown; markers at "
               f"{meta['timestamped_at']}")
    if t.get("n_shown"):
        click.echo(f"onset error p50 {t['onset_error_ms_p50']:.2f} ms, p99 {t['onset_error_ms_p99']:.2f} ms; "
                   f"flip to push p50 {t['flip_to_push_ms_p50']:.3f} ms, p99 {t['flip_to_push_ms_p99']:.3f} ms")

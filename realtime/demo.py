"""The embedded demo: a twin session replayed over LSL, reconstructed (or decoded) live.

With a model bundle, :func:`run_bundle_demo` runs the full chain: the bundle's
twin session is replayed over LSL and the real-time engine reconstructs every
window (:mod:`neuroimagen.realtime.live`). Without one (no embedded bundle in
this install and no ``--bundle``), :func:`run_demo` decodes the replay with the
linear baseline:

1. a :class:`~neuroimagen.stream.replay.Player` streams a synthetic-twin FIF
   session (128 ch, 1 kHz, raw) and its stimulus markers over LSL;
2. a :class:`~neuroimagen.stream.pipeline.WindowPipeline` resolves those
   streams like a live headset, conforms and filters the signal, and cuts one
   marker-locked window per stimulus, normalised exactly as the twin's training
   data;
3. a :class:`~neuroimagen.training.models.linear_decoder.LinearWindowDecoder`
   (fitted on the twin's train split) predicts class, hemifield and quadrant.

Windows whose image the decoder was not fitted on (the split's val and test
images) are scored separately: that figure is the honest one. The end-to-end
latency, ``timestamp_to_prediction``, is the time the prediction is ready minus
the LSL timestamp of the window's last sample.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neuroimagen.stream.config import ReplayConfig, StreamConfig, WindowingConfig
from neuroimagen.stream.preprocessing import NormStats
from neuroimagen.training.models.linear_decoder import LinearWindowDecoder

logger = logging.getLogger(__name__)


@dataclass
class DemoStats:
    """Running figures of a demo session (updated by :func:`run_demo`, read by the caller)."""

    n_windows: int = 0
    n_heldout: int = 0
    n_class_correct_heldout: int = 0
    n_class_top3_heldout: int = 0
    n_hemifield_correct_heldout: int = 0
    n_class_correct_seen: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)
    n_classes: int = 0
    pipeline: dict[str, Any] = field(default_factory=dict)
    interrupted: str | None = None

    def summary(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict (what ``neuroimagen demo --json`` writes).

        ``timestamp_to_prediction_ms_*``: from a window's last sample's LSL
        timestamp to its prediction (end to end). ``window_ready_ms_*``: from
        that sample being pulled off the network to the window being ready
        (the stream layer's own cost; the pipeline's figure).
        """
        lat = np.asarray(self.latencies_ms)
        h = max(self.n_heldout, 1)
        seen = self.n_windows - self.n_heldout
        p = self.pipeline
        return {
            "n_windows": self.n_windows,
            "n_heldout_windows": self.n_heldout,
            "class_top1_heldout": self.n_class_correct_heldout / h if self.n_heldout else None,
            "class_top3_heldout": self.n_class_top3_heldout / h if self.n_heldout else None,
            "hemifield_heldout": self.n_hemifield_correct_heldout / h if self.n_heldout else None,
            "class_top1_seen": self.n_class_correct_seen / seen if seen else None,
            "chance_class_top1": 1.0 / self.n_classes if self.n_classes else None,
            "timestamp_to_prediction_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "timestamp_to_prediction_ms_p99": float(np.percentile(lat, 99)) if lat.size else None,
            "window_ready_ms_p50": p.get("window_ready_ms_p50"),
            "window_ready_ms_p99": p.get("window_ready_ms_p99"),
            # every marker received should give a window: these say where one did not
            "n_markers_received": p.get("n_markers"),
            "n_markers_dropped": p.get("n_markers_dropped"),
            "n_markers_pending": p.get("n_markers_pending"),
            "n_lost_samples": p.get("n_lost_samples"),
            "n_gap_samples": p.get("n_gap_samples"),
            "interrupted": self.interrupted,
        }


def demo_stream_config(base: StreamConfig, twin_meta: dict[str, Any], name: str) -> StreamConfig:
    """The stream config the twin was made with, in marker-locked mode on stream ``name``."""
    from neuroimagen.stream.config import PreprocessingConfig

    windowing = WindowingConfig(
        mode="marker",
        n_times=int(twin_meta["n_times"]),
        marker_offset_samples=int(twin_meta["marker_offset_samples"]),
        marker_max_pending_s=base.windowing.marker_max_pending_s,
    )
    return base.model_copy(
        update={
            "inlet": base.inlet.model_copy(update={"name": name, "source_id": None}),
            "preprocessing": PreprocessingConfig.model_validate(twin_meta["preprocessing"]),
            "windowing": windowing,
        }
    )


def run_demo(
    twin_dir: str | Path,
    decoder: LinearWindowDecoder,
    stream_cfg: StreamConfig,
    duration_s: float,
    on_update: Callable[[DemoStats], None] | None = None,
    speed: float = 1.0,
    stats: DemoStats | None = None,
) -> DemoStats:
    """Replay the twin's first session over LSL and decode it live for ``duration_s`` seconds.

    Parameters
    ----------
    twin_dir : path
        A twin folder (``neuroimagen data make-twin``).
    decoder : LinearWindowDecoder
    stream_cfg : StreamConfig
        Base stream config (inlet/contract settings); preprocessing and windowing
        come from the twin's metadata so they match its training data exactly.
    duration_s : float
    on_update : callable | None
        Called with the running :class:`DemoStats` after each decoded window,
        and about every 0.5 s, in the caller's thread.
    speed : float
        Replay speed (1.0 = real time).
    stats : DemoStats | None
        Filled in place (None: a new one). Pass one to keep the figures when
        the run is interrupted (``KeyboardInterrupt`` propagates after the
        player and pipeline stopped; ``stats.pipeline`` is current).

    Notes
    -----
    Runs in the calling thread; the player and the inlet have their own threads.
    """

    from neuroimagen.stream.pipeline import WindowPipeline
    from neuroimagen.stream.readers import read_recording
    from neuroimagen.stream.replay import Player

    # 1. the twin's session, its exact preprocessing and normalisation
    root = Path(twin_dir)
    meta = json.loads((root / "twin.json").read_text())
    name = f"neuroimagen-demo-{uuid.uuid4().hex[:8]}"
    cfg = demo_stream_config(stream_cfg, meta, name)
    norm = NormStats.from_dict(meta["norm_stats"])
    recording = read_recording(root / meta["files"]["recordings"][0])
    stimuli = json.loads((root / meta["files"]["stimuli"]).read_text())
    stats = stats if stats is not None else DemoStats()
    stats.n_classes = len(decoder.class_names)
    fitted = set(decoder.fitted_images)  # every other image is held out
    class_task = decoder.tasks["class"]
    n_top = min(3, class_task[1] - class_task[0])

    # 2. replay as a headset would stream, then connect like a live client
    player = Player(recording, name=name, cfg=ReplayConfig(speed=speed, loop=True))
    player.start()
    logger.info("replaying %s as LSL stream %r (+ %r)", recording.source, name, f"{name}-markers")
    try:
        with WindowPipeline(cfg, norm_stats=norm) as pipe:
            try:
                _decode_live(pipe, decoder, stats, stimuli, fitted, n_top, duration_s, on_update)
            finally:  # also on Ctrl-C: the figures so far stay current
                stats.pipeline = pipe.stats
    finally:
        player.stop()
    return stats


def _decode_live(pipe: Any, decoder: LinearWindowDecoder, stats: DemoStats, stimuli: dict,
                 fitted: set, n_top: int, duration_s: float,
                 on_update: Callable[[DemoStats], None] | None) -> None:
    import pylsl

    t_end = time.monotonic() + duration_s
    next_tick = 0.0
    while time.monotonic() < t_end:
        windows = pipe.poll()
        for w in windows:
            # 3. decode; score against the marker's ground truth
            scores = decoder.scores(w.data)
            cls = scores["class"][0]
            latency_ms = (pylsl.local_clock() - w.timestamp) * 1e3
            top = np.argsort(cls)[::-1][:n_top]
            label = int(w.meta.get("label", -1))
            image = str(w.meta.get("image", ""))
            hemi_pred = int(scores["hemifield"][0].argmax())
            stats.n_windows += 1
            stats.latencies_ms.append(latency_ms)
            heldout = image not in fitted
            if heldout:
                stats.n_heldout += 1
                stats.n_class_correct_heldout += int(top[0] == label)
                stats.n_class_top3_heldout += int(label in top)
                hemi_true = int(stimuli[image]["hemifield"])
                stats.n_hemifield_correct_heldout += int(hemi_pred == hemi_true)
            else:
                stats.n_class_correct_seen += int(top[0] == label)
            stats.last = {
                "image": image,
                "true": decoder.class_names[label] if 0 <= label < len(decoder.class_names) else "?",
                "top": [decoder.class_names[i] for i in top],
                "heldout": heldout,
                "timestamp_to_prediction_ms": latency_ms,
            }
            if on_update is not None:
                on_update(stats)
        now = time.monotonic()
        if on_update is not None and now >= next_tick:
            stats.pipeline = pipe.stats
            on_update(stats)
            next_tick = now + 0.5
        if not windows:
            time.sleep(0.002)  # nothing new: yield the core to the acquisition threads


# --------------------------------------------------------------------------- the full chain on a bundle


def run_bundle_demo(
    twin_dir: str | Path,
    bundle: Any,
    backend: Any,
    stream_cfg: StreamConfig,
    rt_cfg: Any,
    *,
    out_dir: str | Path,
    resolved_config: dict[str, Any],
    duration_s: float,
    speed: float = 1.0,
    scorer: Any = None,
    on_snapshot: Callable[[Any], None] | None = None,
    summary_out: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Replay the bundle's twin session over LSL and reconstruct every window live.

    Parameters
    ----------
    twin_dir : path
        The twin the bundle was trained on (its first recording is replayed, looped).
    bundle, backend : the verified bundle and the backend built on it
    stream_cfg : StreamConfig
        Base inlet/record settings; contract, preprocessing and windowing come from the bundle.
    rt_cfg : RealtimeConfig
    out_dir : path
        The session folder (``metrics.json``, ``frames/``, ``topk.jsonl``, ``eeg/``).
    resolved_config : dict
    duration_s, speed : how long, and the replay speed (1 = real time)
    scorer, on_snapshot, summary_out : see :func:`neuroimagen.realtime.live.run_live`

    Returns
    -------
    dict
        The final metrics.
    """
    from neuroimagen.stream.readers import read_recording
    from neuroimagen.stream.replay import Player

    from .live import live_stream_config, run_live

    root = Path(twin_dir)
    meta = json.loads((root / "twin.json").read_text())
    name = f"neuroimagen-demo-{uuid.uuid4().hex[:8]}"
    recording = read_recording(root / meta["files"]["recordings"][0])
    cfg = live_stream_config(bundle, stream_cfg, rt_cfg, eeg_name=name)
    cfg = cfg.model_copy(update={"inlet": cfg.inlet.model_copy(update={"source_id": None})})
    player = Player(recording, name=name, cfg=ReplayConfig(speed=speed, loop=True))
    player.start()
    try:
        return run_live(bundle, backend, cfg, rt_cfg, out_dir=out_dir, resolved_config=resolved_config,
                        duration_s=duration_s, scorer=scorer, on_snapshot=on_snapshot,
                        summary_out=summary_out)
    finally:
        player.stop()

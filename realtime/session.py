"""A session folder: everything a live run saw and produced, written as it happens.

Layout::

    session/
      config.yaml          the resolved config (every section), written first
      bundle.json          which bundle ran (name, path, manifest sha256, simulated or not)
      session.log          the log of the run (this process's neuroimagen loggers)
      eeg/                 raw EEG + markers through the stream recorder (stream/record.py):
                           appended as they arrive, fsync'd every record.flush_interval_s
      frames/000001.png    every reconstruction (and saliency/000001.png when asked)
      topk.jsonl           one line per frame: seq, timestamp, marker, top-k, timings, scores
                           (appended and flushed per line)
      metrics.json         the figures, rewritten atomically every metrics_interval_s and at the end

A SIGKILL loses at most one second: the recorder syncs its files every
``flush_interval_s`` (<= 1 s), each top-k line is flushed as it is written,
and ``metrics.json`` is replaced (write + rename) at least every second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import SessionConfig
from .engine import Frame

logger = logging.getLogger(__name__)

__all__ = ["Session", "write_json_atomic", "write_png"]


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file and a rename (never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def write_png(path: Path, image: np.ndarray) -> None:
    """(H, W, 3) uint8 -> PNG."""
    from PIL import Image

    Image.fromarray(image, mode="RGB").save(path, format="PNG", compress_level=1)


class Session:
    """Write one session folder.

    Parameters
    ----------
    out_dir : path
        Created; must not hold a session already (``topk.jsonl``).
    cfg : SessionConfig
    resolved_config : mapping
        Every config section as the run resolved it (saved as ``config.yaml``).
    bundle_info : mapping | None
        Saved as ``bundle.json``.

    Notes
    -----
    Threading: :meth:`write_frame` runs in the engine's publisher thread;
    :meth:`write_metrics` in the controlling thread; the recorder has its own.
    """

    def __init__(self, out_dir: str | Path, cfg: SessionConfig | None = None,
                 resolved_config: Mapping[str, Any] | None = None,
                 bundle_info: Mapping[str, Any] | None = None) -> None:
        import yaml

        self.out_dir = Path(out_dir)
        self.cfg = cfg or SessionConfig()
        if (self.out_dir / "topk.jsonl").exists():
            raise FileExistsError(f"{self.out_dir} already holds a session (topk.jsonl); choose a new --out")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.frames_dir = self.out_dir / "frames"
        self.saliency_dir = self.out_dir / "saliency"
        if self.cfg.save_frames:
            self.frames_dir.mkdir(exist_ok=True)
        if self.cfg.save_saliency:
            self.saliency_dir.mkdir(exist_ok=True)
        # 1. the resolved config first: a killed run still says what it ran with
        text = yaml.safe_dump(_plain(dict(resolved_config or {})), sort_keys=False)
        _write_durable(self.out_dir / "config.yaml", text)
        if bundle_info is not None:
            write_json_atomic(self.out_dir / "bundle.json", dict(bundle_info))
        self._topk = open(self.out_dir / "topk.jsonl", "a", buffering=1)
        self._log_handler = logging.FileHandler(self.out_dir / "session.log")
        self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("neuroimagen").addHandler(self._log_handler)
        self.recorder: Any = None
        self.n_frames = 0
        self._last_fsync = time.monotonic()

    # ------------------------------------------------------------------ EEG

    def start_recorder(self, stream_names: Sequence[str], record_cfg: Any,
                       resolved_config: Mapping[str, Any] | None = None) -> None:
        """Record ``stream_names`` (EEG, markers) into ``eeg/`` with the stream recorder."""
        from neuroimagen.stream.record import Recorder

        self.recorder = Recorder(self.out_dir / "eeg", record_cfg, stream_names=list(stream_names),
                                 resolved_config=resolved_config)
        self.recorder.start()
        logger.info("recording %s into %s", ", ".join(stream_names), self.out_dir / "eeg")

    # ------------------------------------------------------------------ frames

    def write_frame(self, frame: Frame) -> None:
        """PNG(s) and one flushed top-k line (publisher thread)."""
        name = f"{frame.seq:06d}.png"
        if self.cfg.save_frames:
            write_png(self.frames_dir / name, frame.image)
        if self.cfg.save_saliency:
            write_png(self.saliency_dir / name, frame.saliency)
        line = {
            "seq": frame.seq,
            "timestamp": frame.timestamp,
            "first_sample": frame.first_sample,
            "marker": dict(frame.marker),
            "top_k": [[n, round(s, 5)] for n, s in frame.top_k],
            "timings_ms": {k: round(v, 3) for k, v in frame.timings_ms.items()},
            "scores": frame.scores,
            "frame": name if self.cfg.save_frames else None,
        }
        self._topk.write(json.dumps(line, default=_json_default) + "\n")  # line-buffered: flushed
        self.n_frames += 1
        now = time.monotonic()
        if now - self._last_fsync >= self.cfg.metrics_interval_s:
            os.fsync(self._topk.fileno())
            self._last_fsync = now

    def write_metrics(self, summary: Mapping[str, Any]) -> None:
        write_json_atomic(self.out_dir / "metrics.json", dict(summary))

    # ------------------------------------------------------------------ end

    def close(self, summary: Mapping[str, Any] | None = None) -> dict[str, Path]:
        """Stop the recorder (it finalizes FIF), write the final metrics, close the files.

        Returns the recorder's finalized files. Re-raises the recorder's error after
        everything else is closed.
        """
        error: BaseException | None = None
        finalized: dict[str, Path] = {}
        if self.recorder is not None:
            try:
                finalized = self.recorder.stop() or {}
            except BaseException as exc:
                error = exc
                logger.error("recorder: %s", exc)
        if summary is not None:
            self.write_metrics(summary)
        if not self._topk.closed:
            self._topk.flush()
            os.fsync(self._topk.fileno())
            self._topk.close()
        logging.getLogger("neuroimagen").removeHandler(self._log_handler)
        self._log_handler.close()
        if error is not None:
            raise error
        return finalized


def _write_durable(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _plain(obj: Any) -> Any:
    """Config dicts with Paths/tuples -> YAML-safe plain types."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

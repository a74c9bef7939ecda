"""Record LSL streams to disk, crash-safe, and finalize them into FIF (and XDF).

Folder layout (``out_dir``)
---------------------------
::

    config.yaml                 resolved config (when given)
    streams/<k>_<name>/
        header.json             written first: name, type, n_channels, sfreq,
                                channel_format, source_id, ch_names, units, types, xml
        data.bin                numeric streams: samples appended as they arrive,
                                little-endian, (n_channels,) per sample, in the
                                stream's own format (float32, float64, int16, ...)
        timestamps.bin          float64 LSL timestamps (the source's clock), one per sample
        clock_offsets.bin       float64 pairs (local time, offset) from time_correction(),
                                every 5 s; source + offset = local clock
        samples.jsonl           string streams: one ``[timestamp, [values...]]`` line per sample
    <name>_raw.fif              after finalize: each regular numeric stream
    <name>_timestamps.npy       its sample timestamps (float64)
    recording.xdf               after finalize, when ``formats`` lists xdf

Files are opened unbuffered and appended per pulled chunk, then flushed to
disk (``fsync``) every ``flush_interval_s``: a killed recorder loses at most
what the OS had not written (nothing, short of a power cut). Finalize reads
whole samples only, so a torn last write is dropped.

Timestamps are stored as sent (the source's clock, ``proc_none``), with the
clock offsets beside them as XDF does: streams from one host share a clock, so
their timestamps compare exactly. Finalize maps each marker to the EEG sample
nearest its timestamp (correcting by the median clock offsets only when the
two streams come from different hosts); the FIF
annotation onset is that sample's index / sfreq (the FIF's own time axis),
which equals ``timestamp - first EEG timestamp`` for a stream sent in real time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .config import RecordConfig
from .markers import (
    ANNOTATION_TYPES,
    decode_annotation_sample,
    is_marker_stream,
    marker_decoder,
    marker_time_offset_s,
)

logger = logging.getLogger(__name__)

CLOCK_OFFSET_INTERVAL_S = 5.0
#: seconds to wait for the marker stream of a named stream (none after that: record without)
MARKER_LOOKUP_S = 1.0
_NP_FORMATS = {
    "float32": "<f4", "double64": "<f8", "float64": "<f8", "int8": "<i1",
    "int16": "<i2", "int32": "<i4", "int64": "<i8",
}
_FORMAT_NAMES = {1: "float32", 2: "double64", 3: "string", 4: "int32", 5: "int16", 6: "int8", 7: "int64"}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "stream"


@dataclass
class _StreamFiles:
    header: dict[str, Any]
    folder: Path
    inlet: Any
    is_string: bool
    dtype: np.dtype | None
    files: list[Any] = field(default_factory=list)
    n_samples: int = 0


class Recorder:
    """Record LSL streams into ``out_dir`` until stopped or ``duration_s`` elapses.

    Parameters
    ----------
    out_dir : path
        Created if missing; must not already hold a recording.
    cfg : RecordConfig
    stream_names : sequence of str | None
        Streams to record, by name (each must appear within
        ``cfg.resolve_timeout_s``). None: every stream visible now.
    duration_s : float | None
        Stop by itself after this long (None: until :meth:`stop`).
    resolved_config : mapping | None
        Saved as ``config.yaml`` beside the data.
    with_markers : bool
        Also record the marker streams of each named regular-rate stream, as
        :func:`~neuroimagen.stream.markers.match_marker_streams` finds them
        (``<name>-markers``, ``<name>-Markers``, mne-lsl's ``<name>-annotations``).

    Notes
    -----
    One thread pulls every inlet with ``timeout=0.0`` and appends. ``stop()``
    joins it, re-raises its error, and finalizes when ``cfg.finalize_on_stop``.
    """

    def __init__(
        self,
        out_dir: str | Path,
        cfg: RecordConfig | None = None,
        stream_names: Sequence[str] | None = None,
        duration_s: float | None = None,
        resolved_config: Mapping[str, Any] | None = None,
        with_markers: bool = True,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.with_markers = with_markers
        self.cfg = cfg or RecordConfig()
        self.stream_names = list(stream_names) if stream_names else None
        self.duration_s = duration_s
        self._resolved_config = resolved_config
        self._streams: list[_StreamFiles] = []
        self._stop = threading.Event()
        # Set by the thread when it ends; see PacedStreamer: an interrupted
        # Thread.join() must never let stop() close files under a live thread.
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.finalized: dict[str, Path] = {}

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Resolve the streams, write the headers, start appending."""
        import pylsl

        if self._thread is not None:
            raise RuntimeError("already started")
        if (self.out_dir / "streams").exists():
            raise FileExistsError(f"{self.out_dir} already holds a recording (streams/)")
        # 1. resolve
        infos = self._resolve()
        (self.out_dir / "streams").mkdir(parents=True)
        if self._resolved_config is not None:
            from .config import dump_yaml

            (self.out_dir / "config.yaml").write_text(dump_yaml(self._resolved_config), encoding="utf-8")
        # 2. open inlets, write headers first
        for k, info in enumerate(infos):
            inlet = pylsl.StreamInlet(info, max_buflen=360, processing_flags=pylsl.proc_none)
            full = inlet.info(timeout=self.cfg.resolve_timeout_s)
            inlet.open_stream(timeout=self.cfg.resolve_timeout_s)
            self._streams.append(self._open_files(k, full, inlet))
        logger.info("recording %s into %s", [s.header["name"] for s in self._streams], self.out_dir)
        # 3. start the thread
        self._thread = threading.Thread(target=self._run_safe, name="lsl-recorder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> dict[str, Path]:
        """Stop, close the files, finalize (``cfg.finalize_on_stop``); re-raise thread errors."""
        self._stop.set()
        if self._thread is not None:
            if not self._done.wait(timeout):
                raise RuntimeError(f"recorder thread did not stop within {timeout} s")
            self._thread.join(1.0)
        self._close()
        if self._error is not None:
            err, self._error = self._error, None
            raise err
        if self.cfg.finalize_on_stop and self._streams:
            self.finalized = finalize(self.out_dir, formats=self.cfg.formats)
        return self.finalized

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for ``duration_s`` to elapse (True) or the timeout (False)."""
        if self._thread is None:
            raise RuntimeError("not started")
        return self._done.wait(timeout)

    @property
    def n_samples(self) -> dict[str, int]:
        return {s.header["name"]: s.n_samples for s in self._streams}

    def __enter__(self) -> Recorder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- internals
    def _resolve(self) -> list[Any]:
        import pylsl

        timeout = self.cfg.resolve_timeout_s
        if self.stream_names is None:
            infos = pylsl.resolve_streams(wait_time=min(timeout, 2.0))
            if not infos:
                raise LookupError("no LSL stream found to record")
            return infos
        infos, missing = [], []
        for name in self.stream_names:
            found = pylsl.resolve_byprop("name", name, 1, timeout)
            (infos.append(found[0]) if found else missing.append(name))
        if missing:
            seen = sorted({i.name() for i in pylsl.resolve_streams(wait_time=1.0)})
            raise LookupError(f"stream(s) not found: {missing}; streams visible: {seen}")
        if self.with_markers:
            infos += self._marker_streams_of(infos)
        return infos

    def _marker_streams_of(self, infos: Sequence[Any]) -> list[Any]:
        """The marker streams of the named regular-rate streams that were not named themselves."""
        from .inlet import stream_meta
        from .markers import resolve_marker_streams

        uids = {i.uid() for i in infos}
        extra = []
        for info in infos:
            if info.nominal_srate() <= 0:
                continue
            for m in resolve_marker_streams(stream_meta(info), timeout=MARKER_LOOKUP_S):
                if m.uid() not in uids:
                    uids.add(m.uid())
                    extra.append(m)
                    logger.info("also recording %r, the marker stream of %r", m.name(), info.name())
        return extra

    def _open_files(self, k: int, info: Any, inlet: Any) -> _StreamFiles:
        fmt = _FORMAT_NAMES.get(info.channel_format(), str(info.channel_format()))
        header = {
            "name": info.name(), "type": info.type(), "n_channels": info.channel_count(),
            "sfreq": info.nominal_srate(), "channel_format": fmt, "source_id": info.source_id(),
            "hostname": info.hostname(), "created_at": info.created_at(),
            "recorded_at_unix": time.time(), **_channels(info), "xml": info.as_xml(),
        }
        folder = self.out_dir / "streams" / f"{k:02d}_{_safe(info.name())}"
        folder.mkdir()
        _write_durable(folder / "header.json", json.dumps(header, indent=1))
        is_string = fmt == "string"
        sf = _StreamFiles(header, folder, inlet, is_string, None if is_string else np.dtype(_NP_FORMATS[fmt]))
        names = ["samples.jsonl"] if is_string else ["data.bin", "timestamps.bin"]
        sf.files = [open(folder / n, "ab", buffering=0) for n in [*names, "clock_offsets.bin"]]
        return sf

    def _clock_offsets(self) -> None:
        import pylsl

        for s in self._streams:
            try:
                offset = s.inlet.time_correction(timeout=1.0)
            except pylsl.TimeoutError:
                logger.warning("%s: no clock offset this time", s.header["name"])
                continue
            s.files[-1].write(np.array([pylsl.local_clock(), offset], dtype="<f8").tobytes())

    def _close(self) -> None:
        for s in self._streams:
            for f in s.files:
                if not f.closed:
                    os.fsync(f.fileno())
                    f.close()
            s.inlet = None

    def _run_safe(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # stored, re-raised by stop()
            logger.error("recorder thread failed: %s", exc)
            self._error = exc
        finally:
            self._done.set()

    def _run(self) -> None:
        t_start = time.monotonic()
        next_flush = t_start + self.cfg.flush_interval_s
        next_offset = t_start
        while not self._stop.is_set():
            if time.monotonic() >= next_offset:
                self._clock_offsets()
                next_offset = time.monotonic() + CLOCK_OFFSET_INTERVAL_S
            for s in self._streams:
                self._pull(s)
            now = time.monotonic()
            if now >= next_flush:
                for s in self._streams:
                    for f in s.files:
                        os.fsync(f.fileno())
                next_flush = now + self.cfg.flush_interval_s
            if self.duration_s is not None and now - t_start >= self.duration_s:
                break
            self._stop.wait(self.cfg.poll_interval_s)
        for s in self._streams:  # what already arrived
            self._pull(s)

    def _pull(self, s: _StreamFiles) -> None:
        while True:
            data, ts = s.inlet.pull_chunk(timeout=0.0, max_samples=4096, as_numpy=not s.is_string)
            if len(ts) == 0:
                return
            if s.is_string:
                lines = "".join(json.dumps([float(t), list(v)]) + "\n" for t, v in zip(ts, data, strict=True))
                s.files[0].write(lines.encode("utf-8"))
            else:
                s.files[0].write(np.ascontiguousarray(data, dtype=s.dtype).tobytes())
                s.files[1].write(np.asarray(ts, dtype="<f8").tobytes())
            s.n_samples += len(ts)


def _write_durable(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _channels(info: Any) -> dict[str, list]:
    n = info.channel_count()
    names, units, types = [], [], []
    ch = info.desc().child("channels").child("channel")
    while not ch.empty() and len(names) < n:
        names.append(ch.child_value("label") or f"ch{len(names)}")
        units.append(ch.child_value("unit") or None)
        types.append(ch.child_value("type") or None)
        ch = ch.next_sibling()
    if len(names) != n:
        names, units, types = [f"ch{i}" for i in range(n)], [None] * n, [None] * n
    return {"ch_names": names, "units": units, "types": types}


# --------------------------------------------------------------------------- reading back


@dataclass
class RecordedStream:
    """One stream read back from a recorder folder (whole samples only)."""

    header: dict[str, Any]
    timestamps: np.ndarray            # (n,) float64
    data: np.ndarray | None           # (n, n_channels) in the stream's format (numeric streams)
    values: list[list[str]] | None    # string streams
    clock_offsets: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (k, 2) local time, offset

    @property
    def offset(self) -> float:
        """Median clock offset (s) to add to the source timestamps for this machine's clock."""
        return float(np.median(self.clock_offsets[:, 1])) if len(self.clock_offsets) else 0.0

    @property
    def is_string(self) -> bool:
        return self.values is not None


def read_recorder_dir(out_dir: str | Path) -> list[RecordedStream]:
    """Every stream in a recorder folder, truncated to whole, time-stamped samples."""
    root = Path(out_dir) / "streams"
    if not root.is_dir():
        raise FileNotFoundError(f"{out_dir} is not a recorder folder (no streams/ inside)")
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        hpath = folder / "header.json"
        if not hpath.is_file():
            logger.warning("%s: no header.json; skipped", folder)
            continue
        header = json.loads(hpath.read_text(encoding="utf-8"))
        opath = folder / "clock_offsets.bin"
        offsets = np.fromfile(opath, dtype="<f8") if opath.exists() else np.zeros(0)
        offsets = offsets[: offsets.size // 2 * 2].reshape(-1, 2)
        if header["channel_format"] == "string":
            ts, values = [], []
            path = folder / "samples.jsonl"
            for line in path.read_bytes().split(b"\n") if path.exists() else []:
                try:
                    t, v = json.loads(line)
                except ValueError:
                    continue  # empty or torn last line
                ts.append(t)
                values.append([str(x) for x in v])
            out.append(RecordedStream(header, np.asarray(ts, dtype=np.float64), None, values, offsets))
            continue
        dtype = np.dtype(_NP_FORMATS[header["channel_format"]])
        n_ch = int(header["n_channels"])
        raw = np.fromfile(folder / "data.bin", dtype=np.uint8)
        ts = np.fromfile(folder / "timestamps.bin", dtype="<f8") if (folder / "timestamps.bin").exists() else np.zeros(0)
        n = min(raw.size // (dtype.itemsize * n_ch), ts.size)
        data = raw[: n * dtype.itemsize * n_ch].view(dtype).reshape(n, n_ch)
        out.append(RecordedStream(header, ts[:n], data, None, offsets))
    return out


def finalize(out_dir: str | Path, formats: Sequence[str] = ("fif",)) -> dict[str, Path]:
    """Turn a recorder folder into ``<stream>_raw.fif`` per regular numeric stream (+ XDF).

    FIF: data in volts (units ``volts``/``microvolts``/``millivolts`` in the
    header are converted; others are kept), channel types from the description
    (``eeg`` by default for EEG streams, ``misc`` otherwise), every marker of
    every string stream as an annotation (description = payload) at the EEG
    sample nearest its timestamp. The sample timestamps go to
    ``<stream>_timestamps.npy``; the raw files stay.

    Returns
    -------
    dict
        ``{label: path}`` of what was written.
    """
    import mne

    from .readers import nearest_index
    from .units import unit_to_volts

    out_dir = Path(out_dir)
    streams = read_recorder_dir(out_dir)
    marker_streams = [s for s in streams if is_marker_stream(_described(s.header))]
    written: dict[str, Path] = {}
    for s in streams:
        h = s.header
        if s.is_string or float(h["sfreq"]) <= 0:
            continue
        if s.timestamps.size == 0:
            logger.warning("%s: no samples; no FIF written", h["name"])
            continue
        sfreq = float(h["sfreq"])
        data = s.data.T.astype(np.float64)
        default = "eeg" if h["type"].lower() == "eeg" else "misc"
        valid = set(mne.io.get_channel_type_constants(include_defaults=True))
        ch_types = []
        for i, (t, unit) in enumerate(zip(h["types"], h["units"], strict=True)):
            t = (t or default).lower()
            t = t if t in valid else default
            ch_types.append(t)
            factor = unit_to_volts(unit, t)
            if factor is not None and factor != 1.0:
                data[i] *= factor
        info = mne.create_info(_dedupe(h["ch_names"]), sfreq, ch_types)
        raw = mne.io.RawArray(data, info, verbose="error")
        ts = s.timestamps
        markers = sorted(
            (event for m in marker_streams for event in _marker_events(m, s)), key=lambda m: m[0]
        )
        if markers:
            mt = np.array([m[0] for m in markers])
            idx = nearest_index(ts, mt)
            inside = (mt >= ts[0] - 0.5 / sfreq) & (mt <= ts[-1] + 0.5 / sfreq)
            if (~inside).any():
                logger.warning("%s: %d marker(s) outside the recorded samples; kept at the edges",
                               h["name"], int((~inside).sum()))
            raw.set_annotations(
                mne.Annotations(idx / sfreq, [m[2] for m in markers], [m[1] for m in markers])
            )
        stem = _safe(h["name"])
        fif = out_dir / f"{stem}_raw.fif"
        raw.save(fif, overwrite=True, fmt="single", verbose="error")
        np.save(out_dir / f"{stem}_timestamps.npy", ts)
        written[f"fif:{h['name']}"] = fif
        logger.info("finalized %s: %d samples -> %s", h["name"], ts.size, fif)
    if "xdf" in formats:
        written["xdf"] = write_xdf(out_dir / "recording.xdf", streams)
    return written


def _described(header: Mapping[str, Any]) -> SimpleNamespace:
    """A recorded stream's header with the attribute names of :class:`~.inlet.StreamMeta`."""
    return SimpleNamespace(
        name=header["name"], stype=header["type"], source_id=header.get("source_id", ""),
        hostname=header.get("hostname", ""), sfreq=float(header["sfreq"]),
        channel_format=header["channel_format"], n_channels=int(header["n_channels"]),
        ch_names=list(header["ch_names"]), labelled=True,
    )


def _marker_events(m: RecordedStream, eeg: RecordedStream) -> list[tuple[float, str, float]]:
    """``(timestamp on the EEG stream's clock, description, duration_s)`` of every recorded marker.

    String streams give their first value; numeric annotation streams (mne-lsl's
    one-hot encoding) the description and duration of each firing channel.
    """
    meta, eeg_meta = _described(m.header), _described(eeg.header)
    # same host: one clock, compare as sent; else through the clock offsets
    shift = 0.0 if m.header["hostname"] == eeg.header["hostname"] else m.offset - eeg.offset
    shift += marker_time_offset_s(meta, eeg_meta)
    out: list[tuple[float, str, float]] = []
    if m.is_string:
        return [(float(t) + shift, v[0], 0.0) for t, v in zip(m.timestamps, m.values, strict=True)]
    if str(meta.stype).strip().lower() in ANNOTATION_TYPES or meta.n_channels > 1:
        for t, row in zip(m.timestamps, m.data, strict=True):
            out += [(float(t) + shift, d, dur) for d, dur in decode_annotation_sample(row, meta.ch_names)]
        return out
    decode = marker_decoder(meta)
    for t, row in zip(m.timestamps, m.data, strict=True):
        out += [(float(t) + shift, p, 0.0) for p in decode(row)]
    return out


def _dedupe(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        out.append(n if k == 0 else f"{n}-{k}")
        seen[n] = k + 1
    return out


# --------------------------------------------------------------------------- XDF writer


def _varlen(n: int) -> bytes:
    if n < 256:
        return b"\x01" + n.to_bytes(1, "little")
    if n < 2**32:
        return b"\x04" + n.to_bytes(4, "little")
    return b"\x08" + n.to_bytes(8, "little")


def _xdf_chunk(tag: int, payload: bytes, stream_id: int | None = None) -> bytes:
    body = tag.to_bytes(2, "little") + (b"" if stream_id is None else stream_id.to_bytes(4, "little")) + payload
    return _varlen(len(body)) + body


def write_xdf(path: str | Path, streams: Sequence[RecordedStream]) -> Path:
    """Write recorded streams as XDF 1.0 (file header, stream headers, samples, footers).

    Every sample carries its full timestamp (source clock); the recorded clock
    offsets follow as ClockOffset chunks, so XDF readers synchronise as usual.
    """
    from xml.sax.saxutils import escape

    path = Path(path)
    with open(path, "wb") as f:
        f.write(b"XDF:")
        f.write(_xdf_chunk(1, b'<?xml version="1.0"?><info><version>1.0</version></info>'))
        for sid, s in enumerate(streams, start=1):
            xml = s.header["xml"]
            f.write(_xdf_chunk(2, xml.encode("utf-8"), sid))
            n = s.timestamps.size
            for lo in range(0, n, 1000):
                hi = min(n, lo + 1000)
                parts = [_varlen(hi - lo)]
                for j in range(lo, hi):
                    parts.append(b"\x08" + np.float64(s.timestamps[j]).tobytes())
                    if s.is_string:
                        for v in s.values[j]:
                            b = v.encode("utf-8")
                            parts.append(_varlen(len(b)) + b)
                    else:
                        parts.append(np.ascontiguousarray(s.data[j]).tobytes())
                f.write(_xdf_chunk(3, b"".join(parts), sid))
            for t, offset in s.clock_offsets:
                f.write(_xdf_chunk(4, np.array([t, offset], dtype="<f8").tobytes(), sid))
            first = float(s.timestamps[0]) if n else 0.0
            last = float(s.timestamps[-1]) if n else 0.0
            footer = (
                f'<?xml version="1.0"?><info><first_timestamp>{first!r}</first_timestamp>'
                f"<last_timestamp>{last!r}</last_timestamp><sample_count>{n}</sample_count>"
                f"<measured_srate>{escape(str(s.header['sfreq']))}</measured_srate></info>"
            )
            f.write(_xdf_chunk(6, footer.encode("utf-8"), sid))
    return path

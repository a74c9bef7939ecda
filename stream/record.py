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

import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .config import RecordConfig
from .inlet import StreamWatch, stream_meta
from .markers import (
    ANNOTATION_TYPES,
    decode_annotation_sample,
    is_marker_stream,
    marker_decoder,
    marker_time_offset_s,
    resolve_marker_streams,
)
from .worker import Worker

logger = logging.getLogger(__name__)

CLOCK_OFFSET_INTERVAL_S = 5.0
#: how long one clock-offset query may block the recorder thread
CLOCK_OFFSET_TIMEOUT_S = 0.5
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
    last_ts: float | None = None
    last_data: float = 0.0
    next_watch: float = 0.0
    watch: Any = None


class Recorder(Worker):
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

    Attributes
    ----------
    gaps : list of RecordedGap
        Discontinuities seen so far in the regular streams (the outlet lost and
        recovered, or restarted; logged as they are found and annotated in the
        finalized FIF).
    n_reconnects : int
        Times a stream was re-resolved after its outlet restarted with a new
        source_id (``cfg.reresolve_after_s``).

    Notes
    -----
    A :class:`~neuroimagen.stream.worker.Worker`: ``start`` resolves the
    streams and writes the headers in the caller's thread, then one thread pulls
    every inlet with ``timeout=0.0`` and appends. ``stop()`` waits for that
    thread on its done event (never closing files under a live thread), closes
    the files, re-raises its error, and finalizes when ``cfg.finalize_on_stop``.
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
        super().__init__("lsl-recorder", stop_timeout_s=10.0)
        self.out_dir = Path(out_dir)
        self.with_markers = with_markers
        self.cfg = cfg or RecordConfig()
        self.stream_names = list(stream_names) if stream_names else None
        self.duration_s = duration_s
        self._resolved_config = resolved_config
        self._streams: list[_StreamFiles] = []
        self.finalized: dict[str, Path] = {}
        self.gaps: list[RecordedGap] = []
        self.n_reconnects = 0

    # ---------------------------------------------------------------- lifecycle
    def _setup(self) -> None:
        """Resolve the streams, write the headers (appending starts in the thread)."""
        import pylsl

        if (self.out_dir / "streams").exists():
            raise FileExistsError(f"{self.out_dir} already holds a recording (streams/)")
        self._streams, self.gaps, self.finalized, self.n_reconnects = [], [], {}, 0
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
            sf = self._open_files(k, full, inlet)
            sf.last_data = pylsl.local_clock()
            if self.cfg.reresolve_after_s is not None:
                sf.watch = StreamWatch(stream_meta(full), full.uid())
            self._streams.append(sf)
        logger.info("recording %s into %s", [s.header["name"] for s in self._streams], self.out_dir)

    def _on_stop(self) -> None:
        self._close()

    def stop(self, timeout: float | None = None) -> dict[str, Path]:
        """Stop, close the files, finalize (``cfg.finalize_on_stop``); re-raise thread errors.

        Returns
        -------
        dict
            What finalize wrote, ``{label: path}`` (empty when not finalized).
        """
        super().stop(timeout)
        if self.cfg.finalize_on_stop and self._streams and not self.finalized:
            self.finalized = finalize(self.out_dir, formats=self.cfg.formats,
                                      gap_threshold_s=self.cfg.gap_threshold_s)
        return self.finalized

    @property
    def n_samples(self) -> dict[str, int]:
        return {s.header["name"]: s.n_samples for s in self._streams}

    @property
    def last_timestamps(self) -> dict[str, float | None]:
        """Each stream's newest recorded timestamp (its source clock), None before the first sample."""
        return {s.header["name"]: s.last_ts for s in self._streams}

    def stats(self) -> dict[str, Any]:
        """Samples per stream, gaps (samples and seconds) and reconnects so far."""
        return {
            "n_samples": self.n_samples,
            "n_reconnects": self.n_reconnects,
            "n_gaps": len(self.gaps),
            "n_gap_samples": sum(g.n_samples for g in self.gaps),
            "gap_seconds": float(sum(g.seconds for g in self.gaps)),
            "gaps": [dataclasses.asdict(g) for g in self.gaps],
        }

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
                offset = s.inlet.time_correction(timeout=CLOCK_OFFSET_TIMEOUT_S)
            except pylsl.util.TimeoutError:  # the outlet is gone (or slow): the next round tries again
                logger.warning("%s: no clock offset this time (time_correction timed out)", s.header["name"])
                continue
            s.files[-1].write(np.array([pylsl.local_clock(), offset], dtype="<f8").tobytes())

    def _close(self) -> None:
        for s in self._streams:
            for f in s.files:
                if not f.closed:
                    os.fsync(f.fileno())
                    f.close()
            if s.inlet is not None:
                s.inlet.close_stream()
            s.inlet = None
            if s.watch is not None:
                s.watch.close()
                s.watch = None

    def _run(self) -> None:
        t_start = time.monotonic()
        next_flush = t_start + self.cfg.flush_interval_s
        next_offset = t_start
        while not self.stopping:
            if time.monotonic() >= next_offset:
                self._clock_offsets()
                next_offset = time.monotonic() + CLOCK_OFFSET_INTERVAL_S
            for s in self._streams:
                self._pull(s)
                self._check_restart(s)
            now = time.monotonic()
            if now >= next_flush:
                for s in self._streams:
                    for f in s.files:
                        os.fsync(f.fileno())
                next_flush = now + self.cfg.flush_interval_s
            if self.duration_s is not None and now - t_start >= self.duration_s:
                break
            self._sleep(self.cfg.poll_interval_s)
        for s in self._streams:  # what already arrived
            self._pull(s)

    def _pull(self, s: _StreamFiles) -> None:
        import pylsl

        while True:
            data, ts = s.inlet.pull_chunk(timeout=0.0, max_samples=4096, as_numpy=not s.is_string)
            if len(ts) == 0:
                return
            s.last_data = pylsl.local_clock()
            if s.watch is not None:
                s.watch.idle()
            if s.is_string:
                lines = "".join(json.dumps([float(t), list(v)]) + "\n" for t, v in zip(ts, data, strict=True))
                s.files[0].write(lines.encode("utf-8"))
            else:
                ts = np.asarray(ts, dtype="<f8")
                self._note_gaps(s, ts)
                s.files[0].write(np.ascontiguousarray(data, dtype=s.dtype).tobytes())
                s.files[1].write(ts.tobytes())
            s.n_samples += len(ts)

    def _note_gaps(self, s: _StreamFiles, ts: np.ndarray) -> None:
        sfreq = float(s.header["sfreq"])
        if sfreq <= 0:
            return
        prev = np.r_[s.last_ts, ts] if s.last_ts is not None else ts
        offset = s.n_samples - (1 if s.last_ts is not None else 0)
        for g in find_gaps(prev, sfreq, self.cfg.gap_threshold_s):
            gap = dataclasses.replace(g, stream=s.header["name"], at_sample=g.at_sample + offset)
            self.gaps.append(gap)
            logger.warning("%s: gap of %d samples (%.3f s) before recorded sample %d",
                           gap.stream, gap.n_samples, gap.seconds, gap.at_sample)
        s.last_ts = float(ts[-1])

    def _check_restart(self, s: _StreamFiles) -> None:
        """A stalled stream whose outlet restarted under a new source_id: reconnect to it."""
        import pylsl

        if s.watch is None:
            return
        now = pylsl.local_clock()
        if now - s.last_data < self.cfg.reresolve_after_s or now < s.next_watch:
            return  # data flows (or markers came lately); irregular streams are checked when silent
        s.next_watch = now + (0.1 if float(s.header["sfreq"]) > 0 else 0.5)
        info = s.watch.replacement()
        if info is None:
            return
        try:
            inlet = pylsl.StreamInlet(info, max_buflen=360, processing_flags=pylsl.proc_none)
            full = inlet.info(timeout=1.0)
            inlet.open_stream(timeout=1.0)
        except Exception as exc:  # not ready yet: the next check tries again
            logger.warning("%s: reconnecting failed (%s); retrying", s.header["name"], exc)
            return
        self._pull(s)  # anything the old inlet still held
        s.inlet.close_stream()
        s.inlet = inlet
        s.watch.close()
        s.watch = StreamWatch(stream_meta(full), full.uid())
        s.last_data = now
        self.n_reconnects += 1
        logger.warning("%s: the outlet restarted as source_id %r (was %r); recording continues",
                       s.header["name"], full.source_id(), s.header["source_id"])


@dataclass(frozen=True)
class RecordedGap:
    """A discontinuity in a recorded regular stream.

    Attributes
    ----------
    at_sample : int
        Recorded sample index (0-based, in the stream's own samples) of the
        first sample after the gap; in the FIF, onset ``at_sample / sfreq``.
    n_samples : int
        Samples missing, from the timestamps: ``round(dt * sfreq) - 1``.
    seconds : float
        Timestamp step across the gap minus one period.
    at_timestamp : float
        Timestamp (the source's clock) of the first sample after the gap.
    stream : str
    """

    at_sample: int
    n_samples: int
    seconds: float
    at_timestamp: float
    stream: str = ""


def find_gaps(ts: np.ndarray, sfreq: float, threshold_s: float) -> list[RecordedGap]:
    """Discontinuities in sample timestamps: steps more than ``threshold_s`` beyond ``1 / sfreq``.

    Parameters
    ----------
    ts : ndarray, shape (n,), float64
        Sample timestamps (s).
    sfreq : float
        Nominal rate (Hz).
    threshold_s : float

    Returns
    -------
    list of RecordedGap
        ``at_sample`` indexes ``ts``.
    """
    if ts.size < 2:
        return []
    period = 1.0 / sfreq
    steps = np.diff(ts)
    out = []
    for j in np.flatnonzero(steps - period > threshold_s):
        dt = float(steps[j])
        out.append(RecordedGap(int(j) + 1, max(0, int(round(dt * sfreq)) - 1), dt - period, float(ts[j + 1])))
    return out


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
        ts = np.fromfile(folder / "timestamps.bin", dtype="<f8") if (folder / "timestamps.bin").exists() else np.zeros(0)
        n_bytes = (folder / "data.bin").stat().st_size if (folder / "data.bin").exists() else 0
        n = min(n_bytes // (dtype.itemsize * n_ch), ts.size)
        # mapped, not read: an hour of 129 channels is ~2 GB, and finalize reads it a second at a time
        data = (np.memmap(folder / "data.bin", dtype=dtype, mode="r", shape=(n, n_ch)) if n
                else np.zeros((0, n_ch), dtype=dtype))
        out.append(RecordedStream(header, ts[:n], data, None, offsets))
    return out


def gap_description(gap: RecordedGap) -> str:
    """The FIF annotation text of a gap: ``"gap: N samples (S.SSS s)"``."""
    return f"gap: {gap.n_samples} samples ({gap.seconds:.3f} s)"


def finalize(
    out_dir: str | Path, formats: Sequence[str] = ("fif",), gap_threshold_s: float = 0.02
) -> dict[str, Path]:
    """Turn a recorder folder into ``<stream>_raw.fif`` per regular numeric stream (+ XDF).

    FIF: data in volts (units ``volts``/``microvolts``/``millivolts`` in the
    header are converted; others are kept), channel types from the description
    (``eeg`` by default for EEG streams, ``misc`` otherwise), every marker of
    every string stream as an annotation (description = payload) at the EEG
    sample nearest its timestamp. The sample timestamps go to
    ``<stream>_timestamps.npy``; the raw files stay.

    Gaps: every step in the sample timestamps more than ``gap_threshold_s``
    beyond one period (the outlet was lost or restarted) is annotated at the
    first sample after it, twice: ``EDGE boundary`` (MNE's mark for a
    discontinuity, as ``concatenate_raws`` writes it) and
    ``gap: N samples (S.SSS s)`` (:func:`gap_description`).

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
        default = "eeg" if h["type"].lower() == "eeg" else "misc"
        valid = set(mne.io.get_channel_type_constants(include_defaults=True))
        ch_types = []
        factors = np.ones(len(h["types"]))
        for i, (t, unit) in enumerate(zip(h["types"], h["units"], strict=True)):
            t = (t or default).lower()
            t = t if t in valid else default
            ch_types.append(t)
            factor = unit_to_volts(unit, t)
            if factor is not None:
                factors[i] = factor
        info = mne.create_info(_dedupe(h["ch_names"]), sfreq, ch_types)
        raw = _recorded_raw(info, s.data, factors)
        ts = s.timestamps
        markers = sorted(
            (event for m in marker_streams for event in _marker_events(m, s)), key=lambda m: m[0]
        )
        onsets: list[float] = []
        durations: list[float] = []
        descriptions: list[str] = []
        if markers:
            mt = np.array([m[0] for m in markers])
            idx = nearest_index(ts, mt)
            inside = (mt >= ts[0] - 0.5 / sfreq) & (mt <= ts[-1] + 0.5 / sfreq)
            if (~inside).any():
                logger.warning("%s: %d marker(s) outside the recorded samples; kept at the edges",
                               h["name"], int((~inside).sum()))
            onsets += (idx / sfreq).tolist()
            durations += [m[2] for m in markers]
            descriptions += [m[1] for m in markers]
        for gap in find_gaps(ts, sfreq, gap_threshold_s):
            # the samples either side are adjacent in the FIF: MNE's boundary annotation keeps
            # its filters from running across, and the second one says how much is missing
            onsets += [gap.at_sample / sfreq] * 2
            durations += [0.0, 0.0]
            descriptions += ["EDGE boundary", gap_description(gap)]
            logger.warning("%s: %s at recorded sample %d", h["name"], gap_description(gap), gap.at_sample)
        if onsets:
            raw.set_annotations(mne.Annotations(onsets, durations, descriptions))
        stem = _safe(h["name"])
        fif = out_dir / f"{stem}_raw.fif"
        raw.save(fif, overwrite=True, fmt="single", verbose="error")
        np.save(out_dir / f"{stem}_timestamps.npy", ts)
        written[f"fif:{h['name']}"] = fif
        logger.info("finalized %s: %d samples -> %s", h["name"], ts.size, fif)
    if "xdf" in formats:
        written["xdf"] = write_xdf(out_dir / "recording.xdf", streams)
    return written


def _recorded_raw(info: Any, samples: np.ndarray, factors: np.ndarray) -> Any:
    """An MNE Raw over the recorded samples that reads them block by block when saved.

    ``samples`` is the recorder's (n, n_channels) array (a memory map of data.bin);
    each block is scaled to volts by ``factors`` as MNE asks for it, so writing the
    FIF never holds more than one buffer (``buffer_size_sec``) in float64.
    """
    import mne
    from mne._fiff.utils import _mult_cal_one

    class RecordedRaw(mne.io.BaseRaw):
        def __init__(self) -> None:
            super().__init__(info, preload=False, first_samps=[0], last_samps=[samples.shape[0] - 1],
                             filenames=[None], raw_extras=[{}], orig_format="single", verbose="error")

        def _read_segment_file(self, data, idx, fi, start, stop, cals, mult):
            block = samples[start:stop].T.astype(np.float64)
            block *= factors[:, None]
            _mult_cal_one(data, block, idx, cals, mult)

    return RecordedRaw()


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

"""Replay a recording as LSL: an EEG outlet plus a string marker outlet.

What the outlets publish
------------------------
- ``<name>`` (type ``EEG``, float32, the recording's sfreq): the recording's
  data channels, in volts for EEG-like channels (MNE's unit; unit ``volts`` in
  the description, which mne-lsl reads as ``unit_mul`` 0 and
  :func:`~neuroimagen.stream.contract.detect_unit_scale` as V). Stim channels
  are not sent (their events are markers). Description:
  ``desc/channels/channel/{label, unit, type}`` (mne-lsl's layout), and for
  already-preprocessed data ``desc/neuroimagen/preprocessed/<key>`` text
  children holding JSON values (e.g. ``bandpass_hz`` = ``[5, 95]``).
- ``<name>-markers`` (type ``Markers``, one string channel, irregular rate):
  one sample per annotation/event, payload the annotation description or, for
  EEG-ImageNet, a JSON object. Its timestamp is exactly the timestamp of the
  EEG sample at the marker's onset.

Timing
------
Sample ``k`` (counting over loops) has timestamp ``t0 + k / (sfreq * speed)``
on the LSL clock, pushed explicitly with its chunk; a chunk is pushed when its
last sample is due. The schedule is computed from ``t0`` every time, so sleep
errors never accumulate (no drift). With ``speed != 1`` timestamps follow the
wall clock (a 6 s file at speed 5 spans 1.2 s of timestamps) while the
nominal rate in the stream info stays the recording's sfreq.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .config import ReplayConfig
from .readers import Recording, RecordingError
from .worker import Worker

logger = logging.getLogger(__name__)

#: (data (n_channels, n) float32, markers [(index within the chunk, payload)])
ChunkSource = Callable[[int, int], tuple[np.ndarray, list[tuple[int, str]]]]


def make_stream_info(
    name: str,
    sfreq: float,
    ch_names: Sequence[str],
    ch_types: Sequence[str],
    units: Sequence[str],
    *,
    stype: str = "EEG",
    source_id: str | None = None,
    preprocessed: dict[str, Any] | None = None,
    extra: dict[str, str] | None = None,
):
    """A float32 ``pylsl.StreamInfo`` with the channel description mne-lsl writes.

    ``preprocessed`` goes to ``desc/neuroimagen/preprocessed/<key>`` (JSON values),
    ``extra`` to ``desc/neuroimagen/<key>`` (plain text).
    """
    import pylsl

    info = pylsl.StreamInfo(
        name, stype, len(ch_names), float(sfreq), "float32", source_id or uuid.uuid4().hex
    )
    chans = info.desc().append_child("channels")
    for label, ctype, unit in zip(ch_names, ch_types, units, strict=True):
        ch = chans.append_child("channel")
        ch.append_child_value("label", str(label))
        ch.append_child_value("unit", str(unit))
        ch.append_child_value("type", str(ctype))
    if preprocessed or extra:
        node = info.desc().append_child("neuroimagen")
        for key, value in (extra or {}).items():
            node.append_child_value(key, str(value))
        if preprocessed:
            pre = node.append_child("preprocessed")
            for key, value in preprocessed.items():
                pre.append_child_value(key, json.dumps(value))
    return info


def make_marker_info(name: str, source_id: str | None = None):
    """The string marker stream ``name`` (type ``Markers``, 1 channel, irregular rate)."""
    import pylsl

    info = pylsl.StreamInfo(
        name, "Markers", 1, pylsl.IRREGULAR_RATE, "string", source_id or uuid.uuid4().hex
    )
    ch = info.desc().append_child("channels").append_child("channel")
    ch.append_child_value("label", "marker")
    ch.append_child_value("type", "Markers")
    return info


class PacedStreamer(Worker):
    """Push a chunk source to an EEG outlet and a marker outlet, paced on the LSL clock.

    The engine under :class:`Player` and the simulated headset.

    Parameters
    ----------
    eeg_info, marker_info : pylsl.StreamInfo
        The outlets to create (marker_info None: no marker outlet).
    source : callable
        ``source(start, n) -> (data, markers)``: samples ``start .. start+n`` of
        the stream, data (n_channels, n) float32, markers as (index within the
        chunk, payload).
    n_total : int | None
        Samples to push (None: until stopped).
    chunk_size : int
        Samples per push.
    speed : float
        Playback speed (1: real time).
    wait_for_consumers_s : float
        Hold the first sample until the outlets have consumers (up to this long).
    linger_s : float
        After the last sample of a finite stream, keep the outlets open this long
        so connected consumers receive the tail before the outlets close.
    delay_s : float
        Push each chunk this long after its last sample is due (an amplifier's
        transmission delay; the timestamps stay on the sample grid). The simulated
        subject uses it to hear a marker before it writes the samples it marks.

    Notes
    -----
    A :class:`~neuroimagen.stream.worker.Worker`: ``start`` creates the outlets
    (visible on return) and one thread pushes; ``start``/``stop``/``wait`` are
    called from one controlling thread. An error in the thread is re-raised by
    ``stop``/``wait``. ``wait`` returning True means every sample was pushed
    (and the linger passed); ``stop`` closes the outlets.
    """

    def __init__(
        self,
        eeg_info: Any,
        marker_info: Any | None,
        source: ChunkSource,
        sfreq: float,
        n_total: int | None,
        chunk_size: int,
        speed: float = 1.0,
        wait_for_consumers_s: float = 0.0,
        linger_s: float = 1.0,
        delay_s: float = 0.0,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        super().__init__(f"lsl-replay[{eeg_info.name()}]")
        self._eeg_info, self._marker_info = eeg_info, marker_info
        self._source = source
        self._sfreq, self._speed = float(sfreq), float(speed)
        self._n_total, self._chunk_size = n_total, int(chunk_size)
        self._wait_consumers_s = float(wait_for_consumers_s)
        self._linger_s = float(linger_s)
        self._delay_s = float(delay_s)
        self._outlet = self._marker_outlet = None
        self.n_pushed = 0
        self.n_markers_pushed = 0
        self.t0: float | None = None  # LSL timestamp of sample 0

    # ---------------------------------------------------------------- lifecycle
    def _setup(self) -> None:
        """Create the outlets (visible when start() returns)."""
        import pylsl

        self.n_pushed = self.n_markers_pushed = 0
        self.t0 = None
        self._outlet = pylsl.StreamOutlet(self._eeg_info, self._chunk_size)
        if self._marker_info is not None:
            self._marker_outlet = pylsl.StreamOutlet(self._marker_info)

    def _on_stop(self) -> None:
        self._outlet = self._marker_outlet = None  # closes the outlets

    # ---------------------------------------------------------------- thread
    def _run(self) -> None:
        self._push_all()
        if not self.stopping:  # natural end: let consumers drain the tail
            self._sleep(self._linger_s)

    def _wait_for_consumers(self) -> None:
        import pylsl

        deadline = pylsl.local_clock() + self._wait_consumers_s
        outlets = [o for o in (self._outlet, self._marker_outlet) if o is not None]
        while not self.stopping and pylsl.local_clock() < deadline:
            if all(o.have_consumers() for o in outlets):
                return
            self._sleep(0.005)
        if not self.stopping:
            logger.warning("no consumer after %.1f s; streaming anyway", self._wait_consumers_s)

    def _push_all(self) -> None:
        import pylsl

        if self._wait_consumers_s > 0:
            self._wait_for_consumers()
        rate = self._sfreq * self._speed
        # the first chunk is due one chunk after t0; its samples are stamped in the past
        t0 = pylsl.local_clock()
        self.t0 = t0
        k = 0
        while not self.stopping:
            n = self._chunk_size if self._n_total is None else min(self._chunk_size, self._n_total - k)
            if n <= 0:
                break
            # 1. wait until the chunk's last sample is due (schedule from t0: no drift)
            due = t0 + (k + n) / rate + self._delay_s
            delay = due - pylsl.local_clock()
            if delay > 0 and self._sleep(delay):
                break
            # 2. push the chunk with explicit per-sample timestamps
            data, markers = self._source(k, n)
            stamps = t0 + (k + np.arange(n)) / rate
            for i, payload in markers:
                if self._marker_outlet is not None:
                    self._marker_outlet.push_sample([payload], float(stamps[i]))
                    self.n_markers_pushed += 1
            self._outlet.push_chunk(np.ascontiguousarray(data.T, dtype=np.float32), stamps.tolist())
            k += n
            self.n_pushed = k


class Player(PacedStreamer):
    """Replay a :class:`~neuroimagen.stream.readers.Recording` as LSL.

    Parameters
    ----------
    recording : Recording
        What to replay (see :func:`~neuroimagen.stream.readers.read_recording`).
    name : str | None
        EEG outlet name; markers go to ``f"{name}-markers"`` (None: ``cfg.name``).
    cfg : ReplayConfig
        speed, loop, chunk_s, wait_for_consumers_s, on_nonfinite.
    source_id : str | None
        LSL source id (None: random).

    Raises
    ------
    RecordingError
        The recording holds NaN/inf samples and ``cfg.on_nonfinite`` is ``refuse``,
        or it is empty.

    Notes
    -----
    ``--loop`` continues the timeline: sample ``k`` of the second pass has
    timestamp ``t0 + (n_times + k) / (sfreq * speed)``; markers repeat each pass.
    """

    def __init__(
        self,
        recording: Recording,
        name: str | None = None,
        cfg: ReplayConfig | None = None,
        source_id: str | None = None,
    ) -> None:
        cfg = cfg or ReplayConfig()
        name = name or cfg.name
        if recording.n_times == 0:
            raise RecordingError(f"{recording.source}: no samples to replay")
        bad = recording.nonfinite_report()
        if bad is not None:
            if cfg.on_nonfinite == "refuse":
                raise RecordingError(
                    f"{recording.source}: {bad}; refusing to replay "
                    "(set stream.replay.on_nonfinite=replay to send them as they are)"
                )
            logger.warning("%s: %s; replaying them as they are", recording.source, bad)
        self.recording = recording
        self.name = name
        self._markers_at = np.array([m[0] for m in recording.markers], dtype=np.int64)
        self._payloads = [m[1] for m in recording.markers]
        source_id = source_id or uuid.uuid4().hex
        eeg_info = make_stream_info(
            name, recording.sfreq, recording.ch_names, recording.ch_types, recording.units,
            source_id=source_id, preprocessed=recording.preprocessed,
        )
        marker_info = make_marker_info(f"{name}-markers", source_id=f"{source_id}-markers")
        chunk = max(1, round(cfg.chunk_s * recording.sfreq))
        super().__init__(
            eeg_info, marker_info, self._chunk, recording.sfreq,
            n_total=None if cfg.loop else recording.n_times, chunk_size=chunk,
            speed=cfg.speed, wait_for_consumers_s=cfg.wait_for_consumers_s,
        )

    def _chunk(self, start: int, n: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        n_times = self.recording.n_times
        idx = (start + np.arange(n)) % n_times
        pos = start % n_times
        if pos + n <= n_times:
            data = self.recording.data[:, pos : pos + n]
        else:
            data = self.recording.data[:, idx]
        markers = []
        for j in range(n):  # chunks are small; markers are sparse
            lo, hi = np.searchsorted(self._markers_at, [idx[j], idx[j] + 1])
            markers += [(j, self._payloads[m]) for m in range(lo, hi)]
        return data, markers


def replay_file(
    path: str, cfg: ReplayConfig, name: str | None = None, source_id: str | None = None
) -> Player:
    """Read ``path`` and return a (not yet started) :class:`Player` for it.

    ``source_id``: a fixed LSL source id, so that a restarted replay is the
    same stream to LSL (consumers' ``recover`` reattaches); None: random.
    """
    from .readers import read_recording

    return Player(read_recording(path), name=name, cfg=cfg, source_id=source_id)

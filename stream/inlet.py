"""Live LSL inlets: resolve a stream, acquire it on a thread into a ring buffer.

:class:`EEGInlet` pulls numeric chunks non-blocking (``pull_chunk(timeout=0.0)``
into a preallocated array) on its own acquisition thread and writes them to a
:class:`~neuroimagen.stream.ringbuffer.RingBuffer` with local-clock timestamps
(liblsl's clock synchronisation, dejitter and monotonize post-processing, as
configured). Along the way it counts what a real headset link does wrong:
gaps (outlet lost and recovered, or samples dropped), NaN/inf samples,
non-monotonic timestamps and ring-buffer overflows.

:class:`MarkerInlet` does the same for a marker stream (strings, or mne-lsl's
numeric annotation streams, decoded by :mod:`neuroimagen.stream.markers`) and
keeps a bounded list of ``(timestamp, payload)``.

pylsl is imported lazily (inside functions) so that test suites can point
liblsl at a config file before the library loads.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import InletConfig
from .markers import marker_decoder
from .ringbuffer import RingBuffer
from .worker import Worker

logger = logging.getLogger(__name__)

__all__ = [
    "EEGInlet",
    "Gap",
    "MarkerInlet",
    "NonFiniteError",
    "StreamMeta",
    "StreamNotFoundError",
    "StreamWatch",
    "list_streams",
    "resolve_stream",
    "stream_meta",
]

#: samples pulled per ``pull_chunk`` call at most (the preallocated pull buffer's rows)
PULL_MAX_SAMPLES = 1024


class StreamNotFoundError(LookupError):
    """No LSL stream matched; the message lists the streams that were found."""


class NonFiniteError(ValueError):
    """A NaN/inf sample arrived and ``InletConfig.on_nonfinite`` is ``raise``."""


@dataclass(frozen=True)
class Gap:
    """A discontinuity in the received stream.

    Attributes
    ----------
    n_samples : int
        Samples missing between the last sample before and the first after
        (from the counter channel when configured, else from the timestamps).
    seconds : float
        Timestamp difference between the samples either side, minus one period.
    at_timestamp : float
        Timestamp (local clock, s) of the first sample after the gap.
    at_index : int
        Ring-buffer sample index of the first sample after the gap.
    reconnected : bool
        The outlet restarted with a new source_id and the inlet re-resolved it
        (``n_samples`` then comes from the timestamps).
    """

    n_samples: int
    seconds: float
    at_timestamp: float
    at_index: int = -1
    reconnected: bool = False


@dataclass(frozen=True)
class StreamMeta:
    """What an LSL StreamInfo (and its ``desc``) says about a stream.

    Attributes
    ----------
    name, stype, source_id, hostname : str
    sfreq : float
        Nominal rate in Hz (0 for irregular streams such as markers).
    n_channels : int
    channel_format : str
        ``float32``, ``double64``, ``int16``, ``string``, ...
    ch_names : list of str
        ``desc/channels/channel/label``; ``ch1..chN`` when the stream has none.
    units : list of str | None
        ``desc/channels/channel/unit`` (None where absent).
    ch_types : list of str | None
    preprocessed : dict | None
        ``desc/neuroimagen/preprocessed`` children as key -> JSON-decoded value
        (e.g. ``{"bandpass_hz": [5, 95], "normalized": "dataset"}``); None for a
        raw stream.
    labelled : bool
        False when the description carries no (or not every) channel label:
        ``ch_names`` are then placeholders, never to be matched by position
        (see ``stream.contract.unlabelled_ch_names``).
    """

    name: str
    stype: str
    source_id: str
    hostname: str
    sfreq: float
    n_channels: int
    channel_format: str
    ch_names: list[str]
    units: list[str | None]
    preprocessed: dict[str, Any] | None = None
    ch_types: list[str | None] | None = None
    created_at: float = 0.0
    labelled: bool = True

    def describe(self) -> str:
        return (
            f"name={self.name!r} type={self.stype!r} source_id={self.source_id!r} "
            f"host={self.hostname!r} ({self.n_channels} ch, {self.sfreq:g} Hz, {self.channel_format})"
        )


# --------------------------------------------------------------------------- metadata


def _text(node: ET.Element | None, tag: str, default: str = "") -> str:
    if node is None:
        return default
    child = node.find(tag)
    if child is None or child.text is None:
        return default
    return child.text.strip()


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text


def stream_meta(info: Any) -> StreamMeta:
    """Parse a ``pylsl.StreamInfo`` (full info from an inlet, or a resolve result).

    A resolve result carries no ``desc``; channel names then default to
    ``ch1..chN``. Use ``inlet.info()`` for the full description.
    """
    root = ET.fromstring(info.as_xml())
    n_channels = int(_text(root, "channel_count", "0") or 0)
    desc = root.find("desc")
    labels: list[str] = []
    units: list[str | None] = []
    types: list[str | None] = []
    channels = desc.find("channels") if desc is not None else None
    if channels is not None:
        for ch in channels.findall("channel"):
            labels.append(_text(ch, "label"))
            units.append(_text(ch, "unit") or None)
            types.append(_text(ch, "type") or None)
    labelled = len(labels) == n_channels and all(labels)
    if not labelled:
        if labels:
            logger.warning(
                "stream %r describes %d channel labels for %d channels; using ch1..ch%d",
                _text(root, "name"), len(labels), n_channels, n_channels,
            )
        labels = [f"ch{i + 1}" for i in range(n_channels)]
        units = units if len(units) == n_channels else [None] * n_channels
        types = types if len(types) == n_channels else [None] * n_channels
    preprocessed: dict[str, Any] | None = None
    pre = desc.find("neuroimagen/preprocessed") if desc is not None else None
    if pre is not None:
        preprocessed = {child.tag: _json_or_text(child.text or "") for child in pre}
    return StreamMeta(
        name=_text(root, "name"),
        stype=_text(root, "type"),
        source_id=_text(root, "source_id"),
        hostname=_text(root, "hostname"),
        sfreq=float(_text(root, "nominal_srate", "0") or 0.0),
        n_channels=n_channels,
        channel_format=_text(root, "channel_format"),
        ch_names=labels,
        units=units,
        preprocessed=preprocessed,
        ch_types=types,
        created_at=float(_text(root, "created_at", "0") or 0.0),
        labelled=labelled,
    )


def list_streams(timeout: float = 1.0) -> list[StreamMeta]:
    """Every stream visible within ``timeout`` seconds, sorted by name then source_id."""
    import pylsl

    metas = [stream_meta(info) for info in pylsl.resolve_streams(wait_time=timeout)]
    return sorted(metas, key=lambda m: (m.name, m.source_id))


def _xpath_literal(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    raise ValueError(f"cannot match a stream property containing both quote kinds: {value!r}")


_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOWER = "abcdefghijklmnopqrstuvwxyz"


def _type_is(stype: str) -> str:
    """XPath: the stream's type equals ``stype`` ignoring (ASCII) case."""
    return f"translate(type,'{_UPPER}','{_LOWER}')={_xpath_literal(stype.lower())}"


def resolve_stream(
    name: str | None = None,
    stype: str | None = None,
    source_id: str | None = None,
    timeout: float = 5.0,
) -> Any:
    """Find one stream by name / type / source_id (all given ones must match).

    The type matches case-insensitively (mne-lsl's player publishes ``eeg``).
    A stream with an empty type (mne-lsl, for a recording that mixes channel
    types) matches a requested type only when it is the only stream with the
    requested name; it is logged.

    Returns
    -------
    pylsl.StreamInfo
        The first match (a resolve result: no ``desc``).

    Raises
    ------
    StreamNotFoundError
        After ``timeout`` seconds without a match; the message lists every
        stream that was visible (name, type, source_id, host).
    """
    import pylsl

    terms = []
    for prop, value in (("name", name), ("source_id", source_id)):
        if value is not None:
            terms.append(f"{prop}={_xpath_literal(value)}")
    wanted_terms = list(terms)
    if stype is not None:
        wanted_terms.append(f"type={stype!r} (any case)")
        typed = _type_is(stype)
        # an empty type is a candidate only for a named stream (see below)
        terms.append(f"({typed} or type='')" if name is not None else typed)
    wanted = " and ".join(wanted_terms) or "any stream"
    if terms:
        found = pylsl.resolve_bypred(" and ".join(terms), 1, timeout)
    else:
        found = pylsl.resolve_streams(wait_time=timeout)
    if found and stype is not None and name is not None and not found[0].type():
        found = _accept_untyped(found[0], name, stype, source_id)
    if found:
        return found[0]
    visible = list_streams(timeout=1.0)
    if visible:
        listing = "\n  ".join(m.describe() for m in visible)
        msg = f"no LSL stream matching {wanted} within {timeout:g} s; streams found:\n  {listing}"
    else:
        msg = f"no LSL stream matching {wanted} within {timeout:g} s; no streams are visible at all"
    raise StreamNotFoundError(msg)


#: how long to look for other streams of the same name before accepting an untyped one
UNTYPED_CHECK_S = 1.0


def _accept_untyped(info: Any, name: str, stype: str, source_id: str | None) -> list[Any]:
    """An untyped stream named ``name``: accept it if no other stream has that name."""
    import pylsl

    pred = f"name={_xpath_literal(name)}"
    if source_id is not None:
        pred += f" and source_id={_xpath_literal(source_id)}"
    same_name = pylsl.resolve_bypred(pred, 2, UNTYPED_CHECK_S)
    typed = [i for i in same_name if i.type().lower() == stype.lower()]
    if typed:
        return typed[:1]
    if len({i.uid() for i in same_name} | {info.uid()}) > 1:
        raise StreamNotFoundError(
            f"{len(same_name)} streams are named {name!r} and none has type {stype!r}; "
            "set stream.inlet.source_id to pick one"
        )
    logger.warning(
        "stream %r declares no type; accepted as %s because it is the only stream of that name",
        name, stype,
    )
    return [info]


def _processing_flags(cfg: InletConfig) -> int:
    import pylsl

    flags = pylsl.proc_none
    if cfg.clock_correction:
        flags |= pylsl.proc_clocksync
    if cfg.dejitter:
        flags |= pylsl.proc_dejitter
    if cfg.monotonize:
        flags |= pylsl.proc_monotonize
    return flags


# --------------------------------------------------------------------------- restarts


class StreamWatch:
    """Notice that a connected stream's outlet is gone and a replacement appeared.

    liblsl's ``recover`` reattaches an inlet by itself when the restarted outlet
    keeps the same source_id. An outlet restarted with a *new* source_id (a
    player or app that draws a random one per run) is a different stream to
    liblsl: the inlet waits forever. Once the stream has stalled, this watches
    its name in the background (``pylsl.ContinuousResolver``, non-blocking to
    query) and offers a replacement when the connected outlet (by its uid) is
    no longer visible and another outlet with the same name and type is. While
    data flows (:meth:`idle`) it sends no resolve queries at all.

    Parameters
    ----------
    meta : StreamMeta
        The connected stream.
    uid : str
        The connected outlet's uid (unique per outlet instance).
    pinned_source_id : str | None
        Only accept this source_id (the config named one).
    forget_after_s : float
        A vanished outlet leaves the resolver's results after this long.
    """

    def __init__(self, meta: StreamMeta, uid: str, pinned_source_id: str | None = None,
                 forget_after_s: float = 1.0) -> None:
        self.meta = meta
        self.uid = uid
        self.pinned_source_id = pinned_source_id
        self._forget_after_s = float(forget_after_s)
        self._resolver: Any = None
        self._refused: set[str] = set()

    def replacement(self) -> Any | None:
        """A resolve result for the restarted stream, or None (still there, or nothing new yet).

        The first call after :meth:`idle` starts the background resolver, whose
        results fill within about a second.
        """
        import pylsl

        if self._resolver is None:
            self._resolver = pylsl.ContinuousResolver(
                pred=f"name={_xpath_literal(self.meta.name)}", forget_after=self._forget_after_s
            )
        infos = self._resolver.results()
        if any(i.uid() == self.uid for i in infos):
            return None
        for info in infos:
            if info.type().lower() != self.meta.stype.lower():
                continue
            if self.pinned_source_id is not None and info.source_id() != self.pinned_source_id:
                continue
            if info.source_id() and info.source_id() == self.meta.source_id:
                continue  # same source_id: liblsl's recover reattaches the inlet itself
            problem = _incompatible(self.meta, info)
            if problem:
                if info.uid() not in self._refused:
                    self._refused.add(info.uid())
                    logger.error("stream %r came back as a different stream (%s); not reconnecting",
                                 self.meta.name, problem)
                continue
            return info
        return None

    def idle(self) -> None:
        """Data flows: stop the background resolver (no queries while all is well)."""
        self._resolver = None

    close = idle


def _incompatible(meta: StreamMeta, info: Any) -> str:
    fmt = {1: "float32", 2: "double64", 3: "string", 4: "int32", 5: "int16", 6: "int8", 7: "int64"}
    got = (info.channel_count(), float(info.nominal_srate()), fmt.get(info.channel_format(), "?"))
    want = (meta.n_channels, meta.sfreq, meta.channel_format)
    if got[:2] != want[:2] or (got[2] == "string") != (want[2] == "string"):
        return f"{got[0]} ch at {got[1]:g} Hz ({got[2]}) instead of {want[0]} ch at {want[1]:g} Hz ({want[2]})"
    return ""


# --------------------------------------------------------------------------- EEG inlet


class _InletWorker(Worker):
    """The lifecycle both inlets share: start on a thread or in the caller's, close on stop.

    Subclasses set ``_inlet``, ``_watch`` and ``_connected`` in ``_setup`` (resolve,
    subscribe) and pull in ``_run`` (thread) or ``acquire`` (caller's thread).
    """

    _inlet: Any = None
    _watch: StreamWatch | None = None
    _connected = False

    def start(self, *, thread: bool = True) -> None:
        """Resolve/open, subscribe and start acquiring.

        Parameters
        ----------
        thread : bool
            True: an acquisition thread pulls. False: connect only; the caller
            pulls with :meth:`acquire` (and may not start a thread later
            without a :meth:`stop`).

        Raises
        ------
        StreamNotFoundError
            Resolving failed (the message lists the streams seen).
        """
        if thread:
            if self._connected:
                raise RuntimeError(f"{self.thread_name} already started")
            super().start()
            return
        if self._thread is not None or self._connected:
            raise RuntimeError(f"{self.thread_name} already started")
        try:
            self._setup()
        except BaseException:
            self._on_stop()
            raise

    def _on_stop(self) -> None:
        if self._inlet is not None:
            self._inlet.close_stream()
            self._inlet = None
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        self._connected = False


class EEGInlet(_InletWorker):
    """Acquire a numeric LSL stream on a thread (or the caller's) into a :class:`RingBuffer`.

    Parameters
    ----------
    cfg : InletConfig
        Which stream (name/type/source_id), ring-buffer length, post-processing
        flags, recovery, NaN/inf policy, optional counter channel.

    Attributes
    ----------
    meta : StreamMeta | None
        Set by :meth:`open` (from the inlet's full info, with ``desc``).
    buffer : RingBuffer | None
        Set by :meth:`open`: ``bufsize_s * sfreq`` samples of ``n_channels``.
    n_received : int
        Samples pulled so far.
    n_nonfinite : int
        Samples that held at least one NaN/inf value (handled per
        ``on_nonfinite``).
    n_nonmonotonic : int
        Samples whose timestamp went back below the previous sample's (after
        liblsl's post-processing; ``monotonize`` prevents it).
    n_counter_errors : int
        Samples whose counter went backwards or repeated (counter channel only).
    gaps : list of Gap
        Discontinuities seen (outlet lost and recovered or restarted, dropped
        samples).
    n_reconnects : int
        Times the stream was re-resolved after its outlet restarted with a new
        source_id (see ``InletConfig.reresolve_after_s``).
    n_overflow : int
        Samples overwritten in the ring buffer before a reader took them.

    Notes
    -----
    Threading: :meth:`start` resolves and opens the stream in the caller's
    thread (raising :class:`StreamNotFoundError` at once), then one acquisition
    thread owns the pylsl inlet and is the buffer's only writer. It never
    blocks: it polls ``pull_chunk(timeout=0.0)`` and sleeps ``poll_interval_s``
    when nothing came, so :meth:`stop` returns promptly even while liblsl is
    trying to recover a lost outlet. An exception in the thread stops it and is
    re-raised from :meth:`stop` (and :meth:`check`).

    ``start(thread=False)`` connects without a thread (mne-lsl's
    ``acquisition_delay=None``): the caller pulls with :meth:`acquire`, and is
    then the buffer's only writer.

    Every :meth:`start` after a :meth:`stop` starts fresh: new buffer (sample
    index 0), counters, gaps and last timestamp reset.
    """

    def __init__(self, cfg: InletConfig) -> None:
        super().__init__(f"EEGInlet[{cfg.name or cfg.source_id or cfg.stype or 'any'}]")
        self.cfg = cfg
        self.meta: StreamMeta | None = None
        self.buffer: RingBuffer | None = None
        self._inlet: Any = None
        self._watch: StreamWatch | None = None
        self._pull_buf: np.ndarray | None = None
        self._connected = False
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.n_received = 0
        self.n_nonfinite = 0
        self.n_nonmonotonic = 0
        self.n_counter_errors = 0
        self.n_reconnects = 0
        self.gaps: list[Gap] = []
        self._last_ts: float | None = None
        self._last_counter: float | None = None
        self._last_finite: np.ndarray | None = None
        self._last_arrival = 0.0
        self._last_data = 0.0
        self._reconnected = False
        self._next_watch = 0.0

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> StreamMeta:
        """Resolve the stream and read its full description; no data flows yet.

        Sets :attr:`meta` and :attr:`buffer` (new, empty) so the stages after
        the inlet can be built before acquisition starts. Called by
        :meth:`start` if needed.

        Raises
        ------
        StreamNotFoundError
            Listing the streams that were visible.
        """
        if self._inlet is not None:
            return self.meta
        cfg = self.cfg
        # 1. find the stream and create an inlet with the configured post-processing
        info = resolve_stream(cfg.name, cfg.stype, cfg.source_id, cfg.resolve_timeout_s)
        inlet, meta = self._make_inlet(info, cfg.resolve_timeout_s)
        # 2. preallocate everything acquisition writes into; counters start fresh
        self._reset_counters()
        self._inlet = inlet
        self.meta = meta
        self.thread_name = f"EEGInlet[{meta.name}]"
        self.buffer = RingBuffer(meta.n_channels, max(1, int(round(cfg.bufsize_s * meta.sfreq))))
        self._pull_buf = np.zeros((PULL_MAX_SAMPLES, meta.n_channels), dtype=inlet.np_dtype)
        self._last_finite = np.zeros(meta.n_channels, dtype=np.float32)
        return meta

    def _make_inlet(self, info: Any, timeout: float) -> tuple[Any, StreamMeta]:
        import pylsl

        cfg = self.cfg
        inlet = pylsl.StreamInlet(
            info, max_buflen=cfg.max_buflen_s, recover=cfg.recover,
            processing_flags=_processing_flags(cfg),
        )
        try:
            meta = stream_meta(inlet.info(timeout))
            if meta.channel_format == "string":
                raise ValueError(f"stream {meta.name!r} carries strings; use MarkerInlet for markers")
            if meta.sfreq <= 0:
                raise ValueError(f"stream {meta.name!r} has an irregular rate; EEGInlet needs a nominal sfreq")
            if cfg.counter_channel is not None and cfg.counter_channel >= meta.n_channels:
                raise ValueError(
                    f"counter_channel {cfg.counter_channel} but stream {meta.name!r} has {meta.n_channels} channels"
                )
        except BaseException:
            inlet.close_stream()
            raise
        return inlet, meta

    def _subscribe(self, inlet: Any, timeout: float) -> None:
        # the first clock estimate takes a few round trips: get it before subscribing,
        # then subscribe (samples pushed from now on are queued for us)
        if self.cfg.clock_correction:
            t0 = time.perf_counter()
            inlet.time_correction(timeout)
            logger.debug("first time_correction took %.1f ms", (time.perf_counter() - t0) * 1e3)
        inlet.open_stream(timeout)

    def _setup(self) -> None:
        import pylsl

        self.open()
        self._subscribe(self._inlet, self.cfg.resolve_timeout_s)
        self._connected = True
        self._last_data = pylsl.local_clock()
        if self.cfg.reresolve_after_s is not None:
            self._watch = StreamWatch(self.meta, self._inlet.info().uid(), self.cfg.source_id)
        logger.info("inlet opened: %s", self.meta.describe())

    def _run(self) -> None:
        wait = self.cfg.poll_interval_s
        while not self.stopping:
            if self._acquire_once() < PULL_MAX_SAMPLES:  # drained: sleep; a full pull means more waits
                self._sleep(wait)

    # ------------------------------------------------------------------ acquisition

    def acquire(self) -> int:
        """Pull everything that has arrived into the buffer, in the caller's thread.

        For ``start(thread=False)``; never blocks (beyond a reconnect after the
        outlet restarted). Returns the number of samples pulled.
        """
        if not self._connected:
            raise RuntimeError(f"{self.thread_name} is not connected (call start(thread=False))")
        if self._thread is not None:
            raise RuntimeError(f"{self.thread_name} has an acquisition thread; acquire() is for start(thread=False)")
        total = 0
        while True:
            n = self._acquire_once()
            total += n
            if n < PULL_MAX_SAMPLES:
                return total

    def _acquire_once(self) -> int:
        import pylsl

        try:
            data, ts = self._inlet.pull_chunk(
                timeout=0.0, max_samples=PULL_MAX_SAMPLES, dest_obj=self._pull_buf, as_numpy=True
            )
        except pylsl.util.LostError as exc:
            meta = self.meta
            raise ConnectionError(
                f"LSL stream {meta.name!r} (source_id {meta.source_id!r}) was lost and "
                "recover is off (or the stream has no source_id)"
            ) from exc
        n = len(ts)
        now = pylsl.local_clock()
        if n:
            self._ingest(data, ts, now)
            self._last_data = now
            if self._watch is not None:
                self._watch.idle()
        elif self._watch is not None and now - self._last_data >= self.cfg.reresolve_after_s \
                and now >= self._next_watch:
            self._next_watch = now + 0.1
            info = self._watch.replacement()
            if info is not None:
                self._reconnect(info)
        return n

    def _reconnect(self, info: Any) -> None:
        """Switch to the restarted outlet (new source_id); the next chunk records the gap."""
        old = self.meta
        try:
            inlet, meta = self._make_inlet(info, 1.0)
            self._subscribe(inlet, 1.0)
        except Exception as exc:  # not ready yet: the next stall check tries again
            logger.warning("stream %r: reconnecting failed (%s); retrying", old.name, exc)
            return
        self._inlet.close_stream()
        self._inlet = inlet
        self.meta = dataclasses.replace(old, source_id=meta.source_id, hostname=meta.hostname,
                                        created_at=meta.created_at)
        self._watch = StreamWatch(self.meta, inlet.info().uid(), self.cfg.source_id)
        self._reconnected = True
        self._last_counter = None  # a new outlet's counter may start anywhere
        self.n_reconnects += 1
        logger.warning("stream %r restarted as source_id %r (was %r): reconnected",
                       old.name, meta.source_id, old.source_id)

    # ------------------------------------------------------------------ queries

    def time_correction(self, timeout: float = 1.0) -> float:
        """liblsl's current offset (s) from the outlet's clock to the local clock.

        Already applied to every timestamp when ``clock_correction`` is on.
        """
        if self._inlet is None:
            raise RuntimeError("EEGInlet is not started")
        return float(self._inlet.time_correction(timeout))

    @property
    def n_overflow(self) -> int:
        return 0 if self.buffer is None else self.buffer.n_overflow

    @property
    def n_gap_samples(self) -> int:
        return sum(g.n_samples for g in self.gaps)

    @property
    def last_arrival(self) -> float:
        """``pylsl.local_clock()`` when the newest chunk was pulled (0 before any)."""
        return self._last_arrival

    def stats(self) -> dict[str, Any]:
        return {
            "n_received": self.n_received,
            "n_nonfinite": self.n_nonfinite,
            "n_nonmonotonic": self.n_nonmonotonic,
            "n_counter_errors": self.n_counter_errors,
            "n_overflow": self.n_overflow,
            "n_reconnects": self.n_reconnects,
            "n_gaps": len(self.gaps),
            "n_gap_samples": self.n_gap_samples,
            "gap_seconds": self.gap_seconds,
            "gaps": [dataclasses.asdict(g) for g in self.gaps],
        }

    @property
    def gap_seconds(self) -> float:
        return float(sum(g.seconds for g in self.gaps))

    def _ingest(self, data: np.ndarray, ts: np.ndarray, arrival: float) -> None:
        """Check one pulled chunk (n, n_channels), fix what policy allows, write it."""
        meta = self.meta
        n = len(ts)
        first_index = self.buffer.total_written
        # 1. counter channel (exact gaps / duplicates), then timestamps
        cc = self.cfg.counter_channel
        counter_gap: int | None = None
        if cc is not None:
            counter = data[:, cc].astype(np.float64)
            if self._last_counter is not None:
                step0 = counter[0] - self._last_counter
                if step0 > 1:
                    counter_gap = int(step0 - 1)
                elif step0 < 1:
                    self.n_counter_errors += 1
            if n > 1:
                steps = np.diff(counter)
                self.n_counter_errors += int(np.count_nonzero(steps < 1))
                jumps = np.flatnonzero(steps > 1)
                for j in jumps:  # gaps inside a chunk (rare: liblsl buffer overflow)
                    self._add_gap(int(steps[j] - 1), ts[j + 1] - ts[j], ts[j + 1], first_index + j + 1)
            self._last_counter = float(counter[-1])
        period = 1.0 / meta.sfreq
        if self._last_ts is not None:
            dt = float(ts[0] - self._last_ts)
            if dt < 0:
                self.n_nonmonotonic += 1
            if self._reconnected:  # a restarted outlet: always a discontinuity, sized by time
                self._add_gap(max(0, int(round(dt * meta.sfreq)) - 1), dt - period, float(ts[0]),
                              first_index, reconnected=True)
            elif counter_gap is not None:
                self._add_gap(counter_gap, dt - period, float(ts[0]), first_index)
            elif cc is None and dt - period > self.cfg.gap_threshold_s:
                self._add_gap(int(round(dt * meta.sfreq)) - 1, dt - period, float(ts[0]), first_index)
        self._reconnected = False
        if n > 1:
            steps_ts = np.diff(ts)
            self.n_nonmonotonic += int(np.count_nonzero(steps_ts < 0))
            if cc is None:  # a gap inside one chunk (liblsl delivered both sides together)
                for j in np.flatnonzero(steps_ts - period > self.cfg.gap_threshold_s):
                    dt = float(steps_ts[j])
                    self._add_gap(int(round(dt * meta.sfreq)) - 1, dt - period, float(ts[j + 1]),
                                  first_index + int(j) + 1)
        self._last_ts = float(ts[-1])
        # 2. NaN / inf (the rare path allocates; the common one does not)
        if not np.isfinite(data).all():
            data = self._fix_nonfinite(data)
        else:
            self._last_finite[:] = data[-1]
        # 3. into the ring buffer (float32 conversion happens in the copy)
        self.buffer.write(data, ts, arrival)
        self.n_received += n
        self._last_arrival = arrival

    def _add_gap(self, n_samples: int, seconds: float, at_ts: float, at_index: int,
                 reconnected: bool = False) -> None:
        gap = Gap(int(n_samples), float(seconds), float(at_ts), int(at_index), reconnected)
        self.gaps.append(gap)
        logger.warning(
            "stream %r: gap of %d samples (%.3f s) before t=%.3f (sample %d)%s",
            self.meta.name, gap.n_samples, gap.seconds, gap.at_timestamp, gap.at_index,
            " after the outlet restarted" if reconnected else "",
        )

    def _fix_nonfinite(self, data: np.ndarray) -> np.ndarray:
        bad = ~np.isfinite(data)
        bad_rows = bad.any(axis=1)
        n_bad = int(np.count_nonzero(bad_rows))
        self.n_nonfinite += n_bad
        policy = self.cfg.on_nonfinite
        if policy == "raise":
            row = int(np.flatnonzero(bad_rows)[0])
            ch = int(np.flatnonzero(bad[row])[0])
            raise NonFiniteError(
                f"stream {self.meta.name!r}: non-finite value {data[row, ch]!r} in channel "
                f"{self.meta.ch_names[ch]!r} at sample {self.buffer.total_written + row} "
                "(inlet.on_nonfinite is 'raise')"
            )
        out = data.astype(np.float32)
        if policy == "zero":
            out[bad] = 0.0
        else:  # hold: forward-fill each channel from its last finite value
            ext = np.vstack([self._last_finite[None, :], out])
            ext_bad = np.vstack([np.zeros((1, out.shape[1]), dtype=bool), bad])
            rows = np.where(ext_bad, 0, np.arange(ext.shape[0])[:, None])
            np.maximum.accumulate(rows, axis=0, out=rows)
            out = np.take_along_axis(ext, rows, axis=0)[1:]
        self._last_finite[:] = out[-1]
        return out


# --------------------------------------------------------------------------- markers


class MarkerInlet(_InletWorker):
    """Acquire a marker stream on a thread (or the caller's).

    String markers are kept as they are; numeric streams (mne-lsl's one-hot
    annotation streams, numeric event codes) are decoded into their payloads by
    :func:`neuroimagen.stream.markers.marker_decoder` (the annotation's
    description).

    Parameters
    ----------
    name : str
        Marker stream name (the replay player uses ``f"{eeg_name}-markers"``).
    cfg : InletConfig | None
        Timeouts, poll interval and post-processing flags (name/type ignored).
    stype : str | None
        Stream type to require (None: any).
    max_markers : int
        Markers held until :meth:`pop_markers` takes them; beyond, the oldest
        are dropped and counted in :attr:`n_dropped`.
    source_id : str | None
        Source id to require as well (None: any).

    Notes
    -----
    Same lifecycle as :class:`EEGInlet` (a :class:`~neuroimagen.stream.worker.Worker`;
    ``start(thread=False)`` + :meth:`acquire` for the caller's thread); errors
    re-raised from :meth:`stop`. Timestamps are local-clock seconds (same flags
    as the EEG inlet, so marker and EEG timestamps are comparable). A marker
    outlet restarted under the same name with a new source_id is reconnected
    to (``InletConfig.reresolve_after_s``, checked every 0.5 s since markers
    are irregular).
    """

    def __init__(
        self,
        name: str,
        cfg: InletConfig | None = None,
        stype: str | None = None,
        max_markers: int = 10000,
        source_id: str | None = None,
    ) -> None:
        super().__init__(f"MarkerInlet[{name}]")
        self.name = name
        self.source_id = source_id
        self._decode: Any = None
        self.cfg = cfg or InletConfig()
        self.stype = stype
        self.meta: StreamMeta | None = None
        self._markers: collections.deque[tuple[float, str]] = collections.deque()
        self._max = int(max_markers)
        self._lock = threading.Lock()
        self._inlet: Any = None
        self._watch: StreamWatch | None = None
        self._connected = False
        self._next_watch = 0.0
        self._last_marker = 0.0
        self.n_received = 0
        self.n_dropped = 0
        self.n_reconnects = 0

    def _open_inlet(self, info: Any, timeout: float) -> tuple[Any, StreamMeta]:
        import pylsl

        cfg = self.cfg
        inlet = pylsl.StreamInlet(
            info, max_buflen=cfg.max_buflen_s, recover=cfg.recover,
            processing_flags=_processing_flags(cfg) & ~pylsl.proc_dejitter,
        )
        try:
            meta = stream_meta(inlet.info(timeout))
            decode = marker_decoder(meta)
            inlet.open_stream(timeout)
            if cfg.clock_correction:
                inlet.time_correction(timeout)
        except BaseException:
            inlet.close_stream()
            raise
        self._decode = decode  # the new inlet's payload decoder (its channel layout may differ)
        return inlet, meta

    def _setup(self) -> None:
        import pylsl

        cfg = self.cfg
        info = resolve_stream(self.name, self.stype, self.source_id, cfg.resolve_timeout_s)
        self._inlet, self.meta = self._open_inlet(info, cfg.resolve_timeout_s)
        with self._lock:
            self._markers.clear()
            self.n_received = self.n_dropped = self.n_reconnects = 0
        self._connected = True
        self._last_marker = pylsl.local_clock()
        if cfg.reresolve_after_s is not None:
            self._watch = StreamWatch(self.meta, self._inlet.info().uid())

    def pop_markers(self) -> list[tuple[float, str]]:
        """Markers received since the last call, oldest first: ``(timestamp, payload)``."""
        with self._lock:
            out = list(self._markers)
            self._markers.clear()
        return out

    def acquire(self) -> int:
        """Pull every marker that has arrived, in the caller's thread (``start(thread=False)``)."""
        if not self._connected or self._thread is not None:
            raise RuntimeError(f"{self.thread_name}: acquire() is for start(thread=False)")
        return self._acquire_once()

    def _run(self) -> None:
        while not self.stopping:
            if not self._acquire_once():
                self._sleep(self.cfg.poll_interval_s)

    def _acquire_once(self) -> int:
        import pylsl

        try:
            samples, ts = self._inlet.pull_chunk(timeout=0.0, max_samples=256)
        except pylsl.util.LostError as exc:
            raise ConnectionError(f"marker stream {self.name!r} was lost and recover is off") from exc
        if ts:
            self._ingest_markers(samples, ts)
            self._last_marker = pylsl.local_clock()
            if self._watch is not None:
                self._watch.idle()
        elif self._watch is not None:
            now = pylsl.local_clock()
            if now - self._last_marker >= self.cfg.reresolve_after_s and now >= self._next_watch:
                self._next_watch = now + 0.5
                info = self._watch.replacement()
                if info is not None:
                    self._reconnect(info)
        return len(ts)

    def _ingest_markers(self, samples: list, ts: list) -> None:
        """Keep one pulled chunk of marker samples: ``(timestamp, first value)`` each."""
        with self._lock:
            for sample, t in zip(samples, ts, strict=True):
                self._markers.extend((float(t), p) for p in self._decode(sample))
            self.n_received += len(ts)
            while len(self._markers) > self._max:
                self._markers.popleft()
                self.n_dropped += 1

    def _reconnect(self, info: Any) -> None:
        try:
            inlet, meta = self._open_inlet(info, 1.0)
        except Exception as exc:  # not ready yet: the next check tries again
            logger.warning("marker stream %r: reconnecting failed (%s); retrying", self.name, exc)
            return
        self._inlet.close_stream()
        self._inlet, old, self.meta = inlet, self.meta, meta
        self._watch = StreamWatch(meta, inlet.info().uid())
        self.n_reconnects += 1
        logger.warning("marker stream %r restarted as source_id %r (was %r): reconnected",
                       meta.name, meta.source_id, old.source_id)

"""Marker streams as they come: string markers and mne-lsl annotation streams, and which belongs to which EEG.

Encodings read (:func:`marker_decoder`)
---------------------------------------
- **string markers** (our replay's ``<name>-markers``, Brain Products'
  ``<name>-Markers``, PsychoPy, ...): one string channel; the payload is the
  string (our JSON payloads are parsed later by
  :func:`~neuroimagen.stream.windowing.parse_marker_payload`, as before).
- **mne-lsl annotations, one-hot** (``PlayerLSL``'s default): stream type
  ``annotations``, one double channel per unique annotation description (the
  channel label *is* the description), irregular rate. A sample fires the
  channel of its description with the annotation's duration in seconds (``-1``
  for a zero duration) and leaves the others at zero. The payload is the
  description of every non-zero channel. See mne_lsl/player/player_lsl.py,
  ``PlayerLSL._stream_annotations``.
- **mne-lsl annotations, string** (``annotations_encoding="string"``, mne-lsl
  1.14): type ``annotations``, one string channel ``description``: read as a
  string marker stream.
- **numeric event codes** (one numeric channel, e.g. a trigger stream): the
  payload is the code as text (``"4"``), as replayed stim events are.

Which marker stream belongs to an EEG stream (:func:`match_marker_streams`)
--------------------------------------------------------------------------
``windowing.marker_stream``, when set, names it. Otherwise a stream is a
marker stream of the EEG stream when it has an irregular rate (markers are
events, not samples) and either

1. comes from the same host and the same source: its ``source_id`` equals the
   EEG stream's or extends it (mne-lsl gives its annotation stream the EEG
   stream's source_id; our replay uses ``<source_id>-markers``), or
2. its name extends the EEG stream's name after a separator: ``<name>-markers``
   (our replay), ``<name>-Markers`` (Brain Products connectors),
   ``<name>-annotations`` (mne-lsl), ``<name>_markers``, ...

Exactly one such stream is used. None, or several, is an error that lists
what is visible and names ``stream.windowing.marker_stream``.

Timing of mne-lsl's player
--------------------------
``PlayerLSL`` stamps each annotation one sample period *before* the sample it
marks: it pushes a chunk ``[start, stop)`` with the timestamp of its last
sample, so sample ``start`` is stamped ``T + 1/sfreq`` where ``T`` is the
previous chunk's timestamp, while an annotation at ``start`` gets
``T + onset - times[start]`` = ``T`` (mne_lsl/player/player_lsl.py, ``_stream``
and ``_stream_annotations``, mne-lsl 1.14). :func:`marker_time_offset_s`
returns that one period for an annotation stream recognisably published by
``PlayerLSL`` (type ``annotations``, name ``<eeg name>-annotations``, the EEG
stream's source_id), so a marker locks to the sample the annotation was on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

logger = logging.getLogger(__name__)

__all__ = [
    "ANNOTATION_TYPES",
    "MARKER_TYPES",
    "MarkerStreamError",
    "choose_marker_stream",
    "decode_annotation_sample",
    "find_marker_stream",
    "is_marker_stream",
    "marker_decoder",
    "marker_time_offset_s",
    "match_marker_streams",
    "resolve_marker_streams",
]

#: Stream types of mne-lsl annotation streams (compared in lower case).
ANNOTATION_TYPES = frozenset({"annotations", "annotation"})
#: Stream types that mark a stream as events (compared in lower case).
MARKER_TYPES = frozenset({"markers", "marker", "events", "event", "stim", "triggers"}) | ANNOTATION_TYPES
_SEPARATORS = "-_ .:"
_HINT = "set stream.windowing.marker_stream to its name (e.g. --set stream.windowing.marker_stream=NAME)"


class MarkerStreamError(LookupError):
    """No marker stream, or more than one, matches the EEG stream; the message names the setting."""


class _Described(Protocol):
    name: str
    stype: str
    source_id: str
    hostname: str
    sfreq: float
    channel_format: str


# --------------------------------------------------------------------------- decoding


def decode_annotation_sample(values: Sequence[float], ch_names: Sequence[str]) -> list[tuple[str, float]]:
    """One sample of a one-hot annotation stream: ``[(description, duration_s), ...]``.

    Parameters
    ----------
    values : sequence of float, length n_channels
        The sample; non-zero on the channel(s) of the annotation(s) it carries.
    ch_names : sequence of str
        The channel labels, one per unique annotation description.

    Returns
    -------
    list of (str, float)
        Description and duration in seconds (mne-lsl sends ``-1`` for a zero
        duration: returned as 0.0), in channel order; empty for an all-zero sample.
    """
    out = []
    for value, name in zip(values, ch_names, strict=True):
        v = float(value)
        if v != 0.0 and v == v:  # NaN is not an annotation
            out.append((str(name), v if v > 0 else 0.0))
    return out


def _code_text(value: float) -> str:
    v = float(value)
    return str(int(v)) if v.is_integer() else repr(v)


def marker_decoder(meta: Any) -> Callable[[Sequence[Any]], list[str]]:
    """A function turning one pulled sample of this marker stream into its payloads.

    Parameters
    ----------
    meta : StreamMeta-like
        ``stype``, ``channel_format``, ``n_channels`` and ``ch_names`` (full
        description, from ``inlet.info()``).

    Returns
    -------
    callable
        ``decode(sample) -> list of str``: the payload(s) the sample carries
        (usually one; none for an all-zero annotation sample).
    """
    if meta.channel_format == "string":
        return lambda sample: [str(sample[0])]
    if str(meta.stype).strip().lower() in ANNOTATION_TYPES or meta.n_channels > 1:
        names = list(meta.ch_names)
        if not getattr(meta, "labelled", True) and meta.n_channels > 1:
            raise MarkerStreamError(
                f"marker stream {meta.name!r} has {meta.n_channels} numeric channels but no labels: "
                "its events cannot be named"
            )
        return lambda sample: [d for d, _ in decode_annotation_sample(sample, names)]
    return lambda sample: [_code_text(sample[0])] if float(sample[0]) != 0.0 else []


def marker_time_offset_s(marker: Any, eeg: Any) -> float:
    """Seconds to add to this marker stream's timestamps (see the module notes).

    One EEG sample period for an annotation stream published by mne-lsl's
    ``PlayerLSL`` (type ``annotations``, name ``<eeg name>-annotations``, the
    EEG stream's source_id); 0 for every other stream.
    """
    if (
        str(marker.stype).strip().lower() in ANNOTATION_TYPES
        and marker.name == f"{eeg.name}-annotations"
        and marker.source_id == eeg.source_id
        and eeg.sfreq > 0
    ):
        return 1.0 / float(eeg.sfreq)
    return 0.0


# --------------------------------------------------------------------------- matching


def is_marker_stream(meta: _Described) -> bool:
    """Irregular-rate events: a string stream, or a numeric one typed as markers/annotations."""
    if meta.sfreq and meta.sfreq > 0:
        return False
    return meta.channel_format == "string" or str(meta.stype).strip().lower() in MARKER_TYPES


def _same_source(marker: _Described, eeg: _Described) -> bool:
    sid = eeg.source_id
    return bool(sid) and marker.hostname == eeg.hostname and marker.source_id.startswith(sid)


def _name_extends(marker: _Described, eeg: _Described) -> bool:
    name = eeg.name
    return (
        bool(name)
        and len(marker.name) > len(name) + 1
        and marker.name.startswith(name)
        and marker.name[len(name)] in _SEPARATORS
    )


def match_marker_streams(eeg: _Described, candidates: Sequence[_Described]) -> list[_Described]:
    """The candidates that are marker streams of ``eeg`` by the module's rule, best first.

    A candidate meeting both criteria (same source, name extension) comes
    before one meeting one; the EEG stream itself and regular-rate streams
    never match.
    """
    scored = []
    for k, c in enumerate(candidates):
        if not is_marker_stream(c) or (c.name == eeg.name and c.source_id == eeg.source_id):
            continue
        score = int(_same_source(c, eeg)) + int(_name_extends(c, eeg))
        if score:
            scored.append((-score, k, c))
    return [c for _, _, c in sorted(scored, key=lambda s: (s[0], s[1]))]


def choose_marker_stream(eeg: _Described, candidates: Sequence[_Described]) -> _Described:
    """The one marker stream of ``eeg`` among ``candidates``.

    Raises
    ------
    MarkerStreamError
        None matches, or several match equally well; the message lists the
        visible marker streams and names ``stream.windowing.marker_stream``.
    """
    matches = match_marker_streams(eeg, candidates)
    if not matches:
        markers = [c for c in candidates if is_marker_stream(c)]
        seen = ", ".join(f"{c.name!r} (type {c.stype!r})" for c in markers) or "none"
        raise MarkerStreamError(
            f"no marker stream matches EEG stream {eeg.name!r} (same host and source_id, or a name "
            f"'{eeg.name}-...'); marker streams visible: {seen}; {_HINT}"
        )
    best = [m for m in matches if _same_source(m, eeg) + _name_extends(m, eeg)
            == _same_source(matches[0], eeg) + _name_extends(matches[0], eeg)]
    if len(best) > 1:
        listing = ", ".join(f"{m.name!r}" for m in best)
        raise MarkerStreamError(
            f"{len(best)} marker streams match EEG stream {eeg.name!r}: {listing}; {_HINT}"
        )
    return best[0]


#: seconds spent looking for further candidates once one marker stream is visible
COLLECT_S = 0.5


def resolve_marker_streams(eeg: _Described, timeout: float = 5.0) -> list[Any]:
    """Every visible marker stream of ``eeg`` by the module's rule, best first (``pylsl.StreamInfo``).

    Waits up to ``timeout`` seconds for a first candidate, then briefly for
    siblings; returns an empty list when none shows up.
    """
    import pylsl

    from .inlet import _xpath_literal, stream_meta

    # 1. candidates: irregular streams whose name or source_id starts like the EEG stream's
    terms = [f"starts-with(name,{_xpath_literal(eeg.name)})"]
    if eeg.source_id:
        terms.append(f"starts-with(source_id,{_xpath_literal(eeg.source_id)})")
    pred = f"nominal_srate=0 and ({' or '.join(terms)})"
    infos = pylsl.resolve_bypred(pred, 1, timeout)
    if infos:  # 2. one is up: give any sibling a moment to answer too
        more = pylsl.resolve_bypred(pred, len(infos) + 1, COLLECT_S)
        infos = list({i.uid(): i for i in [*infos, *more]}.values())
    metas = [stream_meta(i) for i in infos]
    order = {id(m): i for m, i in zip(metas, infos, strict=True)}
    return [order[id(m)] for m in match_marker_streams(eeg, metas)]


def find_marker_stream(eeg: _Described, explicit: str | None = None, timeout: float = 5.0) -> Any:
    """Resolve the marker stream of ``eeg`` on the network (a ``pylsl.StreamInfo``).

    Parameters
    ----------
    eeg : StreamMeta
        The EEG stream (name, source_id, hostname).
    explicit : str | None
        ``windowing.marker_stream``: resolve that name instead of matching.
    timeout : float
        Seconds to wait for a first candidate.

    Raises
    ------
    MarkerStreamError
        No stream, or several, match (or the named one is not there).
    """
    from .inlet import StreamNotFoundError, list_streams, resolve_stream, stream_meta

    if explicit is not None:
        try:
            return resolve_stream(explicit, None, None, timeout)
        except StreamNotFoundError as exc:
            raise MarkerStreamError(f"stream.windowing.marker_stream={explicit!r}: {exc}") from None
    infos = resolve_marker_streams(eeg, timeout)
    if not infos:
        choose_marker_stream(eeg, list_streams(timeout=1.0))  # raises, listing what is visible
    metas = [stream_meta(i) for i in infos]
    chosen = choose_marker_stream(eeg, metas)
    info = infos[metas.index(chosen)]
    logger.info("marker stream for %r: %s", eeg.name, chosen.describe())
    return info

"""The channel and rate contract between an incoming stream and the model.

The model (its bundle manifest, through :class:`ContractConfig`) fixes the
channel names, their order, the sampling rate and the unit (volts). A stream
is conformed to it once, at the input, by :class:`ChannelContract`:

1. channels are matched by name, case-insensitively and with common aliases
   (:func:`canonical_ch_name`); extra stream channels (stim, counter, ...) are
   dropped; a name matched twice is an error;
2. missing channels are refused with their list, or interpolated from their
   neighbours with MNE's spherical splines (one precomputed matrix);
3. samples are scaled to volts, the unit read from the stream description
   (:func:`detect_unit_scale`) or given in the config;
4. other rates are resampled (:class:`~neuroimagen.stream.resample.StreamingResampler`)
   or refused.

Every problem found at construction is collected and raised together in one
:class:`ContractError`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

import numpy as np

from .config import ContractConfig
from .montage import montage_ch_names
from .resample import StreamingResampler
from .units import AmbiguousUnitError, guess_scale_from_amplitude, is_declared, unit_to_volts

__all__ = [
    "ALIASES",
    "ChannelContract",
    "ContractError",
    "canonical_ch_name",
    "detect_unit_scale",
    "interpolation_matrix",
    "unit_scale",
]

logger = logging.getLogger(__name__)


class ContractError(ValueError):
    """A stream does not meet the model's channel/rate/unit contract; the message lists why."""


#: Old 10-20 names mapped to their 10-10 equivalents (canonical, lower case).
ALIASES: dict[str, str] = {"t3": "t7", "t4": "t8", "t5": "p7", "t6": "p8"}

_PREFIX = re.compile(r"^eeg[\s_:\-]*", re.IGNORECASE)
_SUFFIX = re.compile(r"[\s_\-]*(ref|avg|ave|ar|le)$", re.IGNORECASE)


def canonical_ch_name(name: str) -> str:
    """Canonical form of an EEG channel name, for matching.

    Lower case, without an ``EEG`` prefix or a reference suffix (``-REF``,
    ``-Ref``, ``-AVG``, ``-AR``, ``-LE``), old 10-20 names mapped to 10-10
    (T3 -> T7, T4 -> T8, T5 -> P7, T6 -> P8).

    Examples
    --------
    ``'EEG Fp1'``, ``'FP1'``, ``'Fp1-REF'``, ``'EEG FP1-Ref'``, ``'eeg_fp1'`` -> ``'fp1'``;
    ``'T3'`` -> ``'t7'``.
    """
    s = name.strip()
    stripped = _PREFIX.sub("", s)
    if stripped:  # a channel literally called 'EEG' keeps its name
        s = stripped
    stripped = _SUFFIX.sub("", s)
    if stripped:
        s = stripped
    s = s.strip().lower()
    return ALIASES.get(s, s)


_CFG_SCALES = {"V": 1.0, "uV": 1e-6}
_UNITS_HINT = "set stream.contract.units to V or uV (e.g. --set stream.contract.units=uV)"


def unit_scale(unit: str | None, ch_type: str | None = None) -> float | None:
    """Factor from ``unit`` to volts (``'uV'`` -> 1e-6), None when not a known voltage unit.

    The table is :func:`neuroimagen.stream.units.unit_to_volts` (names, SI prefixes
    and mne-lsl's power-of-ten exponents, which need ``ch_type``).
    """
    return unit_to_volts(unit, ch_type)


def detect_unit_scale(
    units: Sequence[str | None],
    cfg_units: str,
    ch_types: Sequence[str | None] | None = None,
) -> float | None:
    """Factor that brings samples of these channels to volts.

    Parameters
    ----------
    units : sequence of str | None
        Per-channel units from the stream description (the picked channels only).
    cfg_units : ``"auto"`` | ``"V"`` | ``"uV"``
        ``stream.contract.units``: ``auto`` reads ``units``; otherwise the given
        unit is used (a stream that declares a different unit is logged).
    ch_types : sequence of str | None | None
        Per-channel types, to read mne-lsl's exponent units (``0`` is volts on
        an EEG channel, no unit on a stim channel).

    Returns
    -------
    float | None
        The factor; None when ``auto`` and no channel declares any unit: the
        amplitude must decide (:meth:`ChannelContract.resolve_units_from_amplitude`).

    Raises
    ------
    ContractError
        ``auto`` and a unit is unknown or not a voltage, some channels declare
        one and others none, or the channels differ.
    """
    types = list(ch_types) if ch_types is not None else [None] * len(units)
    if len(types) != len(units):
        raise ContractError(f"{len(types)} channel types given for {len(units)} units")
    if cfg_units != "auto":
        if cfg_units not in _CFG_SCALES:
            raise ContractError(f"stream.contract.units must be auto, V or uV, got {cfg_units!r}")
        scale = _CFG_SCALES[cfg_units]
        declared = {unit_to_volts(u, t) for u, t in zip(units, types, strict=True)} - {None}
        if declared and declared != {scale}:
            logger.warning(
                "stream declares units %s but stream.contract.units=%s is used",
                sorted({str(u) for u in units if is_declared(u)}),
                cfg_units,
            )
        return scale
    if len(units) == 0:
        raise ContractError(f"no channels to read a unit from; {_UNITS_HINT}")
    missing = [i for i, u in enumerate(units) if not is_declared(u)]
    if len(missing) == len(units):
        return None  # nothing declared: the amplitude decides, or the stream is refused
    if missing:
        raise ContractError(
            f"the stream declares no unit for {len(missing)} of {len(units)} channels; {_UNITS_HINT}"
        )
    scales = [unit_to_volts(u, t) for u, t in zip(units, types, strict=True)]
    unknown = sorted({str(u) for u, f in zip(units, scales, strict=True) if f is None})
    if unknown:
        raise ContractError(
            f"unknown channel unit(s) {', '.join(map(repr, unknown))} (known: V, mV, uV, µV, "
            f"volts, millivolts, microvolts, nV, mne-lsl exponents such as 0 or -6); {_UNITS_HINT}"
        )
    if len(set(scales)) > 1:
        raise ContractError(
            f"channels have mixed units {sorted({str(u) for u in units})}; convert the stream to one "
            f"unit or {_UNITS_HINT}"
        )
    return scales[0]


def interpolation_matrix(montage: str, ch_names: Sequence[str], bads: Sequence[str]) -> np.ndarray:
    """Spherical-spline weights that estimate ``bads`` from the other channels.

    MNE's own ``interpolate_bads`` (spherical splines, sphere fitted to the
    montage) is run once on an identity signal, so each column of its output is
    the response to a unit impulse on one channel: the weight matrix.

    Parameters
    ----------
    montage : str
        Standard montage name (MNE) giving the channel positions.
    ch_names : sequence of str
        All channels (good and bad), in order; matched to the montage with
        :func:`canonical_ch_name`.
    bads : sequence of str
        Channels to interpolate (a subset of ``ch_names``).

    Returns
    -------
    ndarray, shape (len(bads), len(ch_names)), float64
        Columns of bad channels are zero.
    """
    import mne

    mon = mne.channels.make_standard_montage(montage)
    pos_by_canon = {canonical_ch_name(k): v for k, v in mon.get_positions()["ch_pos"].items()}
    no_pos = [c for c in ch_names if canonical_ch_name(c) not in pos_by_canon]
    if any(b in no_pos for b in bads):
        raise ContractError(
            f"cannot interpolate {', '.join(b for b in bads if b in no_pos)}: "
            f"no position in montage {montage!r}"
        )
    use = [c for c in ch_names if c not in no_pos]
    dig = mne.channels.make_dig_montage(
        ch_pos={c: pos_by_canon[canonical_ch_name(c)] for c in use}, coord_frame="head"
    )
    info = mne.create_info(use, sfreq=1000.0, ch_types="eeg")
    raw = mne.io.RawArray(np.eye(len(use)), info, verbose="ERROR")
    raw.set_montage(dig, verbose="ERROR")
    raw.info["bads"] = list(bads)
    raw.interpolate_bads(reset_bads=True, origin="auto", verbose="ERROR")
    out = raw.get_data(picks=list(bads))  # (n_bads, n_use): row b, column j = weight of j
    weights = np.zeros((len(bads), len(ch_names)))
    col = {c: i for i, c in enumerate(ch_names)}
    for j, c in enumerate(use):
        if c not in bads:
            weights[:, col[c]] = out[:, j]
    return weights


class ChannelContract:
    """Conform a stream to the model's channels, unit and rate.

    Parameters
    ----------
    cfg : ContractConfig
        The model's contract (channel names or montage, rate, policies).
    ch_names : sequence of str
        The stream's channel names, in stream order.
    sfreq : float
        The stream's nominal rate in Hz.
    units : sequence of str | None | None
        The stream's per-channel units (from its description), if any.
    ch_types : sequence of str | None | None
        The stream's per-channel types (``eeg``, ``stim``, ...), if any; needed
        to read mne-lsl's exponent units.
    labelled : bool
        False when the stream carries no channel labels (OpenBCI GUI): its
        channels are named by ``cfg.unlabelled_ch_names``, in order, or the
        stream is refused. Channels are never matched by position silently.

    Attributes
    ----------
    ch_names_out : list of str
        The model's channel names, in model order.
    sfreq_out : float
    n_channels_in, n_channels_out : int
    picks : list of int | None
        Stream channel index of each output channel (None for interpolated ones).
    missing : list of str
        Model channels absent from the stream.
    interpolated : list of str
        The missing channels that are interpolated (empty when refused).
    dropped : list of str
        Stream channels not used (extra channels).
    scale_to_volts : float
    units_pending : bool
        ``units: auto`` and the stream declares no unit: call
        :meth:`resolve_units_from_amplitude` with some of its samples before
        :meth:`apply`.
    resampler : StreamingResampler | None

    Raises
    ------
    ContractError
        Listing every problem: missing channels (refused or too many),
        duplicate matches, units, rate.

    Notes
    -----
    :meth:`apply` carries resampler state: one instance per stream, fed in order
    by one thread.
    """

    def __init__(
        self,
        cfg: ContractConfig,
        ch_names: Sequence[str],
        sfreq: float,
        units: Sequence[str | None] | None = None,
        *,
        ch_types: Sequence[str | None] | None = None,
        labelled: bool = True,
    ) -> None:
        self.cfg = cfg
        ch_names = [str(c) for c in ch_names]
        ch_names = self._name_unlabelled(cfg, ch_names, labelled)
        self.ch_names_in = ch_names
        self.n_channels_in = len(ch_names)
        self.sfreq_in = float(sfreq)
        self.ch_names_out = (
            list(cfg.ch_names) if cfg.ch_names is not None else montage_ch_names(cfg.montage)
        )
        self.n_channels_out = len(self.ch_names_out)
        self.sfreq_out = float(cfg.sfreq_hz)
        problems: list[str] = []

        # 1. match channels by canonical name
        model_canon = [canonical_ch_name(c) for c in self.ch_names_out]
        dup_model = sorted({c for c in model_canon if model_canon.count(c) > 1})
        if dup_model:
            raise ContractError(f"the model's channel names repeat (after aliasing): {dup_model}")
        by_canon: dict[str, list[int]] = {}
        for i, c in enumerate(ch_names):
            by_canon.setdefault(canonical_ch_name(c), []).append(i)
        picks: list[int | None] = []
        for name, canon in zip(self.ch_names_out, model_canon, strict=True):
            hits = by_canon.get(canon, [])
            if len(hits) > 1:
                problems.append(
                    f"channel {name} matches {len(hits)} stream channels: "
                    f"{', '.join(ch_names[i] for i in hits)}"
                )
            picks.append(hits[0] if hits else None)
        self.picks = picks
        self.missing = [n for n, p in zip(self.ch_names_out, picks, strict=True) if p is None]
        used = {p for p in picks if p is not None}
        self.dropped = [c for i, c in enumerate(ch_names) if i not in used]
        if self.dropped:
            logger.info(
                "dropping %d stream channel(s) not in the model: %s",
                len(self.dropped),
                ", ".join(self.dropped),
            )

        # 2. missing channels: refuse or interpolate
        self.interpolated: list[str] = []
        if self.missing:
            frac = len(self.missing) / self.n_channels_out
            listing = ", ".join(self.missing)
            if cfg.on_missing_channels == "refuse":
                problems.append(
                    f"{len(self.missing)} model channel(s) missing from the stream: {listing} "
                    "(set stream.contract.on_missing_channels=interpolate to interpolate them)"
                )
            elif frac > cfg.max_missing_fraction:
                problems.append(
                    f"{len(self.missing)} of {self.n_channels_out} model channels missing "
                    f"({frac:.0%} > max_missing_fraction {cfg.max_missing_fraction:.0%}): {listing}"
                )
            elif len(self.missing) == self.n_channels_out:
                problems.append("no model channel is in the stream")
            else:
                self.interpolated = list(self.missing)

        # 3. units of the channels actually used (extra channels may carry any unit)
        self.scale_to_volts = 1.0
        self.units_pending = False
        picked = [p for p in picks if p is not None]
        if units is not None and len(units) != self.n_channels_in:
            problems.append(f"{len(units)} units given for {self.n_channels_in} stream channels")
        elif ch_types is not None and len(ch_types) != self.n_channels_in:
            problems.append(f"{len(ch_types)} channel types given for {self.n_channels_in} stream channels")
        else:
            used_units = [units[p] for p in picked] if units is not None else [None] * len(picked)
            used_types = [ch_types[p] for p in picked] if ch_types is not None else None
            try:
                scale = detect_unit_scale(used_units, cfg.units, used_types) if picked else 1.0
            except ContractError as exc:
                problems.append(str(exc))
            else:
                self.units_pending = scale is None
                self.scale_to_volts = 1.0 if scale is None else scale

        # 4. rate
        self.resampler: StreamingResampler | None = None
        if not (np.isfinite(self.sfreq_in) and self.sfreq_in > 0):
            problems.append(f"stream rate {sfreq} Hz is not a regular rate")
        elif self.sfreq_in != self.sfreq_out:
            if cfg.on_rate_mismatch == "refuse":
                problems.append(
                    f"stream rate {self.sfreq_in:g} Hz differs from the model's {self.sfreq_out:g} Hz "
                    "(set stream.contract.on_rate_mismatch=resample to resample)"
                )
            else:
                try:
                    self.resampler = StreamingResampler(
                        self.sfreq_in, self.sfreq_out, self.n_channels_out
                    )
                except ValueError as exc:
                    problems.append(str(exc))

        if problems:
            raise ContractError(
                "stream does not meet the model contract:\n  - " + "\n  - ".join(problems)
            )

        # 5. the spatial map: a gather, or one (n_out, n_in) matrix when interpolating
        self._index = np.array([p if p is not None else 0 for p in picks], dtype=np.intp)
        self._gather = np.empty(0, dtype=np.float32)
        self._matrix: np.ndarray | None = None
        if self.interpolated:
            # interpolate among the model's channels (their montage positions), then
            # express the result on the stream's channels
            w = interpolation_matrix(cfg.montage, self.ch_names_out, self.interpolated)
            m = np.zeros((self.n_channels_out, self.n_channels_in))
            out_idx = {n: i for i, n in enumerate(self.ch_names_out)}
            for i, p in enumerate(picks):
                if p is not None:
                    m[i, p] = 1.0
            for b, name in enumerate(self.interpolated):
                for j, p in enumerate(picks):
                    if p is not None:
                        m[out_idx[name], p] = w[b, j]
            self._matrix = (m * self.scale_to_volts).astype(np.float32)
            logger.warning(
                "interpolating %d missing channel(s): %s",
                len(self.interpolated),
                ", ".join(self.interpolated),
            )
        self.reset()

    @staticmethod
    def _name_unlabelled(cfg: ContractConfig, ch_names: list[str], labelled: bool) -> list[str]:
        """The stream's channel names; for an unlabelled stream, those of ``unlabelled_ch_names``."""
        given = cfg.unlabelled_ch_names
        if labelled:
            if given is not None:
                logger.warning(
                    "the stream labels its channels; stream.contract.unlabelled_ch_names is ignored"
                )
            return ch_names
        n = len(ch_names)
        if given is None:
            raise ContractError(
                f"the stream's {n} channels carry no labels, and channels are never matched to the "
                "model by position: set stream.contract.unlabelled_ch_names to the stream's channel "
                "names in stream order (e.g. --set 'stream.contract.unlabelled_ch_names=[Fp1, Fp2, "
                "C3, C4, P7, P8, O1, O2]'); channels beyond the list are dropped"
            )
        if len(given) > n:
            raise ContractError(
                f"stream.contract.unlabelled_ch_names names {len(given)} channels but the stream "
                f"has {n}"
            )
        extra = [f"unlabelled-{i + 1}" for i in range(len(given), n)]
        logger.info(
            "unlabelled stream: channels 1..%d named by stream.contract.unlabelled_ch_names%s",
            len(given), f"; {len(extra)} more dropped" if extra else "",
        )
        return [*given, *extra]

    def resolve_units_from_amplitude(self, data: np.ndarray) -> float:
        """Decide the unit of a stream that declares none, from its samples (``units: auto``).

        Parameters
        ----------
        data : ndarray, shape (n_channels_in, n_times)
            Samples as sent (a few hundred ms at least), stream channel order.

        Returns
        -------
        float
            The factor to volts now in :attr:`scale_to_volts`.

        Raises
        ------
        ContractError
            The amplitude is ambiguous; the message names ``stream.contract.units``.
        """
        if not self.units_pending:
            return self.scale_to_volts
        picked = [p for p in self.picks if p is not None]
        try:
            scale, reason = guess_scale_from_amplitude(np.asarray(data)[picked])
        except AmbiguousUnitError as exc:
            raise ContractError(
                f"the stream declares no channel units and its amplitude does not tell: {exc}; "
                f"{_UNITS_HINT}"
            ) from None
        logger.warning(
            "the stream declares no channel units; stream.contract.units=auto reads them as %s: %s "
            "(set stream.contract.units to override)",
            "V" if scale == 1.0 else "uV", reason,
        )
        self.scale_to_volts = scale
        if self._matrix is not None:
            self._matrix = (self._matrix * np.float32(scale)).astype(np.float32)
        self.units_pending = False
        return scale

    def reset(self) -> None:
        """Reset the resampler's history (a new stream segment starts)."""
        if self.resampler is not None:
            self.resampler.reset()

    def apply(
        self, data: np.ndarray, timestamps: np.ndarray, *, copy: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Conform one chunk.

        Parameters
        ----------
        data : ndarray, shape (n_channels_in, n), float32
            In the stream's unit and channel order.
        timestamps : ndarray, shape (n,), float64
        copy : bool
            False: without resampling, the returned data is the contract's own
            work array, valid until the next call (the live pipeline consumes
            it at once; no allocation per chunk).

        Returns
        -------
        data : ndarray, shape (n_channels_out, m), float32
            Volts, model channel order, missing channels interpolated, at
            ``sfreq_out`` (``m != n`` when resampling).
        timestamps : ndarray, shape (m,), float64
            When resampling, the instants the output samples represent
            (see :mod:`neuroimagen.stream.resample`).
        """
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[0] != self.n_channels_in:
            raise ValueError(
                f"data must be ({self.n_channels_in}, n_times) as the stream has "
                f"{self.n_channels_in} channels, got shape {data.shape}"
            )
        timestamps = np.asarray(timestamps, dtype=np.float64)
        n = data.shape[1]
        # the gather/matrix target is kept across chunks (grown, never shrunk)
        y = self._target(n)
        if self._matrix is not None:
            np.matmul(self._matrix, data.astype(np.float32, copy=False), out=y)
        else:
            if data.dtype == np.float32:
                np.take(data, self._index, axis=0, out=y, mode="clip")  # "raise" buffers out
            else:  # other stream formats: one conversion, as before
                np.copyto(y, data[self._index], casting="unsafe")
            if self.scale_to_volts != 1.0:
                y *= np.float32(self.scale_to_volts)
        if self.resampler is not None and not self.resampler.passthrough:  # copies into its history
            return self.resampler.process(y, timestamps)
        return (y.copy() if copy else y), timestamps.copy()

    def _target(self, n_times: int) -> np.ndarray:
        size = self.n_channels_out * n_times
        if self._gather.size < size:
            self._gather = np.empty(max(size, 2 * self._gather.size), dtype=np.float32)
        return self._gather[:size].reshape(self.n_channels_out, n_times)

    def describe(self) -> str:
        """One line for logs and the GUI."""
        parts = [
            f"{self.n_channels_in} -> {self.n_channels_out} channels",
            f"{self.sfreq_in:g} -> {self.sfreq_out:g} Hz",
            f"x{self.scale_to_volts:g} to V",
        ]
        if self.interpolated:
            parts.append(f"interpolated: {', '.join(self.interpolated)}")
        if self.dropped:
            parts.append(f"dropped: {', '.join(self.dropped)}")
        return "; ".join(parts)

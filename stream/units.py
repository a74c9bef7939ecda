"""The one table of channel units: what a stream or file says, and its factor to volts.

Every place that reads a unit (the channel contract, the file readers, the
recorder's finalize) asks :func:`unit_to_volts`. Two conventions are in the
wild and both are read here:

- names and symbols, with SI prefixes: ``V``, ``mV``, ``uV``, ``µV`` (micro
  sign U+00B5), ``μV`` (Greek mu U+03BC), ``nV``, ``volts``, ``microvolts``,
  ``micro volts``, ... (case-insensitive). Brain Products' LSL connectors write
  ``microvolts``; XDF's meta-data recommendation is the same spelling;
- mne-lsl's power-of-ten exponents. ``StreamInfo.set_channel_info`` writes each
  channel's MNE ``unit_mul`` (``<unit>0</unit>``, ``<unit>-6</unit>``), the
  exponent of the channel type's SI unit: on an EEG channel ``0`` means volts
  and ``-6`` microvolts. mne-lsl also writes ``0`` where the channel type has
  no unit at all (stim), so an exponent is a voltage only on a channel whose
  type MNE measures in volts (see mne_lsl/lsl/stream_info.py,
  ``set_channel_units`` / ``get_channel_units``, and mne_lsl/utils/meas_info.py).

Where a stream declares no unit, :func:`guess_scale_from_amplitude` decides
from the signal only when the amplitude leaves no doubt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

__all__ = [
    "NO_UNIT",
    "VOLTAGE_CH_TYPES",
    "AmbiguousUnitError",
    "guess_scale_from_amplitude",
    "is_declared",
    "scales_of",
    "unit_to_volts",
]

#: Unit strings that mean "this channel declares no unit".
NO_UNIT = frozenset({"", "none", "n/a", "na", "unknown", "-", "null"})

#: Channel types MNE measures in volts (an mne-lsl exponent on them is 10**k V).
VOLTAGE_CH_TYPES = frozenset({"eeg", "eog", "ecg", "emg", "seeg", "ecog", "dbs", "bio", "misc", "resp"})

_PREFIXES: dict[str, float] = {
    "": 1.0,
    "k": 1e3,
    "kilo": 1e3,
    "m": 1e-3,
    "milli": 1e-3,
    "u": 1e-6,
    "µ": 1e-6,  # micro sign U+00B5
    "μ": 1e-6,  # Greek small mu U+03BC
    "micro": 1e-6,
    "n": 1e-9,
    "nano": 1e-9,
    "p": 1e-12,
    "pico": 1e-12,
}
_SYMBOL = re.compile(r"^(k|m|u|µ|μ|n|p)?v$")
_WORD = re.compile(r"^(kilo|milli|micro|nano|pico)?\s*-?\s*volts?$")
_EXPONENT = re.compile(r"^[+-]?\d+$")


class AmbiguousUnitError(ValueError):
    """The amplitude of a stream without units does not say volts or microvolts clearly."""


def is_declared(unit: str | None) -> bool:
    """Whether ``unit`` says anything (None, ``''`` and ``'none'`` say nothing)."""
    return unit is not None and str(unit).strip().lower() not in NO_UNIT


def unit_to_volts(unit: str | None, ch_type: str | None = None) -> float | None:
    """Factor from ``unit`` to volts, or None when it is not a voltage unit.

    Parameters
    ----------
    unit : str | None
        As written in a stream description or file header: ``'uV'``,
        ``'microvolts'``, ``'µV'``, ``'V'``, or an mne-lsl exponent ``'0'``,
        ``'-6'``.
    ch_type : str | None
        The channel's type (``eeg``, ``stim``, ...), used for exponents only:
        an exponent is ``10**k`` volts on a channel type MNE measures in volts
        (or of unknown type), and no unit on any other (mne-lsl writes ``0``
        on a stim channel).

    Returns
    -------
    float | None
        ``1e-6`` for microvolts, ``1.0`` for volts; None for no unit, an
        unknown unit or a non-voltage unit (``'code'``, ``'teslas'``).

    Examples
    --------
    >>> unit_to_volts("microvolts"), unit_to_volts("µV"), unit_to_volts("-6", "eeg")
    (1e-06, 1e-06, 1e-06)
    >>> unit_to_volts("0", "eeg"), unit_to_volts("0", "stim")
    (1.0, None)
    """
    if unit is None:
        return None
    text = str(unit).strip()
    if text.lower() in NO_UNIT:
        return None
    if _EXPONENT.match(text):
        if ch_type is not None and ch_type.strip().lower() not in VOLTAGE_CH_TYPES:
            return None
        exponent = int(text)
        return 10.0**exponent if -24 <= exponent <= 24 else None
    low = text.lower()
    sym = _SYMBOL.match(text) or _SYMBOL.match(low)
    if sym and (text[-1] in "Vv"):
        # 'mV' is millivolts; an upper-case 'MV' (megavolts) is no EEG unit
        prefix = sym.group(1) or ""
        if prefix == "m" and text[0] == "M":
            return None
        return _PREFIXES[prefix]
    word = _WORD.match(low)
    if word:
        return _PREFIXES[word.group(1) or ""]
    return None


def guess_scale_from_amplitude(data: np.ndarray) -> tuple[float, str]:
    """Decide volts or microvolts for EEG without a declared unit, from its amplitude.

    Parameters
    ----------
    data : ndarray, shape (n_channels, n_times)
        A few hundred milliseconds or more of the EEG channels, as sent.

    Returns
    -------
    scale : float
        ``1.0`` (the samples are volts) or ``1e-6`` (microvolts).
    reason : str
        One line for the log: the measured amplitude and the rule applied.

    Raises
    ------
    AmbiguousUnitError
        The amplitude fits neither unit clearly (flat, millivolt-sized, huge).

    Notes
    -----
    The amplitude is the median over channels of each channel's median absolute
    deviation (DC offsets and single bad channels do not count). Scalp EEG is
    about 0.1 µV to 1 mV, so read in volts it lies in [1e-7, 1e-3] and in
    microvolts in [0.1, 1000]; the two ranges are 100x apart. Anything between
    or outside (millivolts, ADC counts, a flat line) is refused.
    """
    x = np.asarray(data, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise AmbiguousUnitError(f"need (n_channels, n_times >= 2) samples, got shape {x.shape}")
    finite = np.isfinite(x).all(axis=0)
    x = x[:, finite]
    if x.shape[1] < 2:
        raise AmbiguousUnitError("no finite samples to measure the amplitude")
    mad = np.median(np.abs(x - np.median(x, axis=1, keepdims=True)), axis=1)
    amp = float(np.median(mad))
    if 1e-7 <= amp <= 1e-3:
        return 1.0, f"median amplitude {amp:.3g} is EEG in volts (1e-7..1e-3)"
    if 0.1 <= amp <= 1000.0:
        return 1e-6, f"median amplitude {amp:.3g} is EEG in microvolts (0.1..1000)"
    raise AmbiguousUnitError(
        f"median amplitude {amp:.3g} is neither EEG in volts (1e-7..1e-3) nor in microvolts "
        "(0.1..1000)"
    )


def scales_of(units: Sequence[str | None], ch_types: Sequence[str | None] | None = None) -> list[float | None]:
    """:func:`unit_to_volts` of each channel (``ch_types`` None: types unknown)."""
    types = ch_types if ch_types is not None else [None] * len(units)
    return [unit_to_volts(u, t) for u, t in zip(units, types, strict=True)]

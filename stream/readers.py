"""Read any EEG recording into one in-memory :class:`Recording`.

Three families of input:

- every format MNE reads (FIF, EDF, BDF, BrainVision, EEGLAB ``.set``, ...),
  through :func:`mne.io.read_raw`;
- XDF (``.xdf``/``.xdfz``), through :mod:`pyxdf`: the first regularly sampled
  numeric stream (type ``EEG`` preferred) is the data, string streams are markers;
- the EEG-ImageNet ``.pth`` file (``eeg_5_95_std.pth``): a dict with ``dataset``
  (list of ``{eeg: (128, T) tensor, label, image, subject}``), ``labels``
  (WordNet ids) and ``images`` (image stems), loaded with
  ``torch.load(weights_only=True)`` only.

Conventions (what a replay publishes)
-------------------------------------
- ``data`` is float32 in volts for EEG-like channels (MNE's unit). XDF data in
  micro/millivolts is scaled to volts. EEG-ImageNet data is already band-passed
  and z-scored, so dimensionless; ``preprocessed`` says so, and its channels
  declare ``volts`` only so that a unit-checking consumer (the channel contract)
  applies a scale of 1 and passes the values through unchanged.
- Stim channels are not data: they are dropped and their events
  (:func:`mne.find_events`) become markers whose payload is the event code as a
  string (``"4096"``). Annotations become markers whose payload is the
  annotation description. Other channel types (misc, eog, ecg, ...) are kept
  with their type.
- Markers are ``(sample index of onset, payload)``, sorted by onset.
- NaN/inf samples are kept as they are; :class:`~neuroimagen.stream.replay.Player`
  decides (``replay.on_nonfinite``).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Sample rate of the EEG-ImageNet ``.pth`` recordings (Hz).
EEG_IMAGENET_SFREQ = 1000.0
#: Unit strings written to / read from LSL descriptions, and their factor to volts.
UNIT_TO_VOLTS: dict[str, float] = {
    "v": 1.0, "volt": 1.0, "volts": 1.0, "0": 1.0,
    "mv": 1e-3, "millivolt": 1e-3, "millivolts": 1e-3, "-3": 1e-3,
    "uv": 1e-6, "µv": 1e-6, "μv": 1e-6, "microvolt": 1e-6, "microvolts": 1e-6, "-6": 1e-6,
    "nv": 1e-9, "nanovolt": 1e-9, "nanovolts": 1e-9, "-9": 1e-9,
}
_VOLT_TYPES = {"eeg", "eog", "ecg", "emg", "seeg", "ecog", "dbs", "bio", "misc", "resp"}
_XDF_SUFFIXES = (".xdf", ".xdfz")


class RecordingError(ValueError):
    """A recording cannot be read; the message names the file and the problem."""


@dataclass
class Recording:
    """One continuous recording, in memory.

    Attributes
    ----------
    data : np.ndarray
        (n_channels, n_times) float32; volts for EEG-like channels (``units``
        says ``"volts"``); z-scores for preprocessed data (see ``preprocessed``).
    sfreq : float
        Sample rate in Hz.
    ch_names, ch_types, units : list of str
        One per channel; types are MNE's (``eeg``, ``misc``, ``eog``, ...), units
        LSL/mne-lsl human strings (``volts``, ``none``).
    markers : list of (int, str)
        (sample index of the onset, payload), sorted by onset.
    preprocessed : dict | None
        What was already done to the data (``{"bandpass_hz": [5, 95],
        "normalized": "dataset"}``), None for raw recordings.
    source : str
        The file it came from.
    """

    data: np.ndarray
    sfreq: float
    ch_names: list[str]
    ch_types: list[str]
    units: list[str]
    markers: list[tuple[int, str]] = field(default_factory=list)
    preprocessed: dict[str, Any] | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.data.ndim != 2:
            raise RecordingError(f"{self.source}: data must be 2-D (n_channels, n_times), got {self.data.shape}")
        n = self.data.shape[0]
        for what in ("ch_names", "ch_types", "units"):
            if len(getattr(self, what)) != n:
                raise RecordingError(
                    f"{self.source}: {len(getattr(self, what))} {what} for {n} channels"
                )
        self.markers = sorted(self.markers, key=lambda m: m[0])

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_times(self) -> int:
        return int(self.data.shape[1])

    def nonfinite_report(self) -> str | None:
        """None if every sample is finite, else a line naming the channels and counts."""
        bad = ~np.isfinite(self.data)
        if not bad.any():
            return None
        per_ch = bad.sum(axis=1)
        parts = [f"{self.ch_names[i]}: {int(per_ch[i])}" for i in np.flatnonzero(per_ch)[:10]]
        more = "" if np.count_nonzero(per_ch) <= 10 else f" (+{np.count_nonzero(per_ch) - 10} more channels)"
        return f"{int(bad.sum())} NaN/inf samples ({', '.join(parts)}{more})"


def read_recording(path: str | Path) -> Recording:
    """Read a recording file (MNE formats, XDF, EEG-ImageNet ``.pth``).

    Parameters
    ----------
    path : str | Path
        The file (for BrainVision, the ``.vhdr``).

    Returns
    -------
    Recording

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    RecordingError
        The file exists but cannot be read as a recording (the message says why).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"recording not found: {path}")
    if path.is_dir():
        raise RecordingError(f"{path} is a folder; give a recording file (finalize a recorder folder first)")
    suffix = path.suffix.lower()
    if suffix == ".pth" or suffix == ".pt":
        return _read_pth(path)
    if suffix in _XDF_SUFFIXES:
        return _read_xdf(path)
    return _read_mne(path)


# --------------------------------------------------------------------------- MNE


def _read_mne(path: Path) -> Recording:
    import mne

    try:
        raw = mne.io.read_raw(path, preload=True, verbose="error")
    except Exception as exc:  # mne raises many types for unreadable files
        raise RecordingError(f"cannot read {path} with mne.io.read_raw: {type(exc).__name__}: {exc}") from exc
    return recording_from_raw(raw, source=str(path))


def recording_from_raw(raw: Any, source: str = "") -> Recording:
    """A :class:`Recording` from an :class:`mne.io.Raw` (preloaded or not).

    Stim channels are dropped (their events become markers), annotations
    become markers at their onset sample.
    """
    import mne

    sfreq = float(raw.info["sfreq"])
    types = raw.get_channel_types()
    stim_picks = [i for i, t in enumerate(types) if t == "stim"]
    keep = [i for i, t in enumerate(types) if t != "stim"]
    if not keep:
        raise RecordingError(f"{source}: no data channels (only stim channels)")
    markers: list[tuple[int, str]] = []
    # 1. stim channels -> events -> markers (payload: the event code)
    if stim_picks:
        stim_names = [raw.ch_names[i] for i in stim_picks]
        try:
            events = mne.find_events(
                raw, stim_channel=stim_names, shortest_event=1, consecutive=True,
                initial_event=True, verbose="error",
            )
        except ValueError as exc:
            logger.warning("%s: could not read events from %s: %s", source, stim_names, exc)
            events = np.zeros((0, 3), dtype=int)
        markers += [(int(s) - raw.first_samp, str(int(code))) for s, _, code in events]
    # 2. annotations -> markers (payload: the description)
    ann = raw.annotations
    if len(ann):
        idx = raw.time_as_index(ann.onset, use_rounding=True, origin=ann.orig_time)
        for i, desc in zip(idx, ann.description, strict=True):
            if 0 <= i < raw.n_times:
                markers.append((int(i), str(desc)))
            else:
                logger.warning("%s: annotation %r at sample %d is outside the data; skipped", source, desc, i)
    # 3. data channels, in volts (MNE's unit), float32
    data = raw.get_data(picks=keep).astype(np.float32)
    chs = [raw.info["chs"][i] for i in keep]
    units = [_fiff_unit_name(ch["unit"]) for ch in chs]
    return Recording(
        data=data, sfreq=sfreq, ch_names=[raw.ch_names[i] for i in keep],
        ch_types=[types[i] for i in keep], units=units, markers=markers, source=source,
    )


def _fiff_unit_name(unit: int) -> str:
    from mne.io.constants import FIFF

    names = {FIFF.FIFF_UNIT_V: "volts", FIFF.FIFF_UNIT_T: "teslas", FIFF.FIFF_UNIT_T_M: "teslas/m",
             FIFF.FIFF_UNIT_CEL: "celsius"}
    return names.get(
        int(unit), "none"
    )


# --------------------------------------------------------------------------- XDF


def _read_xdf(path: Path) -> Recording:
    import pyxdf

    try:
        streams, _ = pyxdf.load_xdf(str(path))
    except Exception as exc:  # pyxdf raises bare Exceptions for bad files
        raise RecordingError(f"cannot read {path} as XDF: {type(exc).__name__}: {exc}") from exc
    regular = [
        s for s in streams
        if float(s["info"]["nominal_srate"][0]) > 0
        and s["info"]["channel_format"][0] != "string"
        and len(s["time_stamps"]) > 0
    ]
    if not regular:
        raise RecordingError(f"{path}: no regularly sampled numeric stream with samples")
    eeg = next((s for s in regular if s["info"]["type"][0].lower() == "eeg"), regular[0])
    info = eeg["info"]
    sfreq = float(info["nominal_srate"][0])
    data = np.asarray(eeg["time_series"], dtype=np.float64).T
    n_ch = data.shape[0]
    names, types, units = _xdf_channels(info, n_ch)
    out_units = []
    for i, unit in enumerate(units):
        factor = UNIT_TO_VOLTS.get((unit or "").strip().lower())
        if factor is not None and types[i] in _VOLT_TYPES:
            data[i] *= factor
            out_units.append("volts")
        else:
            out_units.append(unit or "none")
    ts = np.asarray(eeg["time_stamps"], dtype=np.float64)
    markers: list[tuple[int, str]] = []
    for s in streams:
        if s["info"]["channel_format"][0] != "string":
            continue
        for t, values in zip(s["time_stamps"], s["time_series"], strict=True):
            markers.append((int(nearest_index(ts, t)), str(values[0])))
    return Recording(
        data=data.astype(np.float32), sfreq=sfreq, ch_names=names, ch_types=types,
        units=out_units, markers=markers, preprocessed=_xdf_preprocessed(info), source=str(path),
    )


def _first(node: Any, key: str) -> Any:
    if not isinstance(node, dict) or key not in node or not node[key]:
        return None
    return node[key][0]


def _xdf_channels(info: dict, n_ch: int) -> tuple[list[str], list[str], list[str | None]]:
    stype = (info["type"][0] or "misc").lower()
    default_type = stype if stype in _VOLT_TYPES else "misc"
    chans = _first(_first(info, "desc") or {}, "channels")
    chans = (chans or {}).get("channel", []) if isinstance(chans, dict) else []
    if len(chans) != n_ch:
        return [f"ch{i}" for i in range(n_ch)], [default_type] * n_ch, [None] * n_ch
    names = [str(_first(c, "label") or f"ch{i}") for i, c in enumerate(chans)]
    types = [str(_first(c, "type") or default_type).lower() for c in chans]
    types = [t if t in _VOLT_TYPES | {"stim"} else default_type for t in types]
    units = [_first(c, "unit") for c in chans]
    return names, types, units


def _xdf_preprocessed(info: dict) -> dict | None:
    node = _first(_first(_first(info, "desc") or {}, "neuroimagen") or {}, "preprocessed")
    if not isinstance(node, dict):
        return None
    out = {}
    for key, value in node.items():
        text = value[0] if isinstance(value, list) and value else value
        try:
            out[key] = json.loads(text)
        except (TypeError, ValueError):
            out[key] = text
    return out or None


def nearest_index(timestamps: np.ndarray, t: np.ndarray | float) -> np.ndarray:
    """Index of the sample whose timestamp is nearest ``t`` (timestamps sorted, non-empty)."""
    t = np.asarray(t, dtype=np.float64)
    hi = np.clip(np.searchsorted(timestamps, t), 1, max(1, timestamps.size - 1))
    lo = hi - 1
    if timestamps.size == 1:
        return np.zeros_like(hi)
    return np.where(np.abs(timestamps[hi] - t) < np.abs(t - timestamps[lo]), hi, lo)


# --------------------------------------------------------------------------- EEG-ImageNet .pth


def _read_pth(path: Path) -> Recording:
    import pickle

    import torch

    from .montage import montage_ch_names

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: (GLOBAL \S+)", str(exc))
        if found is None:
            raise RecordingError(f"cannot read {path} as a torch file (not a valid pickle/zip): {exc}") from exc
        raise RecordingError(
            f"refusing to load {path}: it holds pickled objects ({found.group(1)}) that "
            "torch.load(weights_only=True) will not build. Only tensors, dicts, lists, str and "
            "numbers are accepted; re-save the file with plain types."
        ) from exc
    except Exception as exc:
        raise RecordingError(f"cannot read {path} as a torch file: {type(exc).__name__}: {exc}") from exc
    if not isinstance(obj, dict):
        raise RecordingError(f"{path}: expected a dict with keys dataset, labels, images; got {type(obj).__name__}")
    missing = [k for k in ("dataset", "labels", "images") if k not in obj]
    if missing:
        raise RecordingError(
            f"{path}: not an EEG-ImageNet file: missing key(s) {missing}; found {sorted(map(str, obj))}"
        )
    labels, images, items = list(obj["labels"]), list(obj["images"]), obj["dataset"]
    if not items:
        raise RecordingError(f"{path}: 'dataset' is empty")
    ch_names = montage_ch_names()
    segments, markers, start = [], [], 0
    for k, item in enumerate(items):
        if not isinstance(item, dict) or "eeg" not in item:
            raise RecordingError(f"{path}: dataset[{k}] has no 'eeg' entry")
        eeg = item["eeg"]
        eeg = eeg.float().numpy() if hasattr(eeg, "numpy") else np.asarray(eeg, dtype=np.float32)
        if eeg.ndim != 2 or eeg.shape[0] != len(ch_names):
            raise RecordingError(
                f"{path}: dataset[{k}]['eeg'] has shape {eeg.shape}; expected ({len(ch_names)}, n_times)"
            )
        label = int(item.get("label", -1))
        image = item.get("image")
        if isinstance(image, (int, np.integer)) or (hasattr(image, "item") and not isinstance(image, str)):
            image = images[int(image)]
        payload = {
            "image": Path(str(image)).stem,
            "label": label,
            "class": str(labels[label]) if 0 <= label < len(labels) else None,
            "subject": int(item.get("subject", -1)),
        }
        markers.append((start, json.dumps(payload)))
        segments.append(eeg.astype(np.float32, copy=False))
        start += eeg.shape[1]
    match = re.search(r"_(\d+)_(\d+)_", path.name)
    preprocessed = {
        "bandpass_hz": [int(match.group(1)), int(match.group(2))] if match else None,
        "normalized": "dataset",
        "format": "eeg-imagenet-pth",
    }
    return Recording(
        data=np.concatenate(segments, axis=1), sfreq=EEG_IMAGENET_SFREQ, ch_names=ch_names,
        ch_types=["eeg"] * len(ch_names), units=["volts"] * len(ch_names), markers=markers,
        preprocessed=preprocessed, source=str(path),
    )

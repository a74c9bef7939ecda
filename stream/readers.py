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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .units import VOLTAGE_CH_TYPES, unit_to_volts

logger = logging.getLogger(__name__)

#: Sample rate of the EEG-ImageNet ``.pth`` recordings (Hz).
EEG_IMAGENET_SFREQ = 1000.0
_VOLT_TYPES = VOLTAGE_CH_TYPES
_XDF_SUFFIXES = (".xdf", ".xdfz")


class DataFileError(ValueError):
    """A recording or dataset file cannot be read; the message names the file and the problem.

    The one error type of every file reader: ``RecordingError`` here and
    ``neuroimagen.training.data._io.DatasetFileError`` are this class.
    """


RecordingError = DataFileError


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


#: File kinds named in error messages, by suffix.
_KINDS = {".edf": "EDF", ".bdf": "BDF", ".fif": "FIF", ".gz": "FIF", ".vhdr": "BrainVision", ".set": "EEGLAB"}


def _read_mne(path: Path) -> Recording:
    import mne

    kind = _KINDS.get(path.suffix.lower(), path.suffix.lstrip(".").upper() or "recording")
    if kind in ("EDF", "BDF"):
        check_edf_size(path)
    try:
        raw = mne.io.read_raw(path, preload=True, verbose="error")
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:  # e.g. a .vhdr's missing .eeg
        raise RecordingError(f"{path}: cannot read it: {exc}") from None
    except Exception as exc:  # MNE's parsers raise ValueError, AssertionError, ... on bad bytes
        if "Unsupported file type" in str(exc) or "not supported" in str(exc).lower():
            raise RecordingError(
                f"{path}: not a recording format MNE reads (FIF, EDF, BDF, BrainVision, EEGLAB, ...), "
                "XDF or an EEG-ImageNet .pth"
            ) from None
        # MNE's own messages here are internals ("could not convert string to float: ''")
        logger.debug("mne.io.read_raw(%s) failed", path, exc_info=True)
        raise RecordingError(f"{path}: not a readable {kind} file (truncated or corrupt)") from None
    return recording_from_raw(raw, source=str(path))


def check_edf_size(path: Path) -> None:
    """Refuse an EDF/BDF file shorter than its header says (MNE would fail obscurely, or pad).

    The fixed header (256 bytes) gives the number of data records and of
    signals; the per-signal header gives the samples per record; a sample is 2
    bytes in EDF and 3 in BDF.

    Raises
    ------
    RecordingError
        The header is cut or unreadable, or the file holds fewer bytes than
        its data records need.
    """
    kind = "BDF" if path.suffix.lower() == ".bdf" else "EDF"
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(256)
        if len(head) < 256:
            raise RecordingError(f"{path}: truncated {kind} file: {size} bytes, the header alone needs 256")
        try:
            n_records = int(head[236:244].decode("ascii").strip())
            n_signals = int(head[252:256].decode("ascii").strip())
        except ValueError:
            raise RecordingError(f"{path}: not a valid {kind} file (unreadable header fields)") from None
        header_bytes = 256 * (n_signals + 1)
        if n_signals < 1 or size < header_bytes:
            raise RecordingError(
                f"{path}: truncated {kind} file: the header of {n_signals} signals needs "
                f"{header_bytes} bytes, the file has {size}"
            )
        f.seek(256 + n_signals * 216)
        try:
            per_record = [int(f.read(8).decode("ascii").strip()) for _ in range(n_signals)]
        except ValueError:
            raise RecordingError(f"{path}: not a valid {kind} file (unreadable samples-per-record)") from None
    record_bytes = sum(per_record) * (3 if kind == "BDF" else 2)
    if n_records > 0 and record_bytes > 0 and size < header_bytes + n_records * record_bytes:
        whole = (size - header_bytes) // record_bytes
        raise RecordingError(
            f"{path}: truncated {kind} file: the header announces {n_records} data records, the file "
            f"holds {whole} whole record(s) ({size} of {header_bytes + n_records * record_bytes} bytes)"
        )


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
        factor = unit_to_volts(unit, types[i])
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


# --------------------------------------------------------------------------- torch files (safe gate)


def _pickled_global(text: str) -> str | None:
    found = re.search(r"GLOBAL\s+([\w.]+)", text, re.IGNORECASE)
    return found.group(1) if found else None


def load_torch_file(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True, map_location="cpu")`` with one-line errors.

    The weights-only unpickler rebuilds tensors and plain containers (dict,
    list, tuple, str, int, float, bool, None) only; a pickled class or function
    is refused, never run. torch's own message is not passed on: it advises
    loading with the unsafe setting.

    Raises
    ------
    DataFileError
        The file is missing, truncated/corrupt, not a torch file, or holds
        pickled objects other than tensors and plain containers.
    """
    import pickle

    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise DataFileError(f"file not found: {p}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        name = _pickled_global(str(exc))
        if name is None:  # garbage bytes also end in the weights-only unpickler
            raise DataFileError(f"{p}: not a readable torch file (truncated, corrupt or another format)") from None
        raise DataFileError(
            f"{p}: refused to load: it holds pickled objects ({name}) other than tensors and plain "
            "containers (dict, list, str, int, float), which could run code. Re-save it with plain types."
        ) from None
    except Exception:  # torch raises RuntimeError, EOFError, KeyError, ... for non-torch bytes
        # its messages are internals ("KeyError: 101") or advice we do not give
        logger.debug("torch.load(%s) failed", p, exc_info=True)
        raise DataFileError(f"{p}: not a readable torch file (truncated, corrupt or another format)") from None


def require_keys(obj: Any, keys: Iterable[str], path: Path | str, where: str = "top level") -> None:
    """Check ``obj`` is a mapping holding every key; the error names file, place and keys."""
    if not isinstance(obj, Mapping):
        raise DataFileError(f"{path}: expected a dict at {where}, found {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        have = ", ".join(map(repr, list(obj)[:12]))
        raise DataFileError(
            f"{path}: missing key(s) {', '.join(map(repr, missing))} at {where} (found: {have})"
        )


# --------------------------------------------------------------------------- EEG-ImageNet .pth: the one parser

WNID_RE = re.compile(r"^n\d{8}$")
STEM_RE = re.compile(r"^(n\d{8})_\d+$")
EEG_IMAGENET_N_CHANNELS = 128
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class EEGImageNetFile:
    """A validated EEG-ImageNet ``.pth`` file (Spampinato et al., CVPR 2017).

    Attributes
    ----------
    path : Path
    segments : list of dict
        ``eeg`` (floating torch tensor (n_channels, T), as stored; T about 500
        samples at 1 kHz), ``label``, ``image``, ``subject`` (ints; ``label``
        indexes ``labels``, ``image`` indexes ``images``, subjects count from 1).
    labels : list of str
        WordNet ids (``n02951358``).
    images : list of str
        Image stems ``<wnid>_<number>``.
    means, stddevs : tensor | None
        Present in the raw variant (``eeg_signals_raw_with_mean_std.pth``) only.
    """

    path: Path
    segments: list[dict[str, Any]]
    labels: list[str]
    images: list[str]
    means: Any = None
    stddevs: Any = None

    @property
    def is_raw(self) -> bool:
        return self.means is not None

    @property
    def subjects(self) -> list[int]:
        return sorted({s["subject"] for s in self.segments})

    @property
    def n_times(self) -> np.ndarray:
        """Length T of every segment, shape (n_segments,), int64."""
        return np.array([s["eeg"].shape[1] for s in self.segments], dtype=np.int64)


def _as_int(value: Any, path: Path, where: str) -> int:
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype.is_floating_point or value.dtype == torch.bool:
            raise DataFileError(
                f"{path}: {where} must be an integer, got a {value.dtype} tensor of shape {tuple(value.shape)}"
            )
        return int(value.item())
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise DataFileError(f"{path}: {where} must be an integer, got {type(value).__name__}")
    return int(value)


def _string_list(obj: Any, path: Path, key: str, pattern: re.Pattern[str], example: str) -> list[str]:
    if not isinstance(obj, list | tuple) or not obj:
        raise DataFileError(f"{path}: key {key!r} must be a non-empty list of strings")
    bad = [x for x in obj if not isinstance(x, str) or not pattern.match(x)]
    if bad:
        raise DataFileError(
            f"{path}: key {key!r} holds {len(bad)} malformed entr(y/ies), first {bad[0]!r} "
            f"(expected like {example!r})"
        )
    return list(obj)


def read_eeg_imagenet(path: str | Path, n_channels: int | None = EEG_IMAGENET_N_CHANNELS) -> EEGImageNetFile:
    """Load and validate an EEG-ImageNet ``.pth`` file: the one parser of the format.

    ``torch.save`` of a dict: ``dataset`` (list of ``{"eeg": float tensor
    (128, T), "label": int, "image": int, "subject": int}``), ``labels`` (40
    WordNet ids) and ``images`` (stems); the raw variant adds ``means`` and
    ``stddevs``. Read with :func:`load_torch_file` (weights-only).

    Parameters
    ----------
    path : path
    n_channels : int | None
        Channels every segment must have (None: any, the same for all).

    Raises
    ------
    DataFileError
        Naming the file and key: not a torch file, pickled objects, missing
        keys, a segment whose ``eeg`` is not a floating (n_channels, T) tensor,
        labels/images out of range, malformed WordNet ids or stems.
    """
    import torch

    obj = load_torch_file(path)
    p = Path(path)
    keys = ("dataset", "labels", "images")
    if not isinstance(obj, Mapping):
        raise DataFileError(
            f"{p}: not an EEG-ImageNet file: expected a dict with keys {', '.join(map(repr, keys))}, "
            f"found {type(obj).__name__}"
        )
    missing = [k for k in keys if k not in obj]
    if missing:
        have = ", ".join(map(repr, list(obj)[:12]))
        raise DataFileError(
            f"{p}: not an EEG-ImageNet file: missing key(s) {', '.join(map(repr, missing))} at top "
            f"level (found: {have})"
        )
    labels = _string_list(obj["labels"], p, "labels", WNID_RE, "n02951358")
    images = _string_list(obj["images"], p, "images", STEM_RE, "n02951358_31190")
    data = obj["dataset"]
    if not isinstance(data, list | tuple) or not data:
        raise DataFileError(f"{p}: key 'dataset' must be a non-empty list of segments")
    segments: list[dict[str, Any]] = []
    for i, seg in enumerate(data):
        where = f"dataset[{i}]"
        require_keys(seg, ("eeg", "label", "image", "subject"), p, where)
        eeg = seg["eeg"]
        if not isinstance(eeg, torch.Tensor) or not eeg.dtype.is_floating_point or eeg.ndim != 2:
            desc = (
                f"{eeg.dtype} tensor of shape {tuple(eeg.shape)}"
                if isinstance(eeg, torch.Tensor) else type(eeg).__name__
            )
            raise DataFileError(f"{p}: {where}['eeg'] must be a floating (n_channels, T) tensor, got {desc}")
        expected = n_channels if n_channels is not None else segments[0]["eeg"].shape[0] if segments else None
        if expected is not None and eeg.shape[0] != expected:
            raise DataFileError(
                f"{p}: {where}['eeg'] has {eeg.shape[0]} channels, expected {expected} (shape {tuple(eeg.shape)})"
            )
        label = _as_int(seg["label"], p, f"{where}['label']")
        image = _as_int(seg["image"], p, f"{where}['image']")
        subject = _as_int(seg["subject"], p, f"{where}['subject']")
        if not 0 <= label < len(labels):
            raise DataFileError(f"{p}: {where}['label'] = {label} is outside the {len(labels)} labels")
        if not 0 <= image < len(images):
            raise DataFileError(f"{p}: {where}['image'] = {image} is outside the {len(images)} images")
        if subject < 1:
            raise DataFileError(f"{p}: {where}['subject'] = {subject}; subjects count from 1")
        segments.append({"eeg": eeg, "label": label, "image": image, "subject": subject})
    mismatched = sum(
        STEM_RE.match(images[s["image"]]).group(1) != labels[s["label"]] for s in segments  # type: ignore[union-attr]
    )
    if mismatched:
        logger.warning("%s: %d segment(s) whose label's WordNet id differs from their image's", p, mismatched)
    means = stddevs = None
    if "means" in obj or "stddevs" in obj:
        require_keys(obj, ("means", "stddevs"), p)
        means, stddevs = obj["means"], obj["stddevs"]
        for key, val in (("means", means), ("stddevs", stddevs)):
            if not isinstance(val, torch.Tensor) or not val.dtype.is_floating_point:
                raise DataFileError(f"{p}: key {key!r} must be a floating tensor, got {type(val).__name__}")
    return EEGImageNetFile(p, segments, labels, images, means, stddevs)


def read_splits(path: str | Path) -> list[dict[str, list[int]]]:
    """Load and validate a ``block_splits_by_image_*.pth`` file.

    Returns
    -------
    list of dict
        One ``{"train": [...], "val": [...], "test": [...]}`` per split, ints.
    """
    import torch

    obj = load_torch_file(path)
    p = Path(path)
    require_keys(obj, ("splits",), p)
    splits = obj["splits"]
    if not isinstance(splits, list | tuple) or not splits:
        raise DataFileError(f"{p}: key 'splits' must be a non-empty list")
    out = []
    for k, sp in enumerate(splits):
        require_keys(sp, SPLIT_NAMES, p, f"splits[{k}]")
        entry = {}
        for name in SPLIT_NAMES:
            idx = sp[name]
            if isinstance(idx, torch.Tensor):
                idx = idx.tolist()
            if not isinstance(idx, list | tuple):
                raise DataFileError(f"{p}: splits[{k}][{name!r}] must be a list of indices")
            entry[name] = [_as_int(v, p, f"splits[{k}][{name!r}]") for v in idx]
        out.append(entry)
    return out


def _read_pth(path: Path) -> Recording:
    from .montage import montage_ch_names

    f = read_eeg_imagenet(path)
    ch_names = montage_ch_names()
    segments, markers, start = [], [], 0
    for seg in f.segments:
        eeg = seg["eeg"].detach().cpu().numpy().astype(np.float32, copy=False)
        label = seg["label"]
        payload = {
            "image": f.images[seg["image"]],
            "label": label,
            "class": f.labels[label],
            "subject": seg["subject"],
        }
        markers.append((start, json.dumps(payload)))
        segments.append(eeg)
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

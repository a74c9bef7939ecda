"""Stimulus sets and presentation schedules: what the presenter shows, when, and what each marker says.

Shared by the stimulus presenter (``neuroimagen present``, gui/present.py) and the
offline simulated session (training/data/twin/subject.py), so a session generated
offline follows the same schedule a live one would.

Stimulus folder (:func:`load_stimuli`)
--------------------------------------
::

    images/<class>/<stem>.<png|jpg|jpeg|bmp|gif>   one folder per class (its name is the class id)
    images/class_names.yaml   optional: ``<class id>: <readable name>`` (else the folder name)
    images/captions.json      optional: ``{"<stem>": "<caption>"}``

A twin's folder is one (``TWIN/images``; its class names sit one level up in
``TWIN/class_names.yaml`` and its captions in ``TWIN/captions.json``, both found).

Marker payload (:func:`marker_payload`)
---------------------------------------
One JSON object per onset, a superset of the replay markers' (``stream replay``
of a twin recording)::

    {"image": "<stem>", "label": <class index in the set>, "class": "<class id>",
     "class_name": "<readable>", "index": <trial number from 0>, "test": <bool>}

Session folder (:func:`write_session`, :func:`read_session`)
-------------------------------------------------------------
``session.json`` (stimulus folder, class ids and names, the design, the EEG file,
every trial with its intended onset and, live, its flip and marker times) beside
the EEG: the recorder's ``streams/`` and, once finalized, ``<eeg name>_raw.fif``
(markers as FIF annotations). :func:`read_session` finalizes an interrupted
recording first, so a session cut short still calibrates on what it holds.

Rapid-event schedule (:func:`make_schedule`)
--------------------------------------------
Every image of the set is shown once per pass in a random order, except
``n_test_per_class`` images per class (the test images, the same in every pass),
each shown ``test_repeats`` times per pass; ``n_passes`` passes follow each
other, each in its own order; onsets are
``soa_s`` plus a uniform jitter in ``[0, jitter_s)`` apart, with a break of
``break_s`` after every ``break_every`` trials. ``order="block"`` groups the trials
by class instead: allowed, but it confounds class with time (slow drifts, arousal,
electrode gel drying all then decode the class; see ``neuroimagen eval leak``), so
:func:`make_schedule` logs a warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_SUFFIXES",
    "Stimulus",
    "StimulusSet",
    "Trial",
    "load_stimuli",
    "SESSION_FILE",
    "make_schedule",
    "marker_payload",
    "read_session",
    "write_session",
]

SESSION_FILE = "session.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
BLOCK_WARNING = (
    "block design: every class is shown in one block, so class is confounded with time "
    "(drifts in the recording decode the class; `neuroimagen eval leak` explains); use the "
    "rapid-event design (the default) for data you train or calibrate on"
)


@dataclass(frozen=True)
class Stimulus:
    """One image: its file, stem (the image id), class index, class id and readable name, caption."""

    path: Path
    stem: str
    label: int
    class_id: str
    class_name: str
    caption: str | None = None


@dataclass(frozen=True)
class StimulusSet:
    """Images with labels: ``classes`` (ids, in label order), ``class_names``, ``stimuli``."""

    root: Path
    classes: tuple[str, ...]
    class_names: tuple[str, ...]
    stimuli: tuple[Stimulus, ...]

    def by_stem(self) -> dict[str, Stimulus]:
        return {s.stem: s for s in self.stimuli}


@dataclass(frozen=True)
class Trial:
    """One onset of the schedule.

    Attributes
    ----------
    index : int
        Trial number from 0.
    onset_s : float
        Intended onset, seconds after the first trial's intended onset.
    stimulus : Stimulus
    test : bool
        A test image (shown repeatedly; calibration holds these out).
    """

    index: int
    onset_s: float
    stimulus: Stimulus
    test: bool

    def to_dict(self) -> dict:
        d = asdict(self.stimulus)
        d["path"] = str(self.stimulus.path)
        return {"index": self.index, "onset_s": self.onset_s, "test": self.test, **d}


def _read_class_names(root: Path) -> dict[str, str]:
    import yaml

    for path in (root / "class_names.yaml", root.parent / "class_names.yaml"):
        if path.is_file():
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected a mapping '<class id>: <name>'")
            return {str(k): str(v) for k, v in data.items()}
    return {}


def _read_captions(root: Path) -> dict[str, str]:
    for path in (root / "captions.json", root.parent / "captions.json"):
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"{path}: expected an object {{stem: caption}}")
            return {str(k): str(v) for k, v in data.items()}
    return {}


def load_stimuli(root: str | Path) -> StimulusSet:
    """Read a stimulus folder (one subfolder per class; see the module notes).

    Raises
    ------
    FileNotFoundError
        ``root`` is not a folder.
    ValueError
        No class folder with images, or two images share a stem (the stem is the image id).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"stimulus folder {root} not found")
    names = _read_class_names(root)
    captions = _read_captions(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes, stimuli, seen = [], [], {}
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            continue
        label = len(classes)
        classes.append(folder.name)
        for f in files:
            if f.stem in seen:
                raise ValueError(f"image id {f.stem!r} appears twice: {seen[f.stem]} and {f} "
                                 "(file stems are the image ids in the markers)")
            seen[f.stem] = f
            stimuli.append(Stimulus(f, f.stem, label, folder.name, names.get(folder.name, folder.name),
                                    captions.get(f.stem)))
    if not classes:
        raise ValueError(f"{root}: no class folders with images ({', '.join(IMAGE_SUFFIXES)}); "
                         "expected <root>/<class>/<image>")
    return StimulusSet(root, tuple(classes), tuple(names.get(c, c) for c in classes), tuple(stimuli))


def make_schedule(
    stimuli: StimulusSet,
    *,
    soa_s: float = 0.6,
    jitter_s: float = 0.2,
    n_test_per_class: int = 1,
    test_repeats: int = 4,
    n_passes: int = 1,
    test_stems: Collection[str] | None = None,
    break_every: int = 150,
    break_s: float = 10.0,
    order: Literal["rapid", "block"] = "rapid",
    max_trials: int | None = None,
    max_duration_s: float | None = None,
    seed: int = 0,
) -> list[Trial]:
    """The presentation schedule (see the module notes).

    Parameters
    ----------
    stimuli : StimulusSet
    soa_s, jitter_s : float
        Onset asynchrony and its uniform jitter, seconds.
    n_test_per_class, test_repeats : int
        Test images per class (0: none) and how often each is shown per pass.
    n_passes : int
        Passes over the set (each its own random order).
    test_stems : collection of str | None
        These images are the test images (``n_test_per_class`` is then ignored), e.g.
        a dataset's test split, so the held-out images are the ones no model trained on.
    break_every, break_s : trials between breaks (0: none) and break length, seconds
    order : "rapid" (random order; default) or "block" (one class per block; warns)
    max_trials, max_duration_s : cut the schedule (None: all)
    seed : int
        Order, test-image choice and jitter.

    Returns
    -------
    list of Trial, in presentation order (onsets increasing).
    """
    if soa_s <= 0 or jitter_s < 0:
        raise ValueError(f"soa_s must be > 0 and jitter_s >= 0, got {soa_s}, {jitter_s}")
    if n_passes < 1:
        raise ValueError(f"n_passes must be >= 1, got {n_passes}")
    if order not in ("rapid", "block"):
        raise ValueError(f"order must be 'rapid' or 'block', got {order!r}")
    rng = np.random.default_rng(seed)
    # 1. test images: n_test_per_class per class, shown test_repeats times
    items: list[tuple[Stimulus, bool]] = []
    for label in range(len(stimuli.classes)):
        members = [s for s in stimuli.stimuli if s.label == label]
        if test_stems is not None:
            test = {k for k, s in enumerate(members) if s.stem in test_stems}
        else:
            n_test = min(n_test_per_class, max(0, len(members) - 1))
            test = set(rng.choice(len(members), size=n_test, replace=False).tolist()) if n_test else set()
        for k, s in enumerate(members):
            items += [(s, True)] * test_repeats if k in test else [(s, False)]
    # 2. order, pass by pass
    if order == "block":
        logger.warning(BLOCK_WARNING)
    one_pass, items = items, []
    for _ in range(n_passes):
        if order == "block":
            by_class = [[it for it in one_pass if it[0].label == c] for c in rng.permutation(len(stimuli.classes))]
            items += [by[i] for by in by_class for i in rng.permutation(len(by))]
        else:
            items += [one_pass[i] for i in rng.permutation(len(one_pass))]
    if max_trials is not None:
        items = items[:max_trials]
    # 3. onsets: SOA + jitter, breaks
    trials, t = [], 0.0
    for i, (stim, test) in enumerate(items):
        if i:
            t += soa_s + float(rng.uniform(0.0, jitter_s)) if jitter_s else soa_s
            if break_every and i % break_every == 0:
                t += break_s
        if max_duration_s is not None and t > max_duration_s:
            break
        trials.append(Trial(i, round(t, 6), stim, test))
    return trials


def marker_payload(trial: Trial) -> str:
    """The JSON marker payload of a trial (see the module notes)."""
    s = trial.stimulus
    return json.dumps({"image": s.stem, "label": s.label, "class": s.class_id, "class_name": s.class_name,
                       "index": trial.index, "test": trial.test})


def write_session(out_dir: str | Path, meta: dict) -> Path:
    """Write (or rewrite, atomically) ``session.json`` in ``out_dir``; returns its path."""
    import os

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{SESSION_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    os.replace(tmp, out / SESSION_FILE)
    return out / SESSION_FILE


def read_session(session_dir: str | Path):
    """A session's metadata and its EEG recording (markers included).

    Returns
    -------
    meta : dict
        ``session.json``.
    recording : neuroimagen.stream.readers.Recording
        The EEG with the markers as ``(sample, payload)``.

    Raises
    ------
    FileNotFoundError
        No ``session.json``, or no EEG recording in the folder.
    """
    from .readers import read_recording

    root = Path(session_dir)
    path = root / SESSION_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{root}: not a session folder (no {SESSION_FILE}; "
                                "`neuroimagen present` or `neuroimagen stream simulate-session` write one)")
    meta = json.loads(path.read_text(encoding="utf-8"))
    eeg = root / str(meta.get("eeg_file", ""))
    if not eeg.is_file() and (root / "streams").is_dir():
        from .record import finalize

        logger.warning("%s: the recording was not finalized (interrupted?): finalizing it now", root)
        finalize(root)
    if not eeg.is_file():
        raise FileNotFoundError(f"{root}: the session's EEG file {meta.get('eeg_file')!r} is missing")
    return meta, read_recording(eeg)

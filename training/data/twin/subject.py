"""A new twin subject as a headset: the twin's background plus its evoked response to what is shown.

:class:`TwinSubjectSource` is the signal of one subject that is new (drawn from a
seed the twin's own subjects never use, with the ``wide`` subject variation of
:mod:`.eeg` by default): the twin's background EEG (:func:`.eeg.background`, made
in blocks of ``block_s`` joined by a variance-preserving cos/sin cross-fade), plus,
for every onset it is told about, that image's evoked response for this subject
(:func:`.eeg.subject_evoked`; class, layout and colour from the twin's
``stimuli.json``). It is a pure function of the onsets it was given and the
absolute sample index, in any chunking.

Two ways to drive it, one code path:

- live, :class:`SimulatedSubject` (``neuroimagen stream simulate --twin-subject
  SEED``): a paced LSL outlet (:class:`~neuroimagen.stream.replay.PacedStreamer`)
  that listens to a marker stream (the presenter's ``<name>-markers``) and adds
  each marker's response at the sample its timestamp falls on. Chunks are
  pushed ``delay_s`` after they are due (an amplifier's transmission delay), so a
  marker pushed at the flip arrives before the samples it marks are written.
- offline, :func:`simulate_session` (``neuroimagen stream simulate-session``):
  the same source fed a schedule (:func:`neuroimagen.stream.design.make_schedule`)
  directly, written as a session folder (``session.json`` + FIF with the
  markers) that ``train calibrate`` reads like a recorded one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from neuroimagen.stream.design import Trial, marker_payload, write_session
from neuroimagen.stream.replay import PacedStreamer
from neuroimagen.stream.worker import Worker

from ...config import TwinConfig
from .eeg import EPOCH_S, VARIATIONS, SubjectVariation, background, draw_subject, subject_evoked
from .make import STIMULI_FILE, TWIN_JSON, rebuild_model

__all__ = ["SimulatedSubject", "TwinSubjectSource", "simulate_session"]

logger = logging.getLogger(__name__)

#: seed-sequence tag of new subjects (the twin's own come from SeedSequence(seed).spawn)
_NEW_SUBJECT = 0x5B1EC7


class TwinSubjectSource:
    """The EEG of one new twin subject (see the module notes).

    Parameters
    ----------
    twin_dir : path
        A twin folder (``neuroimagen data make-twin``): twin.json and stimuli.json.
    subject_seed : int
        Draws the subject, its background and its trial jitter.
    variation : SubjectVariation | str
        ``"wide"`` (default) or ``"narrow"`` (:mod:`.eeg`).
    block_s, crossfade_s : float
        Background block length and the cross-fade between blocks, seconds.

    Attributes
    ----------
    ch_names : list of str
    sfreq : float
    subject : :class:`.eeg.Subject`
    n_onsets, n_unknown : int
        Responses added; markers naming an image the twin does not have (no response).

    Notes
    -----
    Not thread-safe: one thread adds onsets and pulls chunks.
    """

    def __init__(self, twin_dir: str | Path, subject_seed: int, variation: SubjectVariation | str = "wide",
                 block_s: float = 10.0, crossfade_s: float = 0.5) -> None:
        root = Path(twin_dir)
        if not (root / TWIN_JSON).is_file():
            raise FileNotFoundError(f"{root}: not a twin folder (no {TWIN_JSON}; `neuroimagen data make-twin`)")
        meta = json.loads((root / TWIN_JSON).read_text())
        self.twin_dir = root
        self.cfg = TwinConfig.model_validate(meta["config"])
        self.sfreq = float(meta["sfreq"])
        self.ch_names = list(meta["ch_names"])
        self.model = rebuild_model(meta)
        if isinstance(variation, str):
            if variation not in VARIATIONS:
                raise ValueError(f"variation must be one of {sorted(VARIATIONS)}, got {variation!r}")
            variation = VARIATIONS[variation]
        self.variation = variation
        self.subject_seed = int(subject_seed)
        self._seed = [int(self.cfg.seed), _NEW_SUBJECT, self.subject_seed]
        self.subject = draw_subject(self.model, np.random.default_rng(self._seed), variation)
        stim = json.loads((root / STIMULI_FILE).read_text())
        self._layout = {k: (int(v["label"]), (v["cx"], v["cy"], v["size"], v["hue"])) for k, v in stim.items()}
        self.n_ep = int(round(EPOCH_S * self.sfreq))
        self.block = int(round(block_s * self.sfreq))
        self.fade = int(round(crossfade_s * self.sfreq))
        if not 0 < self.fade < self.block:
            raise ValueError(f"need 0 < crossfade_s < block_s, got {crossfade_s}, {block_s}")
        self._blocks: dict[int, np.ndarray] = {}
        self._epochs: list[tuple[int, np.ndarray]] = []
        self.n_onsets = self.n_unknown = 0

    def describe(self) -> dict:
        """The subject's draws and how it was made (saved with a simulated session)."""
        return {"twin": str(self.twin_dir), "twin_seed": int(self.cfg.seed), "subject_seed": self.subject_seed,
                "variation": self.variation.__dict__, "subject": self.subject.to_dict()}

    # ------------------------------------------------------------------ onsets
    def add_onset(self, onset: int, image: str) -> bool:
        """Add ``image``'s evoked response starting at absolute sample ``onset``; False if unknown."""
        found = self._layout.get(image)
        if found is None:
            self.n_unknown += 1
            if self.n_unknown <= 5:
                logger.warning("marker names image %r, which the twin %s does not have: no response",
                               image, self.twin_dir)
            return False
        label, layout = found
        rng = np.random.default_rng([*self._seed, 0x7121A1, int(onset)])
        ep = subject_evoked(self.model, self.subject, self.n_ep, self.sfreq, np.array([0]), np.array([label]),
                            np.array([layout]), self.cfg, rng)
        self._epochs.append((int(onset), ep))
        self.n_onsets += 1
        return True

    def add_marker(self, onset: int, payload: str) -> bool:
        """Add the response to a marker payload (JSON with ``image``); False if it names none."""
        try:
            image = json.loads(payload).get("image")
        except (json.JSONDecodeError, AttributeError):
            image = None
        if image is None:
            logger.debug("marker %r names no image: ignored", payload)
            return False
        return self.add_onset(onset, str(image))

    # ------------------------------------------------------------------ signal
    def _background_block(self, b: int) -> np.ndarray:
        blk = self._blocks.get(b)
        if blk is None:
            n = self.block + self.fade
            rng = np.random.default_rng([*self._seed, 0xB6, b])
            blk = background(self.model, n, self.sfreq, np.array([[0, n]]), self.cfg, rng)
            self._blocks[b] = blk
            for old in [k for k in self._blocks if k < b - 1]:
                del self._blocks[old]
        return blk

    def background(self, start: int, n: int) -> np.ndarray:
        """Background samples ``start .. start + n``, (n_channels, n) float32, V."""
        out = np.empty((len(self.ch_names), n), dtype=np.float32)
        i = start
        while i < start + n:
            b, j = divmod(i, self.block)
            stop = min(start + n, (b + 1) * self.block)
            cur = self._background_block(b)[:, j : j + stop - i]
            if b > 0 and j < self.fade:
                m = min(stop, b * self.block + self.fade) - i
                theta = (np.pi / 2) * (j + np.arange(m)) / self.fade
                prev = self._background_block(b - 1)[:, self.block + j : self.block + j + m]
                out[:, i - start : i - start + m] = np.cos(theta) * prev + np.sin(theta) * cur[:, :m]
                out[:, i - start + m : stop - start] = cur[:, m:]
            else:
                out[:, i - start : stop - start] = cur
            i = stop
        return out

    def chunk(self, start: int, n: int) -> np.ndarray:
        """Samples ``start .. start + n`` of the subject's EEG, (n_channels, n) float32, V."""
        out = self.background(start, n)
        keep = []
        for onset, ep in self._epochs:
            a, b = max(start, onset), min(start + n, onset + self.n_ep)
            if a < b:
                out[:, a - start : b - start] += ep[:, a - onset : b - onset]
            if onset + self.n_ep > start + n:
                keep.append((onset, ep))
        self._epochs = keep
        return out


class _MarkerListener(Worker):
    """Find the marker stream by name (retrying until it appears), then keep its markers."""

    def __init__(self, name: str, retry_s: float = 0.5) -> None:
        super().__init__(f"subject-markers[{name}]")
        self.name, self.retry_s = name, float(retry_s)
        self._inlet = None
        self._markers: list[tuple[float, str]] = []
        import threading

        self._lock = threading.Lock()
        self.connected = False

    def pop(self) -> list[tuple[float, str]]:
        with self._lock:
            out, self._markers = self._markers, []
        return out

    def _run(self) -> None:
        import pylsl

        while not self.stopping and self._inlet is None:
            found = pylsl.resolve_byprop("name", self.name, 1, self.retry_s)
            if found:
                import socket

                # one host, one clock: a clock-offset estimate (tens of us of noise) would only move
                # markers by a sample now and then; another host's markers need it
                remote = found[0].hostname() != socket.gethostname()
                inlet = pylsl.StreamInlet(found[0], processing_flags=pylsl.proc_clocksync if remote else pylsl.proc_none)
                inlet.open_stream(5.0)
                if remote:  # the first clock-offset estimate blocks; take it now, not on the first marker
                    inlet.time_correction(5.0)
                self._inlet, self.connected = inlet, True
                logger.info("listening to marker stream %r", self.name)
        while not self.stopping:
            # a blocking pull (GIL released while waiting) wakes as soon as a marker arrives
            sample, ts = self._inlet.pull_sample(timeout=0.05)
            if ts is not None:
                with self._lock:
                    self._markers.append((float(ts), str(sample[0])))

    def _on_stop(self) -> None:
        if self._inlet is not None:
            self._inlet.close_stream()
        self._inlet = None


class SimulatedSubject(PacedStreamer):
    """A new twin subject as an LSL headset that responds to a marker stream.

    Parameters
    ----------
    source : TwinSubjectSource
    name : str
        EEG outlet name.
    marker_stream : str | None
        Marker stream to listen to (default ``f"{name}-markers"``: the presenter's).
    duration_s : float | None
        Stop after this long (None: until stopped).
    chunk_s, delay_s : float
        Samples per push, and the push delay: a marker must arrive within it (0.5 s
        leaves room for a loaded machine; a real amplifier's is tens of ms).
    wait_for_consumers_s : float
        Hold the first sample until the outlet has a consumer (tests).
    source_id : str | None

    Attributes
    ----------
    n_markers, n_late : int
        Markers heard; markers whose onset sample was already pushed (their
        response starts late, with the part already sent missing).

    Notes
    -----
    A :class:`~neuroimagen.stream.worker.Worker` (via PacedStreamer); the marker
    listener is a second Worker started and stopped with it. A marker at LSL time
    ``ts`` lands on sample ``round((ts - t0) * sfreq)``, the sample stamped nearest ``ts``.
    """

    def __init__(self, source: TwinSubjectSource, name: str = "NeuroImagenSubject",
                 marker_stream: str | None = None, duration_s: float | None = None, chunk_s: float = 0.02,
                 delay_s: float = 0.5, wait_for_consumers_s: float = 0.0, source_id: str | None = None) -> None:
        import uuid

        from neuroimagen.stream.replay import make_stream_info

        self.subject_source = source
        self.name = name
        self.marker_stream = marker_stream or f"{name}-markers"
        sid = source_id or f"neuroimagen-twin-subject-{source.subject_seed}-{uuid.uuid4().hex[:8]}"
        self.source_id = sid
        n = len(source.ch_names)
        info = make_stream_info(name, source.sfreq, source.ch_names, ["eeg"] * n, ["volts"] * n, source_id=sid,
                                extra={"simulated": "true", "twin_subject_seed": str(source.subject_seed)})
        super().__init__(info, None, self._chunk, source.sfreq,
                         n_total=None if duration_s is None else round(duration_s * source.sfreq),
                         chunk_size=max(1, round(chunk_s * source.sfreq)),
                         wait_for_consumers_s=wait_for_consumers_s, delay_s=delay_s)
        self._listener = _MarkerListener(self.marker_stream)
        self.n_markers = self.n_late = 0
        self.onsets: list[tuple[int, str]] = []

    def _setup(self) -> None:
        super()._setup()
        self.n_markers = self.n_late = 0
        self.onsets = []
        self._listener.start()

    def _on_stop(self) -> None:
        try:
            self._listener.stop()
        finally:
            super()._on_stop()

    def _chunk(self, start: int, n: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        self._listener.check()
        t0 = self.t0
        for ts, payload in self._listener.pop():
            if t0 is None or ts < t0:
                continue
            onset = int(round((ts - t0) * self._sfreq))
            self.n_markers += 1
            if onset < start:
                self.n_late += 1
                logger.warning("marker %r arrived %.0f ms after its sample was pushed",
                               payload, 1e3 * (start - onset) / self._sfreq)
            if self.subject_source.add_marker(onset, payload):
                self.onsets.append((onset, payload))
        return self.subject_source.chunk(start, n), []


def simulate_session(
    out_dir: str | Path,
    source: TwinSubjectSource,
    trials: Sequence[Trial],
    *,
    name: str = "NeuroImagenSubject",
    lead_in_s: float = 2.0,
    tail_s: float = 1.0,
    chunk_s: float = 1.0,
    stimuli_root: str | Path | None = None,
    design: dict | None = None,
    progress: Callable[[float], None] | None = None,
) -> Path:
    """Write a session folder of ``source`` watching ``trials``, offline (the live code path).

    The onsets go to :meth:`TwinSubjectSource.add_marker` with the payloads the
    presenter would send, then the signal is pulled chunk by chunk as the live
    headset pulls it, and written as ``<name>_raw.fif`` (markers as annotations)
    beside ``session.json``.

    Parameters
    ----------
    out_dir : path
        Created; must not hold a session already.
    source : TwinSubjectSource
    trials : sequence of Trial
        The schedule (onsets relative to the first trial).
    lead_in_s, tail_s : float
        Signal before the first onset and after the last epoch.
    progress : callable(fraction) | None

    Returns
    -------
    Path
        The session folder.
    """
    import mne

    from neuroimagen.stream.design import SESSION_FILE
    from neuroimagen.stream.montage import DEFAULT_MONTAGE, get_montage

    out = Path(out_dir)
    if (out / SESSION_FILE).exists():
        raise FileExistsError(f"{out} already holds a session ({SESSION_FILE})")
    out.mkdir(parents=True, exist_ok=True)
    sf = source.sfreq
    lead = int(round(lead_in_s * sf))
    onsets = [lead + int(round(t.onset_s * sf)) for t in trials]
    payloads = [marker_payload(t) for t in trials]
    for onset, payload in zip(onsets, payloads, strict=True):
        source.add_marker(onset, payload)
    n_total = (onsets[-1] if onsets else lead) + source.n_ep + int(round(tail_s * sf))
    step = max(1, int(round(chunk_s * sf)))
    data = np.empty((len(source.ch_names), n_total), dtype=np.float32)
    for a in range(0, n_total, step):
        b = min(n_total, a + step)
        data[:, a:b] = source.chunk(a, b - a)
        if progress is not None:
            progress(b / n_total)
    info = mne.create_info(source.ch_names, sf, "eeg")
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.set_montage(get_montage(DEFAULT_MONTAGE), verbose=False)
    raw.set_annotations(mne.Annotations(onset=np.asarray(onsets) / sf, duration=np.zeros(len(onsets)),
                                        description=payloads))
    eeg_file = f"{name}_raw.fif"
    raw.save(out / eeg_file, fmt="single", overwrite=True, verbose=False)
    trial_dicts = [{**t.to_dict(), "onset_sample": o} for t, o in zip(trials, onsets, strict=True)]
    write_session(out, {
        "version": 1,
        "kind": "simulated-offline",
        "eeg_file": eeg_file,
        "eeg_stream": name,
        "stimuli": str(stimuli_root) if stimuli_root is not None else str(source.twin_dir / "images"),
        "design": dict(design or {}),
        "simulated_subject": source.describe(),
        "n_trials": len(trials),
        "trials": trial_dicts,
    })
    logger.info("simulated session: %d trials, %.1f s, written to %s", len(trials), n_total / sf, out)
    return out

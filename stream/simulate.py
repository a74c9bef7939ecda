"""A simulated 128-channel headset: realistic background EEG as LSL, no hardware.

The signal is a pure function of (seed, absolute sample index), so any
chunking gives the same samples (:func:`simulate_eeg`), and the same seed gives
the same stream on every run.

Model (volts, float32)
----------------------
- 1/f background: 16 latent sources, each a sum of sinusoids on a 0.1 Hz grid
  from 0.5 to 120 Hz with amplitude ~ f^-1/2 (so power ~ 1/f) and seeded random
  phases, mixed into the channels by a seeded matrix (spatially correlated,
  like volume conduction); about 15 uV RMS per channel.
- posterior alpha: one source of sinusoids in 8.5-11.5 Hz (peak 10 Hz) scaled
  by how posterior the channel is (montage y coordinate), ~20 uV RMS at Oz.
- line noise at ``line_freq_hz`` (4-8 uV per channel, seeded amplitude/phase).
- white sensor noise (~1 uV RMS), drawn per 1000-sample block from a
  counter-seeded generator.

Markers every ``marker_interval_s`` (first at one interval): JSON payloads
``{"image": "sim_000001", "label": 1, "class": "n90000001", "index": 1}``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .config import SimulateConfig
from .replay import PacedStreamer

logger = logging.getLogger(__name__)

N_SOURCES = 16
N_CLASSES = 40
_BLOCK = 1000
_FREQS = np.arange(0.5, 120.0, 0.1)
_ALPHA_FREQS = np.arange(8.5, 11.5, 0.1)


@dataclass(frozen=True)
class _Model:
    mixing: np.ndarray        # (n_channels, N_SOURCES)
    phases: np.ndarray        # (N_SOURCES, n_freqs)
    amps: np.ndarray          # (n_freqs,)
    alpha_phases: np.ndarray  # (n_alpha,)
    alpha_amps: np.ndarray    # (n_alpha,)
    alpha_weight: np.ndarray  # (n_channels,)
    line_amp: np.ndarray      # (n_channels,)
    line_phase: np.ndarray    # (n_channels,)


def sim_ch_names(n_channels: int) -> list[str]:
    """The default montage's names for 128 channels; ``sim000..`` otherwise."""
    from .montage import montage_ch_names

    names = montage_ch_names()
    return names if n_channels == len(names) else [f"sim{i:03d}" for i in range(n_channels)]


@lru_cache(maxsize=8)
def _model(seed: int, n_channels: int) -> _Model:
    rng = np.random.default_rng([seed, 0xEE6])
    mixing = rng.standard_normal((n_channels, N_SOURCES)) / np.sqrt(N_SOURCES)
    phases = rng.uniform(0, 2 * np.pi, (N_SOURCES, _FREQS.size))
    # power ~ 1/f: amplitude ~ f^-1/2; scaled so each source has ~15 uV RMS
    amps = _FREQS ** -0.5
    amps *= 15e-6 / np.sqrt(0.5 * np.sum(amps**2))
    alpha_phases = rng.uniform(0, 2 * np.pi, _ALPHA_FREQS.size)
    alpha_amps = np.exp(-0.5 * ((_ALPHA_FREQS - 10.0) / 0.6) ** 2)
    alpha_amps *= 20e-6 / np.sqrt(0.5 * np.sum(alpha_amps**2))
    if n_channels == 128:
        from .montage import channel_positions

        y = channel_positions()[:, 1]
        alpha_weight = np.clip(-y / np.abs(y).max(), 0.0, 1.0)
    else:
        alpha_weight = np.linspace(0.0, 1.0, n_channels)
    line_amp = rng.uniform(4e-6, 8e-6, n_channels)
    line_phase = rng.uniform(0, 2 * np.pi, n_channels)
    return _Model(mixing, phases, amps, alpha_phases, alpha_amps, alpha_weight, line_amp, line_phase)


def simulate_eeg(
    start: int, n_times: int, *, sfreq: float = 1000.0, n_channels: int = 128,
    seed: int = 0, line_freq_hz: float = 50.0,
) -> np.ndarray:
    """Samples ``start .. start + n_times`` of the simulated EEG.

    Parameters
    ----------
    start : int
        Absolute index of the first sample (0-based).
    n_times : int
        Number of samples.

    Returns
    -------
    np.ndarray
        (n_channels, n_times) float32, volts. Identical for any split of
        ``[start, start + n_times)`` into chunks.
    """
    m = _model(int(seed), int(n_channels))
    t = (start + np.arange(n_times)) / sfreq                      # (n,)
    out = np.zeros((n_channels, n_times))
    # chunk the time axis to bound the (n_freqs, n) temporaries
    for lo in range(0, n_times, 250):
        tt = t[lo : lo + 250]
        arg = 2 * np.pi * _FREQS[:, None] * tt[None, :]           # (n_freqs, m)
        cos_a, sin_a = np.cos(arg), np.sin(arg)
        # sum_f a_f cos(2 pi f t + p) = sum a cos(p) cos(2pift) - a sin(p) sin(2pift)
        src = (m.amps * np.cos(m.phases)) @ cos_a - (m.amps * np.sin(m.phases)) @ sin_a   # (S, m)
        out[:, lo : lo + tt.size] = m.mixing @ src
        arg = 2 * np.pi * _ALPHA_FREQS[:, None] * tt[None, :]
        alpha = (m.alpha_amps * np.cos(m.alpha_phases)) @ np.cos(arg) - (
            m.alpha_amps * np.sin(m.alpha_phases)
        ) @ np.sin(arg)
        out[:, lo : lo + tt.size] += m.alpha_weight[:, None] * alpha[None, :]
    out += m.line_amp[:, None] * np.sin(2 * np.pi * line_freq_hz * t[None, :] + m.line_phase[:, None])
    out += _white(start, n_times, n_channels, seed)
    return out.astype(np.float32)


def _white(start: int, n_times: int, n_channels: int, seed: int) -> np.ndarray:
    """1 uV RMS white noise; block ``b`` is drawn from a generator seeded with (seed, b)."""
    out = np.empty((n_channels, n_times))
    first, last = start // _BLOCK, (start + n_times - 1) // _BLOCK
    for b in range(first, last + 1):
        block = np.random.default_rng([seed, 0x40, b]).standard_normal((n_channels, _BLOCK)) * 1e-6
        lo, hi = max(start, b * _BLOCK), min(start + n_times, (b + 1) * _BLOCK)
        out[:, lo - start : hi - start] = block[:, lo - b * _BLOCK : hi - b * _BLOCK]
    return out


def marker_payload(k: int) -> str:
    """Payload of the ``k``-th simulated stimulus marker (k >= 1)."""
    label = k % N_CLASSES
    return json.dumps({"image": f"sim_{k:06d}", "label": label, "class": f"n9{label:07d}", "index": k})


class SimulatedHeadset(PacedStreamer):
    """Stream :func:`simulate_eeg` as LSL (``cfg.name`` + ``<name>-markers``), paced in real time.

    Parameters
    ----------
    cfg : SimulateConfig
    duration_s : float | None
        Stop after this many seconds of data (None: until stopped).
    name : str | None
        Overrides ``cfg.name``.
    wait_for_consumers_s : float
        Hold the first sample until both outlets have a consumer (tests).
    source_id : str | None
        LSL source id (markers: ``<source_id>-markers``); a fixed one makes a
        restarted headset the same stream to LSL. None: seed + random suffix.

    Notes
    -----
    A :class:`~neuroimagen.stream.replay.PacedStreamer` (so a
    :class:`~neuroimagen.stream.worker.Worker`: start/stop/wait/context manager;
    thread errors re-raised).
    """

    def __init__(
        self, cfg: SimulateConfig | None = None, duration_s: float | None = None,
        name: str | None = None, wait_for_consumers_s: float = 0.0, source_id: str | None = None,
    ) -> None:
        import uuid

        from .replay import make_marker_info, make_stream_info

        self.cfg = cfg = cfg or SimulateConfig()
        self.name = name or cfg.name
        n = cfg.n_channels
        self.ch_names = sim_ch_names(n)
        self._interval = max(1, round(cfg.marker_interval_s * cfg.sfreq_hz))
        sid = source_id or f"neuroimagen-sim-{cfg.seed}-{uuid.uuid4().hex[:8]}"
        self.source_id = sid
        eeg_info = make_stream_info(
            self.name, cfg.sfreq_hz, self.ch_names, ["eeg"] * n, ["volts"] * n, source_id=sid,
            extra={"simulated": "true", "seed": str(cfg.seed)},
        )
        super().__init__(
            eeg_info, make_marker_info(f"{self.name}-markers", f"{sid}-markers"), self._chunk,
            cfg.sfreq_hz,
            n_total=None if duration_s is None else round(duration_s * cfg.sfreq_hz),
            chunk_size=max(1, round(cfg.chunk_s * cfg.sfreq_hz)),
            wait_for_consumers_s=wait_for_consumers_s,
        )

    def _chunk(self, start: int, n: int) -> tuple[np.ndarray, list[tuple[int, str]]]:
        c = self.cfg
        data = simulate_eeg(
            start, n, sfreq=c.sfreq_hz, n_channels=c.n_channels, seed=c.seed, line_freq_hz=c.line_freq_hz
        )
        first_k = -(-max(start, 1) // self._interval)
        markers = [
            (k * self._interval - start, marker_payload(k))
            for k in range(first_k, (start + n - 1) // self._interval + 1)
        ]
        return data, markers

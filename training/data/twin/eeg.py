"""The twin's EEG generative model (what is encoded where).

Every session is ``background + evoked`` on the 128 channels of the default
montage, in volts, at 1000 Hz. All spatial patterns are smooth functions of
the electrode positions (Gaussian blobs in angle on the head sphere), every
pattern is scaled to unit RMS over channels and every waveform to unit RMS
over its 500 ms epoch, so a component's amplitude ``snr * noise_rms`` is its
RMS over channels x epoch.

Evoked response of one stimulus (onset at t = 0)::

    sum_k  a_k(image) * topo_k * wave_k(t - latency)  +  a_c * topo_class[c] * wave_class[c](t - latency)

====================  ===========================================  ==================================
component             topography                                   coefficient a_k
====================  ===========================================  ==================================
``vep``               bilateral occipital (Oz, PO7, PO8), P1/N1/P2  ``vep_snr``, x0.7..1.3 with object size
                      at ~100/170/250 ms
``horizontal``        right minus left posterior (PO8/P8/O2 -      ``layout_snr * (0.5 - cx) / 0.25``
                      PO7/P7/O1): contralateral, P1/N1 latencies   (object left -> right hemisphere +)
``vertical``          dorsal (Pz, POz) minus ventral (Iz, OI1h,    ``layout_snr * (cy - 0.5) / 0.25``
                      OI2h), P1/N1 latencies                        (lower field -> dorsal +)
``colour_cos/sin``    two lateral occipito-temporal patterns,       ``layout_snr * cos/sin(2 pi hue)``
                      ~130/210 ms
``class``             one random posterior/temporal pattern per     ``class_snr``
                      class x one random waveform (3 bumps,
                      120-420 ms) per class
====================  ===========================================  ==================================

Per subject (:class:`SubjectVariation`, drawn by :func:`draw_subject`): a
global gain, a latency shift and a per-channel gain; with the ``wide``
variation also individual topographies, per-component latencies and gains.

=====================================  ====================  ==========================
draw                                   ``narrow`` (make-twin  ``wide`` (a new simulated
                                       default, as before)    subject, ``--twin-subject``)
=====================================  ====================  ==========================
global gain, uniform                   0.8 - 1.25             0.6 - 1.6
latency shift, uniform                 +-12 ms                +-25 ms
per-channel gain, log-normal sd        0.1                    0.2
topography jitter (smooth field,       0                      0.6 (r ~ 0.86 with the
unit RMS, added to each pattern)                              shared pattern)
per-component latency, normal sd       0                      10 ms
per-component gain, log-normal sd      0                      0.3
=====================================  ====================  ==========================

Why wider for a new subject: with the narrow draws, a model trained on the
twin's subjects loses little on another subject (the patterns are shared and
only scaled), so calibration has nothing to recover. Real subjects differ in
where each component projects on the scalp (folding, cap placement) and in its
latency and size; the wide draws model that. The extra draws come after the
narrow ones from the same generator, so ``narrow`` subjects are bit-identical
to the twins written before. Per trial: a common amplitude jitter (log-normal,
sd 0.2) and a latency jitter (sd 4 ms).

Background: 1/f**a noise (``aperiodic_exponent``, RMS ``noise_rms_uv`` in
5-95 Hz) with spatial correlation ``exp(-d / 4 cm)`` between electrodes, two
posterior ~10 Hz alpha generators (AR(2) resonators, left/right occipital),
line noise at ``line_freq_hz`` (per-channel amplitude and phase) and 0.3 uV
white sensor noise. The block confound: the session is cut into segments
(one per block; in block order a segment holds one class) and each segment
multiplies the background by its own smooth per-channel gain
``exp(block_nonstationarity * smooth_normal)`` and the alpha by its own level.
The change is in the 5-95 Hz band, so it survives the filter: in block order
the segment identity is the class, so band-power features decode the class
even when ``class_snr = 0``; in rapid order it carries no class information.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sp_fft
from scipy import signal

__all__ = [
    "EPOCH_S",
    "FIXED_COMPONENTS",
    "NARROW",
    "WIDE",
    "Subject",
    "SubjectVariation",
    "TwinModel",
    "background",
    "build_model",
    "draw_subject",
    "evoked",
    "subject_evoked",
]

#: Length of the evoked epoch (and of every .pth segment) in seconds.
EPOCH_S = 0.5
FIXED_COMPONENTS = ("vep", "horizontal", "vertical", "colour_cos", "colour_sin")

# (latency s, width s, amplitude) bumps of the fixed components
_FIXED_BUMPS = {
    "vep": [(0.100, 0.015, 1.0), (0.170, 0.022, -1.4), (0.250, 0.035, 0.9)],
    "horizontal": [(0.095, 0.015, 1.0), (0.165, 0.022, -1.0)],
    "vertical": [(0.105, 0.018, 1.0), (0.180, 0.025, -0.8)],
    "colour_cos": [(0.130, 0.025, 1.0), (0.210, 0.035, 0.7)],
    "colour_sin": [(0.130, 0.025, 1.0), (0.210, 0.035, -0.7)],
}


def _unit_sphere(pos: np.ndarray) -> np.ndarray:
    centre = pos.mean(axis=0) * np.array([1.0, 1.0, 0.0])
    p = pos - centre
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def _blob(u: np.ndarray, centre: np.ndarray, width: float) -> np.ndarray:
    ang = np.arccos(np.clip(u @ centre, -1.0, 1.0))
    return np.exp(-0.5 * (ang / width) ** 2)


def _unit_rms(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / np.sqrt(np.mean(x**2, axis=axis, keepdims=True))


@dataclass
class TwinModel:
    """Seed-derived generative parameters shared by all subjects.

    Attributes
    ----------
    ch_names : list of str (128)
    topo_fixed : ndarray, shape (5, n_channels), float64, unit RMS
    topo_class : ndarray, shape (n_classes, n_channels), float64, unit RMS
    bumps_fixed : ndarray, shape (5, 3, 3): (latency s, width s, amplitude), zero-padded
    bumps_class : ndarray, shape (n_classes, 3, 3)
    wave_norm_fixed, wave_norm_class : ndarray
        1 / RMS of each waveform over the epoch (unit-RMS scaling).
    alpha_topo : ndarray, shape (2, n_channels), peak 1
    chol : ndarray, shape (n_channels, n_channels): Cholesky factor of the spatial correlation
    line_amp, line_phase : ndarray, shape (n_channels,)
    """

    ch_names: list[str]
    topo_fixed: np.ndarray
    topo_class: np.ndarray
    bumps_fixed: np.ndarray
    bumps_class: np.ndarray
    wave_norm_fixed: np.ndarray
    wave_norm_class: np.ndarray
    alpha_topo: np.ndarray
    chol: np.ndarray
    line_amp: np.ndarray
    line_phase: np.ndarray

    def to_dict(self) -> dict:
        """JSON-able description (stored in twin.json)."""
        return {
            "components": list(FIXED_COMPONENTS),
            "topo_fixed": np.round(self.topo_fixed, 6).tolist(),
            "topo_class": np.round(self.topo_class, 6).tolist(),
            "bumps_fixed": self.bumps_fixed.tolist(),
            "bumps_class": np.round(self.bumps_class, 6).tolist(),
            "alpha_topo": np.round(self.alpha_topo, 6).tolist(),
        }


def _waves(bumps: np.ndarray, t: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Sum of Gaussian bumps; bumps (..., n_bumps, 3), t (n_t,), shift broadcast to bumps[..., 0, 0]."""
    lat = bumps[..., 0][..., None] + np.asarray(shift)[..., None, None]
    width = np.where(bumps[..., 1] > 0, bumps[..., 1], 1.0)[..., None]
    amp = bumps[..., 2][..., None]
    return np.sum(amp * np.exp(-0.5 * ((t - lat) / width) ** 2), axis=-2)


def build_model(
    ch_names: list[str], positions: np.ndarray, n_classes: int, sfreq: float, rng: np.random.Generator
) -> TwinModel:
    """Draw the generative parameters (topographies, waveforms, noise mixing) from ``rng``.

    Parameters
    ----------
    ch_names : list of str
        Channel names of the montage, in model order.
    positions : ndarray, shape (n_channels, 3), float64
        Head-frame positions (m), e.g. ``stream.montage.channel_positions()``.
    """
    u = _unit_sphere(positions)
    idx = {n: i for i, n in enumerate(ch_names)}

    def at(*names: str) -> np.ndarray:
        v = np.mean([u[idx[n]] for n in names], axis=0)
        return v / np.linalg.norm(v)

    def blobs(*names: str, width: float = 0.3) -> np.ndarray:
        return np.sum([_blob(u, at(n), width) for n in names], axis=0)

    topo = np.stack(
        [
            blobs("Oz", width=0.35) + 0.7 * blobs("PO7", "PO8"),
            blobs("PO8", "P8", "O2") - blobs("PO7", "P7", "O1"),
            blobs("Pz", "POz") - blobs("Iz", "OI1h", "OI2h"),
            blobs("P7", "P8", width=0.25) - 0.8 * blobs("POz", width=0.25),
            blobs("PO3", "TP8", width=0.25) - blobs("PO4", "TP7", width=0.25),
        ]
    )
    topo_fixed = _unit_rms(topo)

    # class patterns: 3 blobs centred on random posterior / temporal electrodes
    candidates = np.flatnonzero(u[:, 1] < 0.1)
    topo_class = np.empty((n_classes, len(ch_names)))
    for c in range(n_classes):
        centres = rng.choice(candidates, size=3, replace=False)
        signs = rng.choice([-1.0, 1.0], size=3) * rng.uniform(0.6, 1.0, size=3)
        widths = rng.uniform(0.25, 0.45, size=3)
        topo_class[c] = sum(s * _blob(u, u[k], w) for k, s, w in zip(centres, signs, widths, strict=True))
    topo_class = _unit_rms(topo_class)

    bumps_fixed = np.zeros((len(FIXED_COMPONENTS), 3, 3))
    for k, name in enumerate(FIXED_COMPONENTS):
        b = np.array(_FIXED_BUMPS[name])
        bumps_fixed[k, : len(b)] = b
    bumps_class = np.stack(
        [
            rng.uniform(0.12, 0.42, (n_classes, 3)),
            rng.uniform(0.02, 0.05, (n_classes, 3)),
            rng.normal(0.0, 1.0, (n_classes, 3)),
        ],
        axis=-1,
    )
    t = np.arange(int(round(EPOCH_S * sfreq))) / sfreq
    wnf = 1.0 / np.sqrt(np.mean(_waves(bumps_fixed, t, np.zeros(len(FIXED_COMPONENTS))) ** 2, axis=-1))
    wnc = 1.0 / np.sqrt(np.mean(_waves(bumps_class, t, np.zeros(n_classes)) ** 2, axis=-1))

    alpha_topo = np.stack([blobs("O1", "PO3", width=0.35), blobs("O2", "PO4", width=0.35)])
    alpha_topo /= alpha_topo.max(axis=1, keepdims=True)

    dist = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    corr = np.exp(-dist / 0.04) + 1e-6 * np.eye(len(ch_names))
    chol = np.linalg.cholesky(corr)
    return TwinModel(
        ch_names=list(ch_names),
        topo_fixed=topo_fixed,
        topo_class=topo_class,
        bumps_fixed=bumps_fixed,
        bumps_class=bumps_class,
        wave_norm_fixed=wnf,
        wave_norm_class=wnc,
        alpha_topo=alpha_topo,
        chol=chol,
        line_amp=rng.uniform(0.2, 1.0, len(ch_names)),
        line_phase=rng.uniform(0.0, 2 * np.pi, len(ch_names)),
    )


def _pink(n_channels: int, n_times: int, sfreq: float, exponent: float, rms_band: float,
          band: tuple[float, float], rng: np.random.Generator, chunk: int = 16) -> np.ndarray:
    """Independent 1/f**exponent noise per channel, RMS ``rms_band`` in ``band`` (exact, via Parseval)."""
    out = np.empty((n_channels, n_times), dtype=np.float32)
    freqs = np.fft.rfftfreq(n_times, 1.0 / sfreq)
    amp = np.maximum(freqs, 0.5) ** (-exponent / 2.0)
    amp[0] = 0.0
    in_band = (freqs >= band[0]) & (freqs <= band[1])
    for start in range(0, n_channels, chunk):
        stop = min(start + chunk, n_channels)
        white = rng.standard_normal((stop - start, n_times), dtype=np.float32)
        spec = sp_fft.rfft(white, axis=1, workers=-1)
        spec *= amp.astype(np.float32)
        # Parseval for a real signal: band variance = 2 * sum |X_k|^2 / N^2
        var_band = 2.0 * np.sum(np.abs(spec[:, in_band]) ** 2, axis=1) / float(n_times) ** 2
        spec *= (rms_band / np.sqrt(var_band)).astype(np.float32)[:, None]
        out[start:stop] = sp_fft.irfft(spec, n=n_times, axis=1, workers=-1)
    return out


def background(
    model: TwinModel,
    n_times: int,
    sfreq: float,
    segments: np.ndarray,
    params,
    rng: np.random.Generator,
) -> np.ndarray:
    """Background EEG of one session, in volts.

    Parameters
    ----------
    model : TwinModel
    n_times : int
    sfreq : float
    segments : ndarray, shape (n_segments, 2), int
        [start, stop) samples of each nonstationarity segment (they tile the session).
    params : TwinConfig
        noise_rms_uv, aperiodic_exponent, alpha_rms_uv, line_noise_uv, line_freq_hz,
        block_nonstationarity.
    rng : numpy Generator

    Returns
    -------
    ndarray, shape (n_channels, n_times), float32, V
    """
    n_ch = len(model.ch_names)
    uv = 1e-6
    # 1. spatially correlated 1/f noise
    x = _pink(n_ch, n_times, sfreq, params.aperiodic_exponent, params.noise_rms_uv * uv, (5.0, 95.0), rng)
    x = (model.chol.astype(np.float32) @ x).astype(np.float32, copy=False)
    # 2. per-segment smooth per-channel gain (the block-level nonstationarity)
    n_seg = len(segments)
    log_gain = params.block_nonstationarity * (model.chol @ rng.standard_normal((n_ch, n_seg))).T
    alpha_level = np.exp(params.block_nonstationarity * rng.standard_normal((n_seg, 2)))
    for (a, b), g in zip(segments, np.exp(log_gain), strict=True):
        x[:, a:b] *= g.astype(np.float32)[:, None]
    # 3. posterior alpha: two AR(2) resonators near 10 Hz, level per segment
    f0 = rng.uniform(9.5, 10.5, 2)
    alpha = np.empty((2, n_times), dtype=np.float64)
    for k in range(2):
        r = 0.995
        a_coef = [1.0, -2 * r * np.cos(2 * np.pi * f0[k] / sfreq), r * r]
        drive = rng.standard_normal(n_times + 2000)
        alpha[k] = signal.lfilter([1.0], a_coef, drive)[2000:]
        alpha[k] *= params.alpha_rms_uv * uv / alpha[k].std()
    for (a, b), lev in zip(segments, alpha_level, strict=True):
        alpha[:, a:b] *= lev[:, None]
    x += (model.alpha_topo.T @ alpha).astype(np.float32)
    # 4. line noise and white sensor noise
    t = np.arange(n_times) / sfreq
    w = 2 * np.pi * params.line_freq_hz * t
    la = params.line_noise_uv * uv * model.line_amp
    x += np.outer(la * np.cos(model.line_phase), np.sin(w)).astype(np.float32)
    x += np.outer(la * np.sin(model.line_phase), np.cos(w)).astype(np.float32)
    x += (0.3 * uv) * rng.standard_normal((n_ch, n_times), dtype=np.float32)
    return x


@dataclass(frozen=True)
class SubjectVariation:
    """How much subjects differ (see the module notes for the two presets)."""

    gain_range: tuple[float, float] = (0.8, 1.25)
    latency_shift_s: float = 0.012
    ch_gain_sd: float = 0.1
    topo_jitter: float = 0.0
    component_latency_sd_s: float = 0.0
    component_gain_sd: float = 0.0

    @property
    def widened(self) -> bool:
        return bool(self.topo_jitter or self.component_latency_sd_s or self.component_gain_sd)


NARROW = SubjectVariation()
WIDE = SubjectVariation(gain_range=(0.6, 1.6), latency_shift_s=0.025, ch_gain_sd=0.2, topo_jitter=0.6,
                        component_latency_sd_s=0.010, component_gain_sd=0.3)
VARIATIONS = {"narrow": NARROW, "wide": WIDE}


@dataclass
class Subject:
    """One subject's draws.

    Attributes
    ----------
    gain : float
    latency_shift_s : float
    ch_gain : ndarray, shape (n_channels,)
    topo_fixed : ndarray, shape (5, n_channels): the subject's own patterns (unit RMS)
    topo_class : ndarray, shape (n_classes, n_channels)
    latency_fixed_s, gain_fixed : ndarray, shape (5,): per fixed component
    latency_class_s, gain_class : ndarray, shape (n_classes,)
    """

    gain: float
    latency_shift_s: float
    ch_gain: np.ndarray
    topo_fixed: np.ndarray
    topo_class: np.ndarray
    latency_fixed_s: np.ndarray
    gain_fixed: np.ndarray
    latency_class_s: np.ndarray
    gain_class: np.ndarray

    def to_dict(self) -> dict:
        """What the oracle decoder knows (``gain``, ``latency_shift_s``, ``ch_gain``), plus the wide draws."""
        d = {"gain": float(self.gain), "latency_shift_s": float(self.latency_shift_s),
             "ch_gain": self.ch_gain.tolist()}
        if np.any(self.latency_fixed_s) or np.any(self.gain_fixed != 1.0):
            d.update(latency_fixed_s=self.latency_fixed_s.tolist(), gain_fixed=self.gain_fixed.tolist(),
                     latency_class_s=self.latency_class_s.tolist(), gain_class=self.gain_class.tolist())
        return d


def draw_subject(model: TwinModel, rng: np.random.Generator, variation: SubjectVariation = NARROW) -> Subject:
    """Draw a subject's gains, latencies and topographies (the narrow draws first, then the wide ones)."""
    n_ch = len(model.ch_names)
    n_fix, n_cls = model.topo_fixed.shape[0], model.topo_class.shape[0]
    lo, hi = variation.gain_range
    gain = rng.uniform(lo, hi)
    shift = rng.uniform(-variation.latency_shift_s, variation.latency_shift_s)
    ch_gain = np.exp(variation.ch_gain_sd * rng.standard_normal(n_ch))
    topo_f, topo_c = model.topo_fixed, model.topo_class
    lat_f, gain_f = np.zeros(n_fix), np.ones(n_fix)
    lat_c, gain_c = np.zeros(n_cls), np.ones(n_cls)
    if variation.widened:
        # individual topographies: a smooth (4 cm correlated) unit-RMS field added to each pattern
        def jitter(topo: np.ndarray) -> np.ndarray:
            field = _unit_rms((model.chol @ rng.standard_normal((n_ch, topo.shape[0]))).T)
            return _unit_rms(topo + variation.topo_jitter * field)

        topo_f, topo_c = jitter(topo_f), jitter(topo_c)
        lat_f = variation.component_latency_sd_s * rng.standard_normal(n_fix)
        lat_c = variation.component_latency_sd_s * rng.standard_normal(n_cls)
        gain_f = np.exp(variation.component_gain_sd * rng.standard_normal(n_fix))
        gain_c = np.exp(variation.component_gain_sd * rng.standard_normal(n_cls))
    return Subject(float(gain), float(shift), ch_gain, topo_f, topo_c, lat_f, gain_f, lat_c, gain_c)


def evoked(
    model: TwinModel,
    n_times: int,
    sfreq: float,
    onsets: np.ndarray,
    labels: np.ndarray,
    layouts: np.ndarray,
    params,
    subject_rng: np.random.Generator,
    record: dict | None = None,
    variation: SubjectVariation = NARROW,
) -> np.ndarray:
    """Stimulus-evoked activity of one subject's session, in volts.

    Parameters
    ----------
    onsets : ndarray, shape (n_trials,), int
        Onset sample of each stimulus; epochs of ``EPOCH_S`` must not overlap.
    labels : ndarray, shape (n_trials,), int
    layouts : ndarray, shape (n_trials, 4), float
        (cx, cy, size, hue) of each trial's image.
    params : TwinConfig
        vep_snr, layout_snr, class_snr, noise_rms_uv.
    subject_rng : numpy Generator
        Draws the subject (:func:`draw_subject`), then the trial jitter.
    record : dict | None
        If given, filled with the subject's draws (``gain``, ``latency_shift_s``,
        ``ch_gain`` (n_channels,)): what the oracle decoder knows.
    variation : SubjectVariation

    Returns
    -------
    ndarray, shape (n_channels, n_times), float32, V
    """
    n_ep = int(round(EPOCH_S * sfreq))
    if len(onsets) and (np.any(np.diff(np.sort(onsets)) < n_ep) or onsets.max() + n_ep > n_times):
        raise ValueError("stimulus epochs overlap or run past the end of the session")
    subject = draw_subject(model, subject_rng, variation)
    if record is not None:
        record.update(subject.to_dict())
    return subject_evoked(model, subject, n_times, sfreq, onsets, labels, layouts, params, subject_rng)


def subject_evoked(
    model: TwinModel,
    subject: Subject,
    n_times: int,
    sfreq: float,
    onsets: np.ndarray,
    labels: np.ndarray,
    layouts: np.ndarray,
    params,
    trial_rng: np.random.Generator,
) -> np.ndarray:
    """Evoked activity of ``subject`` for stimuli at ``onsets`` (epochs may overlap), in volts.

    Parameters as :func:`evoked`; ``trial_rng`` draws the per-trial amplitude and
    latency jitter. An epoch running past ``n_times`` is cut there.

    Returns
    -------
    ndarray, shape (n_channels, n_times), float32, V
    """
    onsets = np.asarray(onsets, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    layouts = np.asarray(layouts, dtype=np.float64).reshape(-1, 4)
    n_ep = int(round(EPOCH_S * sfreq))
    n_tr = len(onsets)
    rms = params.noise_rms_uv * 1e-6
    gain = subject.gain
    # 1. trial-level jitter and coefficients
    amp_jit = np.exp(0.2 * trial_rng.standard_normal(n_tr))
    lat = subject.latency_shift_s + 0.004 * trial_rng.standard_normal(n_tr)
    cx, cy, size, hue = layouts.T
    coef = np.stack(
        [
            params.vep_snr * (0.7 + 0.6 * (size - 0.12) / 0.10),
            params.layout_snr * (0.5 - cx) / 0.25,
            params.layout_snr * (cy - 0.5) / 0.25,
            params.layout_snr * np.cos(2 * np.pi * hue),
            params.layout_snr * np.sin(2 * np.pi * hue),
        ],
        axis=1,
    ) * (rms * gain * amp_jit)[:, None] * subject.gain_fixed[None, :]
    t = np.arange(n_ep) / sfreq
    n_fix = len(FIXED_COMPONENTS)
    wf = _waves(np.broadcast_to(model.bumps_fixed, (n_tr, *model.bumps_fixed.shape)), t,
                lat[:, None] + subject.latency_fixed_s[None, :])  # (n_tr, 5, n_ep)
    wf *= (coef * model.wave_norm_fixed)[:, :, None]
    wc = _waves(model.bumps_class[labels], t, lat + subject.latency_class_s[labels])  # (n_tr, n_ep)
    wc *= (params.class_snr * rms * gain * amp_jit * model.wave_norm_class[labels]
           * subject.gain_class[labels])[:, None]
    # 2. place the epochs into source time courses (added: epochs may overlap) and project
    n_cls = model.topo_class.shape[0]
    src_fixed = np.zeros((n_fix, n_times), dtype=np.float32)
    src_class = np.zeros((n_cls, n_times), dtype=np.float32)
    for k in range(n_tr):
        a, b = max(0, onsets[k]), min(n_times, onsets[k] + n_ep)
        if a >= b:
            continue
        sl = slice(a - onsets[k], b - onsets[k])
        src_fixed[:, a:b] += wf[k, :, sl]
        src_class[labels[k], a:b] += wc[k, sl]
    topo_f = (subject.topo_fixed * subject.ch_gain).astype(np.float32)
    topo_c = (subject.topo_class * subject.ch_gain).astype(np.float32)
    return topo_f.T @ src_fixed + topo_c.T @ src_class

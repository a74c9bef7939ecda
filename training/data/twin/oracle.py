"""The oracle decoder of a twin: the ceiling every decoder is reported against.

The twin knows its own generative model (:mod:`.eeg`), so the best a decoder can
do on its windows can be approached with a matched filter that knows everything
except the class:

1. the generative model is rebuilt from the twin's seed (checked against the
   topographies stored in twin.json);
2. per subject, the true gain, latency shift and channel gains (recorded by
   ``make_twin`` in ``twin.json`` ``sessions[*].subject_params``) give the
   evoked template of every class and of every fixed component (VEP, horizontal,
   vertical, two colour axes), each passed through the same causal filter and the
   dataset normalisation the windows went through (``segment[:, 20:460]``);
3. the trial's true stimulus layout (``stimuli.json``) fixes the coefficients of
   the fixed components, whose predicted response is subtracted;
4. the background covariance, Kronecker-factored (channels x time), is
   estimated from background simulated with the twin's own noise model (filtered
   and normalised the same way); the residual and the class templates are
   whitened with it and the class with the highest Gaussian log-likelihood
   ``<r, t_c> - |t_c|^2 / 2`` (whitened) wins.

What it does not model: the per-trial amplitude (sd 20 %) and latency (sd 4 ms)
jitter, the block-level gain changes and the filter tail of the previous trial
(all treated as noise), so it is a near-ceiling, not the exact Bayes rate.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from neuroimagen.stream.config import PreprocessingConfig
from neuroimagen.stream.preprocessing import preprocess_continuous

from ...config import TwinConfig
from .eeg import EPOCH_S, _waves, background
from .make import rebuild_model

__all__ = ["OracleDecoder", "run_oracle"]

logger = logging.getLogger(__name__)


class OracleDecoder:
    """Matched filter with the twin's true templates (see the module notes).

    Parameters
    ----------
    twin_dir : path
        A twin written by ``make_twin`` (with ``subject_params`` in twin.json).
    background_s : float
        Seconds of simulated background for the covariance estimate.
    seed : int
        Seeds the simulated background.
    """

    def __init__(self, twin_dir: str | Path, background_s: float = 120.0, seed: int = 0) -> None:
        self.root = Path(twin_dir)
        meta = json.loads((self.root / "twin.json").read_text())
        self.meta = meta
        self.cfg = TwinConfig.model_validate(meta["config"])
        self.sfreq = float(meta["sfreq"])
        self.ch_names = list(meta["ch_names"])
        self.offset = int(meta["marker_offset_samples"])
        self.n_times = int(meta["n_times"])
        self.std = np.asarray(meta["norm_stats"]["std"], dtype=np.float64)
        self.mean = np.asarray(meta["norm_stats"]["mean"], dtype=np.float64)
        self.eps = float(meta["normalization"]["eps"])
        pre = dict(meta["preprocessing"])
        pre["normalization"] = {"mode": "none"}
        self.preprocessing = PreprocessingConfig.model_validate(pre)
        sizes = meta["sizes"]
        self.n_classes = int(sizes["n_classes"])
        # 1. the generative model, from the seed exactly as make_twin draws it
        try:
            self.model = rebuild_model(meta)
        except ValueError as exc:
            raise ValueError(f"{twin_dir}: {exc}") from None
        self.subjects = {}
        for sess in meta["sessions"]:
            if "subject_params" not in sess:
                raise ValueError(f"{twin_dir}: twin.json has no subject_params (remake the twin)")
            self.subjects[int(sess["subject"])] = sess["subject_params"]
        # 2. templates per subject (filtered + normalised), 3. background whitening
        self.templates = {s: self._templates(p) for s, p in self.subjects.items()}
        self._whitening(background_s, seed)
        self.w_templates = {s: (self._whiten(t[0]), self._whiten(t[1])) for s, t in self.templates.items()}

    # ------------------------------------------------------------------ pieces

    def _filter_cut(self, epochs: np.ndarray) -> np.ndarray:
        """Epoch signals (k, n_channels, n_ep) in V -> windows as the dataset holds them (k, C, 440)."""
        lead = int(1.0 * self.sfreq)
        k, c, n_ep = epochs.shape
        out = np.empty((k, c, self.n_times))
        for i in range(k):
            x = np.zeros((c, lead + n_ep + 100), dtype=np.float32)
            x[:, lead:lead + n_ep] = epochs[i]
            y = preprocess_continuous(x, self.sfreq, self.preprocessing, self.ch_names).astype(np.float64)
            out[i] = y[:, lead + self.offset: lead + self.offset + self.n_times]
        return out / (self.std[:, None] + self.eps)  # the dataset normalisation (the mean cancels)

    def _templates(self, p: dict) -> tuple[np.ndarray, np.ndarray]:
        """(class templates (K, C, T), fixed-component templates per unit coefficient (5, C, T))."""
        m = self.model
        n_ep = int(round(EPOCH_S * self.sfreq))
        t = np.arange(n_ep) / self.sfreq
        rms = self.cfg.noise_rms_uv * 1e-6
        gain, shift = float(p["gain"]), float(p["latency_shift_s"])
        ch_gain = np.asarray(p["ch_gain"])
        wc = _waves(m.bumps_class, t, np.full(self.n_classes, shift)) * m.wave_norm_class[:, None]
        wc *= self.cfg.class_snr * rms * gain
        cls = (m.topo_class * ch_gain)[:, :, None] * wc[:, None, :]
        wf = _waves(m.bumps_fixed, t, np.full(len(m.bumps_fixed), shift)) * m.wave_norm_fixed[:, None]
        wf *= rms * gain
        fixed = (m.topo_fixed * ch_gain)[:, :, None] * wf[:, None, :]
        return self._filter_cut(cls), self._filter_cut(fixed)

    def _fixed_coef(self, layout: np.ndarray) -> np.ndarray:
        """(n, 4) (cx, cy, size, hue) -> (n, 5) coefficients of the fixed components (as eeg.evoked)."""
        c = self.cfg
        cx, cy, size, hue = layout.T
        return np.stack([
            c.vep_snr * (0.7 + 0.6 * (size - 0.12) / 0.10),
            c.layout_snr * (0.5 - cx) / 0.25,
            c.layout_snr * (cy - 0.5) / 0.25,
            c.layout_snr * np.cos(2 * np.pi * hue),
            c.layout_snr * np.sin(2 * np.pi * hue),
        ], axis=1)

    def _whitening(self, seconds: float, seed: int) -> None:
        n = int(seconds * self.sfreq)
        rng = np.random.default_rng([seed, 31337])
        n_seg = max(1, int(seconds // 25))
        bounds = np.linspace(0, n, n_seg + 1).astype(int)
        segments = np.stack([bounds[:-1], bounds[1:]], axis=1)
        bg = background(self.model, n, self.sfreq, segments, self.cfg, rng)
        y = preprocess_continuous(bg, self.sfreq, self.preprocessing, self.ch_names).astype(np.float64)
        y = (y - self.mean[:, None]) / (self.std[:, None] + self.eps)
        starts = np.arange(int(self.sfreq), n - self.n_times, self.n_times // 4)
        wins = np.stack([y[:, s:s + self.n_times] for s in starts])
        c, t = wins.shape[1:]
        sig_s = np.einsum("nct,ndt->cd", wins, wins) / (len(wins) * t)
        sig_s += 1e-3 * np.trace(sig_s) / c * np.eye(c)
        ws = _inv_sqrt(sig_s)
        white_s = np.einsum("cd,ndt->nct", ws, wins)
        sig_t = np.einsum("nct,ncu->tu", white_s, white_s) / (len(wins) * c)
        sig_t += 1e-3 * np.trace(sig_t) / t * np.eye(t)
        self.ws, self.wt = ws, _inv_sqrt(sig_t)

    def _whiten(self, x: np.ndarray) -> np.ndarray:
        return np.einsum("cd,...dt,tu->...cu", self.ws, x, self.wt, optimize=True)

    # ------------------------------------------------------------------ decoding

    def class_scores(self, windows: np.ndarray, subjects: np.ndarray, layouts: np.ndarray) -> np.ndarray:
        """Log-likelihood of each class for each window, (n, K).

        Parameters
        ----------
        windows : (n, 128, 440) float32, as the dataset holds them
        subjects : (n,) int, the subject of each window (1-based, as in the .pth)
        layouts : (n, 4) float, the true (cx, cy, size, hue) of each window's stimulus
        """
        out = np.empty((len(windows), self.n_classes))
        coef = self._fixed_coef(np.asarray(layouts, dtype=np.float64))
        for s in np.unique(subjects):
            idx = np.flatnonzero(subjects == s)
            cls_w, fix_w = self.w_templates[int(s)]
            for chunk in np.array_split(idx, max(1, len(idx) // 64)):
                r = self._whiten(np.asarray(windows[chunk], dtype=np.float64))
                r -= np.einsum("nk,kct->nct", coef[chunk], fix_w)
                out[chunk] = np.einsum("nct,kct->nk", r, cls_w) - 0.5 * np.einsum("kct,kct->k", cls_w, cls_w)
        return out


def _inv_sqrt(m: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(m)
    return (vecs / np.sqrt(np.maximum(vals, 1e-12))) @ vecs.T


def run_oracle(twin_dir: str | Path, split: str = "test", split_index: int = 0, background_s: float = 120.0,
               seed: int = 0) -> dict:
    """Oracle class accuracy on one part of a twin (``all``, ``train``, ``val`` or ``test``).

    Returns
    -------
    dict
        ``accuracy``, ``chance`` (1 / n_classes), ``n_test``, ``split``, ``per_subject``.
    """
    from .baseline import load_twin_windows

    root = Path(twin_dir)
    oracle = OracleDecoder(root, background_s=background_s, seed=seed)
    d = load_twin_windows(root, split, split_index)
    stim = json.loads((root / oracle.meta["files"]["stimuli"]).read_text())
    layouts = np.array([[stim[s][k] for k in ("cx", "cy", "size", "hue")] for s in d["image"]])
    pred = oracle.class_scores(d["x"], d["subject"], layouts).argmax(axis=1)
    acc = float(np.mean(pred == d["label"]))
    per_subject = {int(s): float(np.mean(pred[d["subject"] == s] == d["label"][d["subject"] == s]))
                   for s in np.unique(d["subject"])}
    logger.info("oracle on %s (%s): accuracy %.3f", root, split, acc)
    return {"split": split, "accuracy": acc, "chance": 1.0 / oracle.n_classes, "n_test": int(len(pred)),
            "per_subject": per_subject}

"""A linear single-trial window decoder: the baseline the live demo runs.

Features (the same function the twin baseline trains on, defined once here):
the mean of each ``bin_samples`` bin of the posterior channels' time course
(the evoked response, where class and layout live) and every channel's
log-variance over the window (band power). Features are standardised and
mapped by one weight matrix to the scores of several tasks (e.g. ``class``,
``hemifield``, ``quadrant``); each task's prediction is the argmax of its
slice.

Weights live in a safetensors file whose metadata holds the task layout and
class names, so the live process needs nothing from the training stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["LinearWindowDecoder", "window_features"]

FORMAT = "neuroimagen.linear_window_decoder/1"


def window_features(x: np.ndarray, posterior: np.ndarray, bin_samples: int = 20) -> np.ndarray:
    """Features of normalised windows.

    Parameters
    ----------
    x : ndarray, shape (n_windows, n_channels, n_times), float32
    posterior : ndarray of int
        Channel indices used for the binned time course.
    bin_samples : int
        Samples per time bin (20 = 20 ms at 1 kHz).

    Returns
    -------
    ndarray, shape (n_windows, len(posterior) * (n_times // bin_samples) + n_channels), float64
    """
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"windows must be (n_windows, n_channels, n_times), got shape {x.shape}")
    n_w, _, n_t = x.shape
    n_bins = n_t // bin_samples
    binned = x[:, posterior, : n_bins * bin_samples].reshape(n_w, len(posterior), n_bins, bin_samples).mean(-1)
    logvar = np.log(x.astype(np.float64).var(axis=-1) + 1e-12)
    return np.concatenate([binned.reshape(n_w, -1).astype(np.float64), logvar], axis=1)


@dataclass(frozen=True)
class LinearWindowDecoder:
    """Standardise features, one matrix product, argmax per task.

    Attributes
    ----------
    posterior : ndarray of int, channels of the binned time course
    bin_samples : int
    n_channels, n_times : int, the window shape it expects
    mean, scale : ndarray, shape (n_features,), feature standardisation
    weight : ndarray, shape (n_features, n_outputs); bias : (n_outputs,)
    tasks : dict task -> (start, stop) column slice of the outputs
    class_names : list of str, names of the ``class`` task's outputs
    fitted_images : list of str, the image ids it was fitted on (any other image is unseen)
    """

    posterior: np.ndarray
    bin_samples: int
    n_channels: int
    n_times: int
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    tasks: dict[str, tuple[int, int]]
    class_names: list[str] = field(default_factory=list)
    fitted_images: list[str] = field(default_factory=list)

    def scores(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """Scores per task for windows (n, n_channels, n_times) or one window (n_channels, n_times)."""
        w = np.asarray(windows, dtype=np.float32)
        if w.ndim == 2:
            w = w[None]
        if w.shape[1:] != (self.n_channels, self.n_times):
            raise ValueError(
                f"decoder expects windows of shape ({self.n_channels}, {self.n_times}), got {w.shape[1:]}"
            )
        f = (window_features(w, self.posterior, self.bin_samples) - self.mean) / self.scale
        out = f @ self.weight + self.bias
        return {task: out[:, a:b] for task, (a, b) in self.tasks.items()}

    def predict(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """Argmax per task, each (n,) int."""
        return {task: s.argmax(axis=1) for task, s in self.scores(windows).items()}

    def save(self, path: str | Path) -> Path:
        from safetensors.numpy import save_file

        path = Path(path)
        meta = {
            "format": FORMAT,
            "bin_samples": str(self.bin_samples),
            "n_channels": str(self.n_channels),
            "n_times": str(self.n_times),
            "tasks": json.dumps(self.tasks),
            "class_names": json.dumps(self.class_names),
            "fitted_images": json.dumps(self.fitted_images),
        }
        tensors = {
            "posterior": np.asarray(self.posterior, dtype=np.int64),
            "mean": self.mean.astype(np.float64),
            "scale": self.scale.astype(np.float64),
            "weight": self.weight.astype(np.float64),
            "bias": self.bias.astype(np.float64),
        }
        save_file(tensors, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LinearWindowDecoder:
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"decoder file not found: {path}")
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise ValueError(f"{path}: not a linear window decoder (format {meta.get('format')!r})")
            t = {k: f.get_tensor(k) for k in f.keys()}
        return cls(
            posterior=t["posterior"],
            bin_samples=int(meta["bin_samples"]),
            n_channels=int(meta["n_channels"]),
            n_times=int(meta["n_times"]),
            mean=t["mean"],
            scale=t["scale"],
            weight=t["weight"],
            bias=t["bias"],
            tasks={k: tuple(v) for k, v in json.loads(meta["tasks"]).items()},
            class_names=json.loads(meta["class_names"]),
            fitted_images=json.loads(meta["fitted_images"]),
        )

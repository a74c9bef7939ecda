"""A linear single-trial window decoder: the baseline the live demo runs.

Features (the same function the twin baseline trains on, defined once here):
the mean of each ``bin_samples`` bin of the posterior channels' time course
(the evoked response, where class and layout live) and every channel's
log-variance over the window (band power). Features are standardised and
mapped by one weight matrix to the scores of several tasks (e.g. ``class``,
``hemifield``, ``quadrant``); each task's prediction is the argmax of its
slice.

It is a model folder like every other model (config.json with the task layout,
class names and fitted images; safetensors with the standardisation and
weights), so the live process needs nothing from the training stack.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

__all__ = ["LinearWindowDecoder", "window_features"]

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


class LinearWindowDecoder(ModelMixin, ConfigMixin):
    """Standardise features, one matrix product, argmax per task; a model folder like every other.

    Config (``config.json``): ``posterior`` (channels of the binned time course),
    ``bin_samples``, ``n_channels``, ``n_times`` (the window shape it expects),
    ``n_features``, ``n_outputs``, ``tasks`` (task -> [start, stop) column slice of the
    outputs), ``class_names`` (the ``class`` task's outputs) and ``fitted_images`` (the
    image ids it was fitted on; any other image is unseen). Tensors (float64):
    ``mean``, ``scale`` (n_features,), ``weight`` (n_features, n_outputs), ``bias`` (n_outputs,).

    Build one from arrays with :meth:`from_arrays`; save and load with :meth:`save` /
    :meth:`load` (the one model format, loaded strictly).
    """

    @register_to_config
    def __init__(
        self,
        posterior: list[int] | None = None,
        bin_samples: int = 20,
        n_channels: int = 128,
        n_times: int = 440,
        n_features: int = 1,
        n_outputs: int = 1,
        tasks: dict[str, list[int]] | None = None,
        class_names: list[str] | None = None,
        fitted_images: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(n_features, dtype=torch.float64))
        self.register_buffer("weight", torch.zeros(n_features, n_outputs, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(n_outputs, dtype=torch.float64))

    @classmethod
    def from_arrays(
        cls,
        posterior: np.ndarray,
        bin_samples: int,
        n_channels: int,
        n_times: int,
        mean: np.ndarray,
        scale: np.ndarray,
        weight: np.ndarray,
        bias: np.ndarray,
        tasks: dict[str, tuple[int, int]],
        class_names: list[str] | None = None,
        fitted_images: list[str] | None = None,
    ) -> LinearWindowDecoder:
        """A decoder from fitted arrays (weight (n_features, n_outputs))."""
        weight = np.asarray(weight, dtype=np.float64)
        model = cls(
            posterior=[int(i) for i in np.asarray(posterior)], bin_samples=int(bin_samples),
            n_channels=int(n_channels), n_times=int(n_times), n_features=int(weight.shape[0]),
            n_outputs=int(weight.shape[1]), tasks={k: [int(a), int(b)] for k, (a, b) in tasks.items()},
            class_names=list(class_names or []), fitted_images=list(fitted_images or []),
        )
        for name, arr in (("mean", mean), ("scale", scale), ("weight", weight), ("bias", bias)):
            getattr(model, name).copy_(torch.from_numpy(np.asarray(arr, dtype=np.float64)))
        return model.eval()

    @property
    def posterior(self) -> np.ndarray:
        return np.asarray(self.config.posterior, dtype=np.int64)

    @property
    def bin_samples(self) -> int:
        return int(self.config.bin_samples)

    @property
    def n_channels(self) -> int:
        return int(self.config.n_channels)

    @property
    def n_times(self) -> int:
        return int(self.config.n_times)

    @property
    def tasks(self) -> dict[str, tuple[int, int]]:
        return {k: (int(a), int(b)) for k, (a, b) in (self.config.tasks or {}).items()}

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names or [])

    @property
    def fitted_images(self) -> list[str]:
        return list(self.config.fitted_images or [])

    def scores(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """Scores per task for windows (n, n_channels, n_times) or one window (n_channels, n_times)."""
        w = np.asarray(windows, dtype=np.float32)
        if w.ndim == 2:
            w = w[None]
        if w.shape[1:] != (self.n_channels, self.n_times):
            raise ValueError(
                f"decoder expects windows of shape ({self.n_channels}, {self.n_times}), got {w.shape[1:]}"
            )
        f = (window_features(w, self.posterior, self.bin_samples) - self.mean.numpy()) / self.scale.numpy()
        out = f @ self.weight.numpy() + self.bias.numpy()
        return {task: out[:, a:b] for task, (a, b) in self.tasks.items()}

    def predict(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """Argmax per task, each (n,) int."""
        return {task: s.argmax(axis=1) for task, s in self.scores(windows).items()}

    def save(self, path: str | Path) -> Path:
        """Save as a model folder (config.json + safetensors)."""
        from .format import save_model

        return save_model(self, path)

    @classmethod
    def load(cls, path: str | Path) -> LinearWindowDecoder:
        """Load a model folder strictly (see :func:`~neuroimagen.training.models.format.load_model`)."""
        from .format import load_model

        return load_model(cls, path)

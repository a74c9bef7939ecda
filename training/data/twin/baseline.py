"""A linear single-trial baseline on a twin (or any EEG-ImageNet-layout folder with stimuli.json).

Features per window (the loader's (128, 440) crop, samples 20-460 after onset):

* the mean of each 20 ms bin on the posterior channels (head-frame y < -3 cm):
  the evoked response, where class and layout live;
* the log-variance of every channel over the window: band power, where a
  block-level nonstationarity lives.

Both are standardised and fed to ridge classifiers (scikit-learn ``RidgeCV`` on
+-1 one-hot codes, argmax; penalty per output by efficient leave-one-out).
Tasks: the class (n-way), the object's hemifield (2-way) and quadrant (4-way),
and the class again with the training labels shuffled (a control that must
stay at chance: it proves the metric can fail).

Evaluation is split by image: ``cv`` (default) is a grouped k-fold where all
trials of an image sit in one fold, so every trial is predicted once while
its image is unseen; ``split`` trains on the file's ``train`` part and tests
on its ``test`` part (``block_splits_by_image_all.pth``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np

from neuroimagen.stream.montage import channel_positions

from ...models.linear_decoder import LinearWindowDecoder, window_features

__all__ = ["BIN_SAMPLES", "features", "fit_decoder", "load_twin_windows", "run_baseline"]

logger = logging.getLogger(__name__)

BIN_SAMPLES = 20
POSTERIOR_Y_M = -0.03


def features(x: np.ndarray, posterior: np.ndarray, bin_samples: int = BIN_SAMPLES) -> np.ndarray:
    """Baseline features of windows: :func:`~neuroimagen.training.models.linear_decoder.window_features`.

    One definition serves training here and the live decoder.
    """
    return window_features(x, posterior, bin_samples)


def load_twin_windows(twin_dir: str | Path, split: str = "all", split_index: int = 0) -> dict:
    """Windows, labels and layout targets of a twin folder through the EEG-ImageNet loader.

    Returns
    -------
    dict
        ``x`` (n, 128, 440) float32, ``label`` (n,) int, ``image`` list of stems,
        ``subject`` (n,) int, ``hemifield`` (n,) int, ``quadrant`` (n,) int,
        ``n_classes`` int.
    """
    from ..eeg_imagenet import EEGImageNetDataset

    root = Path(twin_dir)
    meta_path = root / "twin.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{root}: no twin.json (is this a twin made by `neuroimagen data make-twin`?)")
    meta = json.loads(meta_path.read_text())
    files = meta["files"]
    stim = json.loads((root / files["stimuli"]).read_text())
    ds = EEGImageNetDataset(
        root / files["eeg"],
        splits_path=None if split == "all" else root / files["splits"],
        split=split,
        split_index=split_index,
        class_names=dict(zip(meta["wnids"], meta["class_names"], strict=True)),
    )
    x = np.stack([ds.window(i) for i in range(len(ds))])
    segs = [ds.file.segments[i] for i in ds.indices]
    stems = [ds.images[s["image"]] for s in segs]
    missing = [s for s in stems if s not in stim]
    if missing:
        raise KeyError(f"{root / files['stimuli']}: no layout for image {missing[0]!r}")
    return {
        "x": x,
        "label": np.array([s["label"] for s in segs]),
        "image": stems,
        "subject": np.array([s["subject"] for s in segs]),
        "hemifield": np.array([stim[s]["hemifield"] for s in stems]),
        "quadrant": np.array([stim[s]["quadrant"] for s in stems]),
        "n_classes": len(meta["wnids"]),
    }


def _fit_ridge(x_tr: np.ndarray, targets_tr: list[np.ndarray], n_out: list[int]):
    """One ridge regression on the one-hot codes of every task at once (a ridge classifier per task).

    The penalty is chosen per output column by efficient leave-one-out (``RidgeCV``);
    sharing the one decomposition of the features across tasks keeps it to seconds.
    Returns the fitted ``(scaler, model)``.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_tr)
    y = np.concatenate([np.eye(k)[t] * 2.0 - 1.0 for t, k in zip(targets_tr, n_out, strict=True)], axis=1)
    model = RidgeCV(alphas=np.logspace(0, 5, 11), alpha_per_target=True).fit(scaler.transform(x_tr), y)
    return scaler, model


def _fit_predict(x_tr: np.ndarray, targets_tr: list[np.ndarray], x_te: np.ndarray,
                 n_out: list[int]) -> list[np.ndarray]:
    """Fit :func:`_fit_ridge` and predict every task's argmax on ``x_te``."""
    scaler, model = _fit_ridge(x_tr, targets_tr, n_out)
    scores = model.predict(scaler.transform(x_te))
    edges = np.cumsum([0, *n_out])
    return [scores[:, a:b].argmax(axis=1) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def fit_decoder(twin_dir: str | Path, split: str = "train", split_index: int = 0) -> LinearWindowDecoder:
    """Fit the baseline on one part of a twin and pack it as a live :class:`LinearWindowDecoder`.

    Parameters
    ----------
    twin_dir : path
        Folder written by ``neuroimagen data make-twin``.
    split : {"train", "all"}
        ``train`` keeps the split file's test images unseen (the demo scores on them).
    """
    posterior = np.flatnonzero(channel_positions()[:, 1] < POSTERIOR_Y_M)
    d = load_twin_windows(twin_dir, split, split_index)
    feats = features(d["x"], posterior)
    n_cls = int(d["n_classes"])
    n_out = [n_cls, 2, 4]
    scaler, model = _fit_ridge(feats, [d["label"], d["hemifield"], d["quadrant"]], n_out)
    meta = json.loads((Path(twin_dir) / "twin.json").read_text())
    return LinearWindowDecoder.from_arrays(
        posterior=posterior,
        bin_samples=BIN_SAMPLES,
        n_channels=d["x"].shape[1],
        n_times=d["x"].shape[2],
        mean=scaler.mean_,
        scale=scaler.scale_,
        weight=np.asarray(model.coef_).T,
        bias=np.asarray(model.intercept_),
        tasks={"class": (0, n_cls), "hemifield": (n_cls, n_cls + 2), "quadrant": (n_cls + 2, n_cls + 6)},
        class_names=list(meta["class_names"]),
        fitted_images=sorted(set(d["image"])),
    )


def run_baseline(
    twin_dir: str | Path,
    evaluation: Literal["cv", "split"] = "cv",
    n_folds: int = 5,
    split_index: int = 0,
    seed: int = 0,
) -> dict:
    """Score the linear baseline on a twin, split by image.

    Parameters
    ----------
    twin_dir : path
        Folder written by :func:`~neuroimagen.training.data.twin.make_twin`.
    evaluation : {"cv", "split"}
        Grouped k-fold by image over all trials, or the file's train/test split.
    n_folds : int
    split_index : int
        Which split of the splits file (``split`` evaluation).
    seed : int
        Seeds the shuffled-labels control.

    Returns
    -------
    dict
        ``rows``: one dict per task (``task``, ``n_classes``, ``accuracy``,
        ``chance`` (the majority-class rate of the test labels), ``ratio``
        accuracy / chance, ``n_test``), plus ``evaluation``, ``n_trials``,
        ``n_features``.
    """
    posterior = np.flatnonzero(channel_positions()[:, 1] < POSTERIOR_Y_M)
    tasks = ("class", "hemifield", "quadrant", "class_shuffled")
    rng = np.random.default_rng(seed)
    if evaluation == "cv":
        from sklearn.model_selection import GroupKFold

        d = load_twin_windows(twin_dir, "all")
        feats = features(d["x"], posterior)
        groups = np.unique(d["image"], return_inverse=True)[1]
        folds = list(GroupKFold(n_splits=n_folds).split(feats, groups=groups))
    elif evaluation == "split":
        tr = load_twin_windows(twin_dir, "train", split_index)
        te = load_twin_windows(twin_dir, "test", split_index)
        if set(tr["image"]) & set(te["image"]):
            raise ValueError(f"{twin_dir}: split {split_index} shares images between train and test")
        d = {k: np.concatenate([np.asarray(tr[k]), np.asarray(te[k])]) for k in
             ("label", "hemifield", "quadrant")}
        d["n_classes"] = tr["n_classes"]
        feats = np.concatenate([features(tr["x"], posterior), features(te["x"], posterior)])
        n_tr = len(tr["label"])
        folds = [(np.arange(n_tr), np.arange(n_tr, len(feats)))]
    else:
        raise ValueError(f"evaluation must be 'cv' or 'split', got {evaluation!r}")

    # 1. one fit per fold predicts every task (the shuffled control permutes the training labels)
    n_cls = int(d["n_classes"])
    n_out = [n_cls, 2, 4, n_cls]
    ys = [d["label"], d["hemifield"], d["quadrant"], d["label"]]
    preds = [np.full(len(feats), -1) for _ in tasks]
    tested = np.zeros(len(feats), dtype=bool)
    for train_idx, test_idx in folds:
        y_tr = [y[train_idx] for y in ys]
        y_tr[3] = rng.permutation(y_tr[3])
        for pred, p in zip(preds, _fit_predict(feats[train_idx], y_tr, feats[test_idx], n_out), strict=True):
            pred[test_idx] = p
        tested[test_idx] = True
    # 2. accuracy against the true labels; chance = the majority-class rate of the test labels
    rows = []
    for task, y, pred, k in zip(tasks, ys, preds, n_out, strict=True):
        y_te, p_te = y[tested], pred[tested]
        acc = float(np.mean(y_te == p_te))
        chance = float(np.bincount(y_te).max() / len(y_te))
        rows.append({"task": task, "n_classes": k, "accuracy": acc, "chance": chance,
                     "ratio": acc / chance, "n_test": int(tested.sum())})
        logger.info("%s: accuracy %.3f (chance %.3f)", task, acc, chance)
    return {"evaluation": evaluation, "n_folds": n_folds if evaluation == "cv" else None,
            "n_trials": len(feats), "n_features": int(feats.shape[1]), "rows": rows}

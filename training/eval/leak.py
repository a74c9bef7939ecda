"""Split-leak check: do the train and test sets share recording blocks or sessions?

The block-design confound (Li et al., 2020, "The perils and pitfalls of block
design for EEG classification experiments"): in EEG-ImageNet every class was
shown in one continuous block per subject, so slow drifts, electrode impedance
and the subject's state are constant within a block and differ between
blocks. A split that puts segments of the same block in both train and test
lets a classifier recognise the *block* (hence the class) from drift alone;
its test accuracy says nothing about decoding what was seen. A clean split
holds out whole blocks (or sessions).

:func:`check_split_leak` takes per-sample block (and optionally session) ids
with the train/test indices and reports the overlap;
:func:`check_eeg_imagenet_leak` reads EEG-ImageNet's ``eeg_*.pth`` +
``block_splits_by_image_*.pth`` (or the synthetic twin's equivalents) and
infers the blocks.

Block heuristic for EEG-ImageNet (:func:`infer_blocks`): the files carry no
block ids, so a block is a maximal run of consecutive entries (in the order
of ``dataset``) with the same subject and the same label. In the published
file this gives one block per (subject, class) -- the design showed each class
once per subject -- and in a file ordered by presentation it recovers the
presentation blocks. It cannot separate two blocks of the same class that
follow each other directly, and an interleaved (event-related) ordering
yields runs of length ~1, which the report flags (``mean_block_size``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

BLOCK_HEURISTIC = (
    "block = maximal run of consecutive dataset entries with the same subject and label"
)


def infer_blocks(
    labels: Sequence[int] | np.ndarray, subjects: Sequence[int] | np.ndarray
) -> np.ndarray:
    """Block id of each sample: a new block starts whenever subject or label changes.

    Parameters
    ----------
    labels, subjects : array-like
        (n_samples,) int, in dataset (recording) order.

    Returns
    -------
    np.ndarray
        (n_samples,) int64 block ids 0, 1, 2, ... in order of first appearance.
    """
    labels = np.asarray(labels)
    subjects = np.asarray(subjects)
    if labels.shape != subjects.shape or labels.ndim != 1:
        raise ValueError(
            f"labels {labels.shape} and subjects {subjects.shape} must be matching 1-D arrays"
        )
    if labels.size == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.ones(labels.size, dtype=bool)
    change[1:] = (labels[1:] != labels[:-1]) | (subjects[1:] != subjects[:-1])
    return np.cumsum(change).astype(np.int64) - 1


@dataclass(frozen=True)
class OverlapReport:
    """Overlap of one grouping (blocks or sessions) between train and test."""

    unit: str  #: "block" or "session"
    n_train_groups: int
    n_test_groups: int
    n_shared_groups: int
    #: fraction of the test samples whose group also has training samples, in [0, 1]
    test_fraction_shared: float
    shared_groups: list = field(default_factory=list)  #: up to 20 shared ids, for the report

    @property
    def leak(self) -> bool:
        return self.n_shared_groups > 0


def _overlap(
    ids: np.ndarray, train_idx: np.ndarray, test_idx: np.ndarray, unit: str
) -> OverlapReport:
    tr, te = ids[train_idx], ids[test_idx]
    shared = np.intersect1d(np.unique(tr), np.unique(te))
    frac = float(np.isin(te, shared).mean()) if te.size else 0.0
    return OverlapReport(
        unit=unit,
        n_train_groups=int(np.unique(tr).size),
        n_test_groups=int(np.unique(te).size),
        n_shared_groups=int(shared.size),
        test_fraction_shared=frac,
        shared_groups=[s.item() for s in shared[:20]],
    )


def check_split_leak(
    block_ids: Sequence | np.ndarray,
    train_idx: Sequence[int] | np.ndarray,
    test_idx: Sequence[int] | np.ndarray,
    session_ids: Sequence | np.ndarray | None = None,
    warn: bool = True,
) -> dict:
    """Report how many recording blocks (and sessions) appear in both train and test.

    Parameters
    ----------
    block_ids : array-like
        (n_samples,) block id of every sample (any hashable dtype numpy can sort).
    train_idx, test_idx : array-like of int
        Indices of the training and test samples into ``block_ids``.
    session_ids : array-like, optional
        (n_samples,) session id of every sample.
    warn : bool
        Emit ``logging.warning`` when anything is shared.

    Returns
    -------
    dict
        JSON-ready: ``{"leak": bool, "warnings": [...], "n_train": ..., "n_test": ...,
        "n_overlapping_samples": ..., "blocks": {...}, "sessions": {...} | None}``.
        ``leak`` is True when any block or session has both train and test samples.
    """
    block_ids = np.asarray(block_ids)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    test_idx = np.asarray(test_idx, dtype=np.int64)
    n = block_ids.shape[0]
    for name, idx in (("train", train_idx), ("test", test_idx)):
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise ValueError(f"{name} indices must be in [0, {n}), got [{idx.min()}, {idx.max()}]")
    reports = {"blocks": _overlap(block_ids, train_idx, test_idx, "block")}
    if session_ids is not None:
        session_ids = np.asarray(session_ids)
        if session_ids.shape != block_ids.shape:
            raise ValueError(
                f"session_ids {session_ids.shape} must match block_ids {block_ids.shape}"
            )
        reports["sessions"] = _overlap(session_ids, train_idx, test_idx, "session")
    n_samples_overlap = int(np.intersect1d(train_idx, test_idx).size)

    warnings = []
    if n_samples_overlap:
        warnings.append(f"{n_samples_overlap} samples are in both train and test")
    for rep in reports.values():
        if rep.leak:
            warnings.append(
                f"{rep.n_shared_groups} of {rep.n_test_groups} test {rep.unit}s also have training "
                f"samples ({100 * rep.test_fraction_shared:.1f}% of the test samples): the "
                f"{rep.unit}-design confound; test accuracy can reflect {rep.unit} identity "
                "(drift, state) rather than the stimulus"
            )
    if warn:
        for w in warnings:
            logger.warning("split leak: %s", w)
    out = {
        "leak": bool(warnings),
        "warnings": warnings,
        "n_train": int(train_idx.size),
        "n_test": int(test_idx.size),
        "n_overlapping_samples": n_samples_overlap,
        "blocks": _report_dict(reports["blocks"], block_ids),
        "sessions": _report_dict(reports["sessions"], None) if "sessions" in reports else None,
    }
    return out


def _report_dict(rep: OverlapReport, ids: np.ndarray | None) -> dict:
    d = asdict(rep)
    d["leak"] = rep.leak
    if ids is not None and ids.size:
        d["mean_block_size"] = float(ids.size / np.unique(ids).size)
    return d


def check_eeg_imagenet_leak(
    eeg_path: str | Path,
    splits_path: str | Path,
    split_index: int = 0,
    train_split: str = "train",
    test_split: str = "test",
    warn: bool = True,
) -> dict:
    """Split-leak check for EEG-ImageNet (``eeg_5_95_std.pth`` + ``block_splits_by_image_all.pth``).

    Parameters
    ----------
    eeg_path : path
        ``{"dataset": [{"eeg", "label", "subject", "image"}, ...], "labels": [...], "images": [...]}``.
    splits_path : path
        ``{"splits": [{"train": [...], "val": [...], "test": [...]}, ...]}`` (indices into ``dataset``).
    split_index : int
        Which of the splits to check.

    Returns
    -------
    dict
        :func:`check_split_leak`'s report plus ``"heuristic"``, ``"split_index"``,
        ``"n_subjects"`` and the file paths. Blocks come from :func:`infer_blocks`.
    """
    from neuroimagen.stream.readers import read_eeg_imagenet, read_splits

    # 1. the one EEG-ImageNet parser (errors: DataFileError, naming the file and key)
    eeg_path, splits_path = Path(eeg_path), Path(splits_path)
    eeg = read_eeg_imagenet(eeg_path, n_channels=None)
    labels = np.array([s["label"] for s in eeg.segments])
    subjects = np.array([s["subject"] for s in eeg.segments])
    splits = read_splits(splits_path)
    if not 0 <= split_index < len(splits):
        raise ValueError(f"{splits_path}: no splits[{split_index}]; the file holds {len(splits)} split(s)")
    split = splits[split_index]
    if train_split not in split or test_split not in split:
        raise ValueError(f"{splits_path}: splits[{split_index}] has no {train_split!r}/{test_split!r}")
    train_idx, test_idx = split[train_split], split[test_split]
    blocks = infer_blocks(labels, subjects)
    report = check_split_leak(blocks, train_idx, test_idx, warn=False)
    mean_run = report["blocks"].get("mean_block_size", 0.0)
    report["inconclusive"] = mean_run < 2.0
    if report["inconclusive"]:
        # runs of ~1 sample: the file is not in block order (e.g. an interleaved,
        # event-related design), so "blocks" are single trials and their overlap
        # means nothing; only exact sample overlap still counts as a leak
        report["warnings"] = [w for w in report["warnings"] if "samples are in both" in w]
        report["warnings"].append(
            f"{eeg_path}: consecutive entries rarely share subject and label (mean run "
            f"{mean_run:.2f}); blocks cannot be inferred from the dataset order, so the "
            "block check is inconclusive"
        )
        report["leak"] = report["n_overlapping_samples"] > 0
    if warn:
        for w in report["warnings"]:
            logger.warning("split leak: %s", w)
    report.update(
        heuristic=BLOCK_HEURISTIC,
        split_index=split_index,
        n_subjects=int(np.unique(subjects).size),
        eeg_path=str(eeg_path),
        splits_path=str(splits_path),
    )
    return report

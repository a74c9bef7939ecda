"""The split-leak check: block inference, overlap counting, EEG-ImageNet files and the CLI."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from neuroimagen.realtime.cli import main
from neuroimagen.training.eval.leak import (
    check_eeg_imagenet_leak,
    check_split_leak,
    infer_blocks,
)

N_SUBJECTS, N_CLASSES, N_IMAGES = 3, 4, 5


def block_design(shuffle_classes: bool = True, seed: int = 0):
    """Samples in recording order: each subject sees each class in one block of N_IMAGES images.

    Returns labels, subjects, images (index of the image within its class) and the
    true block id of every sample, known by construction.
    """
    rng = np.random.default_rng(seed)
    labels, subjects, images, blocks = [], [], [], []
    block = 0
    for s in range(N_SUBJECTS):
        order = rng.permutation(N_CLASSES) if shuffle_classes else np.arange(N_CLASSES)
        for c in order:
            for i in rng.permutation(N_IMAGES):
                labels.append(int(c))
                subjects.append(s)
                images.append(int(c) * N_IMAGES + int(i))
                blocks.append(block)
            block += 1
    return np.array(labels), np.array(subjects), np.array(images), np.array(blocks)


def test_infer_blocks_recovers_the_design():
    labels, subjects, _, truth = block_design()
    np.testing.assert_array_equal(infer_blocks(labels, subjects), truth)
    # same label continuing across a subject change is still a new block
    np.testing.assert_array_equal(infer_blocks([1, 1, 1, 1], [0, 0, 1, 1]), [0, 0, 1, 1])
    assert infer_blocks([], []).size == 0
    with pytest.raises(ValueError, match="matching"):
        infer_blocks([1, 2], [0])


def test_split_by_image_leaks_every_block(caplog):
    labels, subjects, images, _ = block_design()
    within = images % N_IMAGES  # EEG-ImageNet's by-image split: same images for all subjects
    train = np.flatnonzero(within < 3)
    test = np.flatnonzero(within == 4)
    with caplog.at_level(logging.WARNING):
        rep = check_split_leak(infer_blocks(labels, subjects), train, test)
    assert rep["leak"] is True
    n_blocks = N_SUBJECTS * N_CLASSES
    assert rep["blocks"]["n_shared_groups"] == rep["blocks"]["n_test_groups"] == n_blocks
    assert rep["blocks"]["test_fraction_shared"] == 1.0
    assert rep["n_overlapping_samples"] == 0
    assert "block-design confound" in caplog.text
    assert rep["blocks"]["mean_block_size"] == N_IMAGES


def test_split_by_block_is_clean_and_partial_leaks_are_counted():
    labels, subjects, _, _ = block_design()
    blocks = infer_blocks(labels, subjects)
    # hold out whole classes (= whole blocks) per subject
    train = np.flatnonzero(labels < 3)
    test = np.flatnonzero(labels == 3)
    rep = check_split_leak(blocks, train, test)
    assert rep["leak"] is False and rep["warnings"] == []
    assert rep["blocks"]["n_shared_groups"] == 0 and rep["blocks"]["test_fraction_shared"] == 0.0
    # move one test sample of one block into train: exactly that block leaks
    moved = test[0]
    rep = check_split_leak(blocks, np.append(train, moved), test[1:])
    assert rep["blocks"]["n_shared_groups"] == 1
    assert rep["blocks"]["shared_groups"] == [int(blocks[moved])]
    assert rep["blocks"]["test_fraction_shared"] == pytest.approx((N_IMAGES - 1) / (len(test) - 1))
    # the same sample in both sets is reported too
    rep = check_split_leak(blocks, np.append(train, moved), test)
    assert rep["n_overlapping_samples"] == 1 and rep["leak"]


def test_session_overlap_is_reported_separately():
    labels, subjects, _, _ = block_design()
    blocks = infer_blocks(labels, subjects)
    sessions = subjects.copy()  # one session per subject
    train = np.flatnonzero(labels < 3)
    test = np.flatnonzero(labels == 3)
    rep = check_split_leak(blocks, train, test, session_ids=sessions, warn=False)
    assert rep["blocks"]["leak"] is False and rep["sessions"]["leak"] is True
    assert rep["sessions"]["n_shared_groups"] == N_SUBJECTS
    assert any("session" in w for w in rep["warnings"])
    # holding out a whole subject is clean at both levels
    rep = check_split_leak(
        blocks, np.flatnonzero(subjects < 2), np.flatnonzero(subjects == 2), session_ids=sessions
    )
    assert rep["leak"] is False


def test_bad_indices_are_rejected():
    with pytest.raises(ValueError, match="test indices"):
        check_split_leak(np.zeros(5), [0, 1], [4, 5])


def write_eeg_imagenet(tmp_path, order=None):
    """Tiny files in EEG-ImageNet's layout (eeg_*.pth + block_splits_by_image_*.pth)."""
    labels, subjects, images, _ = block_design()
    idx = np.arange(labels.size) if order is None else order
    dataset = [
        {
            "eeg": torch.zeros(4, 8),
            "label": int(labels[i]),
            "subject": int(subjects[i]) + 1,
            "image": int(images[i]),
        }
        for i in idx
    ]
    eeg_path = tmp_path / "eeg_5_95_std.pth"
    torch.save(
        {
            "dataset": dataset,
            "labels": [f"n9{c:07d}" for c in range(N_CLASSES)],
            "images": [f"n9{i // N_IMAGES:07d}_{i}" for i in range(N_CLASSES * N_IMAGES)],
        },
        eeg_path,
    )
    within = np.array([d["image"] % N_IMAGES for d in dataset])
    split = {
        "train": np.flatnonzero(within < 3).tolist(),
        "val": np.flatnonzero(within == 3).tolist(),
        "test": np.flatnonzero(within == 4).tolist(),
    }
    splits_path = tmp_path / "block_splits_by_image_all.pth"
    torch.save({"splits": [split]}, splits_path)
    return eeg_path, splits_path


def test_eeg_imagenet_files(tmp_path):
    eeg_path, splits_path = write_eeg_imagenet(tmp_path)
    rep = check_eeg_imagenet_leak(eeg_path, splits_path, warn=False)
    assert rep["leak"] and not rep["inconclusive"]
    assert rep["blocks"]["n_test_groups"] == N_SUBJECTS * N_CLASSES
    assert rep["n_subjects"] == N_SUBJECTS and "same subject and label" in rep["heuristic"]
    with pytest.raises(ValueError, match=r"splits\[3\]"):
        check_eeg_imagenet_leak(eeg_path, splits_path, split_index=3)
    with pytest.raises(ValueError, match="not an EEG-ImageNet file"):
        check_eeg_imagenet_leak(splits_path, splits_path)


def test_shuffled_dataset_order_is_inconclusive(tmp_path):
    order = np.random.default_rng(1).permutation(N_SUBJECTS * N_CLASSES * N_IMAGES)
    eeg_path, splits_path = write_eeg_imagenet(tmp_path, order=order)
    rep = check_eeg_imagenet_leak(eeg_path, splits_path, warn=False)
    assert rep["inconclusive"] and any("inconclusive" in w for w in rep["warnings"])
    # pseudo-blocks of single trials are not reported as a block leak
    assert rep["leak"] is False and len(rep["warnings"]) == 1


def test_cli_leak_writes_json_and_can_fail(tmp_path):
    eeg_path, splits_path = write_eeg_imagenet(tmp_path)
    out = tmp_path / "leak.json"
    args = ["eval", "leak", "--eeg", str(eeg_path), "--splits", str(splits_path)]
    res = CliRunner().invoke(main, [*args, "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "LEAK" in res.output and "12 of 12 test blocks" in res.output
    report = json.loads(out.read_text())
    assert report["leak"] is True and report["blocks"]["test_fraction_shared"] == 1.0
    res = CliRunner().invoke(main, [*args, "--fail-on-leak"])
    assert res.exit_code == 1

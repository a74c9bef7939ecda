"""Stimulus folders and presentation schedules (what the presenter and the offline session share)."""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuroimagen.stream.design import load_stimuli, make_schedule, marker_payload


def _folder(root: Path, n_classes: int = 3, n_images: int = 5) -> Path:
    for c in range(n_classes):
        (root / f"cls{c}").mkdir(parents=True)
        for i in range(n_images):
            Image.new("RGB", (8, 8), (40 * c, 10 * i, 0)).save(root / f"cls{c}" / f"c{c}_{i}.png")
    return root


def test_folder_per_class_with_names_and_captions(tmp_path: Path) -> None:
    root = _folder(tmp_path / "images")
    (root / "class_names.yaml").write_text("cls1: a dog\n")
    (root / "captions.json").write_text(json.dumps({"c0_1": "a red thing"}))
    (root / "empty").mkdir()
    s = load_stimuli(root)
    assert s.classes == ("cls0", "cls1", "cls2") and s.class_names == ("cls0", "a dog", "cls2")
    assert len(s.stimuli) == 15 and s.by_stem()["c0_1"].caption == "a red thing"
    assert {x.label for x in s.stimuli if x.class_id == "cls2"} == {2}


def test_bad_folders_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_stimuli(tmp_path / "nope")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(ValueError, match="no class folders"):
        load_stimuli(tmp_path / "flat")
    root = _folder(tmp_path / "dup", 2, 1)
    Image.new("RGB", (8, 8)).save(root / "cls1" / "c0_0.png")
    with pytest.raises(ValueError, match="'c0_0' appears twice"):
        load_stimuli(root)


def test_rapid_schedule_repeats_test_images_and_jitters_onsets(tmp_path: Path) -> None:
    s = load_stimuli(_folder(tmp_path / "images"))
    trials = make_schedule(s, soa_s=0.5, jitter_s=0.2, n_test_per_class=1, test_repeats=3, n_passes=2,
                           break_every=10, break_s=5.0, seed=4)
    counts = Counter((t.stimulus.stem, t.test) for t in trials)
    test_stems = {k[0] for k in counts if k[1]}
    assert len(test_stems) == 3 and {t.stimulus.label for t in trials if t.test} == {0, 1, 2}
    assert all(counts[(st, True)] == 6 for st in test_stems)
    assert all(n == 2 for (st, test), n in counts.items() if not test)
    assert len(trials) == 2 * (12 + 9) and [t.index for t in trials] == list(range(len(trials)))
    gaps = np.diff([t.onset_s for t in trials])
    brk = np.arange(1, len(trials)) % 10 == 0
    assert np.all((gaps[~brk] >= 0.5) & (gaps[~brk] < 0.7)) and np.all((gaps[brk] >= 5.5) & (gaps[brk] < 5.7))
    labels = [t.stimulus.label for t in trials]
    assert max(len(list(g)) for _, g in itertools.groupby(labels)) < 8  # interleaved
    assert make_schedule(s, seed=4) != make_schedule(s, seed=5)
    assert len(make_schedule(s, soa_s=1.0, jitter_s=0.0, max_duration_s=4.0)) == 5
    payload = json.loads(marker_payload(trials[0]))
    assert payload["image"] == trials[0].stimulus.stem and payload["label"] == trials[0].stimulus.label
    assert set(payload) == {"image", "label", "class", "class_name", "index", "test"}


def test_block_design_groups_classes_and_warns(tmp_path: Path, caplog) -> None:
    s = load_stimuli(_folder(tmp_path / "images"))
    with caplog.at_level(logging.WARNING):
        trials = make_schedule(s, order="block", n_test_per_class=0)
    assert "confounded with time" in caplog.text
    labels = [t.stimulus.label for t in trials]
    assert sum(a != b for a, b in zip(labels, labels[1:], strict=False)) == 2


def test_given_test_images_are_the_repeated_ones(tmp_path: Path) -> None:
    s = load_stimuli(_folder(tmp_path / "images"))
    trials = make_schedule(s, test_stems={"c0_3", "c2_0"}, test_repeats=2, n_test_per_class=1)
    counts = Counter(t.stimulus.stem for t in trials if t.test)
    assert counts == {"c0_3": 2, "c2_0": 2} and len(trials) == 13 + 4

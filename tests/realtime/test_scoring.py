"""The live scorer the CLI gives the engine: class accuracy, SSIM and n-way against the true images."""

from __future__ import annotations

import numpy as np
from PIL import Image

from neuroimagen.realtime.cli.scoring import LiveScorer
from neuroimagen.realtime.engine import Frame


def _frame(seq: int, image: np.ndarray, scores: list[float], marker: dict) -> Frame:
    s = np.asarray(scores, np.float32)
    order = np.argsort(s)[::-1][:2]
    return Frame(seq=seq, timestamp=0.0, first_sample=0, marker=marker, image=image, saliency=image,
                 class_scores=s, top_k=[(f"k{i}", float(s[i])) for i in order], timings_ms={})


def test_scores_split_by_held_out_images_and_match_the_truth(tmp_path):
    rng = np.random.default_rng(0)
    pictures = {}
    for stem in ("a", "b", "c"):
        arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(arr).save(tmp_path / f"{stem}.png")
        pictures[stem] = arr
    scorer = LiveScorer(["k0", "k1", "k2", "k3"], {s: tmp_path / f"{s}.png" for s in pictures},
                        heldout={"a", "b"}, n_way=4)
    # a: the true image, decoded right; b: another image, decoded wrong; c (seen): right by name
    ra = scorer(_frame(1, pictures["a"], [0.9, 0.1, 0.0, 0.0], {"image": "a", "label": 0}))
    rb = scorer(_frame(2, pictures["c"], [0.0, 0.1, 0.0, 0.9], {"image": "b", "label": 1}))
    rc = scorer(_frame(3, pictures["c"], [0.0, 0.0, 0.9, 0.1], {"image": "c", "class": "k2"}))
    none = scorer(_frame(4, pictures["a"], [1, 0, 0, 0], {}))  # sliding window: no ground truth
    assert ra["ssim"] > 0.999 and ra["class_top1"] == 1 and ra["nway_top1"] == 1.0 and ra["heldout"]
    assert rb["ssim"] < 0.5 and rb["class_top1"] == 0 and rb["class_topk"] == 1 and rb["nway_top1"] < 1
    assert rc["class_top1"] == 1 and not rc["heldout"] and none == {}
    s = scorer.summary()
    assert s["heldout"]["n"] == 2 and s["heldout"]["class_top1"] == 0.5
    assert abs(s["heldout"]["ssim"] - (ra["ssim"] + rb["ssim"]) / 2) < 1e-9
    assert s["seen"]["n"] == 1 and s["all"]["n"] == 3 and s["n_unscored"] == 1
    assert s["chance_class_top1"] == 0.25 and s["chance_nway_top1"] == 0.25

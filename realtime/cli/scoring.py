"""Live scoring for ``run`` and ``demo``: the engine's scorer, built on training.eval.

realtime may not import training.eval; this CLI module may, and hands the
engine a :class:`LiveScorer` (the engine's ``Scorer`` protocol).

A frame is scored when its marker names the image shown (``image`` stem) and
that image is found among the true images (the twin's ``images/`` or
``--stimuli DIR``):

- class accuracy: the decoded top-1 (and top-k) class against the marker's
  class (``label`` index into the bundle's class names, else ``class`` by name);
- SSIM: the reconstruction against the true image resized to the frame's size
  (training.eval.metrics.ssim);
- n-way top-1 of the decoded class scores (training.eval.nway, the
  MinD-Vis/DreamDiffusion protocol with the bundle's class scores as logits).

Every figure is reported for held-out images (not in the bundle's training
split, when known) and for all scored frames.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

N_WAY_TRIALS = 20


class LiveScorer:
    """Score frames against true images; thread-safe summary.

    Parameters
    ----------
    class_names : sequence of str
        The bundle's classes, in the order of its class scores.
    images : mapping of stem -> path
        The true images.
    heldout : iterable of str | None
        Stems not used in training (None: unknown; every scored image counts as held-out).
    n_way : int
        n-way size (at most the number of classes).
    """

    def __init__(self, class_names: Sequence[str], images: Mapping[str, Path],
                 heldout: Iterable[str] | None = None, n_way: int = 50) -> None:
        self.class_names = list(class_names)
        self._index = {n: i for i, n in enumerate(self.class_names)}
        self.images = dict(images)
        self.heldout = set(heldout) if heldout is not None else None
        self.n_way = max(2, min(n_way, len(self.class_names)))
        self._gt_cache: dict[tuple[str, int, int], Any] = {}
        self._lock = threading.Lock()
        # per split: n, top-1 hits, top-k hits, n-way sum, SSIM sum, n with SSIM
        self._sums = {"heldout": np.zeros(6), "seen": np.zeros(6)}
        self.n_unscored = 0
        self._warm_up()

    @staticmethod
    def _warm_up() -> None:
        """Import and run the metrics once now, before the engine's loop.

        Their first call imports training.eval (seconds on a busy 2-core machine) and
        sets up torch's kernels; inside the first frame's publish, that stalled the
        publisher, and the frames behind it were dropped (9 of the demo's first 10).
        """
        import torch

        from neuroimagen.training.eval.metrics import ssim
        from neuroimagen.training.eval.nway import n_way_top_k_from_logits

        x = torch.zeros(1, 3, 16, 16)
        ssim(x, x)
        n_way_top_k_from_logits(np.zeros((1, 2)), np.array([0]), n_way=2, top_k=1, n_trials=1, seed=0)

    def _true_class(self, marker: Mapping[str, Any]) -> int | None:
        label = marker.get("label")
        if isinstance(label, int | np.integer) and 0 <= int(label) < len(self.class_names):
            return int(label)
        name = marker.get("class")
        return self._index.get(name) if isinstance(name, str) else None

    def _gt(self, stem: str, h: int, w: int) -> Any:
        from neuroimagen.training.eval.images import load_image

        key = (stem, h, w)
        if key not in self._gt_cache:
            self._gt_cache[key] = load_image(self.images[stem], size=(h, w))[None]
        return self._gt_cache[key]

    def __call__(self, frame: Any) -> dict[str, Any]:
        import torch

        from neuroimagen.training.eval.metrics import ssim
        from neuroimagen.training.eval.nway import n_way_top_k_from_logits

        stem = frame.marker.get("image")
        true = self._true_class(frame.marker)
        if not isinstance(stem, str) or stem not in self.images or true is None:
            self.n_unscored += 1
            return {}
        h, w = frame.image.shape[:2]
        pred = torch.from_numpy(frame.image).permute(2, 0, 1)[None].float() / 255.0
        s = float(ssim(pred, self._gt(stem, h, w))[0]) if min(h, w) >= 11 else float("nan")
        order = np.argsort(frame.class_scores)[::-1]
        top1 = int(order[0] == true)
        topk = int(true in order[: len(frame.top_k)])
        # n-way per frame (seeded by its sequence number): the summary stays O(1) per call
        # (class scores are cosine similarities: a temperature makes the softmax rank-faithful)
        logits = np.asarray(frame.class_scores, dtype=np.float64)[None] * 10.0
        nway = n_way_top_k_from_logits(logits, np.array([true]), n_way=self.n_way, top_k=1,
                                       n_trials=N_WAY_TRIALS, seed=frame.seq).mean
        split = "heldout" if self.heldout is None or stem in self.heldout else "seen"
        with self._lock:
            self._sums[split] += np.array([1.0, top1, topk, nway, 0.0, 0.0])
            if np.isfinite(s):
                self._sums[split][4:] += (s, 1.0)
        return {"class_top1": top1, "class_topk": topk, "ssim": s, "nway_top1": nway,
                "heldout": split == "heldout", "true_class": self.class_names[true]}

    def _part(self, sums: np.ndarray) -> dict[str, Any]:
        n, top1, topk, nway, ssim_sum, n_ssim = sums
        if not n:
            return {"n": 0, "class_top1": None, "class_topk": None, "ssim": None, "nway_top1": None,
                    "nway": self.n_way}
        return {"n": int(n), "class_top1": top1 / n, "class_topk": topk / n,
                "ssim": ssim_sum / n_ssim if n_ssim else None, "nway_top1": nway / n, "nway": self.n_way}

    def summary(self) -> dict[str, Any]:
        with self._lock:
            sums = {k: v.copy() for k, v in self._sums.items()}
        n_classes = len(self.class_names)
        return {
            "heldout": self._part(sums["heldout"]),
            "seen": self._part(sums["seen"]),
            "all": self._part(sums["heldout"] + sums["seen"]),
            "chance_class_top1": 1.0 / n_classes if n_classes else None,
            "chance_nway_top1": 1.0 / self.n_way,
            "n_unscored": self.n_unscored,
            "heldout_known": self.heldout is not None,
        }


def twin_truth(twin_dir: str | Path) -> tuple[dict[str, Path], set[str]]:
    """A twin's true images (stem -> path) and its held-out stems (not in the train split)."""
    import json

    from neuroimagen.training.data.eeg_imagenet import EEGImageNetDataset
    from neuroimagen.training.eval.images import index_images

    root = Path(twin_dir)
    meta = json.loads((root / "twin.json").read_text())
    files = meta["files"]
    images = index_images(root / files["images"])
    train = EEGImageNetDataset(root / files["eeg"], splits_path=root / files["splits"], split="train",
                               class_names=dict(zip(meta["wnids"], meta["class_names"], strict=True)))
    seen = {train.images[train.file.segments[i]["image"]] for i in train.indices}
    return images, set(images) - seen

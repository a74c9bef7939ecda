"""n-way top-k semantic accuracy and the stimulus classifier it needs.

The protocol of MinD-Vis and DreamDiffusion: a pretrained classifier labels
the ground-truth image (its argmax is the "true class"); the generated
image's class scores are restricted to the true class plus ``n_way - 1``
other classes drawn at random, and the trial succeeds when the true class is
among the ``top_k`` highest of that restricted set. Each image is scored over
``n_trials`` draws; the result averages trials, then images.

The classifier is any callable ``images -> logits`` (images (n, 3, h, w)
float32 in [0, 1]). On the real data that is an ImageNet classifier; on the
synthetic twin, :func:`train_stimulus_classifier` trains a tiny CNN
(:class:`~neuroimagen.training.models.stimulus_classifier.StimulusClassifier`, a
model folder like every model) on the twin's stimulus images
(``DIR/images/<wnid>/<stem>.JPEG``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from neuroimagen.training.models.stimulus_classifier import StimulusClassifier

from .images import IMAGE_SUFFIXES, load_image

logger = logging.getLogger(__name__)

#: Anything mapping images (n, 3, h, w) float32 in [0, 1] to (n, n_classes) logits.
Classifier = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class NWayResult:
    """n-way top-k accuracy over a set of images."""

    mean: float  #: accuracy averaged over trials and images, in [0, 1]
    std: float  #: std over images of the per-image accuracy
    per_image: np.ndarray  #: (n_images,) float64, each image's accuracy over its trials
    true_class: np.ndarray  #: (n_images,) int64, the classifier's label of each ground truth
    n_way: int
    top_k: int
    n_trials: int

    def as_dict(self) -> dict:
        return {
            "mean": self.mean,
            "std": self.std,
            "n_way": self.n_way,
            "top_k": self.top_k,
            "n_trials": self.n_trials,
            "chance": self.top_k / self.n_way,
        }


def n_way_top_k_from_logits(
    pred_logits: torch.Tensor,
    true_class: torch.Tensor | np.ndarray,
    n_way: int = 50,
    top_k: int = 1,
    n_trials: int = 50,
    seed: int = 0,
) -> NWayResult:
    """n-way top-k accuracy of predicted class scores against given true classes.

    Parameters
    ----------
    pred_logits : torch.Tensor
        (n_images, n_classes) classifier logits of the generated images.
    true_class : array-like
        (n_images,) int, the classifier's argmax on each ground-truth image.
    n_way : int
        Size of the restricted class set (true class + ``n_way - 1`` others);
        at most ``n_classes``.
    top_k : int
        Success if the true class ranks among the ``top_k`` of the restricted set.
    n_trials : int
        Random draws of the other classes per image (seeded by ``seed``).

    Returns
    -------
    NWayResult
        Chance level is ``top_k / n_way``.
    """
    logits = torch.as_tensor(pred_logits).to(torch.float64)
    true_class = torch.as_tensor(np.asarray(true_class), dtype=torch.long)
    n_images, n_classes = logits.shape
    if true_class.shape != (n_images,):
        raise ValueError(f"true_class must have shape ({n_images},), got {tuple(true_class.shape)}")
    if not 2 <= n_way <= n_classes:
        raise ValueError(
            f"n_way={n_way} must be between 2 and the classifier's {n_classes} classes"
        )
    if not 1 <= top_k < n_way:
        raise ValueError(f"top_k={top_k} must be between 1 and n_way - 1 = {n_way - 1}")
    gen = torch.Generator().manual_seed(seed)
    probs = logits.softmax(dim=1)
    per_image = np.zeros(n_images, dtype=np.float64)
    for i in range(n_images):
        t = int(true_class[i])
        others = torch.cat([torch.arange(t), torch.arange(t + 1, n_classes)])
        hits = 0
        for _ in range(n_trials):
            pick = others[torch.randperm(n_classes - 1, generator=gen)[: n_way - 1]]
            restricted = torch.cat([probs[i, t : t + 1], probs[i, pick]])
            # rank of the true class (index 0): ties count against it, so a constant
            # prediction scores 0, never a free win
            rank = int((restricted[1:] >= restricted[0]).sum())
            hits += rank < top_k
        per_image[i] = hits / n_trials
    return NWayResult(
        mean=float(per_image.mean()) if n_images else float("nan"),
        std=float(per_image.std()) if n_images else float("nan"),
        per_image=per_image,
        true_class=true_class.numpy().astype(np.int64),
        n_way=n_way,
        top_k=top_k,
        n_trials=n_trials,
    )


@torch.no_grad()
def n_way_top_k_accuracy(
    classifier: Classifier,
    gt_images: torch.Tensor,
    pred_images: torch.Tensor,
    n_way: int = 50,
    top_k: int = 1,
    n_trials: int = 50,
    seed: int = 0,
    batch_size: int = 64,
) -> NWayResult:
    """n-way top-k semantic accuracy of reconstructions (MinD-Vis / DreamDiffusion).

    Parameters
    ----------
    classifier : callable
        images (n, 3, h, w) float32 in [0, 1] -> (n, n_classes) logits.
    gt_images, pred_images : torch.Tensor
        (n, 3, h, w) float32 in [0, 1], paired by index.

    Returns
    -------
    NWayResult
        See :func:`n_way_top_k_from_logits`.
    """
    if gt_images.shape[0] != pred_images.shape[0]:
        raise ValueError(
            f"{gt_images.shape[0]} ground-truth vs {pred_images.shape[0]} generated images"
        )
    gt_logits = _batched(classifier, gt_images, batch_size)
    pred_logits = _batched(classifier, pred_images, batch_size)
    return n_way_top_k_from_logits(
        pred_logits, gt_logits.argmax(dim=1), n_way=n_way, top_k=top_k, n_trials=n_trials, seed=seed
    )


def _batched(fn: Classifier, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat(
        [fn(images[i : i + batch_size]) for i in range(0, images.shape[0], batch_size)]
    )


# --------------------------------------------------------------------------- stimulus classifier


def _twin_image_dir(image_dir: Path) -> tuple[Path, dict]:
    """The ``images/`` folder and ``twin.json`` metadata (empty if absent) of a twin dir."""
    image_dir = Path(image_dir)
    meta_path = None
    for cand in (image_dir / "twin.json", image_dir.parent / "twin.json"):
        if cand.is_file():
            meta_path = cand
            break
    meta = json.loads(meta_path.read_text()) if meta_path else {}
    if (image_dir / "images").is_dir():
        image_dir = image_dir / "images"
    if not image_dir.is_dir():
        raise FileNotFoundError(f"stimulus image folder not found: {image_dir}")
    return image_dir, meta


def _class_names_from_meta(meta: dict, class_ids: list[str]) -> list[str]:
    """Human-readable class names from twin.json, if it has them, in ``class_ids`` order."""
    names = meta.get("class_names")
    if isinstance(names, dict):
        return [str(names.get(c, c)) for c in class_ids]
    labels = meta.get("labels") or meta.get("wnids")
    if isinstance(names, list) and isinstance(labels, list) and len(names) == len(labels):
        lookup = dict(zip(labels, names, strict=True))
        return [str(lookup.get(c, c)) for c in class_ids]
    if isinstance(names, list) and len(names) == len(class_ids):
        return [str(n) for n in names]
    return list(class_ids)


def load_labelled_images(
    image_dir: str | Path, image_size: int
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Read ``<image_dir>/<class_id>/<stem>.<ext>`` into tensors.

    Returns
    -------
    images : torch.Tensor
        (n, 3, image_size, image_size) float32 in [0, 1].
    labels : torch.Tensor
        (n,) int64 index into ``class_ids``.
    class_ids : list of str
        Sorted class folder names.
    """
    image_dir = Path(image_dir)
    class_ids = sorted(p.name for p in image_dir.iterdir() if p.is_dir())
    images, labels = [], []
    for label, cid in enumerate(class_ids):
        for f in sorted((image_dir / cid).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                images.append(load_image(f, size=image_size))
                labels.append(label)
    if len(class_ids) < 2 or not images:
        raise ValueError(
            f"{image_dir} must hold one sub-folder of images per class (<class_id>/<stem>.JPEG) "
            f"and at least 2 classes; found {len(class_ids)} class folders, {len(images)} images"
        )
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), class_ids


def train_stimulus_classifier(
    image_dir: str | Path,
    image_size: int = 48,
    n_epochs: int = 100,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
) -> StimulusClassifier:
    """Train a tiny CNN to label the twin's stimulus images.

    Parameters
    ----------
    image_dir : path
        A twin folder (holding ``images/`` and ``twin.json``) or an image
        folder laid out ``<wnid>/<stem>.JPEG``.
    image_size : int
        Images are resized to ``image_size`` x ``image_size`` pixels.
    n_epochs, batch_size, lr, seed
        Adam training with random flips, quarter turns, colour-channel
        permutations, small shifts and Gaussian blur (the twin's classes are shape x fill
        style; position, size, rotation and hue vary per image); seeded, CPU.

    Returns
    -------
    StimulusClassifier
        In eval mode; its training accuracy is logged.
    """
    folder, meta = _twin_image_dir(Path(image_dir))
    images, labels, class_ids = load_labelled_images(folder, image_size)
    names = _class_names_from_meta(meta, class_ids)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = StimulusClassifier(class_ids=class_ids, class_names=names, image_size=image_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = images.shape[0]
    model.train()
    for _ in range(n_epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            x = _augment(images[idx], gen)
            loss = F.cross_entropy(model(x), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((_batched(model, images, 256).argmax(1) == labels).float().mean())
    logger.info(
        "stimulus classifier: %d classes, %d images, training accuracy %.3f", len(class_ids), n, acc
    )
    return model


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Label-preserving jitter for shape stimuli: flips, quarter turns, colour order, shifts."""
    n = x.shape[0]
    flip_h = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip_h[:, None, None, None], x.flip(-1), x)
    flip_v = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip_v[:, None, None, None], x.flip(-2), x)
    x = torch.rot90(x, k=int(torch.randint(0, 4, (1,), generator=gen)), dims=(2, 3))
    x = x[:, torch.randperm(3, generator=gen)]  # the class never depends on the hue
    limit = max(1, x.shape[-1] // 16)
    shift = [int(s) for s in torch.randint(-limit, limit + 1, (2,), generator=gen)]
    x = torch.roll(x, shifts=shift, dims=(2, 3))
    if float(torch.rand(1, generator=gen)) < 0.5:
        # reconstructions are softer than stimuli: train on blurred copies too
        sigma = 0.3 + 1.5 * float(torch.rand(1, generator=gen))
        x = _gaussian_blur(x, sigma)
    return x


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, round(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    c = x.shape[1]
    x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)


def save_classifier(model: StimulusClassifier, path: str | Path) -> Path:
    """Save a :class:`StimulusClassifier` as a model folder (config.json with the class ids/names + safetensors)."""
    from neuroimagen.training.models.format import save_model

    return save_model(model, path)


def load_classifier(path: str | Path) -> StimulusClassifier:
    """Load a classifier folder written by :func:`save_classifier` (strictly, eval mode).

    Raises
    ------
    ModelFormatError
        missing folder, or a folder that does not hold exactly a stimulus classifier.
    """
    from neuroimagen.training.models.format import load_model

    return load_model(StimulusClassifier, path)

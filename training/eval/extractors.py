"""Held-out measurements of the trained extractors on a twin (split by image; the ``test`` images).

:func:`evaluate_extractors` (``neuroimagen eval extractors``) reports, for whichever model
folders it is given:

* ``mae``: masked-patch MSE on the test windows vs the mean predictor (the training
  windows' mean), on the same seeded masks;
* ``semantic``: 40-way top-1/top-5 of the class scores (cosine to the class pooled
  embeddings), with the linear baseline (``data baseline``'s ridge decoder fitted on
  the train part) on the same windows;
* ``saliency``: SSIM and pixel correlation of the saliency image to the true stimulus,
  next to those of the mean image of the decoded class (the class the semantic
  extractor decodes; the linear baseline's without one), and the hemifield of the
  saliency centroid vs stimuli.json next to the linear decoder's hemifield head.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

__all__ = ["evaluate_extractors"]

logger = logging.getLogger(__name__)


def _batched(fn, x: torch.Tensor, batch: int = 256):
    with torch.no_grad():
        outs = [fn(x[i:i + batch]) for i in range(0, len(x), batch)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat([o[k] for o in outs]) for k in range(len(outs[0])))
    return torch.cat(outs)


def evaluate_extractors(
    twin_dir: str | Path,
    semantic: str | Path | None = None,
    pixel_encoder: str | Path | None = None,
    saliency: str | Path | None = None,
    mae: str | Path | None = None,
    split_index: int = 0,
    semantic_shuffled: str | Path | None = None,
    oracle: bool = False,
) -> dict:
    """Measure the given model folders on the twin's test images (see the module notes).

    ``semantic_shuffled``: a semantic extractor trained on shuffled labels (the control; it
    must stay near chance). ``oracle``: also run the twin's oracle decoder on the same
    windows and report every class decoder's top-1 as a fraction of it.
    """
    from neuroimagen.training.data.twin.baseline import fit_decoder, load_twin_windows
    from neuroimagen.training.models.format import load_model
    from neuroimagen.training.train.data import load_images, load_trials

    from .metrics import pcc, ssim
    from .saliency import centroid_hemifield

    root = Path(twin_dir)
    test = load_trials(root, ("test",), split_index)
    out: dict = {"twin": str(root), "n_test": len(test), "n_classes": test.n_classes,
                 "chance": 1.0 / test.n_classes}
    # the linear baseline on the same test windows (fitted on the train part)
    dec = fit_decoder(root, split="train", split_index=split_index)
    lin = dec.predict(load_twin_windows(root, "test", split_index)["x"])
    lin_cls = torch.from_numpy(lin["class"])
    out["linear"] = {"top1": float((lin_cls == test.label).float().mean()),
                     "hemifield_acc": float((torch.from_numpy(lin["hemifield"]) == test.hemifield).float().mean())}
    decoded = lin_cls
    if mae is not None:
        from neuroimagen.training.models.mae import MaskedEEGAutoencoder
        from neuroimagen.training.train.stages import mae_heldout_loss

        model = load_model(MaskedEEGAutoencoder, mae)
        train_mean = load_trials(root, ("train",), split_index).x.mean(dim=0)
        out["mae"] = mae_heldout_loss(model, test.x, train_mean, "cpu")
    if semantic is not None:
        out["semantic"], decoded = _semantic_scores(root, semantic, test)
    if semantic_shuffled is not None:
        out["semantic_shuffled"], _ = _semantic_scores(root, semantic_shuffled, test)
        out["semantic_shuffled"]["ratio_to_chance"] = out["semantic_shuffled"]["top1"] / out["chance"]
    if oracle:
        from neuroimagen.training.data.twin.oracle import run_oracle

        acc = run_oracle(root, split="test", split_index=split_index)["accuracy"]
        out["oracle"] = {"top1": acc}
        for key in ("linear", "semantic"):
            if key in out:
                out[key]["fraction_of_oracle"] = out[key]["top1"] / acc
    if saliency is not None and pixel_encoder is not None:
        from neuroimagen.training.models import pixel as pixel_models
        from neuroimagen.training.models.bundle import load_model_folder
        from neuroimagen.training.models.saliency import SaliencyGenerator

        enc = load_model_folder(pixel_encoder, (pixel_models.PixelEncoder, pixel_models.FeaturePixelEncoder),
                                "a pixel encoder")
        gen = load_model(SaliencyGenerator, saliency)
        size = gen.config.image_size
        pred = _batched(lambda x: gen(enc(x)), test.x)
        truth = load_images(root, test.images, size)[test.image_index]
        # the mean image of each class over the train images; the baseline shows the decoded class's
        train = load_trials(root, ("train",), split_index)
        train_imgs = load_images(root, train.images, size)
        img_label = torch.zeros(len(train.images), dtype=torch.long)
        img_label[train.image_index] = train.label
        class_mean = torch.stack([train_imgs[img_label == c].mean(0) for c in range(test.n_classes)])
        base = class_mean[decoded]
        out["saliency"] = {
            "ssim": float(np.mean(ssim(pred, truth))), "pcc": float(np.nanmean(pcc(pred, truth))),
            "class_mean_ssim": float(np.mean(ssim(base, truth))),
            "class_mean_pcc": float(np.nanmean(pcc(base, truth))),
            "decoded_by": "semantic" if semantic is not None else "linear",
            "hemifield_acc": float(np.mean(centroid_hemifield(pred) == test.hemifield.numpy())),
        }
    return out


def _semantic_scores(root: Path, folder: str | Path, test) -> tuple[dict, torch.Tensor]:
    """Top-1/top-5 of a semantic extractor folder (either class) on the test trials, and its decoded class."""
    from neuroimagen.training.models import semantic as sem_models
    from neuroimagen.training.models.bundle import load_model_folder
    from neuroimagen.training.train.data import load_twin_targets

    model = load_model_folder(folder, (sem_models.SemanticExtractor, sem_models.FeatureSemanticExtractor),
                              "a semantic extractor")
    name = type(model).__name__
    targets = load_twin_targets(root, width=model.config.width if model.config.width != 768 else None,
                                n_tokens=model.config.n_tokens if model.config.n_tokens != 77 else None)
    _, pooled = _batched(model, test.x)
    scores = sem_models.class_scores(pooled, targets.pooled)
    top5 = scores.topk(min(5, scores.shape[1]), dim=1).indices
    decoded = scores.argmax(1)
    return ({"model": name, "top1": float((decoded == test.label).float().mean()),
             "top5": float((top5 == test.label[:, None]).any(1).float().mean())}, decoded)

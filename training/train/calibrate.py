"""Calibrate a bundle to a new subject from one recorded session (``neuroimagen train calibrate``).

Steps (:func:`calibrate`)
-------------------------
1. Open BASE (verified) and the session (``session.json`` + its EEG with the
   markers; an interrupted recording is finalized first).
2. Cut windows with BASE's own chain, from its manifest: the stream contract
   (channels picked by name and ordered as BASE's), the continuous stage
   (``preprocess_continuous``), marker-locked windows
   (:class:`~neuroimagen.stream.windowing.MarkerLockedWindower`, BASE's
   ``n_times`` and ``marker_offset_samples``), the per-window stage with BASE's
   normalisation statistics (``preprocess_window``): what the live process feeds
   the models.
3. Labels from the markers: each payload's class id (or readable name) mapped
   to BASE's class index (:func:`class_map`: a class BASE has no targets for is
   refused, naming it). The test images of the session (shown repeatedly,
   payload ``"test": true``) are held out for the evaluation; when the session
   has none, 20% of its images are. Of the rest, 20% of the images are a
   validation part that picks the method.
4. Adapt, each method within its share of the time budget. The methods tried
   depend on the extractors' classes (:func:`methods_for`; a class with no
   method is refused, naming it):

   Convolutional extractors (:class:`~neuroimagen.training.models.pixel.PixelEncoder`,
   :class:`~neuroimagen.training.models.semantic.SemanticExtractor`), by gradient:

   - ``subject_layer``: a per-subject linear map of the channels ``x -> W x + b``
     (``W`` from the identity, penalised towards it) in front of the frozen
     extractors;
   - ``heads``: the extractors' last layers (the semantic extractor's heads, the
     pixel encoder's projection) with everything else frozen;

   both on the same loss: cross-entropy of the class scores (cosine of the
   pooled vector to each class embedding, temperature 0.1), MSE of the tokens to
   the class tokens, and MSE of the saliency image to the stimulus image.
   The subject layer is then folded exactly into the first (channel-mixing)
   convolutions of the pixel encoder and the semantic extractor, so NEW has
   the same model classes and runs on every backend unchanged.

   Feature extractors (:class:`~neuroimagen.training.models.pixel.FeaturePixelEncoder`,
   :class:`~neuroimagen.training.models.semantic.FeatureSemanticExtractor`: standardised
   binned features mapped by one linear layer), in closed form. The linear layer is
   the semantic extractor's class code (targets: one-hot labels, as its own
   ``fit_closed_form``) and the pixel encoder's projection (targets: the features
   whose image under BASE's saliency generator's linear head is the stimulus image,
   by least squares, as the saliency stage's principal-component coefficients);
   the token and pooled heads and the saliency generator stay BASE's:

   - ``restandardise`` (only when asked for: it never beat ``none`` when measured):
     the features' mean and scale re-estimated on the subject's windows
     (per-subject gains and offsets), the weights kept;
   - ``refit``: ridge regression on the subject's windows alone (the subject's
     standardisation), as the training stages fit it;
   - ``refit_prior``: ridge shrunk towards BASE's weights on BASE's standardisation,
     ``argmin ||X w - y||^2 + alpha ||w - w_base||^2`` (intercept unpenalised), which
     tends to BASE as alpha grows: the safe choice with few trials.

   For each extractor apart, the validation part (semantic: top-1, then the class
   cross-entropy; pixel: SSIM) picks the ridge penalty from :data:`RIDGE_ALPHAS`, or
   keeps BASE's map when none beats it; every penalty is solved from one
   eigendecomposition of the (trials x trials, or features x features) Gram matrix.
5. Keep the best on the validation part (``none``, BASE unchanged, is a
   candidate too), report class top-1 and saliency SSIM on the held-out test
   trials before and after, and write NEW with :func:`~neuroimagen.training.models.bundle.write_bundle`
   (verified; BASE is only read). Exported artifacts of BASE (ONNX, TensorRT)
   are not carried over: they hold BASE's weights.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neuroimagen.training.models._blocks import ridge_path

__all__ = ["CalibrationError", "SessionWindows", "calibrate", "class_map", "evaluate_on_twin", "methods_for",
           "new_subject_bench", "session_windows"]

logger = logging.getLogger(__name__)

CONV_METHODS = ("subject_layer", "heads")
FEATURE_METHODS = ("restandardise", "refit", "refit_prior")
METHODS = CONV_METHODS + FEATURE_METHODS
# tried only when asked for: on the small twin's new subjects (wide and narrow variation) it
# never beat BASE on validation or test (see the README's "A new subject")
OPT_IN_METHODS = ("restandardise",)
TEMPERATURE = 0.1
# ridge penalties on standardised features (~3000 of them for 128 channels x 22 bins + log-variance);
# the training stages pick theirs from 3e4-3e5 on thousands of windows
RIDGE_ALPHAS = (1e1, 1e2, 3e2, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6, 1e7)


class CalibrationError(ValueError):
    """The session cannot calibrate the bundle; the message says why."""


def class_map(classes: Sequence[str], class_names: Sequence[str], manifest) -> dict[str, int]:
    """Stimulus class id -> the bundle's class index (matched by id or by readable name).

    Raises
    ------
    CalibrationError
        A class the bundle has no targets (class embeddings) for, naming each.
    """
    known = {n: i for i, n in enumerate(manifest.class_names)}
    out, missing = {}, []
    for cid, name in zip(classes, class_names, strict=True):
        k = known.get(cid, known.get(name))
        if k is None:
            missing.append(f"{cid} ({name})" if name != cid else cid)
        else:
            out[cid] = k
    if missing:
        raise CalibrationError(
            f"bundle {manifest.name!r} has no targets for {len(missing)} class(es) shown: {', '.join(missing[:10])}"
            f"{' ...' if len(missing) > 10 else ''}; its classes: {', '.join(list(manifest.class_names)[:10])}"
            f"{' ...' if len(manifest.class_names) > 10 else ''} (show only those, or calibrate a bundle "
            "trained with targets for these)"
        )
    return out


@dataclass
class SessionWindows:
    """Model-ready windows of a session.

    Attributes
    ----------
    eeg : ndarray, shape (n_trials, n_channels, n_times), float32
    labels : ndarray, shape (n_trials,), int64: BASE's class index
    images : list of str: the image id (stem) of each window
    test : ndarray, shape (n_trials,), bool: held out for the evaluation
    payloads : list of dict: each window's marker
    onsets : ndarray, shape (n_trials,), int64: onset sample of each window's marker
    """

    eeg: np.ndarray
    labels: np.ndarray
    images: list[str]
    test: np.ndarray
    payloads: list[dict]
    onsets: np.ndarray


def session_windows(session_dir: str | Path, bundle) -> tuple[SessionWindows, dict]:
    """Steps 1-3: the session's windows through BASE's chain, labelled; returns (windows, session meta)."""
    from neuroimagen.stream.design import read_session
    from neuroimagen.stream.preprocessing import preprocess_continuous, preprocess_window
    from neuroimagen.stream.windowing import MarkerLockedWindower

    meta, rec = read_session(session_dir)
    man = bundle.manifest
    # 1. the contract: BASE's channels, by name, in its order; its rate
    if abs(rec.sfreq - man.stream.sfreq_hz) > 1e-6:
        raise CalibrationError(f"the session is sampled at {rec.sfreq:g} Hz, bundle {man.name!r} at "
                               f"{man.stream.sfreq_hz:g} Hz")
    lookup = {n.lower(): i for i, n in enumerate(rec.ch_names)}
    missing = [n for n in man.stream.ch_names if n.lower() not in lookup]
    if missing:
        raise CalibrationError(f"the session lacks {len(missing)} channel(s) bundle {man.name!r} takes: "
                               f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    data = np.ascontiguousarray(rec.data[[lookup[n.lower()] for n in man.stream.ch_names]], dtype=np.float32)
    # 2. continuous stage, marker-locked windows, per-window stage
    filt = preprocess_continuous(data, rec.sfreq, man.preprocessing, list(man.stream.ch_names))
    win = man.windowing
    windower = MarkerLockedWindower(len(man.stream.ch_names), win.n_times, win.marker_offset_samples, rec.sfreq,
                                    max_pending_s=max(10.0, 2 * (win.n_times + win.marker_offset_samples) / rec.sfreq),
                                    max_pending=10**6)
    stamps = np.arange(filt.shape[1], dtype=np.float64) / rec.sfreq
    for sample, payload in rec.markers:
        windower.add_marker(sample / rec.sfreq, payload)
    windows = [w for w in windower.push(filt, stamps) if isinstance(w.meta, dict) and "image" in w.meta]
    if not windows:
        raise CalibrationError(f"{session_dir}: no stimulus markers with an image id in the recording")
    stats = bundle.norm_stats()
    eeg = np.stack([preprocess_window(w.data, man.preprocessing, stats) for w in windows]).astype(np.float32)
    # 3. labels (refusing classes BASE cannot score) and the held-out part
    payloads = [w.meta for w in windows]
    classes = sorted({str(p.get("class", p.get("label"))) for p in payloads})
    # readable names: the markers', else the session's stimulus set's (class_names.yaml), else the id
    known = dict(zip(meta.get("classes", []), meta.get("class_names", []), strict=False))
    if not known and meta.get("stimuli") and Path(meta["stimuli"]).is_dir():
        from neuroimagen.stream.design import load_stimuli

        st = load_stimuli(meta["stimuli"])
        known = dict(zip(st.classes, st.class_names, strict=True))
    names = {str(p.get("class", p.get("label"))): str(p.get("class_name", known.get(str(p.get("class")),
                                                                                   p.get("class"))))
             for p in payloads}
    cmap = class_map(classes, [names[c] for c in classes], man)
    labels = np.array([cmap[str(p.get("class", p.get("label")))] for p in payloads], dtype=np.int64)
    images = [str(p["image"]) for p in payloads]
    test = np.array([bool(p.get("test", False)) for p in payloads])
    if not test.any():
        test = _image_split(images, 0.2, seed=0)
        logger.info("the session marks no test images: holding out 20%% of its images (%d trials)", test.sum())
    onsets = np.array([int(round(w.marker_timestamp * rec.sfreq)) for w in windows], dtype=np.int64)
    return SessionWindows(eeg, labels, images, test, payloads, onsets), meta


def _image_split(images: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """A mask of the trials of a random ``fraction`` of the distinct images (at least one image)."""
    uniq = sorted(set(images))
    rng = np.random.default_rng(seed)
    n = max(1, int(round(fraction * len(uniq))))
    chosen = set(rng.choice(len(uniq), size=min(n, len(uniq)), replace=False).tolist())
    picked = {uniq[i] for i in chosen}
    return np.array([im in picked for im in images])


def _stimulus_images(meta: dict, stems: Sequence[str], size: int) -> torch.Tensor:
    """The shown images by stem, (n, 3, size, size) float32 in [0, 1] (paths from session.json)."""
    from neuroimagen.training.eval.images import load_image

    paths = {t["stem"]: t["path"] for t in meta.get("trials", []) if "stem" in t and "path" in t}
    if any(s not in paths for s in stems) and meta.get("stimuli") and Path(meta["stimuli"]).is_dir():
        from neuroimagen.stream.design import load_stimuli

        paths.update({k: str(v.path) for k, v in load_stimuli(meta["stimuli"]).by_stem().items() if k not in paths})
    missing = sorted({s for s in stems if s not in paths})
    if missing:
        raise CalibrationError(f"session.json names no image file for {missing[:5]}")
    cache: dict[str, torch.Tensor] = {}
    out = []
    for s in stems:
        if s not in cache:
            if not Path(paths[s]).is_file():
                raise CalibrationError(f"stimulus image {paths[s]} is missing (needed for the SSIM targets)")
            cache[s] = load_image(paths[s], size=size)
        out.append(cache[s])
    return torch.stack(out)


# --------------------------------------------------------------------------- models


class SubjectLayer(nn.Module):
    """``x -> W x + b`` over channels, W from the identity (the subject's own spatial map)."""

    def __init__(self, n_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(n_channels))
        self.bias = nn.Parameter(torch.zeros(n_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ij,bjt->bit", self.weight, x) + self.bias[None, :, None]


class _FoldedWeight(nn.Module):
    """Parametrization of a channel-mixing convolution's weight: ``w -> w . W`` (the layer folded in)."""

    def __init__(self, layer: SubjectLayer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ojk,jc->ock", w, self.layer.weight)


class _FoldedBias(nn.Module):
    """Parametrization of its bias: ``c -> c + sum_jk w0[o, j, k] b[j]`` (the layer's offset folded in)."""

    def __init__(self, layer: SubjectLayer, w0: torch.Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("w0", w0.detach().clone())

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return c + torch.einsum("ojk,j->o", self.w0, self.layer.bias)


def fold_subject_layer(convs: Sequence[nn.Conv1d], layer: SubjectLayer) -> None:
    """Make each ``conv(x)`` compute ``conv_before(W x + b)``, tracking ``layer`` (train through it).

    Exact for convolutions that mix channels without padding (the pixel encoder's
    spatial convolution, the semantic extractor's patch embedding). Training the
    layer this way costs a (out x C x k) x C product per step instead of mapping
    every window. :func:`bake_subject_layer` fixes the folded weights.
    """
    from torch.nn.utils import parametrize

    for conv in convs:
        if conv.bias is None or (conv.kernel_size != (1,) and conv.padding not in ((0,), 0)):
            raise ValueError("a subject layer folds only into unpadded channel-mixing convolutions with a bias")
        parametrize.register_parametrization(conv, "bias", _FoldedBias(layer, conv.weight))
        parametrize.register_parametrization(conv, "weight", _FoldedWeight(layer))


def bake_subject_layer(convs: Sequence[nn.Conv1d]) -> None:
    """Replace the parametrized weights by their current values (plain tensors, the model's own format)."""
    from torch.nn.utils import parametrize

    for conv in convs:
        for name in ("weight", "bias"):
            parametrize.remove_parametrizations(conv, name, leave_parametrized=True)
        conv.requires_grad_(False)


@dataclass
class _Models:
    pixel: nn.Module
    saliency: nn.Module
    semantic: nn.Module

    def eval(self) -> None:
        for m in (self.pixel, self.saliency, self.semantic):
            m.eval()
            m.requires_grad_(False)


def _forward(models: _Models, x: torch.Tensor, front: nn.Module | None = None):
    if front is not None:
        x = front(x)
    tokens, pooled = models.semantic(x)
    image = models.saliency(models.pixel(x))
    return tokens, pooled, image


def _evaluate(models: _Models, x: torch.Tensor, y: torch.Tensor, img: torch.Tensor,
              class_pooled: torch.Tensor) -> dict[str, float]:
    """Class top-1 of the semantic extractor and saliency SSIM on (x, y, img)."""
    top1, _ = _semantic_val(models.semantic, x, y, class_pooled)
    return {"top1": top1, "ssim": _pixel_val(models.pixel, models.saliency, x, img)}


def _train(models: _Models, params: list[nn.Parameter], front: nn.Module | None, x, y, img, tokens, pooled,
           *, budget_s: float, max_steps: int, lr: float, reg: Callable[[], torch.Tensor] | None,
           batch_size: int, seed: int) -> dict:
    from neuroimagen.training.models.semantic import class_scores

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    t0, step = time.monotonic(), 0
    size = img.shape[-1]
    while step < max_steps and time.monotonic() - t0 < budget_s:
        idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=gen)
        tok, pool, image = _forward(models, x[idx], front)
        target = img[idx]
        if image.shape[-1] != size:
            target = F.interpolate(target, size=image.shape[-2:], mode="bilinear", antialias=True)
        loss = (F.cross_entropy(class_scores(pool, pooled) / TEMPERATURE, y[idx])
                + F.mse_loss(tok, tokens[y[idx]]) + 4.0 * F.mse_loss(image, target))
        if reg is not None:
            loss = loss + reg()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
    return {"steps": step, "train_s": time.monotonic() - t0}


def _load_models(bundle) -> _Models:
    m = _Models(bundle.load_role("pixel_encoder"), bundle.load_role("saliency"), bundle.load_role("semantic"))
    m.eval()
    return m


def methods_for(models: _Models) -> tuple[str, ...]:
    """The calibration methods that fit the extractors' classes.

    Raises
    ------
    CalibrationError
        An extractor class calibrate has no method for (naming it), or a pixel encoder
        and a semantic extractor of different kinds (one method adapts both).
    """
    from neuroimagen.training.models.pixel import FeaturePixelEncoder, PixelEncoder
    from neuroimagen.training.models.semantic import FeatureSemanticExtractor, SemanticExtractor

    kinds = {PixelEncoder: CONV_METHODS, SemanticExtractor: CONV_METHODS,
             FeaturePixelEncoder: FEATURE_METHODS, FeatureSemanticExtractor: FEATURE_METHODS}
    known = "; ".join(f"{c.__name__}: {', '.join(m)}" for c, m in kinds.items())
    found = {}
    for role, model in (("pixel_encoder", models.pixel), ("semantic", models.semantic)):
        if type(model) not in kinds:
            raise CalibrationError(f"calibrate has no method for the {role} model {type(model).__name__} "
                                   f"(it calibrates {known})")
        found[role] = kinds[type(model)]
    if found["pixel_encoder"] != found["semantic"]:
        raise CalibrationError(f"calibrate has no method for the pair {type(models.pixel).__name__} + "
                               f"{type(models.semantic).__name__} (one method adapts both; it calibrates {known})")
    return found["semantic"]


def _pixel_targets(saliency: nn.Module, img: torch.Tensor) -> torch.Tensor:
    """Features (n, feature_dim) float64 whose image under the generator's linear head is ``img`` (least squares).

    The saliency stage's targets for a :class:`FeaturePixelEncoder`: with the principal
    components of the training images as the head, the stimulus' coefficients.
    """
    lin = getattr(saliency, "linear", None)
    if lin is None:
        raise CalibrationError(f"the saliency generator ({type(saliency).__name__}) has no linear head: "
                               "the pixel encoder's feature targets cannot be made (refit methods need linear_head)")
    w, b = lin.weight.detach().double(), lin.bias.detach().double()  # (3 S S, feature_dim), (3 S S,)
    flat = img.double().reshape(len(img), -1) - b
    return torch.linalg.lstsq(w, flat.T).solution.T


def _feature_linear(model: nn.Module) -> nn.Linear:
    """The linear layer on a Feature* extractor's standardised features (class code, or projection)."""
    return model.code if hasattr(model, "code") else model.proj


@torch.no_grad()
def _set_feature_map(model: nn.Module, mean, scale, weight, bias) -> None:
    """Standardisation (F,) and linear map (weight (F, D), bias (D,)) of a Feature* extractor, in place."""
    lin = _feature_linear(model)
    model.feature_mean.copy_(mean.float())
    model.feature_scale.copy_(scale.float())
    lin.weight.copy_(weight.T.float())
    lin.bias.copy_(bias.float())


def _raw_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.features(x[i:i + 256]) for i in range(0, len(x), 256)]).double()


def _semantic_val(model: nn.Module, x, y, class_pooled) -> tuple[float, float]:
    """(top-1, -cross-entropy) of the class scores on (x, y): larger is better."""
    from neuroimagen.training.models.semantic import class_scores

    with torch.no_grad():
        scores = torch.cat([class_scores(model(x[i:i + 128])[1], class_pooled) for i in range(0, len(x), 128)])
    return float((scores.argmax(1) == y).float().mean()), -float(F.cross_entropy(scores / TEMPERATURE, y))


def _pixel_val(pixel: nn.Module, saliency: nn.Module, x, img) -> float:
    """Mean SSIM of the saliency images of x against the stimulus images (resized to theirs)."""
    from neuroimagen.training.eval.metrics import ssim

    with torch.no_grad():
        image = torch.cat([saliency(pixel(x[i:i + 128])) for i in range(0, len(x), 128)])
    if image.shape[-1] != img.shape[-1]:
        img = F.interpolate(img, size=image.shape[-2:], mode="bilinear", antialias=True)
    return float(np.mean(ssim(image.float().clamp(0, 1), img)))


def _adapt_features(method: str, m: _Models, fit, val, class_pooled: torch.Tensor, *, budget_s: float) -> dict:
    """One closed-form method on both Feature* extractors of ``m`` (in place); the val part picks alpha.

    ``fit``, ``val``: (x, y, img). Returns the info for the report (alphas, seconds, trials solved).
    """
    t0 = time.monotonic()
    x_fit, y_fit, img_fit = fit
    x_val, y_val, img_val = val
    info: dict = {"steps": 0}
    for role, model in (("semantic", m.semantic), ("pixel_encoder", m.pixel)):
        f = _raw_features(model, x_fit)
        lin = _feature_linear(model)
        w_base, b_base = lin.weight.detach().T.double().clone(), lin.bias.detach().double().clone()
        if method == "restandardise":
            _set_feature_map(model, f.mean(0), f.std(0, unbiased=False).clamp_min(1e-8), w_base, b_base)
            continue
        # targets: one-hot classes (the class code) or the stimulus' coefficients under the saliency head
        if role == "semantic":
            y = F.one_hot(y_fit, lin.out_features).double()
        else:
            y = _pixel_targets(m.saliency, img_fit)
        if method == "refit":  # the subject's own standardisation, no prior
            mean, scale, w0 = f.mean(0), f.std(0, unbiased=False).clamp_min(1e-8), None
        else:  # refit_prior: BASE's standardisation and weights
            mean, scale, w0 = model.feature_mean.double().clone(), model.feature_scale.double().clone(), w_base
        fs = (f - mean) / scale
        f_mean, y_mean = fs.mean(0), y.mean(0)

        def val_score(role=role, model=model):
            if role == "semantic":
                return _semantic_val(model, x_val, y_val, class_pooled)
            return (_pixel_val(model, m.saliency, x_val, img_val),)

        # BASE's own map is a candidate too: the two extractors are chosen apart, so a refit that
        # helps the class code does not bring along a projection that lowers SSIM (or vice versa)
        base_state = (model.feature_mean.clone(), model.feature_scale.clone(), w_base, b_base)
        best = (val_score(), None, base_state)
        tried = {"base": best[0][0]}
        for alpha, w in ridge_path(fs - f_mean, y - y_mean, RIDGE_ALPHAS, w0):
            state = (mean, scale, w, y_mean - f_mean @ w)
            _set_feature_map(model, *state)
            score = val_score()
            tried[f"{alpha:g}"] = score[0]
            info["steps"] += 1
            if score > best[0]:
                best = (score, alpha, state)
            if time.monotonic() - t0 > budget_s:
                logger.warning("%s (%s): out of its time share after alpha %g", method, role, alpha)
                break
        _set_feature_map(model, *best[2])
        info[f"{role}_alpha"] = best[1]  # None: BASE's map kept
        info[f"{role}_val_by_alpha"] = tried
    info["train_s"] = time.monotonic() - t0
    return info


def calibrate(
    session_dir: str | Path,
    bundle_dir: str | Path,
    out_dir: str | Path,
    *,
    budget_s: float = 600.0,
    max_steps: int = 2000,
    methods: Sequence[str] | None = None,
    batch_size: int = 64,
    seed: int = 0,
    command: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Calibrate BASE (``bundle_dir``) to the subject of ``session_dir``; write NEW (``out_dir``).

    Parameters
    ----------
    session_dir : path
        A session folder (``neuroimagen present`` or ``stream simulate-session``).
    bundle_dir : path
        BASE; only read.
    out_dir : path
        NEW; must not exist or be empty.
    budget_s : float
        Wall-clock budget of the whole calibration (reading, adapting, writing); what
        is left after reading the session, less a reserve (10 %, at most 60 s) for
        the validation runs, the final evaluation and writing, is split evenly between ``methods``.
    max_steps : int
        At most this many optimizer steps per gradient method.
    methods : subset of :data:`METHODS` | None
        None: every method that fits the extractors' classes (:func:`methods_for`) but
        ``restandardise`` (never better than ``none`` in the measurements; ask for it).
    batch_size, seed : int
    command : str | None
        The command line, recorded in NEW's provenance.
    progress : callable(str) | None

    Returns
    -------
    dict
        ``report``: trials, methods tried (validation scores, steps, seconds), the
        method kept, test top-1 / SSIM before and after, the calibration time;
        written to NEW's manifest metrics and ``description`` too.

    Raises
    ------
    CalibrationError
        A class BASE has no targets for, a channel it takes missing, a rate that
        differs, no marked trials, no held-out images left to train on, an extractor
        class with no method, or a method asked for that does not fit the extractors.
    """
    from neuroimagen.training.models.bundle import load_bundle

    say = progress or (lambda msg: None)
    if methods is not None:
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise CalibrationError(f"methods must be a non-empty subset of {METHODS}, got {list(methods)}")
    t_start = time.monotonic()
    torch.manual_seed(seed)
    # 1-3. BASE and the methods its extractors take, the session's windows, targets
    say("reading the bundle and the session")
    base = load_bundle(bundle_dir)
    models = _load_models(base)
    fitting = methods_for(models)
    if methods is None:
        methods = tuple(m for m in fitting if m not in OPT_IN_METHODS)
    elif [m for m in methods if m not in fitting]:
        raise CalibrationError(
            f"method(s) {', '.join(m for m in methods if m not in fitting)} do not fit bundle "
            f"{base.manifest.name!r}'s extractors ({type(models.pixel).__name__}, {type(models.semantic).__name__}); "
            f"they take {', '.join(fitting)}")
    sw, meta = session_windows(session_dir, base)
    emb = base.data("class_embeddings")
    class_tokens, class_pooled = emb["tokens"].float(), emb["pooled"].float()
    size = int(models.saliency.config.image_size)
    img = _stimulus_images(meta, sw.images, size)
    x_all, y_all = torch.from_numpy(sw.eeg), torch.from_numpy(sw.labels)
    trainable = ~sw.test
    if trainable.sum() < 2:
        raise CalibrationError(f"{session_dir}: {int(trainable.sum())} trials left after holding out the test "
                               "images; present more images")
    train_images = [im for im, t in zip(sw.images, trainable, strict=True) if t]
    val_sub = _image_split(train_images, 0.2, seed=seed + 1) if len(set(train_images)) > 4 else np.zeros(
        len(train_images), bool)
    idx_train = np.flatnonzero(trainable)
    fit_idx, val_idx = idx_train[~val_sub], idx_train[val_sub] if val_sub.any() else idx_train[~val_sub]
    test_idx = np.flatnonzero(sw.test)

    def part(ix):
        ix = torch.from_numpy(ix)
        return x_all[ix], y_all[ix], img[ix]

    fit, val, test = part(fit_idx), part(val_idx), part(test_idx)
    before = _evaluate(models, *test, class_pooled)
    scores = {"none": _evaluate(models, *val, class_pooled)}
    logger.info("before: test top-1 %.3f, SSIM %.3f (%d test trials)", before["top1"], before["ssim"], len(test_idx))
    # 4. each method on its share of the budget
    # what is left of the budget, less a reserve for the final evaluation and writing NEW
    share = max(1.0, budget_s - min(60.0, 0.1 * budget_s) - (time.monotonic() - t_start)) / len(methods)
    tried: dict[str, dict] = {}
    candidates: dict[str, _Models] = {}
    for method in methods:
        say(f"adapting: {method}")
        m = _load_models(base)
        if method == "subject_layer":
            layer = SubjectLayer(x_all.shape[1])
            eye = torch.eye(x_all.shape[1])
            convs = [m.pixel.spatial[0], m.semantic.patch_embed.proj]
            fold_subject_layer(convs, layer)
            info = _train(m, list(layer.parameters()), None, *fit, class_tokens, class_pooled,
                          budget_s=share, max_steps=max_steps, lr=3e-3,
                          reg=lambda layer=layer, eye=eye: 1e-2 * ((layer.weight - eye) ** 2).sum(),
                          batch_size=batch_size, seed=seed)
            bake_subject_layer(convs)
        elif method in FEATURE_METHODS:
            info = _adapt_features(method, m, fit, val, class_pooled, budget_s=share)
        else:
            params = [*m.semantic.heads.parameters(), *m.pixel.proj.parameters()]
            for p in params:
                p.requires_grad_(True)
            info = _train(m, params, None, *fit, class_tokens, class_pooled, budget_s=share, max_steps=max_steps,
                          lr=1e-3, reg=None, batch_size=batch_size, seed=seed)
            m.eval()
        scores[method] = _evaluate(m, *val, class_pooled)
        tried[method] = {**info, "val": scores[method]}
        candidates[method] = m
        logger.info("%s: %d steps (or penalties) in %.1f s, validation top-1 %.3f, SSIM %.3f", method, info["steps"],
                    info["train_s"], scores[method]["top1"], scores[method]["ssim"])
    # 5. keep the best on validation (top-1 + SSIM); report on the held-out test trials
    kept = max(scores, key=lambda k: scores[k]["top1"] + scores[k]["ssim"])
    final = candidates.get(kept, models)
    after = _evaluate(final, *test, class_pooled)
    calib_s = time.monotonic() - t_start
    report = {
        "session": str(session_dir), "base": str(bundle_dir), "n_trials": int(len(sw.labels)),
        "n_fit": int(len(fit_idx)), "n_val": int(len(val_idx)), "n_test": int(len(test_idx)),
        "n_test_images": len(set(np.asarray(sw.images)[test_idx].tolist())),
        "minutes_of_stimuli": float((sw.onsets.max() - sw.onsets.min()) / base.manifest.stream.sfreq_hz / 60.0),
        "methods": tried, "validation": scores, "kept": kept, "before": before, "after": after,
        "calibration_s": calib_s, "budget_s": budget_s,
    }
    say(f"writing {out_dir}")
    _write_new(base, final, kept != "none", out_dir, report, command)
    logger.info("kept %s: test top-1 %.3f -> %.3f, SSIM %.3f -> %.3f in %.1f s", kept, before["top1"],
                after["top1"], before["ssim"], after["ssim"], calib_s)
    return report


def _write_new(base, models: _Models, changed: bool, out_dir: str | Path, report: dict, command: str | None) -> None:
    """NEW: BASE's members (the adapted extractors saved anew), data files, scheduler, generator; verified."""
    from neuroimagen.training.models.bundle import SCHEDULER_CONFIG, load_bundle, write_bundle
    from neuroimagen.training.models.img2img import load_scheduler

    man = base.manifest
    adapted = {"pixel_encoder": models.pixel, "semantic": models.semantic} if changed else {}
    members = {}
    for m in man.members:
        model = adapted.get(m.role)
        members[m.name] = (m.role, model if model is not None else base.path / m.folder)
    external = {e.name: (e.role, e.path, e.class_name) for e in man.external}
    data, scheduler = {}, None
    for f in man.files:
        if f.path.endswith(".safetensors") and "/" not in f.path:
            data[f.path[: -len(".safetensors")]] = base.data(f.path[: -len(".safetensors")])
        elif f.path.endswith(SCHEDULER_CONFIG) and man.generator is not None:
            scheduler = load_scheduler(base.path / man.generator.scheduler, subfolder=None)
        else:
            raise CalibrationError(f"bundle {man.name!r}: data file {f.path} is of a kind calibrate cannot carry")
    if man.artifacts:
        logger.warning("BASE's %d exported artifact(s) are not carried over (they hold BASE's weights); "
                       "export NEW again", len(man.artifacts))
    metrics = {
        **man.metrics,
        "calib_n_trials": float(report["n_trials"]), "calib_n_test_trials": float(report["n_test"]),
        "calib_top1_before": report["before"]["top1"], "calib_top1_after": report["after"]["top1"],
        "calib_ssim_before": report["before"]["ssim"], "calib_ssim_after": report["after"]["ssim"],
        "calib_time_s": float(report["calibration_s"]),
    }
    prov = man.provenance
    note = (f"calibrated ({report['kept']}) on session {report['session']} ({report['n_trials']} trials, "
            f"{report['minutes_of_stimuli']:.1f} min)")
    prov = prov.model_copy(update={"data": f"{prov.data}; {note}", "created_utc": "", "versions": {},
                                   "commands": (*prov.commands, *([command] if command else []))})
    write_bundle(
        out_dir, name=f"{man.name}-calibrated", description=f"{man.description} {note}.".strip(),
        stream=man.stream, preprocessing=man.preprocessing, windowing=man.windowing, provenance=prov,
        norm_stats=man.norm_stats, members=members, external=external, data=data, class_names=man.class_names,
        scheduler=scheduler, generator=man.generator, metrics=metrics,
    )
    load_bundle(out_dir)  # verify what was written


def evaluate_on_twin(bundle_dir: str | Path, twin_dir: str | Path, parts: Sequence[str] = ("val", "test")) -> dict:
    """A bundle on its own training subjects: class top-1 and saliency SSIM on the twin's held-out images.

    The same figures as calibration's (:func:`_evaluate`), on the twin's EEG-ImageNet
    windows of the ``parts`` of split 0 (images never trained on, of the subjects trained on).
    """
    from neuroimagen.training.models.bundle import load_bundle

    from .data import load_images, load_trials

    b = load_bundle(bundle_dir)
    models = _load_models(b)
    trials = load_trials(twin_dir, tuple(parts))
    img = load_images(twin_dir, trials.images, int(models.saliency.config.image_size))[trials.image_index]
    out = _evaluate(models, trials.x, trials.label, img, b.data("class_embeddings")["pooled"].float())
    return {**out, "n_trials": len(trials), "parts": list(parts), "images": list(trials.images)}


def new_subject_bench(
    twin_dir: str | Path,
    bundle_dir: str | Path,
    out_dir: str | Path,
    *,
    subject_seed: int = 1000,
    minutes: float = 15.0,
    n_passes: int = 6,
    budget_s: float = 600.0,
    variation: str = "wide",
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Issue 13's quality figure: how much of the gap to its own subjects calibration recovers.

    1. BASE on its own training subjects (:func:`evaluate_on_twin`, the twin's test split);
    2. a session of a new twin subject (``subject_seed``, never one of the twin's)
       watching the presenter's default schedule for ``minutes``, made offline by the
       live simulator's code path (:func:`~neuroimagen.training.data.twin.subject.simulate_session`),
       whose test images (shown repeatedly, held out by calibration) are the twin's test split;
    3. :func:`calibrate` on it within ``budget_s``: before (BASE on the new subject)
       and after, on the session's held-out test images.

    Returns
    -------
    dict
        ``own``, ``before``, ``after`` (top1, ssim), ``recovered`` (fraction of the
        gap, per metric: (after - before) / (own - before)), ``n_trials``,
        ``calibration_s``, the calibration report.
    """
    import json
    import os

    from neuroimagen.stream.design import load_stimuli, make_schedule
    from neuroimagen.training.data.twin.subject import TwinSubjectSource, simulate_session
    from neuroimagen.training.models.bundle import read_manifest, twin_mismatches

    say = progress or (lambda msg: None)
    out = Path(out_dir)
    problems = twin_mismatches(json.loads((Path(twin_dir) / "twin.json").read_text()), read_manifest(bundle_dir))
    if problems:
        raise CalibrationError(f"{twin_dir} is not the twin {bundle_dir} was trained on: " + "; ".join(problems)
                               + f" (make it with `neuroimagen data make-twin --bundle {bundle_dir} --out DIR`)")
    say("BASE on its own subjects")
    own = evaluate_on_twin(bundle_dir, twin_dir, parts=("test",))
    say(f"a {minutes:g}-minute session of new subject {subject_seed}")
    # the session's test images are the twin's test split: the same images as `own`, never trained on
    trials = make_schedule(load_stimuli(Path(twin_dir) / "images"), n_passes=n_passes,
                           test_stems=set(own["images"]), max_duration_s=60.0 * minutes)
    simulate_session(out / "session", TwinSubjectSource(twin_dir, subject_seed, variation), trials)
    report = calibrate(out / "session", bundle_dir, out / "calibrated", budget_s=budget_s, progress=say)
    before, after = report["before"], report["after"]

    def recovered(k: str) -> float:
        gap = own[k] - before[k]  # below 0.01 there is no gap to recover (the ratio would be noise)
        return float((after[k] - before[k]) / gap) if gap > 0.01 else float("nan")

    return {
        "own": own, "before": before, "after": after,
        "recovered": {k: recovered(k) for k in ("top1", "ssim")},
        "n_trials": report["n_trials"], "n_test_trials": report["n_test"],
        "minutes_of_stimuli": report["minutes_of_stimuli"], "calibration_s": report["calibration_s"],
        "kept": report["kept"], "subject_seed": subject_seed, "variation": variation,
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()], "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "calibration": report,
    }

"""Write a twin: stimuli, raw session recordings (FIF) and the EEG-ImageNet file layout.

Output folder::

    twin.json                       metadata (see make_twin)
    images/<wnid>/<wnid>_<n>.JPEG   stimuli
    stimuli.json                    per-image class and layout (cx, cy, size, hue, ...)
    recordings/sub-XX_ses-01_raw.fif  raw continuous sessions (V, unfiltered) with
                                      JSON marker annotations, playable by `stream replay`
    eeg_5_95_std.pth                {dataset: [{eeg (128, 500), label, image, subject}], labels, images}
    block_splits_by_image_all.pth   {splits: [{train, val, test}]}, split by image
    targets.safetensors             class_embeddings (n_classes, 77, 768), class_pooled (n_classes, 768)
    captions.json                   image stem -> "an image of a <class name>"
    class_names.yaml                wnid -> class name (the format of the shipped EEG-ImageNet map)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from neuroimagen.stream.config import NormalizationConfig, PreprocessingConfig
from neuroimagen.stream.montage import DEFAULT_MONTAGE, channel_positions, montage_ch_names
from neuroimagen.stream.preprocessing import NormStats, normalize, preprocess_continuous

from ...config import TwinConfig
from .eeg import EPOCH_S, VARIATIONS, TwinModel, background, build_model, evoked
from .stimuli import SHAPES, STYLES, class_names, class_wnids, render_image, sample_layouts

__all__ = [
    "EEG_FILE",
    "PRESETS",
    "SPLITS_FILE",
    "TWIN_JSON",
    "TWIN_VERSION",
    "class_embeddings",
    "make_twin",
    "rebuild_model",
    "resolve_sizes",
]

logger = logging.getLogger(__name__)

TWIN_VERSION = 1
TWIN_JSON = "twin.json"
EEG_FILE = "eeg_5_95_std.pth"
SPLITS_FILE = "block_splits_by_image_all.pth"
TARGETS_FILE = "targets.safetensors"
CAPTIONS_FILE = "captions.json"
STIMULI_FILE = "stimuli.json"
CLASS_NAMES_FILE = "class_names.yaml"
SFREQ = 1000.0
MARKER_OFFSET = 20
N_TIMES = 440
LEAD_IN_S = 2.0
TAIL_S = 1.0
#: preset -> (n_classes, n_images_per_class, n_subjects, image_size_px)
PRESETS = {"small": (10, 20, 2, 64), "full": (40, 50, 2, 96)}
EMBED_TOKENS, EMBED_DIM = 77, 768


def resolve_sizes(cfg: TwinConfig) -> dict[str, int]:
    """Sizes of the twin: the preset's, overridden by any non-None config field."""
    n_cls, n_img, n_sub, px = PRESETS[cfg.preset]
    return {
        "n_classes": cfg.n_classes or n_cls,
        "n_images_per_class": cfg.n_images_per_class or n_img,
        "n_subjects": cfg.n_subjects or n_sub,
        "image_size_px": cfg.image_size_px or px,
    }


def class_embeddings(n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic conditioning targets, factorised like the classes.

    Token ``j`` of class ``c`` is ``shape[c % 10, j] + 0.6 * style[c // 10, j] +
    0.5 * position[j]`` (all standard normal, drawn from ``seed``), scaled to unit
    RMS; the pooled vector is the token mean, L2-normalised. Classes sharing a
    shape or style are therefore closer, like text embeddings of their names.

    Returns
    -------
    tokens : ndarray, shape (n_classes, 77, 768), float32
    pooled : ndarray, shape (n_classes, 768), float32
    """
    rng = np.random.default_rng([seed, 77768])
    shape = rng.standard_normal((len(SHAPES), EMBED_TOKENS, EMBED_DIM))
    style = rng.standard_normal((len(STYLES), EMBED_TOKENS, EMBED_DIM))
    pos = rng.standard_normal((EMBED_TOKENS, EMBED_DIM))
    c = np.arange(n_classes)
    tok = shape[c % len(SHAPES)] + 0.6 * style[c // len(SHAPES)] + 0.5 * pos[None]
    tok /= np.sqrt(np.mean(tok**2, axis=-1, keepdims=True))
    pooled = tok.mean(axis=1)
    pooled /= np.linalg.norm(pooled, axis=-1, keepdims=True)
    return tok.astype(np.float32), pooled.astype(np.float32)


def rebuild_model(meta: dict) -> TwinModel:
    """The generative model of a written twin (``twin.json``), drawn from its seed as make_twin did.

    Raises
    ------
    ValueError
        The rebuilt model's class patterns differ from the ones twin.json stored
        (the twin was written by other code).
    """
    n_cls = int(meta["sizes"]["n_classes"])
    rng_model = np.random.default_rng(np.random.SeedSequence(int(meta["config"]["seed"])).spawn(2)[1])
    model = build_model(list(meta["ch_names"]), channel_positions(meta.get("montage", DEFAULT_MONTAGE)),
                        n_cls, float(meta["sfreq"]), rng_model)
    stored = np.asarray(meta["generative_model"]["topo_class"])
    if not np.allclose(np.round(model.topo_class, 6), stored, atol=2e-6):
        raise ValueError("the rebuilt generative model does not match twin.json (remake the twin)")
    return model


def _session_plan(
    order: str, n_classes: int, n_img: int, rng: np.random.Generator, soa: int, pause: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Presentation order, onsets and nonstationarity segments of one session.

    Returns (trial image indices (n_trials,), onsets (n_trials,), segments (n_seg, 2), n_times).
    Images are indexed class-major (image i has class i // n_img).
    """
    if order == "block":
        seq = np.concatenate([c * n_img + rng.permutation(n_img) for c in rng.permutation(n_classes)])
    else:
        seq = rng.permutation(n_classes * n_img)
    n_seg = n_classes
    pos = np.arange(len(seq))
    seg_of = pos // n_img
    lead = int(LEAD_IN_S * SFREQ)
    onsets = lead + pos * soa + seg_of * pause
    n_times = int(onsets[-1] + soa + TAIL_S * SFREQ)
    starts = lead + np.arange(n_seg) * (n_img * soa + pause)
    # segment boundaries sit in the middle of each pause; the first starts at 0
    bounds = np.concatenate([[0], starts[1:] - pause // 2, [n_times]])
    segments = np.stack([bounds[:-1], bounds[1:]], axis=1)
    return seq, onsets, segments, n_times


def _save_fif(path: Path, data: np.ndarray, ch_names: list[str], onsets: np.ndarray,
              payloads: list[str]) -> None:
    import mne

    from neuroimagen.stream.montage import get_montage

    info = mne.create_info(ch_names, SFREQ, "eeg")
    raw = mne.io.RawArray(data, info, verbose=False)
    raw.set_montage(get_montage(DEFAULT_MONTAGE), verbose=False)
    raw.set_annotations(
        mne.Annotations(onset=onsets / SFREQ, duration=np.zeros(len(onsets)), description=payloads)
    )
    # fmt="single" stores exactly our float32 samples
    raw.save(path, fmt="single", overwrite=True, verbose=False)


def make_twin(
    out_dir: str | Path,
    cfg: TwinConfig | None = None,
    preprocessing: PreprocessingConfig | None = None,
    caption_template: str = "an image of a {class_name}",
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Generate a synthetic EEG-ImageNet twin (deterministic for a given config).

    Parameters
    ----------
    out_dir : path
        Created if missing; existing twin files are overwritten.
    cfg : TwinConfig
        Preset, seed, order, SNRs and background parameters.
    preprocessing : PreprocessingConfig
        The continuous stage run over each raw session before cutting
        (default: the stream layer's default, 5-95 Hz band-pass).
    caption_template : str
        ``{class_name}`` is replaced by the class name.
    progress : callable(str) | None
        Called with a short message at each step (the CLI drives a status line).

    Returns
    -------
    dict
        The content of ``twin.json``: version, seed, preset, config, sizes,
        class names and wnids, captions, sfreq, ch_names, norm stats,
        preprocessing, marker offset (20), n_times (440), segment length (500),
        file names, the generative model's parameters and each session's
        presentation order.
    """
    import torch
    from safetensors.numpy import save_file

    cfg = cfg or TwinConfig()
    preprocessing = preprocessing or PreprocessingConfig()
    say = progress or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sizes = resolve_sizes(cfg)
    n_cls, n_img, n_sub = sizes["n_classes"], sizes["n_images_per_class"], sizes["n_subjects"]
    ss = np.random.SeedSequence(cfg.seed)
    rng_stim, rng_model, rng_split, *rng_subj = (np.random.default_rng(s) for s in ss.spawn(3 + n_sub))

    # 1. stimuli
    say("drawing stimuli")
    wnids, names = class_wnids(n_cls), class_names(n_cls)
    layouts = sample_layouts(n_cls * n_img, rng_stim)
    stems = [f"{wnids[i // n_img]}_{i % n_img + 1}" for i in range(n_cls * n_img)]
    img_labels = np.arange(n_cls * n_img) // n_img
    for i, (stem, lay) in enumerate(zip(stems, layouts, strict=True)):
        folder = out / "images" / wnids[img_labels[i]]
        folder.mkdir(parents=True, exist_ok=True)
        render_image(int(img_labels[i]), lay, sizes["image_size_px"]).save(
            folder / f"{stem}.JPEG", format="JPEG", quality=92
        )
    lay_arr = np.array([[lay.cx, lay.cy, lay.size, lay.hue] for lay in layouts])

    # 2. generative model
    ch_names = montage_ch_names(DEFAULT_MONTAGE)
    model = build_model(ch_names, channel_positions(DEFAULT_MONTAGE), n_cls, SFREQ, rng_model)

    # 3. sessions: raw FIF, then the stream layer's continuous stage, then cut
    n_ep = int(round(EPOCH_S * SFREQ))
    soa, pause = int(round(cfg.soa_s * SFREQ)), int(round(cfg.block_pause_s * SFREQ))
    rec_dir = out / "recordings"
    rec_dir.mkdir(exist_ok=True)
    segs, entries, sessions = [], [], []
    acc_n, acc_sum, acc_sq = 0, np.zeros(len(ch_names)), np.zeros(len(ch_names))
    skip = int(1.0 * SFREQ)  # filter start-up transient left out of the norm stats
    for s in range(n_sub):
        subject = s + 1
        say(f"subject {subject}/{n_sub}: synthesising")
        rng = rng_subj[s]
        seq, onsets, segments, n_times = _session_plan(cfg.order, n_cls, n_img, rng, soa, pause)
        labels = img_labels[seq]
        data = background(model, n_times, SFREQ, segments, cfg, rng)
        subject_params: dict = {}
        data += evoked(model, n_times, SFREQ, onsets, labels, lay_arr[seq], cfg, rng, subject_params,
                       VARIATIONS[cfg.subject_variation])
        payloads = [
            json.dumps({"image": stems[i], "label": int(img_labels[i]), "class": wnids[img_labels[i]],
                        "subject": subject})
            for i in seq
        ]
        fname = f"sub-{subject:02d}_ses-01_raw.fif"
        say(f"subject {subject}/{n_sub}: writing {fname}")
        _save_fif(rec_dir / fname, data, ch_names, onsets, payloads)
        say(f"subject {subject}/{n_sub}: filtering and cutting")
        filt = preprocess_continuous(data, SFREQ, preprocessing, ch_names)
        del data
        f64 = filt[:, skip:].astype(np.float64)
        acc_n += f64.shape[1]
        acc_sum += f64.sum(axis=1)
        acc_sq += np.einsum("ij,ij->i", f64, f64)
        del f64
        idx = onsets[:, None] + np.arange(n_ep)[None, :]
        segs.append(np.ascontiguousarray(filt[:, idx].transpose(1, 0, 2)))
        del filt
        entries += [(int(img_labels[i]), int(i), subject) for i in seq]
        sessions.append({
            "subject": subject,
            "file": f"recordings/{fname}",
            "order": cfg.order,
            "n_times": int(n_times),
            "onsets": onsets.tolist(),
            "images": [stems[i] for i in seq],
            "segments": segments.tolist(),
            # the subject's true gain, latency and channel gains (the oracle decoder's knowledge)
            "subject_params": subject_params,
        })

    # 4. dataset normalisation: per-channel stats over the filtered recordings
    say("normalising and writing the EEG-ImageNet files")
    mean = acc_sum / acc_n
    std = np.sqrt(np.maximum(acc_sq / acc_n - mean**2, 0.0))
    stats = NormStats(mean, std)
    norm_cfg = NormalizationConfig(mode="dataset", eps=preprocessing.normalization.eps)
    all_segs = np.concatenate(segs)
    del segs
    dataset = []
    for seg, (label, image, subject) in zip(all_segs, entries, strict=True):
        x = normalize(seg, norm_cfg, stats)
        dataset.append({"eeg": torch.from_numpy(x), "label": label, "image": image, "subject": subject})
    torch.save({"dataset": dataset, "labels": wnids, "images": stems}, out / EEG_FILE)
    del dataset, all_segs

    # 5. splits by image: every trial of an image lands in the same part
    img_of = np.array([e[1] for e in entries])
    splits = []
    for _ in range(cfg.n_splits):
        part = np.empty(n_cls * n_img, dtype=np.int64)
        for c in range(n_cls):
            perm = c * n_img + rng_split.permutation(n_img)
            n_test = max(1, int(round(0.1 * n_img)))
            n_val = max(1, int(round(0.1 * n_img)))
            part[perm[:n_test]] = 2
            part[perm[n_test:n_test + n_val]] = 1
            part[perm[n_test + n_val:]] = 0
        p = part[img_of]
        splits.append({k: np.flatnonzero(p == j).tolist() for j, k in enumerate(("train", "val", "test"))})
    torch.save({"splits": splits}, out / SPLITS_FILE)

    # 6. semantic targets, captions, stimulus metadata
    tokens, pooled = class_embeddings(n_cls, cfg.seed)
    save_file({"class_embeddings": tokens, "class_pooled": pooled}, str(out / TARGETS_FILE))
    class_captions = [caption_template.format(class_name=n) for n in names]
    (out / CAPTIONS_FILE).write_text(
        json.dumps({stem: class_captions[img_labels[i]] for i, stem in enumerate(stems)}, indent=0)
    )
    stim = {
        stem: {"class": wnids[img_labels[i]], "label": int(img_labels[i]), **layouts[i].to_dict()}
        for i, stem in enumerate(stems)
    }
    (out / STIMULI_FILE).write_text(json.dumps(stim))
    # same format as the shipped EEG-ImageNet map (captions.load_class_names reads it)
    (out / CLASS_NAMES_FILE).write_text("".join(f"{w}: {n}\n" for w, n in zip(wnids, names, strict=True)))

    meta = {
        "version": TWIN_VERSION,
        "seed": cfg.seed,
        "preset": cfg.preset,
        "config": cfg.model_dump(mode="json"),
        "sizes": sizes,
        "class_names": names,
        "wnids": wnids,
        "captions": class_captions,
        "sfreq": SFREQ,
        "montage": DEFAULT_MONTAGE,
        "ch_names": ch_names,
        "units": "V",
        # the live chain's settings for this twin: the continuous stage used here + dataset norm
        "preprocessing": preprocessing.model_copy(update={"normalization": norm_cfg}).model_dump(mode="json"),
        "normalization": {"mode": "dataset", "eps": norm_cfg.eps},
        "norm_stats": stats.to_dict(),
        "marker_offset_samples": MARKER_OFFSET,
        "n_times": N_TIMES,
        "segment_n_times": n_ep,
        "files": {
            "eeg": EEG_FILE,
            "splits": SPLITS_FILE,
            "images": "images",
            "targets": TARGETS_FILE,
            "captions": CAPTIONS_FILE,
            "stimuli": STIMULI_FILE,
            "class_names": CLASS_NAMES_FILE,
            "recordings": [x["file"] for x in sessions],
        },
        "targets": {
            "file": TARGETS_FILE,
            "class_embeddings": [n_cls, EMBED_TOKENS, EMBED_DIM],
            "class_pooled": [n_cls, EMBED_DIM],
            "recipe": "token j of class c = shape[c%10,j] + 0.6 style[c//10,j] + 0.5 pos[j] "
            "(standard normal from seed), unit RMS per token; pooled = L2-normalised token mean",
        },
        "generative_model": model.to_dict(),
        "sessions": sessions,
    }
    (out / TWIN_JSON).write_text(json.dumps(meta))
    logger.info("twin written to %s: %d classes x %d images, %d subjects, %d trials",
                out, n_cls, n_img, n_sub, len(entries))
    return meta

"""The synthetic EEG-ImageNet twin: file layout, exactness against independent readers, realism.

References are independent of the twin's own code: MNE's FIF reader, scipy's
one-shot Butterworth filter and Welch PSD, PIL, safetensors, H4's
EEG-ImageNet reader.
"""

import json
import re

import mne
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file
from scipy import signal

from neuroimagen.stream.montage import channel_positions, montage_ch_names
from neuroimagen.training.config import TwinConfig
from neuroimagen.training.data.captions import load_class_names
from neuroimagen.training.data.eeg_imagenet import read_eeg_imagenet, read_splits
from neuroimagen.training.data.twin import make_twin

TINY = dict(n_classes=3, n_images_per_class=4, n_subjects=1, image_size_px=32, block_pause_s=0.5)


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    out = tmp_path_factory.mktemp("twin-small")
    meta = make_twin(out, TwinConfig(preset="small", seed=0))
    return out, meta


def test_file_layout_and_metadata(twin):
    out, meta = twin
    on_disk = json.loads((out / "twin.json").read_text())
    assert on_disk["version"] == 1 and on_disk["seed"] == 0 and on_disk["preset"] == "small"
    assert on_disk["sfreq"] == 1000.0 and on_disk["ch_names"] == montage_ch_names()
    assert on_disk["marker_offset_samples"] == 20 and on_disk["n_times"] == 440
    n_cls, n_img, n_sub = 10, 20, 2
    assert len(on_disk["class_names"]) == len(set(on_disk["class_names"])) == n_cls

    f = read_eeg_imagenet(out / on_disk["files"]["eeg"])  # H4's validating reader
    assert f.labels == on_disk["wnids"] and all(re.fullmatch(r"n9\d{7}", w) for w in f.labels)
    assert len(f.images) == n_cls * n_img and f.subjects == [1, 2]
    assert len(f.segments) == n_cls * n_img * n_sub
    for seg in f.segments[:5]:
        assert seg["eeg"].dtype == torch.float32 and tuple(seg["eeg"].shape) == (128, 500)
        assert f.images[seg["image"]].startswith(f.labels[seg["label"]] + "_")

    # images: real JPEG files at images/<wnid>/<stem>.JPEG
    for stem in f.images[::37]:
        path = out / "images" / stem.split("_")[0] / f"{stem}.JPEG"
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (64, 64) and im.mode == "RGB"

    # splits: by image, disjoint, covering every segment
    (split,) = read_splits(out / on_disk["files"]["splits"])
    parts = {k: {f.segments[i]["image"] for i in split[k]} for k in ("train", "val", "test")}
    assert not (parts["train"] & parts["val"] or parts["train"] & parts["test"] or parts["val"] & parts["test"])
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(len(f.segments)))

    # targets: fixed shapes, deterministic per class, captions name the class
    t = load_file(str(out / on_disk["targets"]["file"]))
    assert t["class_embeddings"].shape == (n_cls, 77, 768) and t["class_pooled"].shape == (n_cls, 768)
    np.testing.assert_allclose(np.linalg.norm(t["class_pooled"], axis=1), 1.0, rtol=1e-5)
    caps = json.loads((out / on_disk["files"]["captions"]).read_text())
    assert caps[f.images[0]] == f"an image of a {on_disk['class_names'][0]}"
    names = load_class_names(out / on_disk["files"]["class_names"])
    assert names == dict(zip(on_disk["wnids"], on_disk["class_names"], strict=True))


def test_segments_equal_independent_filter_of_the_fif(twin):
    """segment = (butter(4, [5, 95]) causal from rest over the FIF - mean) / std, cut at the annotation."""
    out, meta = twin
    f = read_eeg_imagenet(out / meta["files"]["eeg"])
    by_key = {(f.images[s["image"]], s["subject"]): s["eeg"].numpy() for s in f.segments}
    mean = np.asarray(meta["norm_stats"]["mean"])
    std = np.asarray(meta["norm_stats"]["std"])
    sos = signal.butter(4, [5.0, 95.0], btype="bandpass", fs=1000.0, output="sos")
    filtered = []
    for rec in meta["files"]["recordings"]:
        raw = mne.io.read_raw_fif(out / rec, preload=True, verbose=False)
        assert raw.ch_names == montage_ch_names() and raw.info["sfreq"] == 1000.0
        filtered.append(signal.sosfilt(sos, raw.get_data().astype(np.float32).astype(np.float64), axis=1))
    # the stored stats are the per-channel stats of the filtered recordings (after the first second)
    both = np.concatenate([y[:, 1000:] for y in filtered], axis=1)
    np.testing.assert_allclose(both.mean(axis=1), mean, atol=1e-3 * std.min())
    np.testing.assert_allclose(both.std(axis=1), std, rtol=1e-4)
    y = filtered[1]
    ann = raw.annotations
    assert len(ann) == 200
    for onset, desc in list(zip(ann.onset, ann.description, strict=True))[::17]:
        payload = json.loads(desc)
        assert set(payload) == {"image", "label", "class", "subject"} and payload["subject"] == 2
        i = int(round(onset * 1000.0))
        ref = (y[:, i:i + 500] - mean[:, None]) / (std[:, None] + 1e-8)
        np.testing.assert_allclose(by_key[(payload["image"], 2)], ref, atol=2e-4)


def test_background_psd_slope_and_alpha_peak(twin):
    out, meta = twin
    raw = mne.io.read_raw_fif(out / meta["files"]["recordings"][0], preload=True, verbose=False)
    x = raw.get_data()
    freqs, psd = signal.welch(x, fs=1000.0, nperseg=4000, axis=1)
    band = (freqs >= 2) & (freqs <= 40)
    fit_band = band & ~((freqs >= 6) & (freqs <= 15))
    logf = np.log10(np.maximum(freqs, 1e-3))  # freqs[0] = 0 is outside every band used
    slopes = []
    for ch in range(x.shape[0]):
        slope, icpt = np.polyfit(logf[fit_band], np.log10(psd[ch, fit_band]), 1)
        slopes.append(slope)
    assert -2.0 < np.median(slopes) < -1.0, np.median(slopes)
    assert np.mean((np.array(slopes) > -2.0) & (np.array(slopes) < -1.0)) > 0.9
    # posterior alpha: peak >= 3 dB above the 1/f fit
    names = montage_ch_names()
    alpha = (freqs >= 8) & (freqs <= 12)
    for ch in ("O1", "Oz", "O2"):
        k = names.index(ch)
        slope, icpt = np.polyfit(logf[fit_band], np.log10(psd[k, fit_band]), 1)
        excess_db = 10 * (np.log10(psd[k, alpha]) - (icpt + slope * logf[alpha]))
        assert excess_db.max() >= 3.0, (ch, excess_db.max())
    # spatial correlation falls with distance (in the 5-95 Hz band)
    y = signal.sosfiltfilt(signal.butter(4, [5, 95], "bandpass", fs=1000.0, output="sos"), x[:, 5000:65000])
    c = np.corrcoef(y)
    pos = channel_positions()
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
    near = c[(d > 0) & (d < 0.03)].mean()
    far = c[d > 0.12].mean()
    assert near > 0.3 and near > far + 0.2, (near, far)


def test_deterministic_for_a_seed(tmp_path):
    a = make_twin(tmp_path / "a", TwinConfig(seed=7, **TINY))
    b = make_twin(tmp_path / "b", TwinConfig(seed=7, **TINY))
    c = make_twin(tmp_path / "c", TwinConfig(seed=8, **TINY))
    ea = torch.load(tmp_path / "a" / a["files"]["eeg"], weights_only=True)
    eb = torch.load(tmp_path / "b" / b["files"]["eeg"], weights_only=True)
    ec = torch.load(tmp_path / "c" / c["files"]["eeg"], weights_only=True)
    assert [s["image"] for s in ea["dataset"]] == [s["image"] for s in eb["dataset"]]
    assert all(torch.equal(s["eeg"], t["eeg"]) for s, t in zip(ea["dataset"], eb["dataset"], strict=True))
    assert not torch.equal(ea["dataset"][0]["eeg"], ec["dataset"][0]["eeg"])
    assert a["norm_stats"] == b["norm_stats"]
    ra = mne.io.read_raw_fif(tmp_path / "a" / a["files"]["recordings"][0], verbose=False).get_data()
    rb = mne.io.read_raw_fif(tmp_path / "b" / b["files"]["recordings"][0], verbose=False).get_data()
    np.testing.assert_array_equal(ra, rb)


def test_block_order_presents_one_class_per_block(tmp_path):
    meta = make_twin(tmp_path, TwinConfig(order="block", seed=1, **TINY))
    (sess,) = meta["sessions"]
    classes = [s.split("_")[0] for s in sess["images"]]
    blocks = [classes[i:i + 4] for i in range(0, 12, 4)]
    assert all(len(set(b)) == 1 for b in blocks) and len({b[0] for b in blocks}) == 3
    # onsets: 500 ms apart inside a block, plus the pause between blocks
    on = np.diff(sess["onsets"])
    assert set(on.tolist()) == {500, 1000}


@pytest.mark.slow
def test_replayed_twin_windows_equal_the_pth_segments(lsl_loopback, tmp_path):
    """Integration: a twin FIF replayed over LSL through the live WindowPipeline gives, for every
    marker, exactly the window the .pth stores (segment[:, 20:460])."""
    from helpers import wait_until
    from helpers.lsl import unique_name

    from neuroimagen.stream.config import ReplayConfig, StreamConfig
    from neuroimagen.stream.preprocessing import NormStats

    pipeline = pytest.importorskip("neuroimagen.stream.pipeline")
    replay = pytest.importorskip("neuroimagen.stream.replay")
    readers = pytest.importorskip("neuroimagen.stream.readers")
    # 1. a tiny twin: 3 classes x 4 images, one subject, ~10 s of recording
    meta = make_twin(tmp_path, TwinConfig(n_classes=3, n_images_per_class=4, n_subjects=1,
                                          image_size_px=32, block_pause_s=0.5, seed=5))
    pth = torch.load(tmp_path / meta["files"]["eeg"], weights_only=True)
    expected = {pth["images"][s["image"]]: s["eeg"].numpy()[:, 20:460] for s in pth["dataset"]}
    rec = readers.read_recording(tmp_path / meta["files"]["recordings"][0])
    assert len(rec.markers) == 12

    # 2. the live chain as configured for this twin: marker-locked, dataset normalisation
    assert meta["preprocessing"]["normalization"]["mode"] == "dataset"
    cfg = StreamConfig.model_validate({
        "inlet": {"resolve_timeout_s": 10.0},
        "windowing": {"mode": "marker", "n_times": meta["n_times"],
                      "marker_offset_samples": meta["marker_offset_samples"]},
        "preprocessing": meta["preprocessing"],
    })
    stats = NormStats.from_dict(meta["norm_stats"])
    name = unique_name("twin")
    player = replay.Player(rec, name, ReplayConfig(speed=1.0, wait_for_consumers_s=20.0))
    player.start()
    got = []
    try:
        with pipeline.WindowPipeline(cfg, norm_stats=stats, eeg_name=name) as pipe:
            wait_until(lambda: got.extend(pipe.poll()) or len(got) >= 12, timeout=60,
                       message=lambda: f"12 windows (have {len(got)}, {pipe.stats})")
    finally:
        player.stop()

    # 3. every live window equals its stored segment
    assert len(got) == 12
    for w in got:
        payload = json.loads(w.marker)
        assert dict(w.meta) == payload
        np.testing.assert_allclose(w.data, expected[payload["image"]], atol=1e-5, rtol=0)

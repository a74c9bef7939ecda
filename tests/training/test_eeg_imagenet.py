"""EEG-ImageNet loader on small format-faithful files (same keys, dtypes, shapes)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.datasets import (
    CodeRunner,
    make_eeg_imagenet,
    make_images,
    make_splits,
    truncate,
)
from scipy import interpolate, signal

from neuroimagen.stream.config import NormalizationConfig, PreprocessingConfig
from neuroimagen.stream.montage import montage_ch_names
from neuroimagen.training.config import DataConfig, EEGImageNetConfig
from neuroimagen.training.data._io import DatasetFileError, collate_samples
from neuroimagen.training.data.captions import Captioner
from neuroimagen.training.data.eeg_imagenet import EEGImageNetDataset, read_eeg_imagenet


def _source(fx, file_index):
    return fx.obj["dataset"][file_index]["eeg"].numpy()


def test_items_are_the_cropped_source_segments(tmp_path):
    fx = make_eeg_imagenet(tmp_path / "eeg_5_95_std.pth")
    ds = EEGImageNetDataset(fx.path)
    assert len(ds) == len(fx.obj["dataset"]) == 12
    assert ds.labels == fx.obj["labels"] and ds.images == fx.stems
    assert ds.ch_names == montage_ch_names() and len(ds.ch_names) == 128
    for i in (0, 5, 11):
        item = ds[i]
        src = fx.obj["dataset"][i]
        assert item["eeg"].dtype == torch.float32 and tuple(item["eeg"].shape) == (128, 440)
        np.testing.assert_array_equal(item["eeg"].numpy(), _source(fx, i)[:, 20:460])
        assert item["label"] == src["label"] and item["subject"] == src["subject"]
        assert item["image_id"] == fx.stems[src["image"]]
        assert item["image_path"] is None
    assert ds[0]["caption"] == "an image of a sorrel"  # n02389026 in the shipped class map


def test_resample_to_512_matches_dreamdiffusion_interp1d(tmp_path):
    fx = make_eeg_imagenet(tmp_path / "eeg.pth")
    ds = EEGImageNetDataset(fx.path, resample_n_times=512)
    x = _source(fx, 3)[:, 20:460]
    ref = interpolate.interp1d(np.linspace(0, 1, 440), x)(np.linspace(0, 1, 512))
    out = ds[3]["eeg"].numpy()
    assert out.shape == (128, 512) and out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_length_filter_keeps_450_to_600(tmp_path):
    lengths = [449, 460, 500, 600, 601, 455]
    fx = make_eeg_imagenet(tmp_path / "eeg.pth", n_classes=3, n_images_per_class=2, subjects=(1,), lengths=lengths)
    ds = EEGImageNetDataset(fx.path)
    # 455 is in range but shorter than the [20:460] crop: dropped rather than stretched
    assert ds.indices == [1, 2, 3]
    for i, src in enumerate(ds.indices):
        np.testing.assert_array_equal(ds[i]["eeg"].numpy(), _source(fx, src)[:, 20:460])


def test_splits_index_the_subject_filtered_list(tmp_path):
    # subject-major: file indices 0-5 subject 1, 6-11 subject 2
    fx = make_eeg_imagenet(tmp_path / "eeg.pth", lengths=[500] * 11 + [700])
    sp = make_splits(tmp_path / "block_splits_by_image_single.pth", train=[0, 2, 5], val=[1], test=[3, 4], n_splits=2)
    train = EEGImageNetDataset(fx.path, sp, "train", subject=2)
    # file index 11 (T=700) is dropped by the length filter after indexing
    assert train.indices == [6, 8]
    assert train.subjects == [2]
    np.testing.assert_array_equal(train[1]["eeg"].numpy(), _source(fx, 8)[:, 20:460])
    test_all = EEGImageNetDataset(fx.path, sp, "test", split_index=1, subject=0)
    assert test_all.indices == [3, 4] and test_all.subjects == [1]
    assert len(EEGImageNetDataset(fx.path, sp, "all")) == 11


def test_split_index_out_of_bounds_is_an_error_naming_it(tmp_path):
    fx = make_eeg_imagenet(tmp_path / "eeg.pth")
    # 6 segments for subject 1: index 6 == len is the DreamDiffusion off-by-one case
    sp = make_splits(tmp_path / "splits.pth", train=[0, 6], val=[], test=[])
    with pytest.raises(DatasetFileError, match=r"splits\[0\]\['train'\].*first 6.*_single"):
        EEGImageNetDataset(fx.path, sp, "train", subject=1)
    assert len(EEGImageNetDataset(fx.path, sp, "train")) == 2  # fine over all 12 segments
    with pytest.raises(DatasetFileError, match="split_index 3"):
        EEGImageNetDataset(fx.path, sp, "train", split_index=3)


def test_subject_filter(tmp_path):
    fx = make_eeg_imagenet(tmp_path / "eeg.pth", subjects=(1, 2, 3))
    for subject in (1, 3):
        ds = EEGImageNetDataset(fx.path, subject=subject)
        assert ds.subjects == [subject] and len(ds) == 6
    assert EEGImageNetDataset(fx.path, subject=0).subjects == [1, 2, 3]
    with pytest.raises(DatasetFileError, match=r"subject 5.*\[1, 2, 3\]"):
        EEGImageNetDataset(fx.path, subject=5)


def test_wrong_channel_count_names_file_and_key(tmp_path):
    fx = make_eeg_imagenet(tmp_path / "eeg.pth", n_channels=64)
    with pytest.raises(DatasetFileError, match=r"eeg\.pth: dataset\[0\]\['eeg'\] has 64 channels, expected 128"):
        EEGImageNetDataset(fx.path)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda o: o.pop("labels"), r"missing key\(s\) 'labels'"),
        (lambda o: o["dataset"][2].pop("subject"), r"'subject' at dataset\[2\]"),
        (lambda o: o["dataset"][1].update(eeg=o["dataset"][1]["eeg"].to(torch.int32)), r"dataset\[1\]\['eeg'\].*floating"),
        (lambda o: o["dataset"][1].update(eeg=o["dataset"][1]["eeg"][0]), r"dataset\[1\]\['eeg'\].*shape \(500,\)"),
        (lambda o: o["dataset"][0].update(label=7), r"dataset\[0\]\['label'\] = 7"),
        (lambda o: o["dataset"][0].update(image=2.5), r"dataset\[0\]\['image'\] must be an integer"),
        (lambda o: o.update(images=["not-a-stem"]), r"'images'.*'not-a-stem'"),
        (lambda o: o.update(labels=["dog", "cat", "cow"]), r"'labels'.*'dog'"),
    ],
)
def test_malformed_files_are_refused_with_the_key(tmp_path, mutate, match):
    fx = make_eeg_imagenet(tmp_path / "eeg.pth")
    mutate(fx.obj)
    torch.save(fx.obj, fx.path)
    with pytest.raises(DatasetFileError, match=match):
        read_eeg_imagenet(fx.path)


def test_pickled_objects_are_refused_without_running_them(tmp_path):
    fx = make_eeg_imagenet(tmp_path / "eeg.pth")
    marker = tmp_path / "pwned"
    fx.obj["extra"] = CodeRunner(marker)
    torch.save(fx.obj, fx.path)
    with pytest.raises(DatasetFileError, match="refused to load"):
        EEGImageNetDataset(fx.path)
    assert not marker.exists()


def test_truncated_and_missing_files(tmp_path):
    fx = make_eeg_imagenet(tmp_path / "eeg.pth")
    truncate(fx.path)
    with pytest.raises(DatasetFileError, match=r"eeg\.pth: not a readable torch file"):
        EEGImageNetDataset(fx.path)
    with pytest.raises(DatasetFileError, match="not found"):
        EEGImageNetDataset(tmp_path / "absent.pth")
    good = make_eeg_imagenet(tmp_path / "good.pth")
    bad_split = tmp_path / "splits.pth"
    torch.save({"splitz": []}, bad_split)
    with pytest.raises(DatasetFileError, match=r"splits\.pth: missing key\(s\) 'splits'"):
        EEGImageNetDataset(good.path, bad_split)


def test_image_root_layout_and_missing_images(tmp_path):
    fx = make_eeg_imagenet(tmp_path / "eeg.pth")
    root = tmp_path / "images"
    make_images(root, [f"{s.split('_')[0]}/{s}.JPEG" for s in fx.stems])
    ds = EEGImageNetDataset(fx.path, image_root=root)
    item = ds[4]
    assert item["image_path"] == str(root / item["image_id"].split("_")[0] / f"{item['image_id']}.JPEG")
    (root / fx.stems[1].split("_")[0] / f"{fx.stems[1]}.JPEG").unlink()
    with pytest.raises(DatasetFileError, match=f"1 image\\(s\\) missing.*{fx.stems[1]}"):
        EEGImageNetDataset(fx.path, image_root=root)


def test_precomputed_captions_and_missing_caption(tmp_path):
    fx = make_eeg_imagenet(tmp_path / "eeg.pth", subjects=(1,))
    caps = {s: f"a photo number {k}" for k, s in enumerate(fx.stems)}
    path = tmp_path / "blip.json"
    path.write_text(json.dumps(caps))
    ds = EEGImageNetDataset(fx.path, captions=Captioner(captions_path=path))
    assert [ds[i]["caption"] for i in range(len(ds))] == [caps[fx.stems[i]] for i in range(len(ds))]
    del caps[fx.stems[2]]
    path.write_text(json.dumps(caps))
    with pytest.raises(DatasetFileError, match=f"blip.json: no caption for 1 image.*{fx.stems[2]}"):
        EEGImageNetDataset(fx.path, captions=Captioner(captions_path=path))
    custom = EEGImageNetDataset(fx.path, captions="a picture of a {class_name}", class_names={"n02389026": "horse"})
    assert custom[0]["caption"] == "a picture of a horse"
    assert custom.class_names[0] == "horse"


def test_raw_variant_through_our_causal_chain_matches_scipy(tmp_path):
    fx = make_eeg_imagenet(tmp_path / "eeg_signals_raw_with_mean_std.pth", subjects=(1,), raw=True)
    # a DC offset per channel, as raw recordings have
    seg = fx.obj["dataset"][2]
    seg["eeg"] = seg["eeg"] * 20e-6 + 1e-3
    torch.save(fx.obj, fx.path)
    ds = EEGImageNetDataset(fx.path, preprocess="ours")
    assert ds.file.is_raw
    x = seg["eeg"].numpy().astype(np.float64)
    sos = signal.butter(4, [5.0, 95.0], btype="bandpass", fs=1000.0, output="sos")
    y = signal.sosfilt(sos, x - x[:, :1], axis=1)[:, 20:460]
    # window z-score; eps (1e-8) matters at microvolt scale
    ref = (y - y.mean(axis=1, keepdims=True)) / (y.std(axis=1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(ds[2]["eeg"].numpy(), ref, atol=2e-4)
    ds512 = EEGImageNetDataset(fx.path, preprocess="ours", resample_n_times=512)
    assert tuple(ds512[0]["eeg"].shape) == (128, 512)
    # dataset normalisation with statistics fitted on the (filtered, cropped) windows
    stats = ds.fit_norm_stats()
    segs = [s["eeg"].numpy().astype(np.float64) for s in fx.obj["dataset"]]
    every = np.stack([signal.sosfilt(sos, s - s[:, :1], axis=1)[:, 20:460] for s in segs])
    np.testing.assert_allclose(stats.mean, every.mean(axis=(0, 2)), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(stats.std, every.std(axis=(0, 2)), rtol=1e-3)
    cfg = PreprocessingConfig(normalization=NormalizationConfig(mode="dataset"))
    dsn = EEGImageNetDataset(fx.path, preprocess="ours", preprocessing=cfg, norm_stats=stats)
    np.testing.assert_allclose(dsn[2]["eeg"].numpy(), (y - stats.mean[:, None]) / (stats.std[:, None] + 1e-8), rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="needs the training set's NormStats"):
        EEGImageNetDataset(fx.path, preprocess="ours", preprocessing=cfg)[0]
    with pytest.raises(ValueError, match="preprocess='ours'"):
        EEGImageNetDataset(fx.path).fit_norm_stats()


def test_from_config_and_dataloader(tmp_path):
    fx = make_eeg_imagenet(tmp_path / "eeg.pth")
    sp = make_splits(tmp_path / "splits.pth", train=list(range(8)), val=[8, 9], test=[10, 11])
    cfg = DataConfig(eeg_imagenet=EEGImageNetConfig(eeg_path=fx.path, splits_path=sp, resample_n_times=512))
    ds = EEGImageNetDataset.from_config(cfg, split="val")
    assert ds.indices == [8, 9]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate_samples)))
    assert tuple(batch["eeg"].shape) == (2, 128, 512)
    assert batch["label"].dtype == torch.int64 and batch["image_path"] == [None, None]
    assert batch["image_id"] == [fx.stems[fx.obj["dataset"][i]["image"]] for i in (8, 9)]


def test_data_inspect_command(tmp_path):
    from click.testing import CliRunner

    from neuroimagen.realtime.cli import main

    fx = make_eeg_imagenet(tmp_path / "eeg_5_95_std.pth", subjects=(1, 2, 3), lengths=[500] * 17 + [620])
    result = CliRunner().invoke(main, ["data", "inspect", str(fx.path)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "EEG-ImageNet" in result.output and "1: 6, 2: 6, 3: 6" in result.output
    assert "T 500..620" in result.output and "n02389026" in result.output
    fx.obj["extra"] = CodeRunner(tmp_path / "pwned")
    torch.save(fx.obj, fx.path)
    result = CliRunner().invoke(main, ["data", "inspect", str(fx.path)], terminal_width=200)
    assert result.exit_code == 1 and "refused to load" in result.output
    assert not (tmp_path / "pwned").exists()

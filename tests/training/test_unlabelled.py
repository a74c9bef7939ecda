"""Unlabelled EEG windows: generated RawArrays (exact references) and the real MNE test files."""

from __future__ import annotations

import mne
import numpy as np
import pytest
import torch
from scipy import signal

from neuroimagen.stream.config import NormalizationConfig, PreprocessingConfig
from neuroimagen.stream.montage import get_montage, montage_ch_names
from neuroimagen.stream.windowing import cut_windows
from neuroimagen.training.data._io import DatasetFileError
from neuroimagen.training.data.unlabelled import UnlabelledEEGDataset

RAW_CFG = PreprocessingConfig(bandpass=None, normalization=NormalizationConfig(mode="none"))


def _write_raw(path, data, ch_names, sfreq):
    info = mne.create_info(list(ch_names), sfreq, ch_types="eeg")
    mne.io.RawArray(data, info, verbose="error").save(path, overwrite=True, verbose="error")
    return path


def _noise(n_ch, n_times, seed=0):
    return (np.random.default_rng(seed).standard_normal((n_ch, n_times)) * 10e-6).astype(np.float64)


def test_windows_are_slices_at_cut_windows_positions(tmp_path):
    data = _noise(128, 3000)
    path = _write_raw(tmp_path / "rec_raw.fif", data, montage_ch_names(), 1000.0)
    ds = UnlabelledEEGDataset([path], preprocessing=RAW_CFG, hop_samples=300, skip_start_s=0.0)
    ref = cut_windows(data.astype(np.float32), np.arange(3000) / 1000.0, 512, 300)
    assert [ds[i]["first_sample"] for i in range(len(ds))] == [w.first_sample for w in ref]
    for i in (0, len(ds) - 1):
        item = ds[i]
        assert item["eeg"].dtype == torch.float32 and tuple(item["eeg"].shape) == (128, 512)
        np.testing.assert_allclose(item["eeg"].numpy(), ref[i].data, rtol=1e-6, atol=1e-12)
    skipped = UnlabelledEEGDataset([path], preprocessing=RAW_CFG, hop_samples=300, skip_start_s=1.0)
    assert skipped[0]["first_sample"] == 1000
    stats = ds.fit_norm_stats()
    every = np.stack([w.data for w in ref])
    np.testing.assert_allclose(stats.mean, every.mean(axis=(0, 2)), rtol=1e-4, atol=1e-10)
    np.testing.assert_allclose(stats.std, every.std(axis=(0, 2)), rtol=1e-4)


def test_replicate_matches_dreamdiffusion(tmp_path):
    data = _noise(20, 1500, seed=1)
    path = _write_raw(tmp_path / "few_raw.fif", data, [f"X{k}" for k in range(20)], 1000.0)
    ds = UnlabelledEEGDataset([path], preprocessing=RAW_CFG, skip_start_s=0.0)
    window = data[:, :512]
    # DreamDiffusion eeg_pretrain_dataset: tile, then the remainder from the first channels
    ref = np.zeros((128, 512))
    for i in range(128 // 20):
        ref[i * 20 : (i + 1) * 20] = window
    ref[-(128 % 20) :] = window[: 128 % 20]
    np.testing.assert_allclose(ds[0]["eeg"].numpy(), ref, rtol=1e-6, atol=1e-12)


def test_interpolate_matches_mne_interpolate_bads(tmp_path):
    names = montage_ch_names()
    # spatially smooth field: a few sources seen through the montage positions
    pos = np.array([get_montage().get_positions()["ch_pos"][c] for c in names])
    rng = np.random.default_rng(2)
    field = pos @ rng.standard_normal((3, 4)) * 1e-3
    data = field @ rng.standard_normal((4, 1200)) * 1e-3
    keep = names[::2]
    path = _write_raw(tmp_path / "half_raw.fif", data[::2], [f"EEG {c.upper()}" for c in keep], 1000.0)
    ds = UnlabelledEEGDataset([path], preprocessing=RAW_CFG, channel_mode="interpolate", skip_start_s=0.0)
    # independent reference: mne's own interpolation on the full montage
    raw = mne.io.RawArray(np.where(np.isin(names, keep)[:, None], data, 0.0), mne.create_info(names, 1000.0, "eeg"), verbose="error")
    raw.set_montage(get_montage(), verbose="error")
    raw.info["bads"] = [c for c in names if c not in keep]
    raw.interpolate_bads(reset_bads=True, origin="auto", verbose="error")
    np.testing.assert_allclose(ds[0]["eeg"].numpy(), raw.get_data()[:, :512], rtol=1e-4, atol=1e-9)
    with pytest.raises(DatasetFileError, match="only 0 channel"):
        UnlabelledEEGDataset([_write_raw(tmp_path / "x_raw.fif", data[:20], [f"X{k}" for k in range(20)], 1000.0)],
                             channel_mode="interpolate")


def test_default_chain_equals_scipy_causal_filter_then_window_zscore(tmp_path):
    data = _noise(128, 3000, seed=3) + 1e-3
    path = _write_raw(tmp_path / "rec_raw.fif", data, montage_ch_names(), 1000.0)
    ds = UnlabelledEEGDataset([path], hop_samples=500)
    sos = signal.butter(4, [5.0, 95.0], btype="bandpass", fs=1000.0, output="sos")
    y = signal.sosfilt(sos, data.astype(np.float32).astype(np.float64), axis=1)
    s = ds[1]["first_sample"]
    assert s == 1500
    w = y[:, s : s + 512]
    ref = (w - w.mean(axis=1, keepdims=True)) / (w.std(axis=1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(ds[1]["eeg"].numpy(), ref, atol=2e-3)


def test_resampled_to_1000_hz_keeps_time_alignment(tmp_path):
    t = np.arange(2500) / 500.0
    data = np.tile(np.sin(2 * np.pi * 7.0 * t) * 20e-6, (128, 1))
    path = _write_raw(tmp_path / "slow_raw.fif", data, montage_ch_names(), 500.0)
    ds = UnlabelledEEGDataset([path], preprocessing=RAW_CFG, skip_start_s=0.5, hop_samples=1000)
    item = ds[1]
    t_out = (item["first_sample"] + np.arange(512)) / 1000.0
    np.testing.assert_allclose(item["eeg"].numpy()[0], np.sin(2 * np.pi * 7.0 * t_out) * 20e-6, atol=0.5e-6)


def test_real_recordings(real_eeg_dir):
    files = [real_eeg_dir / n for n in ("test.edf", "test.vhdr", "test_edf_stim_channel.edf")]
    ds = UnlabelledEEGDataset(files)
    per_file = {f: sum(1 for i in range(len(ds)) if ds.index[i][0] == f) for f in range(3)}
    assert all(n > 0 for n in per_file.values()), per_file
    x = torch.stack([ds[i]["eeg"] for i in range(0, len(ds), 5)])
    assert x.shape[1:] == (128, 512) and torch.isfinite(x).all()
    # BrainVision file: 26 EEG channels with 10-20 names -> interpolate onto the montage
    vh = UnlabelledEEGDataset([real_eeg_dir / "test.vhdr"], channel_mode="interpolate")
    assert tuple(vh[0]["eeg"].shape) == (128, 512)
    with pytest.raises(DatasetFileError, match="no windows"):
        UnlabelledEEGDataset([real_eeg_dir / "test.bdf"])  # 1 s: shorter than settling + a window

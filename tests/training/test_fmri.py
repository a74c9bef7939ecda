"""fMRI voxel loader: NSD-style betas + stimulus index, z-scoring with training stats only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.datasets import CodeRunner, make_fmri, truncate

from neuroimagen.training.data._io import DatasetFileError
from neuroimagen.training.data.fmri import FMRIDataset


def test_items_are_the_betas(tmp_path):
    fx = make_fmri(tmp_path)
    ds = FMRIDataset(fx.betas_path, fx.stimulus_path, image_template="/nsd/{image_id}.png")
    assert len(ds) == 30
    item = ds[7]
    assert item["x"].dtype == torch.float32 and tuple(item["x"].shape) == (50,)
    np.testing.assert_array_equal(item["x"].numpy(), fx.betas[7])
    assert item["image_index"] == fx.stimulus[7] and item["trial"] == 7
    assert item["image_path"] == f"/nsd/{fx.stimulus[7]}.png"


def test_zscore_uses_training_trials_only(tmp_path):
    fx = make_fmri(tmp_path)
    train_rows, test_rows = np.arange(0, 20), np.arange(20, 30)
    train = FMRIDataset(fx.betas_path, fx.stimulus_path, trials=train_rows, zscore=True)
    test = FMRIDataset(fx.betas_path, fx.stimulus_path, trials=test_rows, zscore=train.stats)
    mu, sd = fx.betas[:20].mean(axis=0), fx.betas[:20].std(axis=0)
    x_train = torch.stack([train[i]["x"] for i in range(len(train))]).numpy()
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(axis=0), 1, atol=1e-4)
    np.testing.assert_allclose(test[3]["x"].numpy(), (fx.betas[23] - mu) / (sd + 1e-6), rtol=1e-5, atol=1e-5)
    with pytest.raises(IndexError, match="trial index 30"):
        FMRIDataset(fx.betas_path, fx.stimulus_path, trials=[1, 30])


def test_average_repeats(tmp_path):
    fx = make_fmri(tmp_path, n_trials=40, n_stimuli=5)
    ds = FMRIDataset(fx.betas_path, fx.stimulus_path, average_repeats=True, image_ids=[f"img{k}" for k in range(5)])
    assert len(ds) == np.unique(fx.stimulus).size
    for i in range(len(ds)):
        item = ds[i]
        rows = fx.stimulus == item["image_index"]
        assert item["image_id"] == f"img{item['image_index']}" and item["trial"] == -1
        np.testing.assert_allclose(item["x"].numpy(), fx.betas[rows].mean(axis=0), rtol=1e-5, atol=1e-5)


def test_mismatched_and_corrupt_files(tmp_path):
    fx = make_fmri(tmp_path)
    np.save(fx.stimulus_path, fx.stimulus[:-2])
    with pytest.raises(DatasetFileError, match="28 stimulus ids for 30 trials"):
        FMRIDataset(fx.betas_path, fx.stimulus_path)
    np.save(fx.stimulus_path, fx.stimulus.astype(np.float32))
    with pytest.raises(DatasetFileError, match="1-D integer array"):
        FMRIDataset(fx.betas_path, fx.stimulus_path)
    np.save(fx.stimulus_path, fx.stimulus)
    np.save(fx.betas_path, fx.betas[0])
    with pytest.raises(DatasetFileError, match=r"betas must be a numeric \(n_trials, n_voxels\)"):
        FMRIDataset(fx.betas_path, fx.stimulus_path)
    np.save(fx.betas_path, fx.betas)
    truncate(fx.betas_path, 0.5)
    with pytest.raises(DatasetFileError, match="betas.npy: truncated or corrupt"):
        FMRIDataset(fx.betas_path, fx.stimulus_path)
    np.save(fx.betas_path, np.array([CodeRunner(tmp_path / "pwned")], dtype=object))
    with pytest.raises(DatasetFileError, match="refused to load"):
        FMRIDataset(fx.betas_path, fx.stimulus_path)
    assert not (tmp_path / "pwned").exists()

"""Things-EEG2 loader on small files with the official dict format (np.save of a dict)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.datasets import CodeRunner, make_images, make_things_eeg2, truncate

from neuroimagen.training.data._io import DatasetFileError
from neuroimagen.training.data.things_eeg2 import ThingsEEG2Dataset, read_things_eeg2


def _reference(path):
    # the file was written by the test itself, so numpy's own pickle loader is a fair reference here
    return np.load(path, allow_pickle=True).item()


def test_official_training_file_items_and_concepts(tmp_path):
    fx = make_things_eeg2(tmp_path, n_concepts=3, n_reps=4)
    ref = _reference(fx.path)
    ds = ThingsEEG2Dataset(fx.path)
    assert ds.file.variant == "official" and ds.sfreq == pytest.approx(100.0)
    assert ds.ch_names == ref["ch_names"] and ds.partition == "training"
    assert len(ds) == 30 * 4 and ds.n_concepts == 3
    item = ds[4 * 13 + 2]  # image 13, repetition 2
    assert item["eeg"].dtype == torch.float32 and tuple(item["eeg"].shape) == (17, 100)
    np.testing.assert_array_equal(item["eeg"].numpy(), ref["preprocessed_eeg_data"][13, 2])
    assert (item["image_index"], item["repetition"], item["label"]) == (13, 2, 1)
    assert item["image_path"] is None and item["image_id"] == "training_00013"


def test_repetition_averaging(tmp_path):
    fx = make_things_eeg2(tmp_path, partition="test", n_concepts=5, n_reps=6)
    ds = ThingsEEG2Dataset(fx.path, average_repetitions=True)
    assert len(ds) == 5
    for i in range(5):
        item = ds[i]
        assert item["label"] == i and item["repetition"] == -1  # test: one image per concept
        np.testing.assert_allclose(item["eeg"].numpy(), fx.eeg[i].mean(axis=0), rtol=1e-6, atol=1e-6)


def test_nice_variant_and_variant_check(tmp_path):
    fx = make_things_eeg2(tmp_path, n_concepts=1, n_reps=2, n_channels=63, n_times=250, sfreq=250.0)
    ds = ThingsEEG2Dataset(fx.path, variant="nice")
    assert ds.file.variant == "nice" and ds.sfreq == pytest.approx(250.0)
    assert tuple(ds[0]["eeg"].shape) == (63, 250)
    with pytest.raises(DatasetFileError, match="official release .17 channels at 100 Hz.*63 channels at 250 Hz"):
        ThingsEEG2Dataset(fx.path, variant="official")


@pytest.mark.parametrize("with_metadata", [True, False])
def test_image_root_official_layout(tmp_path, with_metadata):
    fx = make_things_eeg2(tmp_path, n_concepts=2, n_reps=1, with_metadata=with_metadata)
    rel = [f"training_images/{c}/{f}" for c in fx.concepts for f in fx.image_files if f.startswith(c.split("_", 1)[1])]
    assert len(rel) == 20
    make_images(tmp_path, rel)
    ds = ThingsEEG2Dataset(fx.path, image_root=tmp_path)
    item = ds[12]
    assert item["image_path"] == str(tmp_path / rel[12])
    assert item["concept"] == "abacus" and item["label"] == 1
    assert item["caption"] == "an image of a abacus"
    (tmp_path / rel[3]).unlink()
    with pytest.raises(DatasetFileError, match="image_root"):
        ThingsEEG2Dataset(fx.path, image_root=tmp_path)


def test_pickled_object_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "preprocessed_eeg_training.npy"
    np.save(path, {"preprocessed_eeg_data": CodeRunner(marker), "ch_names": [], "times": []})
    with pytest.raises(DatasetFileError, match=r"refused to load: it pickles (posix|nt)\.mkdir"):
        ThingsEEG2Dataset(path)
    assert not marker.exists()


def test_truncated_file(tmp_path):
    fx = make_things_eeg2(tmp_path, n_concepts=1)
    truncate(fx.path, 0.6)
    with pytest.raises(DatasetFileError, match="preprocessed_eeg_training.npy: truncated or corrupt"):
        read_things_eeg2(fx.path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (lambda d: d.pop("times"), r"missing key\(s\) 'times'"),
        (lambda d: d.update(ch_names=d["ch_names"][:-1]), "lists 16 channels but 'preprocessed_eeg_data' has 17"),
        (lambda d: d.update(times=d["times"][:50]), "'times' must be 1-D with 100 entries"),
        (lambda d: d.update(preprocessed_eeg_data=d["preprocessed_eeg_data"][0]), r"float array .*shape \(4, 17, 100\)"),
        (lambda d: d.update(preprocessed_eeg_data=d["preprocessed_eeg_data"][:7]), "7 images is not a whole number of concepts"),
    ],
)
def test_malformed_dicts(tmp_path, content, match):
    fx = make_things_eeg2(tmp_path, n_concepts=1)
    d = _reference(fx.path)
    content(d)
    np.save(fx.path, d)
    with pytest.raises(DatasetFileError, match=match):
        ThingsEEG2Dataset(fx.path)


def test_plain_array_is_not_the_dict_format(tmp_path):
    path = tmp_path / "preprocessed_eeg_training.npy"
    np.save(path, np.zeros((10, 4, 17, 100), dtype=np.float32))
    with pytest.raises(DatasetFileError, match="expected a dict at top level, found ndarray"):
        ThingsEEG2Dataset(path)


def test_inspect_things_file(tmp_path):
    from neuroimagen.training.data.inspect import inspect_dataset_file

    fx = make_things_eeg2(tmp_path, n_concepts=2, n_reps=3, n_channels=63, n_times=250, sfreq=250.0)
    info = inspect_dataset_file(fx.path)
    assert info["kind"] == "Things-EEG2 preprocessed (nice)"
    assert info["shape"] == "20 images x 3 repetitions x 63 channels x 250 samples"
    assert info["sfreq_hz"] == 250.0


def test_files_written_by_numpy_1x_and_non_npy_files(tmp_path):
    import pickle

    fx = make_things_eeg2(tmp_path, n_concepts=1, n_reps=2)
    obj = np.empty((), dtype=object)
    obj[()] = _reference(fx.path)
    # numpy 1.x's np.save: protocol 3, whose GLOBAL opcodes are text naming 'numpy.core.multiarray'
    payload = pickle.dumps(obj, protocol=3)
    assert b"numpy._core.multiarray\n" in payload
    with open(fx.path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|O", "fortran_order": False, "shape": ()})
        fh.write(payload.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    ds = ThingsEEG2Dataset(fx.path)
    np.testing.assert_array_equal(ds[3]["eeg"].numpy(), fx.eeg[1, 1])
    fx.path.write_bytes(b"this is not numpy data at all")
    with pytest.raises(DatasetFileError, match="not a .npy file"):
        read_things_eeg2(fx.path)

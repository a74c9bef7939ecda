"""read_recording against MNE's and pyxdf's own readers, on real files and built ones."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import mne
import numpy as np
import pytest
import torch

from neuroimagen.stream.montage import montage_ch_names
from neuroimagen.stream.readers import Recording, RecordingError, nearest_index, read_recording

REAL_FILES = ["test.edf", "test.bdf", "test.vhdr", "test_edf_stim_channel.edf"]


def mne_reference(path: Path) -> tuple[mne.io.BaseRaw, np.ndarray, list[str], Counter]:
    """Data (non-stim, float32), names and the expected markers, straight from MNE."""
    raw = mne.io.read_raw(path, preload=True, verbose="error")
    picks = mne.pick_types(raw.info, meg=False, eeg=True, misc=True, eog=True, ecg=True, emg=True, stim=False)
    data = raw.get_data(picks=picks).astype(np.float32)
    names = [raw.ch_names[i] for i in picks]
    expected: Counter = Counter()
    if "stim" in raw.get_channel_types():
        for s, _, code in mne.find_events(raw, shortest_event=1, consecutive=True, initial_event=True, verbose="error"):
            expected[(int(s - raw.first_samp), str(code))] += 1
    if len(raw.annotations):
        events, event_id = mne.events_from_annotations(raw, regexp=None, verbose="error")
        code_to_desc = {v: k for k, v in event_id.items()}
        for s, _, code in events:
            expected[(int(s - raw.first_samp), code_to_desc[code])] += 1
    return raw, data, names, expected


@pytest.mark.parametrize("fname", REAL_FILES)
def test_real_files_match_mne(real_eeg_dir: Path, fname: str) -> None:
    rec = read_recording(real_eeg_dir / fname)
    raw, data, names, expected = mne_reference(real_eeg_dir / fname)
    assert rec.sfreq == raw.info["sfreq"]
    assert rec.ch_names == names
    assert rec.data.dtype == np.float32
    np.testing.assert_array_equal(rec.data, data)
    assert "stim" not in rec.ch_types
    assert Counter(rec.markers) == expected
    # volts exactly where MNE says the channel is in V (BrainVision misc channels are unitless)
    volts = [raw.info["chs"][raw.ch_names.index(c)]["unit"] == mne.io.constants.FIFF.FIFF_UNIT_V for c in names]
    assert [u == "volts" for u in rec.units] == volts
    assert any(volts)
    assert rec.preprocessed is None


def test_real_file_event_counts(real_eeg_dir: Path) -> None:
    # what the README of the data says, independently of MNE's event code
    edf = read_recording(real_eeg_dir / "test.edf")
    assert edf.n_channels == 138 and sum(m[1] in {"start", "type A", "type B"} for m in edf.markers) == 5
    vhdr = read_recording(real_eeg_dir / "test.vhdr")
    assert vhdr.ch_types.count("misc") == 6 and len(vhdr.markers) == 13
    assert read_recording(real_eeg_dir / "test.bdf").n_channels == 72


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.edf"):
        read_recording(tmp_path / "nope.edf")
    with pytest.raises(RecordingError, match="folder"):
        read_recording(tmp_path)
    bad = tmp_path / "garbage.edf"
    bad.write_bytes(b"this is not an EDF file" * 20)
    with pytest.raises(RecordingError, match="garbage.edf"):
        read_recording(bad)
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(RecordingError, match="notes.txt"):
        read_recording(txt)
    xdf = tmp_path / "broken.xdf"
    xdf.write_bytes(b"XDF:\x01\x05garbage")
    with pytest.raises(RecordingError, match="broken.xdf"):
        read_recording(xdf)


def _pth_dict(n_items: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    lengths = [500, 440, 520][:n_items]
    items = [
        {"eeg": torch.randn(128, n, generator=g), "label": i % 2, "image": i, "subject": 4}
        for i, n in enumerate(lengths)
    ]
    return {
        "dataset": items,
        "labels": ["n02951358", "n03452741"],
        "images": ["n02951358_31190", "n03452741_16744", "n02951358_1234"],
    }


def test_eeg_imagenet_pth(tmp_path: Path) -> None:
    obj = _pth_dict()
    path = tmp_path / "eeg_5_95_std.pth"
    torch.save(obj, path)
    rec = read_recording(path)
    assert rec.sfreq == 1000.0
    assert rec.ch_names == montage_ch_names()
    expected = np.concatenate([it["eeg"].numpy() for it in obj["dataset"]], axis=1)
    np.testing.assert_array_equal(rec.data, expected)
    assert [m[0] for m in rec.markers] == [0, 500, 940]
    payloads = [json.loads(m[1]) for m in rec.markers]
    assert payloads[1] == {"image": "n03452741_16744", "label": 1, "class": "n03452741", "subject": 4}
    assert rec.preprocessed == {"bandpass_hz": [5, 95], "normalized": "dataset", "format": "eeg-imagenet-pth"}
    assert set(rec.units) == {"volts"}  # scale 1 for unit-checking consumers; values are z-scores


def test_pth_wrong_keys_and_shapes(tmp_path: Path) -> None:
    obj = _pth_dict()
    del obj["labels"]
    torch.save(obj, tmp_path / "a.pth")
    with pytest.raises(RecordingError, match=r"a.pth.*labels"):
        read_recording(tmp_path / "a.pth")
    obj = _pth_dict()
    obj["dataset"][1]["eeg"] = torch.zeros(64, 100)
    torch.save(obj, tmp_path / "b.pth")
    with pytest.raises(RecordingError, match=r"dataset\[1\].*\(64, 100\)"):
        read_recording(tmp_path / "b.pth")
    torch.save(torch.zeros(3), tmp_path / "c.pth")
    with pytest.raises(RecordingError, match="expected a dict"):
        read_recording(tmp_path / "c.pth")


class Evil:
    """Any non-allow-listed class: weights_only loading must refuse to build it."""

    def __init__(self) -> None:
        self.x = 1


def test_pth_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    obj = _pth_dict()
    obj["extra"] = Evil()
    path = tmp_path / "evil.pth"
    torch.save(obj, path)
    with pytest.raises(RecordingError, match=r"evil.pth: refused to load: it holds pickled objects \(\S*Evil\)") as exc:
        read_recording(path)
    # torch's own hint (load with weights_only=False) is never passed on
    assert "weights_only" not in str(exc.value) and "\n" not in str(exc.value)


def test_nonfinite_samples_are_kept_and_reported(tmp_path: Path) -> None:
    data = np.random.default_rng(0).standard_normal((3, 200)) * 1e-5
    data[1, 50] = np.nan
    data[2, 60:63] = np.inf
    raw = mne.io.RawArray(data, mne.create_info(["a", "b", "c"], 100.0, "eeg"), verbose="error")
    raw.save(tmp_path / "nan_raw.fif", verbose="error")
    rec = read_recording(tmp_path / "nan_raw.fif")
    assert np.isnan(rec.data[1, 50]) and np.isinf(rec.data[2, 61])
    assert rec.nonfinite_report() == "4 NaN/inf samples (b: 1, c: 3)"


def test_recording_validates_shapes() -> None:
    with pytest.raises(RecordingError, match="2 ch_names for 3 channels"):
        Recording(np.zeros((3, 5), np.float32), 100.0, ["a", "b"], ["eeg"] * 3, ["volts"] * 3)


def test_nearest_index() -> None:
    ts = np.array([0.0, 0.1, 0.2, 0.3])
    np.testing.assert_array_equal(nearest_index(ts, [-1.0, 0.04, 0.06, 0.29, 5.0]), [0, 0, 1, 3, 3])


def test_xdf_in_microvolts_reads_as_volts(tmp_path: Path) -> None:
    import pyxdf

    from neuroimagen.stream.record import RecordedStream, write_xdf

    sfreq, n = 250.0, 500
    data = np.random.default_rng(1).standard_normal((n, 2)).astype(np.float32) * 20  # uV
    ts = 100.0 + np.arange(n) / sfreq
    chans = "".join(f"<channel><label>{c}</label><unit>microvolts</unit><type>EEG</type></channel>" for c in ("Cz", "Pz"))
    eeg_xml = (f'<?xml version="1.0"?><info><name>eeg</name><type>EEG</type><channel_count>2</channel_count>'
               f"<nominal_srate>{sfreq}</nominal_srate><channel_format>float32</channel_format>"
               f"<source_id>a</source_id><desc><channels>{chans}</channels></desc></info>")
    mk_xml = ('<?xml version="1.0"?><info><name>mk</name><type>Markers</type><channel_count>1</channel_count>'
              "<nominal_srate>0</nominal_srate><channel_format>string</channel_format><source_id>b</source_id></info>")
    header = {"sfreq": sfreq}
    write_xdf(tmp_path / "x.xdf", [
        RecordedStream({**header, "xml": eeg_xml}, ts, data, None),
        RecordedStream({"sfreq": 0, "xml": mk_xml}, np.array([ts[100] + 1e-4, ts[321]]), None, [["go"], ["stop"]]),
    ])
    # pyxdf (the reference reader) sees what was written
    streams, _ = pyxdf.load_xdf(str(tmp_path / "x.xdf"), dejitter_timestamps=False)
    assert {s["info"]["name"][0] for s in streams} == {"eeg", "mk"}
    rec = read_recording(tmp_path / "x.xdf")
    np.testing.assert_allclose(rec.data, data.T * 1e-6, rtol=1e-6)
    assert rec.ch_names == ["Cz", "Pz"] and rec.units == ["volts", "volts"] and rec.sfreq == sfreq
    assert rec.markers == [(100, "go"), (321, "stop")]

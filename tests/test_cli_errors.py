"""Every CLI error on a bad file is one line naming the file and the problem: no traceback,
no library internals, and never the advice to load with ``weights_only=False``."""

from __future__ import annotations

import os
from pathlib import Path

import mne
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers.datasets import CodeRunner, make_eeg_imagenet, make_splits, truncate

from neuroimagen.realtime.cli import main


def _one_line_error(args: list[str], *names: str) -> str:
    res = CliRunner().invoke(main, args)
    out = res.output.strip()
    assert res.exit_code == 1, (res.exit_code, out, res.exception)
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), out
    assert out.startswith("Error: ") and "\n" not in out, out
    for bad in ("Traceback", "weights_only", "Aborted", "could not convert", "invalid literal"):
        assert bad not in out, out
    for name in names:
        assert name in out, out
    return out


@pytest.fixture
def raw_files(tmp_path: Path) -> dict[str, Path]:
    info = mne.create_info(["Fz", "Cz", "Pz"], 250.0, "eeg")
    raw = mne.io.RawArray(np.random.default_rng(0).standard_normal((3, 2500)) * 1e-5, info, verbose=False)
    fif = tmp_path / "rec_raw.fif"
    raw.save(fif, verbose=False)
    edf = tmp_path / "rec.edf"
    mne.export.export_raw(edf, raw, verbose=False)
    return {"fif": fif, "edf": edf}


def test_eval_leak_on_files_that_are_not_a_dataset(tmp_path, raw_files):
    good = make_eeg_imagenet(tmp_path / "eeg_5_95_std.pth")
    splits = make_splits(tmp_path / "splits.pth", [0, 1], [2], [3])
    # 1. not a torch file at all: text, an empty file, a FIF recording
    text = tmp_path / "notes.pth"
    text.write_text("hello world")
    _one_line_error(["eval", "leak", "--eeg", str(text), "--splits", str(splits)], "notes.pth",
                    "not a readable torch file")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    _one_line_error(["eval", "leak", "--eeg", str(empty), "--splits", str(splits)], "empty.pth")
    _one_line_error(["eval", "leak", "--eeg", str(raw_files["fif"]), "--splits", str(splits)],
                    "rec_raw.fif")
    # 2. a torch file of another kind (the splits given as EEG, and the reverse)
    _one_line_error(["eval", "leak", "--eeg", str(splits), "--splits", str(splits)], "splits.pth",
                    "not an EEG-ImageNet file", "'dataset'")
    _one_line_error(["eval", "leak", "--eeg", str(good.path), "--splits", str(good.path)],
                    "eeg_5_95_std.pth", "'splits'")
    # 3. pickled code: refused, never run, and torch's unsafe advice is not passed on
    evil = make_eeg_imagenet(tmp_path / "evil.pth")
    evil.obj["x"] = CodeRunner(tmp_path / "pwned")
    torch.save(evil.obj, evil.path)
    _one_line_error(["eval", "leak", "--eeg", str(evil.path), "--splits", str(splits)], "evil.pth",
                    "refused to load")
    assert not (tmp_path / "pwned").exists()
    # the good pair works
    res = CliRunner().invoke(main, ["eval", "leak", "--eeg", str(good.path), "--splits", str(splits)])
    assert res.exit_code == 0, res.output


def test_stream_replay_of_a_pth_whose_eeg_is_not_numeric(tmp_path):
    fx = make_eeg_imagenet(tmp_path / "eeg_5_95_std.pth")
    fx.obj["dataset"][1]["eeg"] = "not a signal"
    torch.save(fx.obj, fx.path)
    _one_line_error(["stream", "replay", str(fx.path)], "eeg_5_95_std.pth",
                    "dataset[1]['eeg'] must be a floating (n_channels, T) tensor, got str")
    fx.obj["dataset"][1]["eeg"] = torch.zeros(128, 500, dtype=torch.int16)
    torch.save(fx.obj, fx.path)
    _one_line_error(["stream", "replay", str(fx.path)], "dataset[1]['eeg']", "torch.int16")


@pytest.mark.parametrize("keep", [0.004, 0.03, 0.5, 0.9])
def test_truncated_edf_and_fif(raw_files, keep):
    for kind, path in raw_files.items():
        cut = path.with_name(f"cut{int(keep * 1000)}_{path.name}")
        cut.write_bytes(path.read_bytes())
        truncate(cut, keep)
        out = _one_line_error(["stream", "replay", str(cut)], cut.name, kind.upper())
        assert "truncated" in out, out
        out = _one_line_error(["data", "inspect", str(cut)], cut.name)


def test_truncated_pth(tmp_path):
    fx = make_eeg_imagenet(tmp_path / "eeg_5_95_std.pth")
    truncate(fx.path, 0.6)
    _one_line_error(["stream", "replay", str(fx.path)], "eeg_5_95_std.pth", "not a readable torch file")
    splits = make_splits(tmp_path / "splits.pth", [0], [1], [2])
    _one_line_error(["eval", "leak", "--eeg", str(fx.path), "--splits", str(splits)],
                    "eeg_5_95_std.pth", "not a readable torch file")


def test_real_edf_still_reads(real_eeg_dir):
    from neuroimagen.stream.readers import read_recording

    for name in ("test.edf", "test.bdf", "test_edf_stim_channel.edf"):
        rec = read_recording(real_eeg_dir / name)
        ref = mne.io.read_raw(real_eeg_dir / name, preload=True, verbose="error")
        assert rec.n_times == ref.n_times and rec.sfreq == ref.info["sfreq"]
    assert os.path.getsize(real_eeg_dir / "test.edf") > 0

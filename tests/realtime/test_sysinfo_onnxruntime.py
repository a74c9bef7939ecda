"""sys-info warns when onnxruntime and onnxruntime-gpu are installed together (faked metadata)."""

from __future__ import annotations

from click.testing import CliRunner

from neuroimagen.realtime import sysinfo
from neuroimagen.realtime.cli import main


def _fake(installed: dict[str, str]):
    real = sysinfo._version

    def version(dist: str):
        if dist.startswith("onnxruntime"):
            return installed.get(dist)
        return real(dist)

    return version


def test_both_distributions_are_a_warning_with_the_fix(monkeypatch):
    monkeypatch.setattr(sysinfo, "_version", _fake({"onnxruntime": "1.20.0", "onnxruntime-gpu": "1.20.0"}))
    warning = sysinfo.onnxruntime_conflict()
    assert warning and "onnxruntime 1.20.0 and onnxruntime-gpu 1.20.0" in warning
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in warning
    result = CliRunner().invoke(main, ["sys-info"], terminal_width=400)
    assert result.exit_code == 0 and "CONFLICT" in result.output and "break each other" in result.output


def test_one_distribution_is_not_a_warning(monkeypatch):
    for only in ({"onnxruntime": "1.20.0"}, {"onnxruntime-gpu": "1.20.0"}, {}):
        monkeypatch.setattr(sysinfo, "_version", _fake(only))
        assert sysinfo.onnxruntime_conflict() is None
    result = CliRunner().invoke(main, ["sys-info"])
    assert "CONFLICT" not in result.output

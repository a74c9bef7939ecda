"""The console script: every group listed, sys-info runs, unbuilt groups say so, config errors exit 2."""

import logging
import subprocess
import sys

import pytest
from click.testing import CliRunner

from neuroimagen.realtime.cli import main

GROUPS = ["stream", "data", "train", "eval", "bundle", "export", "run", "gui", "demo", "bench", "sys-info"]


def test_help_lists_every_group():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    for group in GROUPS:
        assert f"  {group} " in result.output, group


def test_console_script_is_installed_and_help_is_fast():
    # `neuroimagen --help` must not import torch, mne, pylsl or Qt
    code = (
        "import sys; from neuroimagen.realtime.cli import main\n"
        "heavy = [m for m in ('torch', 'mne', 'pylsl', 'PyQt6', 'diffusers', 'scipy') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_sys_info_reports_the_stack():
    result = CliRunner().invoke(main, ["sys-info"])
    assert result.exit_code == 0, result.output
    for key in ("torch", "liblsl", "mne", "onnxruntime", "tensorrt", "diffusers", "Qt", "GPU"):
        assert key in result.output


def test_no_command_group_says_not_built_yet():
    for name in ("train", "bundle", "export", "run", "gui", "demo", "bench"):
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "not built yet" not in result.output.lower(), name


def test_bad_set_override_is_a_usage_error_naming_the_key():
    result = CliRunner().invoke(main, ["sys-info", "--set", "stream.inlet.bufsiz_s=3"])
    assert result.exit_code == 2
    assert "stream.inlet.bufsiz_s" in result.output and "bufsize_s" in result.output


def test_sys_info_reports_pylsl_and_the_minimum_declared():
    import inspect

    import pylsl

    from neuroimagen.realtime.sysinfo import collect, required_version

    need = required_version("pylsl")
    # pylsl added pull_chunk(as_numpy=...) in 1.18.5; the inlets and the recorder pass it
    assert need == ">=1.18.5"
    assert "as_numpy" in inspect.signature(pylsl.StreamInlet.pull_chunk).parameters
    assert hasattr(pylsl.util, "TimeoutError") and hasattr(pylsl.util, "LostError")
    info = collect()["pylsl"]
    assert info.startswith(pylsl.__version__) and "needs >=1.18.5" in info


@pytest.fixture
def restore_logging():
    root, ours = logging.getLogger(), logging.getLogger("neuroimagen")
    saved = (root.level, list(root.handlers), ours.level)
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    ours.setLevel(saved[2])


def test_log_level_is_ours_and_other_libraries_speak_at_warning_unless_debug(restore_logging):
    from neuroimagen.realtime.cli._common import setup_logging

    # onnxscript logs INFO per graph pass and node: hundreds of lines per `neuroimagen export`
    setup_logging("INFO")
    assert logging.getLogger("neuroimagen.export.onnx").isEnabledFor(logging.INFO)
    assert not logging.getLogger("onnxscript.optimizer").isEnabledFor(logging.INFO)
    assert logging.getLogger("onnxscript.optimizer").isEnabledFor(logging.WARNING)
    setup_logging("ERROR")
    assert not logging.getLogger("neuroimagen.demo").isEnabledFor(logging.WARNING)
    assert not logging.getLogger("onnxscript.optimizer").isEnabledFor(logging.WARNING)
    setup_logging("DEBUG")
    assert logging.getLogger("onnxscript.optimizer").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("neuroimagen.demo").isEnabledFor(logging.DEBUG)

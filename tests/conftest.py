"""Test-suite set-up shared by every layer.

liblsl reads its configuration once, when it is first loaded, so the
loopback-only config must be in ``LSLAPICFG`` before anything imports pylsl
or mne_lsl. ``pytest_configure`` runs before test modules are collected and
imported, and the variable is inherited by every child process the tests start.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
from helpers.lsl import LOOPBACK_CFG_TEXT, assert_loopback_only

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_EEG = SHARED / "data" / "real-eeg"

_CFG_DIR = tempfile.mkdtemp(prefix="neuroimagen-lsl-")


def pytest_configure(config: pytest.Config) -> None:
    if "pylsl" in sys.modules or "mne_lsl" in sys.modules:
        raise pytest.UsageError("liblsl was loaded before the loopback config was set")
    cfg = Path(_CFG_DIR) / "lsl_loopback.cfg"
    cfg.write_text(LOOPBACK_CFG_TEXT, encoding="ascii")
    os.environ["LSLAPICFG"] = str(cfg)
    # Qt must never look for a display in tests.
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("MNE_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def lsl_loopback() -> Path:
    """The loopback-only liblsl config in force, proven to have taken effect.

    Resolves a probe stream and checks its XML shows ``<v6data_port>0`` (IPv6
    disabled), which only happens when liblsl parsed this file.
    """
    path = Path(os.environ["LSLAPICFG"])
    assert path.is_file(), path
    assert_loopback_only()
    return path


@pytest.fixture(scope="session")
def real_eeg_dir() -> Path:
    """../shared/data/real-eeg (MNE-Python test recordings); skip if absent."""
    if not REAL_EEG.is_dir():
        pytest.skip(f"real EEG test data not found at {REAL_EEG}")
    return REAL_EEG

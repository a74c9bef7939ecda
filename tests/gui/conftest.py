"""GUI tests: offscreen Qt (set by tests/conftest.py before any QApplication), pytest-qt's qtbot."""

from __future__ import annotations

import pytest

pytest.importorskip("PyQt6")
pytest.importorskip("pyqtgraph")
pytest.importorskip("pytestqt")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A tiny random bundle: 128 montage channels at 1 kHz, window normalisation, sliding 440 samples."""
    from helpers.bundles import write_tiny_bundle

    return write_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny")

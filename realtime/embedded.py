"""Where the embedded default bundle lives in an install.

The embedded bundle is a model bundle folder shipped inside the package
(``neuroimagen/realtime/embedded_bundle/manifest.json``); ``run`` and
``demo`` use it when no ``--bundle`` is given.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["EMBEDDED_BUNDLE_DIR", "embedded_bundle", "missing_embedded_bundle_message"]

EMBEDDED_BUNDLE_DIR = Path(__file__).resolve().parent / "embedded_bundle"


def embedded_bundle() -> Path | None:
    """The embedded bundle's folder, or None when this install has none."""
    return EMBEDDED_BUNDLE_DIR if (EMBEDDED_BUNDLE_DIR / "manifest.json").is_file() else None


def missing_embedded_bundle_message() -> str:
    return (
        f"no --bundle was given and this install has no embedded default bundle "
        f"(expected {EMBEDDED_BUNDLE_DIR}/manifest.json); pass --bundle PATH, a bundle folder "
        "written by neuroimagen.training.models.bundle (check one with `neuroimagen bundle verify PATH`)"
    )

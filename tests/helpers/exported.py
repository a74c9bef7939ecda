"""A tiny random bundle exported once per test process through the real CLI (ONNX export is ~1 min)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

_CACHE: dict[str, Exported] = {}


@dataclass(frozen=True)
class Exported:
    source: Path
    out: Path
    output: str  # the CLI's printed text
    rows: list[dict]  # its --json parity table
    source_manifest: bytes  # the source's manifest.json before the export


def exported_tiny_bundle(root: Path) -> Exported:
    """``neuroimagen export --bundle SRC --out OUT --json`` on a tiny random bundle under ``root``."""
    key = str(root)
    if key not in _CACHE:
        from click.testing import CliRunner

        from helpers.bundles import write_tiny_bundle
        from neuroimagen.realtime.cli import main

        src = write_tiny_bundle(root / "tiny-src")
        before = (src / "manifest.json").read_bytes()
        out, table = root / "tiny-onnx", root / "parity.json"
        result = CliRunner().invoke(main, ["export", "--bundle", str(src), "--out", str(out),
                                           "--json", str(table)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        _CACHE[key] = Exported(src, out, result.output, json.loads(table.read_text()), before)
    return _CACHE[key]

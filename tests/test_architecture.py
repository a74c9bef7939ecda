"""Layer rules (STYLE.md) hold: import-linter contracts and a light realtime import."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.fail("import-linter is a dev dependency; install with pip install -e .[dev]")
    out = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "broken" not in out.stdout.lower().replace("0 broken", "")


@pytest.mark.parametrize("module", ["neuroimagen.realtime", "neuroimagen.realtime.config", "neuroimagen.stream"])
def test_light_imports(module):
    code = (
        f"import sys, {module}\n"
        "bad = [m for m in ('PyQt6', 'pyqtgraph', 'sklearn', 'torchmetrics', 'lightning', 'accelerate')"
        " if m in sys.modules]\nprint(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} loads {out.stdout.strip()}"


def test_configs_hold_yaml_only():
    # sub-folders (configs/train/) are fine; every file in them is YAML too
    files = [p for p in (ROOT / "configs").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert files and all(p.suffix in (".yaml", ".yml") for p in files), files

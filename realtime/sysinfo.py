"""What this machine has: versions of the stack and the GPU (``neuroimagen sys-info``)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import shutil
import subprocess
import sys


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def required_version(dist: str) -> str | None:
    """The version specifier neuroimagen declares for ``dist`` (e.g. ``>=1.18.5``), from its metadata."""
    import re

    for req in importlib.metadata.requires("neuroimagen") or []:
        m = re.match(rf"^{re.escape(dist)}\s*([<>=!~][^;]*)", req.strip(), flags=re.IGNORECASE)
        if m:
            return m.group(1).strip()
    return None


#: distributions that each install the ``onnxruntime`` module (one overwrites the other's files)
ONNXRUNTIME_DISTS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")


def onnxruntime_conflict() -> str | None:
    """A warning when more than one onnxruntime distribution is installed, else None.

    They all provide the ``onnxruntime`` module; with two installed, whichever was
    installed last has overwritten part of the other, and the providers (often the
    CUDA one) silently break. The fix is to uninstall all and install one.
    """
    found = [f"{d} {v}" for d in ONNXRUNTIME_DISTS if (v := _version(d))]
    if len(found) < 2:
        return None
    names = " ".join(d for d in ONNXRUNTIME_DISTS if _version(d))
    return (f"WARNING: {' and '.join(found)} are installed together: they provide the same "
            f"'onnxruntime' module and break each other. Fix: pip uninstall -y {names} && "
            "pip install onnxruntime-gpu (GPU) or onnxruntime (CPU)")


def collect() -> dict[str, str]:
    """Versions and devices, as ``{label: value}``; missing packages read 'not installed'.

    Qt is reported from package metadata (PyQt6-Qt6) so this never loads PyQt6.
    """
    info: dict[str, str] = {}
    missing = "not installed"
    info["python"] = f"{platform.python_version()} ({sys.executable})"
    info["platform"] = platform.platform()
    info["neuroimagen"] = _version("neuroimagen") or "unknown"

    # 1. torch and CUDA
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch CUDA build"] = torch.version.cuda or "none (CPU build)"
        if torch.cuda.is_available():
            names = []
            for i in range(torch.cuda.device_count()):
                cap = torch.cuda.get_device_capability(i)
                names.append(f"{i}: {torch.cuda.get_device_name(i)} (sm_{cap[0]}{cap[1]})")
            info["GPU"] = "; ".join(names)
        else:
            info["GPU"] = "none visible to torch"
    except ImportError:
        info["torch"] = missing
        info["GPU"] = "unknown (torch not installed)"
    if "none" in info.get("GPU", "") and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=False,
            )
            if out.returncode == 0 and out.stdout.strip():
                info["GPU (nvidia-smi)"] = out.stdout.strip().replace("\n", "; ")
        except (OSError, subprocess.SubprocessError):
            pass

    # 2. LSL
    try:
        import pylsl

        need = required_version("pylsl")
        info["pylsl"] = f"{_version('pylsl') or 'unknown'} (neuroimagen needs {need or 'any'})"
        info["liblsl"] = f"{pylsl.library_version()} ({pylsl.library_info()})"
    except (ImportError, RuntimeError) as exc:
        info["liblsl"] = f"unavailable: {exc}"

    # 3. the rest of the stack
    for label, dist in [
        ("mne", "mne"),
        ("mne-lsl", "mne-lsl"),
        ("diffusers", "diffusers"),
        ("numpy", "numpy"),
        ("scipy", "scipy"),
        ("onnx", "onnx"),
    ]:
        info[label] = _version(dist) or missing

    ort = _version("onnxruntime") or _version("onnxruntime-gpu")
    if ort:
        try:
            import onnxruntime

            info["onnxruntime"] = f"{ort} (providers: {', '.join(onnxruntime.get_available_providers())})"
        except ImportError as exc:
            info["onnxruntime"] = f"{ort} (import failed: {exc})"
    else:
        info["onnxruntime"] = missing
    conflict = onnxruntime_conflict()
    if conflict:
        info["onnxruntime CONFLICT"] = conflict
    info["tensorrt"] = _version("tensorrt") or (
        "installed" if importlib.util.find_spec("tensorrt") else missing
    )
    pyqt = _version("PyQt6")
    info["Qt"] = f"PyQt6 {pyqt}, Qt {_version('PyQt6-Qt6') or '?'}" if pyqt else missing
    info["pyqtgraph"] = _version("pyqtgraph") or missing
    return info

"""Real peers for interop tests: vendor-style LSL outlets and mne-lsl's PlayerLSL, in child processes.

Each vendor convention below copies what that software writes into its LSL
stream header, citing the public source it was read from. Names get a unique
suffix so parallel test runs never see each other's streams.

Nothing here imports pylsl: liblsl must load only after conftest set LSLAPICFG.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .lsl import ChildOutlet

VENDOR_CHILD = Path(__file__).with_name("vendor_outlet_child.py")
PLAYER_CHILD = Path(__file__).with_name("mne_lsl_player_child.py")

#: Emotiv EPOC's 14 sensors (10-20 names), in EmotivPRO's order.
EMOTIV_EEG = ["AF3", "F7", "F3", "FC5", "T7", "P7", "O1", "O2", "P8", "T8", "FC6", "F4", "F8", "AF4"]
#: Muse's four electrodes, as muselsl labels them.
MUSE_EEG = ["TP9", "AF7", "AF8", "TP10"]


@dataclass
class Peer:
    """A child-process LSL peer: its stream name(s) and the process."""

    name: str
    proc: subprocess.Popen
    marker_name: str | None = None
    spec: dict[str, Any] | None = None

    def stop(self, timeout: float = 10.0) -> int:
        return ChildOutlet(self.name, "", self.proc).stop(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _spawn(script: Path, args: dict[str, Any]) -> subprocess.Popen:
    assert "LSLAPICFG" in os.environ, "LSL tests must run with the loopback config"
    return subprocess.Popen([sys.executable, str(script), json.dumps(args)], stdin=subprocess.DEVNULL)


def _suffix() -> str:
    return uuid.uuid4().hex[:8]


def brain_products(ch_names: list[str], *, sfreq: float = 1000.0, trigger_channel: bool = True,
                   markers: bool = True, duration_s: float | None = None) -> dict[str, Any]:
    """Brain Products' BrainAmpSeries LSL connector.

    Source: github.com/brain-products/App-BrainAmpSeries, mainwindow.cpp
    (``read_thread``): EEG stream ``BrainAmpSeries-Dev_<n>``, type ``EEG``,
    source_id ``<name>_SR-<rate>``; each channel ``label``/``type`` ``EEG``/
    ``unit`` ``microvolts``; an optional sampled trigger channel ``triggerStream``
    with unit ``code``; ``desc/acquisition/manufacturer`` ``Brain Products``;
    markers on ``<name>-Markers``, type ``Markers``, one string channel,
    source_id ``<name>_markers``. Samples are float32 microvolts.
    """
    name = f"BrainAmpSeries-Dev_{_suffix()}"
    channels = [{"label": c, "type": "EEG", "unit": "microvolts", "scaling_factor": "1"} for c in ch_names]
    signals = ["eeg_uv"] * len(ch_names)
    if trigger_channel:
        channels.append({"label": "triggerStream", "type": "EEG", "unit": "code"})
        signals.append("zero")
    return {
        "name": name, "stype": "EEG", "source_id": f"{name}_SR-{sfreq:f}", "sfreq": sfreq,
        "channel_format": "float32", "channels": channels, "signals": signals,
        "desc": {"acquisition": {"manufacturer": "Brain Products", "serial_number": "0"}},
        "markers": {"name": f"{name}-Markers", "stype": "Markers", "source_id": f"{name}_markers",
                    "every_s": 0.5, "payload": "S  "} if markers else None,
        "duration_s": duration_s,
    }


def emotiv(*, duration_s: float | None = None) -> dict[str, Any]:
    """EmotivPRO's LSL outlet, EEG data stream (EPOC: 14 sensors at 128 Hz).

    Source: github.com/Emotiv/labstreaminglayer, README.md ("How to work with
    LSL Outlet"): stream ``EmotivDataStream-EEG``, type ``EEG``; the EEG data
    stream carries ``COUNTER`` and ``INTERPOLATED`` before the sensors and
    contact-quality / marker columns after them (``RAW_CQ``,
    ``MARKER_HARDWARE``), float32 or double64, the sensors in microvolts.
    """
    name = f"EmotivDataStream-EEG-{_suffix()}"
    labels = ["COUNTER", "INTERPOLATED", *EMOTIV_EEG, "RAW_CQ", "MARKER_HARDWARE"]
    signals = ["counter128", "zero", *(["eeg_uv_dc"] * 14), "quality", "zero"]
    channels = [
        {"label": c, "type": "EEG" if c in EMOTIV_EEG else "MISC", "unit": "microvolts" if c in EMOTIV_EEG else ""}
        for c in labels
    ]
    return {
        "name": name, "stype": "EEG", "source_id": f"{name}-src", "sfreq": 128.0,
        "channel_format": "double64", "channels": channels, "signals": signals,
        "desc": {"acquisition": {"manufacturer": "Emotiv"}}, "markers": None, "duration_s": duration_s,
    }


def muse(*, duration_s: float | None = None) -> dict[str, Any]:
    """muselsl streaming a Muse headband.

    Source: github.com/alexandrebarachant/muse-lsl, muselsl/stream.py: stream
    ``Muse``, type ``EEG``, 256 Hz, float32, source_id ``Muse<MAC>``,
    ``desc/manufacturer`` ``Muse``; channels ``TP9, AF7, AF8, TP10, Right AUX``,
    each ``unit`` ``microvolts``, ``type`` ``EEG``.
    """
    name = f"Muse-{_suffix()}"
    labels = [*MUSE_EEG, "Right AUX"]
    return {
        "name": name, "stype": "EEG", "source_id": f"Muse00:55:DA:{_suffix()}", "sfreq": 256.0,
        "channel_format": "float32",
        "channels": [{"label": c, "unit": "microvolts", "type": "EEG"} for c in labels],
        "signals": ["eeg_uv"] * 5, "desc": {"manufacturer": {"name": "Muse"}}, "markers": None,
        "duration_s": duration_s,
    }


def openbci_gui(n_channels: int = 8, *, duration_s: float | None = None) -> dict[str, Any]:
    """The OpenBCI GUI's LSL networking widget (Cyton: 8 channels at 250 Hz).

    Source: github.com/OpenBCI/OpenBCI_GUI, OpenBCI_GUI/W_Networking.pde
    (``Stream`` for LSL): ``new LSL.StreamInfo(name, type, nChan, fs,
    float32, uid)`` with the default name ``obci_eeg1`` and type ``EEG``, and no
    ``desc`` at all: no channel labels, no units. Time-series values are
    microvolts (raw, with the electrodes' DC offsets).
    """
    name = f"obci_eeg1-{_suffix()}"
    return {
        "name": name, "stype": "EEG", "source_id": f"openbcieeg{_suffix()}", "sfreq": 250.0,
        "channel_format": "float32", "channels": None, "signals": ["eeg_uv_dc"] * n_channels,
        "desc": None, "markers": None, "duration_s": duration_s,
    }


def spawn_vendor(spec: dict[str, Any]) -> Peer:
    """Start a vendor-style outlet (see the functions above) in a child process."""
    proc = _spawn(VENDOR_CHILD, spec)
    return Peer(spec["name"], proc, (spec.get("markers") or {}).get("name"), spec)


def spawn_mne_lsl_player(fname: Path, *, name: str | None = None, chunk_size: int = 20,
                         n_repeat: int = 1, annotations: bool | None = None,
                         annotations_encoding: str = "one-hot") -> Peer:
    """mne-lsl's ``PlayerLSL`` playing ``fname`` in a child process.

    It publishes ``name`` (type: the file's one channel type in lower case, or
    ``''`` when the types are mixed; units as MNE ``unit_mul`` exponents) and,
    when the file has annotations, ``<name>-annotations`` (type
    ``annotations``) in ``annotations_encoding``; both share one source_id.
    """
    name = name or f"mnelsl-{_suffix()}"
    args = dict(fname=str(fname), name=name, source_id=f"{name}-sid", chunk_size=chunk_size,
                n_repeat=n_repeat, annotations=annotations, annotations_encoding=annotations_encoding)
    return Peer(name, _spawn(PLAYER_CHILD, args), f"{name}-annotations", args)

"""LSL test helpers: the loopback-only config and outlets in child processes.

Nothing here imports pylsl at module level: liblsl must load only after
conftest has set ``LSLAPICFG``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

# ';' comments only: liblsl silently ignores a file with '#' comments.
LOOPBACK_CFG_TEXT = """; NeuroImagen tests: keep every LSL stream on this machine.
[ports]
IPv6 = disable
[multicast]
ResolveScope = machine
[lab]
KnownPeers = {127.0.0.1}
[log]
level = -2
"""

CHILD_SCRIPT = Path(__file__).with_name("lsl_child_outlet.py")


def unique_name(prefix: str = "test") -> str:
    """A stream name no other test (or test run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def assert_loopback_only(timeout: float = 5.0) -> None:
    """Prove the loopback config took effect: a resolved stream shows ``<v6data_port>0``."""
    import pylsl

    name = unique_name("probe")
    info = pylsl.StreamInfo(name, "Probe", 1, 10.0, "float32", uuid.uuid4().hex)
    outlet = pylsl.StreamOutlet(info)
    try:
        found = pylsl.resolve_byprop("name", name, 1, timeout)
        assert found, "probe stream not resolved on loopback"
        inlet = pylsl.StreamInlet(found[0])
        xml = inlet.info(timeout).as_xml()
        inlet.close_stream()
        assert "<v6data_port>0</v6data_port>" in xml, (
            "LSLAPICFG was not applied (IPv6 data port is open): liblsl fell back to its "
            "LAN defaults. Check the config file syntax (';' comments only)."
        )
    finally:
        del outlet


@dataclass
class ChildOutlet:
    """An LSL outlet streaming a sample counter from a child process.

    Channel 0 carries the sample index (exact in float32 below 2**24); the
    other channels carry ``sin`` of the index so data is non-trivial.
    """

    name: str
    source_id: str
    proc: subprocess.Popen
    args: dict = field(default_factory=dict)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def go(self) -> None:
        """Release an outlet spawned with ``wait_go=True`` (its inlets are subscribed)."""
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def __enter__(self) -> ChildOutlet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def spawn_outlet(
    name: str | None = None,
    *,
    n_channels: int = 8,
    sfreq: float = 1000.0,
    n_samples: int | None = None,
    chunk_size: int = 10,
    start: int = 0,
    stype: str = "EEG",
    source_id: str | None = None,
    unit: str | None = "microvolts",
    ch_names: list[str] | None = None,
    channel_format: str = "float32",
    linger_s: float = 30.0,
    nonfinite_at: list[int] | None = None,
    backstep_every: int = 0,
    speed: float = 1.0,
    wait_consumer: bool = False,
    wait_go: bool = False,
    preprocessed: dict | None = None,
) -> ChildOutlet:
    """Start an outlet in a child process (real peer, separate liblsl instance).

    The child inherits ``LSLAPICFG`` from this process. It pushes ``n_samples``
    (None: until terminated) in chunks paced at ``sfreq``, counting from
    ``start``, then keeps the outlet open for ``linger_s`` seconds.
    ``nonfinite_at`` (counter values that get NaN/inf), ``backstep_every``
    (every Nth chunk stamped 0.5 s in the past) and ``speed`` (pace multiple,
    0 = as fast as possible) inject faults; ``wait_consumer`` holds the first
    sample until an inlet subscribes, ``wait_go`` until :meth:`ChildOutlet.go`
    (so every inlet the test started sees the counter from ``start``);
    ``preprocessed`` is written to the stream's
    ``desc/neuroimagen/preprocessed``; see lsl_child_outlet.py.
    """
    assert "LSLAPICFG" in os.environ, "LSL tests must run with the loopback config"
    name = name or unique_name()
    source_id = source_id or uuid.uuid4().hex
    args = dict(
        name=name, stype=stype, source_id=source_id, n_channels=n_channels, sfreq=sfreq,
        n_samples=n_samples, chunk_size=chunk_size, start=start, unit=unit,
        ch_names=ch_names, channel_format=channel_format, linger_s=linger_s,
        nonfinite_at=nonfinite_at, backstep_every=backstep_every, speed=speed,
        wait_consumer=wait_consumer, wait_go=wait_go, preprocessed=preprocessed,
    )
    proc = subprocess.Popen(
        [sys.executable, str(CHILD_SCRIPT), json.dumps(args)],
        stdin=subprocess.PIPE if wait_go else subprocess.DEVNULL,
    )
    return ChildOutlet(name=name, source_id=source_id, proc=proc, args=args)

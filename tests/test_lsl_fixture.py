"""The LSL fixture keeps every stream on this machine, in this process and in children."""

import os
import subprocess
import sys

from helpers import wait_until
from helpers.lsl import spawn_outlet


def test_loopback_config_took_effect(lsl_loopback):
    text = lsl_loopback.read_text()
    assert "ResolveScope = machine" in text
    assert "KnownPeers = {127.0.0.1}" in text
    assert "#" not in text  # liblsl would silently ignore the whole file


def test_child_process_outlet_is_loopback_only(lsl_loopback):
    import pylsl

    with spawn_outlet(n_channels=4, sfreq=500.0) as child:
        found = wait_until(
            lambda: pylsl.resolve_byprop("source_id", child.source_id, 1, 0.5),
            timeout=15, message=f"child outlet {child.name}",
        )
        inlet = pylsl.StreamInlet(found[0])
        info = inlet.info(5.0)
        assert info.name() == child.name
        assert "<v6data_port>0</v6data_port>" in info.as_xml()
        inlet.open_stream(5.0)
        got = []
        wait_until(lambda: got.extend(inlet.pull_chunk(timeout=0.0)[0]) or len(got) >= 50,
                   timeout=10, message="50 samples from the child")
        counter = [int(s[0]) for s in got]
        assert counter == list(range(counter[0], counter[0] + len(counter)))
        inlet.close_stream()


def test_child_process_inherits_config(lsl_loopback):
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ['LSLAPICFG'])"],
        capture_output=True, text=True, check=True,
    )
    assert out.stdout.strip() == os.environ["LSLAPICFG"]


def test_wait_until_times_out_with_message():
    import pytest

    with pytest.raises(TimeoutError, match="never true"):
        wait_until(lambda: False, timeout=0.05, message="never true")

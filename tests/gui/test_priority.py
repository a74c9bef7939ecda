"""The GUI thread gives up priority; the processes it starts through the spawner keep the original."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from neuroimagen.gui.priority import ProcessSpawner, lower_gui_priority

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values: Linux")

NICE = [sys.executable, "-c", "import os; print(os.nice(0))"]


def test_children_of_the_spawner_keep_the_priority_the_gui_thread_gave_up():
    base = os.nice(0)
    out: dict = {}

    def gui_thread() -> None:  # a thread of its own: the test runner's thread keeps its priority
        spawner = ProcessSpawner()
        spawner.start()
        try:
            out["lowered"] = lower_gui_priority(3)
            out["spawned"] = spawner.popen(NICE, stdout=subprocess.PIPE, text=True).communicate(timeout=60)[0]
            out["direct"] = subprocess.run(NICE, capture_output=True, text=True, timeout=60).stdout
        except BaseException as exc:
            out["error"] = exc
        finally:
            spawner.stop()

    t = threading.Thread(target=gui_thread)
    t.start()
    t.join(120)
    assert "error" not in out, out.get("error")
    assert out["lowered"] == min(19, base + 3)
    assert int(out["spawned"]) == base  # started by the spawner's thread
    assert int(out["direct"]) == min(19, base + 3)  # what the spawner is for: a direct child inherits
    assert os.nice(0) == base


def test_a_spawn_error_reaches_the_caller_and_zero_lowers_nothing():
    spawner = ProcessSpawner()
    spawner.start()
    try:
        with pytest.raises(FileNotFoundError):
            spawner.popen(["/nonexistent/neuroimagen-binary"])
    finally:
        spawner.stop()
    assert lower_gui_priority(0) is None

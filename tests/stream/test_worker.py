"""stream.worker.Worker: the one thread lifecycle (no LSL needed)."""

from __future__ import annotations

import threading

import pytest
from helpers import wait_until

from neuroimagen.stream.worker import Worker, WorkerStopTimeout


class Gate(Worker):
    """Runs until stopped or until ``fail`` is set; records every hook call."""

    def __init__(self, fail_setup: bool = False) -> None:
        super().__init__("gate", stop_timeout_s=2.0)
        self.calls: list[str] = []
        self.fail_setup = fail_setup
        self.fail = threading.Event()
        self.release = threading.Event()  # while clear, the thread ignores stop requests
        self.release.set()
        self.loops = 0

    def _setup(self) -> None:
        self.calls.append("setup")
        self.loops = 0
        if self.fail_setup:
            raise OSError("cannot open the device")

    def _run(self) -> None:
        while True:
            self.release.wait()
            if self.stopping:
                return
            if self.fail.is_set():
                raise ValueError("bad sample")
            self.loops += 1
            self._sleep(0.001)

    def _on_stop(self) -> None:
        self.calls.append("on_stop")


def test_start_stop_and_context_manager():
    with Gate() as g:
        assert g.running and not g.stopping
        wait_until(lambda: g.loops > 3, message="the thread to loop")
        with pytest.raises(RuntimeError, match="already started"):
            g.start()
    assert not g.running and g.calls == ["setup", "on_stop"]
    g.stop()  # idempotent: the cleanup hook runs again and must tolerate it
    assert g.calls == ["setup", "on_stop", "on_stop"]


def test_error_in_the_thread_is_re_raised_from_check_wait_and_stop_once():
    g = Gate()
    g.start()
    g.fail.set()
    wait_until(lambda: not g.running, message="the thread to fail")
    with pytest.raises(ValueError, match="bad sample"):
        g.check()
    with pytest.raises(ValueError, match="bad sample"):
        g.wait(1.0)
    with pytest.raises(ValueError, match="bad sample"):
        g.stop()
    assert g.calls == ["setup", "on_stop"]  # cleaned up before raising
    g.check()  # raised once: gone now
    g.stop()


def test_setup_failure_leaves_nothing_running():
    g = Gate(fail_setup=True)
    with pytest.raises(OSError, match="cannot open"):
        g.start()
    assert not g.running and g._thread is None
    assert g.calls == ["setup", "on_stop"]


def test_stop_never_cleans_up_under_a_live_thread(monkeypatch):
    """Thread.join returning early (as an interrupted join can on 3.11) must not fool stop()."""
    g = Gate()
    g.start()
    g.release.clear()  # the thread is busy and cannot see the stop request
    monkeypatch.setattr(threading.Thread, "join", lambda self, timeout=None: None)
    with pytest.raises(WorkerStopTimeout, match="did not stop within 0.05 s"):
        g.stop(timeout=0.05)
    assert g.running and "on_stop" not in g.calls  # nothing closed under it
    g.release.set()
    g.stop()
    assert not g.running and g.calls == ["setup", "on_stop"]


def test_restart_after_stop_is_fresh():
    g = Gate()
    g.start()
    g.fail.set()
    wait_until(lambda: not g.running, message="the thread to fail")
    with pytest.raises(ValueError):
        g.stop()
    g.fail.clear()
    g.start()  # the stored error and the events start fresh
    wait_until(lambda: g.loops > 3, message="the second run to loop")
    g.check()
    assert g.running
    g.stop()
    assert g.calls == ["setup", "on_stop", "setup", "on_stop"]


def test_wait_returns_when_the_thread_ends_by_itself():
    class Finite(Worker):
        def __init__(self) -> None:
            super().__init__("finite")
            self.n = 0

        def _run(self) -> None:
            while self.n < 5 and not self.stopping:
                self.n += 1

    w = Finite()
    with pytest.raises(RuntimeError, match="not started"):
        w.wait(0.1)
    w.start()
    assert w.wait(10.0) and w.n == 5 and not w.running
    w.stop()

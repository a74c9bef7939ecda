"""The GUI yields the CPU to the engine: a lower priority for the GUI's threads, not for the engine's process.

On a machine with fewer free cores than runnable threads, the kernel shares
the cores by priority. The GUI only renders what the engine publishes, so when
both want a core, the engine should get it: a slow GUI drops frames, the
engine does not slow down (issue 12).

Linux keeps the nice value per thread, and a new thread or child process
inherits its creator's. So :func:`lower_gui_priority` lowers the calling (GUI)
thread, after :class:`ProcessSpawner` has started: a thread that keeps the
priority the process started with and starts the engine's child processes, so
they do not inherit the GUI's lower priority (an unprivileged process cannot
raise a priority again).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from typing import Any

from neuroimagen.stream.worker import Worker

logger = logging.getLogger(__name__)

__all__ = ["ProcessSpawner", "lower_gui_priority"]


def lower_gui_priority(increment: int) -> int | None:
    """Raise the calling thread's nice value by ``increment`` (Linux only); return the new value.

    Threads and processes created by this thread afterwards inherit it. None:
    not applied (``increment`` 0, or not Linux, where nice is per process and
    the engine's child would inherit it too).
    """
    if increment <= 0:
        return None
    if not sys.platform.startswith("linux"):
        logger.info("gui.nice is applied on Linux only (per-thread nice values); not on %s", sys.platform)
        return None
    value = os.nice(increment)
    logger.info("GUI thread priority lowered: nice %d (the engine's process keeps its own)", value)
    return value


class _Request:
    def __init__(self, args: tuple, kwargs: dict) -> None:
        self.args, self.kwargs = args, kwargs
        self.proc: subprocess.Popen | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class ProcessSpawner(Worker):
    """Start child processes from this thread (at the priority the process started with).

    Start it before :func:`lower_gui_priority`. :meth:`popen` is called from the
    GUI thread and returns once the child has started.

    Notes
    -----
    One caller at a time (the GUI thread); one request is held at a time.
    """

    def __init__(self) -> None:
        super().__init__("gui-spawner", stop_timeout_s=5.0)
        self._cond = threading.Condition()
        self._request: _Request | None = None

    def popen(self, *args: Any, timeout: float = 60.0, **kwargs: Any) -> subprocess.Popen:
        """``subprocess.Popen(*args, **kwargs)``, run in the spawner's thread."""
        req = _Request(args, kwargs)
        with self._cond:
            if self._request is not None:
                raise RuntimeError("ProcessSpawner: one request at a time")
            self._request = req
            self._cond.notify_all()
        if not req.done.wait(timeout):
            raise TimeoutError(f"the spawner thread did not start the process within {timeout:g} s")
        if req.error is not None:
            raise req.error
        assert req.proc is not None
        return req.proc

    def _run(self) -> None:
        while not self.stopping:
            with self._cond:
                self._cond.wait_for(lambda: self._request is not None or self.stopping, timeout=0.5)
                req, self._request = self._request, None
            if req is None:
                continue
            try:
                req.proc = subprocess.Popen(*req.args, **req.kwargs)
            except BaseException as exc:  # handed to the caller, who raises it
                req.error = exc
            finally:
                req.done.set()

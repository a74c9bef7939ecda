"""One background-thread lifecycle for every thread in NeuroImagen.

:class:`Worker` is written once here and used by the EEG and marker inlets,
the replay/simulate streamer, the recorder and the window pipeline's worker;
the real-time engine and the GUI's workers subclass it too.

What it guarantees
------------------
- :meth:`Worker.start` runs :meth:`Worker._setup` in the caller's thread
  (errors raise there, nothing is left running), then starts one daemon thread
  that runs :meth:`Worker._run`.
- An exception in the thread is stored (and logged once) and re-raised from
  :meth:`Worker.stop`, :meth:`Worker.check` and :meth:`Worker.wait`; it is
  never swallowed.
- :meth:`Worker.stop` sets the stop event and waits on a *done event* that the
  thread sets as its very last action. It does not trust ``Thread.join``: on
  Python 3.11 a ``KeyboardInterrupt`` (our SIGTERM handler raises one) landing
  inside ``join()`` can leave a live thread looking finished, and a cleanup run
  then (closing files, outlets) would pull them from under a live thread.
  Only once the done event is set does ``stop`` run :meth:`Worker._on_stop`
  (the cleanup hook, caller's thread).
- After ``stop`` the worker can be started again: the events and the stored
  error start fresh (subclasses reset their own counters in ``_setup``).
- No cleanup in ``__del__``: use ``stop`` or the context manager.
"""

from __future__ import annotations

import logging
import threading
from typing import Self

logger = logging.getLogger(__name__)

__all__ = ["Worker", "WorkerStopTimeout"]


class WorkerStopTimeout(RuntimeError):
    """The thread did not end within the stop timeout; nothing was cleaned up."""


class Worker:
    """A named background thread with start / stop / check / wait and a context manager.

    Parameters
    ----------
    name : str
        Thread name (:attr:`thread_name`; shown in logs, errors and debuggers).
    stop_timeout_s : float
        How long :meth:`stop` waits for the thread to end by default.

    Notes
    -----
    Subclasses implement :meth:`_run` (the thread body: return when
    :attr:`stopping` is set; sleep with :meth:`_sleep` so a stop wakes it at
    once) and optionally :meth:`_setup` (caller's thread, before the thread
    starts: resolve streams, open files) and :meth:`_on_stop` (caller's thread,
    after the thread has ended: close what ``_setup`` opened; must be safe to
    call when ``_setup`` never ran or failed).

    Threading: ``start``/``stop``/``wait`` belong to one controlling thread.
    ``check`` and ``running`` may be called from anywhere.
    """

    def __init__(self, name: str, *, stop_timeout_s: float = 5.0) -> None:
        self.thread_name = name
        self.stop_timeout_s = float(stop_timeout_s)
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ hooks

    def _setup(self) -> None:
        """Caller's thread, before the thread starts (default: nothing)."""

    def _run(self) -> None:
        """The thread body; return once :attr:`stopping` is set."""
        raise NotImplementedError

    def _on_stop(self) -> None:
        """Caller's thread, once the thread has ended (default: nothing)."""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Run :meth:`_setup`, then start the thread.

        Raises
        ------
        RuntimeError
            Already started (call :meth:`stop` first).
        """
        if self._thread is not None:
            raise RuntimeError(f"{self.thread_name} already started")
        self._stop_event.clear()
        self._done.clear()
        self._error = None
        try:
            self._setup()
        except BaseException:
            self._on_stop()
            raise
        thread = threading.Thread(target=self._main, name=self.thread_name, daemon=True)
        self._thread = thread
        thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the thread to end, wait for it, clean up, re-raise its error.

        Parameters
        ----------
        timeout : float | None
            Seconds to wait (None: :attr:`stop_timeout_s`).

        Raises
        ------
        WorkerStopTimeout
            The thread is still running after ``timeout``: nothing was cleaned
            up, and ``stop`` may be called again.
        BaseException
            Whatever the thread raised (stored, raised once).
        """
        self._stop_event.set()
        thread = self._thread
        if thread is not None:
            wait_s = self.stop_timeout_s if timeout is None else timeout
            if not self._done.wait(wait_s):
                raise WorkerStopTimeout(f"{self.thread_name} did not stop within {wait_s:g} s")
            thread.join(1.0)  # done is its last action: this returns at once
            self._thread = None
        errors: list[BaseException] = []
        try:
            self._on_stop()
        except BaseException as exc:  # report after the thread's own error
            errors.append(exc)
        error, self._error = self._error, None
        if error is not None:
            if errors:
                logger.error("%s: cleanup failed too: %s", self.thread_name, errors[0])
            raise error
        if errors:
            raise errors[0]

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end by itself (True) or ``timeout`` (False).

        Re-raises the thread's error (it stays stored for :meth:`stop`).
        """
        if self._thread is None:
            raise RuntimeError(f"{self.thread_name} is not started")
        done = self._done.wait(timeout)
        self.check()
        return done

    def check(self) -> None:
        """Raise the thread's error now, if it failed (the thread has ended)."""
        if self._error is not None:
            raise self._error

    @property
    def running(self) -> bool:
        """The thread was started and has not ended."""
        return self._thread is not None and not self._done.is_set()

    @property
    def stopping(self) -> bool:
        """:meth:`stop` was called (the thread body should return)."""
        return self._stop_event.is_set()

    def _sleep(self, seconds: float) -> bool:
        """Sleep in the thread, waking at once on stop; True if stopping."""
        return self._stop_event.wait(seconds)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ thread

    def _main(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # stored, re-raised from stop()/check()/wait()
            logger.error("%s failed: %s", self.thread_name, exc)
            self._error = exc
        finally:
            self._done.set()

"""A process of a multi-process run whose peer died exits with a clear message, in bounded time.

When one process of a run dies (killed, preempted, out of memory), the others block in the
next collective of the step. JAX's coordination service notices the missing heartbeats only
after ``heartbeat_timeout_seconds`` and then aborts the process with a C++ stack trace. The
`Watchdog` is armed while the loop waits for a step it has already compiled; when that wait
lasts ``timeout_s`` it prints one line saying what happened and where the newest checkpoint is,
and exits with `EXIT_PEER_LOST`. `maybe_initialize_distributed` sets JAX's own heartbeat
timeout beyond it, so the line comes first. Runs of one process have no watchdog.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Callable, Optional

__all__ = ["EXIT_PEER_LOST", "Watchdog"]

EXIT_PEER_LOST = 75  # EX_TEMPFAIL: run the same command again


class Watchdog:
  """Exits the process when an armed wait lasts ``timeout_s`` (see the module docstring).

  Args:
    timeout_s: the longest wait for a compiled step before the process gives up.
    describe: called when it fires; returns the text after "jaxkd: " (the checkpoint to resume
      from is only known then).
    exit: how to leave (``os._exit``: the main thread is stuck in a collective, so no Python
      unwinding can run).
  """

  def __init__(self, timeout_s: float, describe: Callable[[], str],
               exit: Callable[[int], None] = os._exit):  # pylint: disable=redefined-builtin
    self.timeout_s, self._describe, self._exit = timeout_s, describe, exit
    self._since: Optional[float] = None
    self._done = threading.Event()
    self._thread = threading.Thread(target=self._watch, name="jaxkd-watchdog", daemon=True)
    self._thread.start()

  @contextlib.contextmanager
  def waiting(self):
    """Arms the watchdog for the duration of the block (a wait for a compiled step)."""
    self._since = time.monotonic()
    try:
      yield
    finally:
      self._since = None

  def arm(self) -> None:
    """Arms the watchdog until the process ends (a run failing: what remains may hang)."""
    self._since = time.monotonic()

  def close(self) -> None:
    self._done.set()
    self._thread.join()

  def _watch(self) -> None:
    while not self._done.wait(min(1.0, self.timeout_s / 4)):
      since = self._since
      if since is not None and time.monotonic() - since >= self.timeout_s:
        print(f"jaxkd: {self._describe()}", file=sys.stderr, flush=True)
        self._exit(EXIT_PEER_LOST)
        return

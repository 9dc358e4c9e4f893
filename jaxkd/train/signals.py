"""Stopping a run cleanly on SIGINT or SIGTERM: finish the step, checkpoint, exit.

Ctrl-C sends SIGINT; Cloud TPU and spot VMs send SIGTERM shortly before they preempt a
machine. While the loop runs, either signal only sets a flag: the loop finishes the step in
flight (the dispatch of K steps with ``train.steps_per_dispatch=K``), writes a checkpoint and raises `Interrupted`, which ``jaxkd train`` prints as one line
before exiting with status 128 + the signal's number (130, 143). The same command resumes. A
second signal stops at once, as the signal normally does; the newest complete checkpoint is
kept (orbax never leaves a partial one that a resume would pick up).

In a run of several processes the processes agree on the stop at log steps (a tiny all-gather),
so that they all save the same step collectively even when only one of them got the signal.
"""
from __future__ import annotations

import os
import signal
import threading

import jax
import numpy as np

__all__ = ["Interrupted", "StopRequests"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
  """The run stopped on a signal after checkpointing ``step`` in ``workdir``."""

  def __init__(self, step: int, signum: int, workdir: str):
    self.step, self.signum, self.workdir = step, signum, workdir
    super().__init__(f"interrupted at step {step}; checkpoint saved in {workdir}; run the same "
                     "command to resume")

  @property
  def exit_status(self) -> int:
    """The shell's status for a process stopped by the signal: 130 (SIGINT), 143 (SIGTERM)."""
    return 128 + self.signum


class StopRequests:
  """Catches SIGINT and SIGTERM while open (``with StopRequests() as stop:``).

  Handlers are installed from the main thread only (Python allows no other), and not for a
  signal the process was told to ignore (``nohup``, a background job's SIGINT).
  """

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self) -> "StopRequests":
    if threading.current_thread() is threading.main_thread():
      for signum in SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
          self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      # None: a handler installed outside Python (jax.distributed's preemption notifier),
      # which Python cannot reinstall.
      signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    # No printing here: the handler may run in the middle of a write to the same stream.
    if self.signum is None:
      self.signum = signum
      return
    previous = self._previous.get(signum, signal.SIG_DFL)
    self.__exit__()
    if callable(previous):  # Python's SIGINT handler: KeyboardInterrupt
      previous(signum, frame)
    else:
      os.kill(os.getpid(), signum)

  def requested(self, *, sync: bool) -> int | None:
    """The signal to stop on, or None.

    Args:
      sync: whether this step may stop a run of several processes (the same on all of them);
        their requests are then gathered, a collective. One process stops at any step.
    """
    if jax.process_count() == 1:
      return self.signum
    if not sync:
      return None
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    gathered = np.ravel(multihost_utils.process_allgather(np.int32(self.signum or 0)))
    return next((int(s) for s in gathered if s), None)

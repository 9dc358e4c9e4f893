"""orbax checkpoints of a run: save every N steps, keep the last K, resume.

A checkpoint holds the whole `TrainState` (method and teacher state included) and a small
JSON with the loop's position and best-so-far metrics. orbax writes each step into a temporary
directory and renames it when complete, so a run killed mid-write never leaves a checkpoint
that `latest_step` would pick up; a checkpoint that fails to restore anyway (a corrupted disk)
is moved to ``<workdir>/checkpoints_unreadable/`` with a warning and the previous one is used.
With ``train.keep_best`` the state of the best evaluation so far is also kept in
``<workdir>/checkpoints_best/`` (a store of one, outside ``keep_checkpoints``'s rotation).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

# The workdir's layout, a finished run's model variables and its complete checkpoint steps.
from jaxkd.rundir import (BEST, CHECKPOINTS, UNREADABLE, RunDir, checkpoint_steps,
                          load_variables)

__all__ = ["BEST", "CheckpointStore", "checkpoint_steps", "load_variables"]

_log = logging.getLogger(__name__)


class CheckpointStore:
  """The ``<workdir>/<name>`` directory of one run (``checkpoints``, or `BEST`)."""

  def __init__(self, workdir: str, *, max_to_keep: int, name: str = CHECKPOINTS):
    self._rundir = RunDir(workdir)
    self.directory = self._rundir.checkpoints(name)
    self._manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep))

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts writing ``state`` at ``step`` (asynchronously; `wait` finishes it)."""
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def restore_latest(self, target: Any, *, at_most: int | None = None
                     ) -> tuple[Any, dict] | None:
    """Restores the newest readable checkpoint (of step ``at_most`` or earlier, when given)
    onto ``target``'s structure and shardings.

    Returns:
      ``(state, meta)``, or ``None`` when the directory holds no such checkpoint.
    """
    for step in reversed(self.steps()):
      if at_most is not None and step > at_most:
        continue
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
      except Exception as err:  # orbax raises many types for unreadable files
        moved = self._quarantine(step)
        _log.warning("checkpoint at step %d is unreadable (%s: %s); moved it to %s and "
                     "trying the previous one", step, type(err).__name__, err, moved)
        continue
      return restored.state, dict(restored.meta)
    return None

  def discard_after(self, step: int) -> list[int]:
    """Deletes the checkpoints newer than ``step`` (a packed run resuming its seeds together
    from an older step than one of them holds); the steps deleted."""
    later = [s for s in self.steps() if s > step]
    for s in later:
      self._manager.delete(s)
    return later

  def _quarantine(self, step: int) -> str:
    """Moves an unreadable step aside (kept for inspection, never overwritten or reused)."""
    target = os.path.join(self._rundir.checkpoints(UNREADABLE), f"{step}-{int(time.time())}")
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      os.replace(os.path.join(self.directory, str(step)), target)
    self._manager.reload()
    return target

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

"""A run's directory (its workdir): the one owner of its layout and of reading its checkpoints.

A workdir holds::

  config.json           the config the run trains with (its data keys filled in)
  run.json              provenance of the latest start: versions, devices, resolved hparams
  summary.json          the finished run's best and last evaluations
  metrics.jsonl         one JSON object per log step and per evaluation
  tensorboard/          the same scalars as TensorBoard events
  checkpoints/<step>/   orbax checkpoints of the whole train state (``state``) and ``meta``
  checkpoints_best/     the state of the best evaluation (``train.keep_best``)
  checkpoints_unreadable/  checkpoints that failed to restore, moved aside

Everything that writes or reads these asks `RunDir` for their paths; `checkpoint_steps` and
`load_variables` read a finished run's model variables (a frozen teacher, ``model.init_from``,
``jaxkd eval``, the report). Importing this module is cheap: jax and orbax are imported only
to read a checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Optional

__all__ = ["BEST", "CHECKPOINTS", "CONFIG", "METRICS", "RUN", "RunDir", "SUMMARY", "TENSORBOARD",
           "UNREADABLE", "checkpoint_steps", "load_variables"]

CONFIG = "config.json"
RUN = "run.json"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"
CHECKPOINTS = "checkpoints"
BEST = "checkpoints_best"
UNREADABLE = "checkpoints_unreadable"


@dataclasses.dataclass(frozen=True)
class RunDir:
  """The files of the run in ``path`` (`CONFIG`, `RUN`, `SUMMARY`, `METRICS`, `TENSORBOARD`,
  the checkpoint folders `CHECKPOINTS`, `BEST` and `UNREADABLE`)."""
  path: str

  @property
  def config(self) -> str:
    return os.path.join(self.path, CONFIG)

  @property
  def run(self) -> str:
    return os.path.join(self.path, RUN)

  @property
  def summary(self) -> str:
    return os.path.join(self.path, SUMMARY)

  @property
  def metrics(self) -> str:
    return os.path.join(self.path, METRICS)

  @property
  def tensorboard(self) -> str:
    return os.path.join(self.path, TENSORBOARD)

  def checkpoints(self, name: str = CHECKPOINTS) -> str:
    """The absolute path of checkpoint folder ``name`` (`CHECKPOINTS`, `BEST`, `UNREADABLE`)."""
    if name not in (CHECKPOINTS, BEST, UNREADABLE):
      raise ValueError(f"checkpoint folder {name!r} is not allowed; allowed: {CHECKPOINTS}, "
                       f"{BEST}, {UNREADABLE}")
    return os.path.join(os.path.abspath(self.path), name)

  def state(self, step: int, name: str = CHECKPOINTS) -> str:
    """The orbax item of checkpoint ``step``'s train state."""
    return os.path.join(self.checkpoints(name), str(step), "state")

  def read(self, file: str) -> Optional[dict]:
    """The JSON of ``file`` (`CONFIG`, `RUN`, `SUMMARY`), or None when it is absent."""
    path = os.path.join(self.path, file)
    if not os.path.isfile(path):
      return None
    with open(path, encoding="utf-8") as f:
      return json.load(f)

  def checkpoint_steps(self, name: str = CHECKPOINTS) -> list[int]:
    """The steps of the complete checkpoints under folder ``name``, ascending."""
    # orbax renames a step's temporary directory to its plain number only once it is complete.
    directory = self.checkpoints(name)
    return sorted(int(entry) for entry in os.listdir(directory) if entry.isdigit()) \
        if os.path.isdir(directory) else []

  def state_metadata(self, step: int, name: str = CHECKPOINTS) -> Any:
    """The tree of shapes and dtypes of checkpoint ``step``'s train state (no array is read)."""
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    from jaxkd import _quiet  # pylint: disable=import-outside-toplevel
    # orbax warns of the optional metadata file our checkpoints do not write: not a problem.
    with ocp.StandardCheckpointer() as checkpointer, _quiet.without_absl_lines(
        _quiet.ORBAX_NO_METADATA):
      return checkpointer.metadata(self.state(step, name)).item_metadata

  def load_variables(self, *, step: int | None = None,
                     name: str = CHECKPOINTS) -> tuple[dict, int]:
    """The run's model variables (``params``, ``batch_stats``) at checkpoint ``step`` (None: the
    latest) of folder ``name``, as host arrays, and the step."""
    import jax  # pylint: disable=import-outside-toplevel
    import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
    from jaxkd import _quiet  # pylint: disable=import-outside-toplevel
    steps = self.checkpoint_steps(name)
    if not steps:
      raise FileNotFoundError(f"teacher.workdir={self.path!r} holds no checkpoint under "
                              f"{self.checkpoints(name)}; train the teacher there first "
                              "(jaxkd train --workdir ...)")
    if step is None:
      step = steps[-1]
    elif step not in steps:
      raise ValueError(f"teacher.step={step} is not among the checkpoints of {self.path!r}: "
                       f"{steps}")
    # The run may have trained on another topology (one GPU, a pod slice): restore onto this
    # process's first device, with shapes and dtypes from the checkpoint's own metadata.
    path = self.state(step, name)
    with ocp.StandardCheckpointer() as checkpointer, _quiet.without_absl_lines(
        _quiet.ORBAX_NO_METADATA):
      tree = checkpointer.metadata(path).item_metadata
      device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
      target = jax.tree_util.tree_map(
          lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
      state = checkpointer.restore(path, target)
    variables = {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
    return jax.device_get(variables), step


def checkpoint_steps(workdir: str, name: str = CHECKPOINTS) -> list[int]:
  """The steps of a run's complete checkpoints under ``<workdir>/<name>``, ascending."""
  return RunDir(workdir).checkpoint_steps(name)


def load_variables(workdir: str, *, step: int | None = None,
                   name: str = CHECKPOINTS) -> tuple[dict, int]:
  """A finished run's model variables (``params``, ``batch_stats``), e.g. for a frozen teacher.

  Args:
    workdir: the run's workdir (the one holding ``checkpoints/``).
    step: which checkpoint; ``None`` takes the latest (De-KD uses an early one).
    name: the checkpoint folder: `CHECKPOINTS`, or `BEST` (the state of the best evaluation,
      kept by ``train.keep_best``).

  Returns:
    ``({"params": ..., "batch_stats": ...}, step)`` as host arrays.
  """
  return RunDir(workdir).load_variables(step=step, name=name)

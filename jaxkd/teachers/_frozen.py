"""A frozen teacher: a network whose variables never change (Hinton KD, Tf-KD_self, Re-/De-KD).

`frozen(model, variables)` distils from variables you hold; `from_run()` loads them from a
finished jaxkd run's workdir when the run is set up (``teacher.workdir``, ``teacher.step``,
``teacher.train_mode`` of the config). The variables are constants of the training step: they
are placed on the devices once and never saved into the student's checkpoints.
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from jaxkd.teachers._base import (Teacher, TeacherEnv, TeacherInputs, TeacherOutput,
                                  TeacherState, apply_model)

__all__ = ["checkpoint_steps", "frozen", "from_run", "load_variables"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _no_state(student, **_) -> TeacherState:
  del student
  return TeacherState()


def frozen(model, variables: dict, *, train_mode: bool = False) -> Teacher:
  """Distils from ``model`` with fixed ``variables`` (``params`` and ``batch_stats``).

  Args:
    model: the teacher's Flax module (any `jaxkd.models` network).
    variables: its variables (host or device arrays).
    train_mode: run the teacher with batch statistics (no gradient, no update of its running
      statistics), as a teacher left in ``model.train()`` in PyTorch code would.
  """
  variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats") or {}}

  def logits(state: TeacherState, consts: Any, inputs: TeacherInputs) -> TeacherOutput:
    del state
    out, _ = apply_model(model, consts, inputs.inputs, train=train_mode)
    return TeacherOutput(jax.lax.stop_gradient(out["logits"]))

  return Teacher(init=_no_state, logits=logits, consts=variables, name="frozen")


def from_run(workdir: Optional[str] = None, step: Optional[int] = None,
             train_mode: Optional[bool] = None) -> Teacher:
  """A frozen teacher loaded from a finished run's checkpoint when the run is set up.

  Arguments left None are read from the run's ``teacher`` config section: ``workdir`` (the
  teacher run), ``step`` (its checkpoint; -1 the latest; an early one gives De-KD),
  ``train_mode``. The teacher must have been trained on the student's dataset.
  """

  def setup(env: TeacherEnv) -> Teacher:
    settings = env.settings
    path = settings.workdir if workdir is None else workdir
    at = settings.step if step is None else step
    mode = settings.train_mode if train_mode is None else train_mode
    model = _check_run(path, at, env)
    variables, _ = load_variables(path, step=None if at < 0 else at)
    return frozen(model, variables, train_mode=bool(mode))

  def unbound(state, consts, inputs):
    raise ValueError("teachers.from_run(): the teacher is not loaded yet; call its setup(env) "
                     "first (jaxkd.train does), or use teachers.frozen(model, variables)")

  return Teacher(init=_no_state, logits=unbound, setup=setup, name="frozen")


def _fail(key: str, value: Any, allowed: str) -> None:
  raise ValueError(f"config.{key}={value!r}: {allowed}")


def _check_run(workdir: str, step: int, env: TeacherEnv):
  """The teacher run exists, was trained on the same data and has a checkpoint; its module."""
  from jaxkd import models  # pylint: disable=import-outside-toplevel
  if not workdir:
    _fail("teacher.workdir", workdir, "this method needs a teacher: the workdir of a finished "
          "run")
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    _fail("teacher.workdir", workdir, "must be the workdir of a jaxkd run (no config.json there)")
  with open(path) as f:
    teacher = json.load(f)
  if teacher["data"]["name"] != env.data_name:
    _fail("teacher.workdir", workdir, f"the teacher was trained on {teacher['data']['name']!r} "
          f"(its classes), the student on {env.data_name!r}")
  if teacher["model"]["name"] not in models.names():
    _fail("teacher.workdir", workdir, f"its model {teacher['model']['name']!r} is not one of "
          "jaxkd.models.names()")
  steps = checkpoint_steps(workdir)
  if not steps:
    _fail("teacher.workdir", workdir, "holds no checkpoint; train the teacher first")
  if not (step < 0 or step in steps):
    _fail("teacher.step", step, f"allowed: -1 (latest) or one of the teacher's checkpoints "
          f"{steps}")
  # The same dataset as the student's (checked above), so the same classes.
  return models.get(teacher["model"]["name"], num_classes=env.num_classes,
                    dtype=_DTYPES[teacher["model"]["dtype"]], cpu_conv=env.cpu_conv)


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of a run's complete checkpoints under ``<workdir>/checkpoints``, ascending."""
  # orbax renames a step's temporary directory to its plain number only once it is complete.
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit()) \
      if os.path.isdir(directory) else []


def load_variables(workdir: str, *, step: int | None = None) -> tuple[dict, int]:
  """A finished run's model variables (``params``, ``batch_stats``) for use as a frozen teacher.

  Args:
    workdir: the teacher run's workdir (the one holding ``checkpoints/``).
    step: which checkpoint; ``None`` takes the latest (De-KD uses an early one).

  Returns:
    ``({"params": ..., "batch_stats": ...}, step)`` as host arrays.
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  steps = checkpoint_steps(workdir)
  if not steps:
    raise FileNotFoundError(f"teacher.workdir={workdir!r} holds no checkpoint under {directory}; "
                            "train the teacher there first (jaxkd train --workdir ...)")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise ValueError(f"teacher.step={step} is not among the checkpoints of {workdir!r}: {steps}")
  # The teacher may have run on another topology (one GPU, a pod slice): restore onto this
  # process's first device, with shapes and dtypes from the checkpoint's own metadata.
  path = os.path.join(directory, str(step), "state")
  with ocp.StandardCheckpointer() as checkpointer:
    tree = checkpointer.metadata(path).item_metadata
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
    state = checkpointer.restore(path, target)
  variables = {"params": state["params"], "batch_stats": state.get("batch_stats") or {}}
  return jax.device_get(variables), step

"""A mean teacher: an exponential moving average of the student's own weights.

OUR ADDITION beyond the seed papers. Tarvainen & Valpola, "Mean teachers are better role
models" (NeurIPS 2017), average the student's weights over training steps and use the average
as the teacher of a consistency loss; self-distillation from such a teacher is the same idea
with a KD loss. After every optimizer step

    ema <- d * ema + (1 - d) * theta,

starting from the student's initial weights. Like timm's ``ModelEmaV2`` the BatchNorm running
statistics are averaged too (``average_batch_stats``); otherwise the teacher copies the
student's. The teacher runs in evaluation mode (its running statistics) unless
``train_mode``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxkd import targets as targets_lib
from jaxkd.teachers._base import Teacher, TeacherInputs, TeacherOutput, TeacherState, apply_model

__all__ = ["ema", "ema_update"]


def ema_update(average, new, decay):
  """``decay * average + (1 - decay) * new``, leaf by leaf, in each leaf's dtype."""
  return jax.tree_util.tree_map(
      lambda a, x: (decay * a + (1.0 - decay) * x).astype(a.dtype), average, new)


def ema(*, decay: targets_lib.Hyperparam = 0.999, average_batch_stats: bool = True,
        train_mode: bool = False) -> Teacher:
  """The student's exponential moving average as its teacher.

  Args:
    decay: ``d`` in [0, 1), a number or a schedule of the step (a ramp from a lower value
      lets the early teacher follow the fast-changing student).
    average_batch_stats: average the BatchNorm statistics as well (timm ``ModelEmaV2``);
      otherwise copy the student's.
    train_mode: run the teacher with batch statistics instead of its running ones.

  Returns:
    A `Teacher` whose state holds the averaged ``params`` and ``batch_stats``.
  """

  def init(student, **_) -> TeacherState:
    copy = lambda tree: jax.tree_util.tree_map(jnp.asarray, tree)
    return TeacherState(state={"params": copy(student["params"]),
                               "batch_stats": copy(student.get("batch_stats", {}))})

  def logits(state: TeacherState, consts, inputs: TeacherInputs) -> TeacherOutput:
    del consts
    out, _ = apply_model(inputs.model, state.state, inputs.inputs, train=train_mode)
    return TeacherOutput(jax.lax.stop_gradient(out["logits"]))

  def update(state: TeacherState, student: dict, step) -> TeacherState:
    d = jnp.asarray(targets_lib.value_at(decay, step), jnp.float32)
    stats = student.get("batch_stats", {})
    if average_batch_stats:
      stats = ema_update(state.state["batch_stats"], stats, d)
    return state.replace(state={"params": ema_update(state.state["params"], student["params"], d),
                                "batch_stats": stats})

  return Teacher(init=init, logits=logits, update=update, name="ema",
                 doc="the moving average of the student's own weights (mean teacher)")

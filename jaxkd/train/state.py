"""The train state: every piece of a run that lives on the device, in one pytree.

Besides the usual step, parameters, BatchNorm statistics and optimizer state, it holds the
objective's state (OLS/ALR class matrices, the PS-KD per-example table) and the teacher's state
(MrKD's replay ring, an EMA of the weights, RAS-KD's trainable head), so all method state is
sharded, donated, checkpointed and updated inside the jitted step like the parameters
themselves.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import optax

from jaxkd import teachers

__all__ = ["TrainState", "trainable"]


@flax.struct.dataclass
class TrainState:
  """Everything a training run keeps on the device (a pytree, checkpointed whole).

  Attributes:
    step: int32 scalar, the number of optimizer updates applied.
    params: the model's ``params`` collection.
    batch_stats: the model's ``batch_stats`` collection (``{}`` without BatchNorm).
    opt_state: optimizer state over ``trainable(state)``.
    objective: the objective's state (``obj.init``).
    teacher: the teacher's `jaxkd.teachers.TeacherState` (its ``params`` are trained with the
      model), or None for methods without a teacher.
    rng: the run's base PRNG key; per-step keys are ``fold_in(rng, step)`` so a resumed
      run draws the same augmentations as an uninterrupted one.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  objective: Any
  teacher: teachers.TeacherState | None
  rng: jax.Array


def trainable(params: Any, teacher: teachers.TeacherState | None) -> dict:
  """The pytree the optimizer updates: the student's and the teacher's parameters."""
  return {"student": params, "teacher": {} if teacher is None else teacher.params}

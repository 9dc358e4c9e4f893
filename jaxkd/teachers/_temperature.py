"""CTKD's learnable global temperature, a trainable part of the teacher.

The temperature ``tau = t_start + t_end * sigmoid(theta)`` has one parameter ``theta``, trained
by the student's optimizer like RAS-KD's auxiliary head (`aux_head`). Its gradient is reversed
in the objective (`jaxkd.targets.learned_temperature`), so ``theta`` climbs the distillation
loss the student descends.

References:
  Li et al., `Curriculum Temperature for Knowledge Distillation
  <https://arxiv.org/abs/2211.16231>`_, AAAI 2023; zhengli97/CTKD, ``models/temp_global.py``
  (``Global_T``: ``theta`` starts at 1) and ``helper/loops.py`` (``t_start + t_end *
  sigmoid(theta)``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxkd.teachers._base import Teacher, TeacherOutput, TeacherState

__all__ = ["learned_temperature", "temperature_of"]


def temperature_of(theta: jax.Array, *, t_start: float, t_end: float) -> jax.Array:
  """CTKD's temperature ``t_start + t_end * sigmoid(theta)`` (a float32 scalar)."""
  return t_start + t_end * jax.nn.sigmoid(jnp.asarray(theta, jnp.float32).reshape(()))


def learned_temperature(base: Teacher, *, t_start: float = 1.0, t_end: float = 20.0,
                        init: float = 1.0) -> Teacher:
  """``base``'s logits together with a learned temperature (`temperature_of`).

  Args:
    base: the teacher giving the logits (a frozen one, `from_run`).
    t_start: the lowest temperature.
    t_end: the range above it (the official name: ``tau`` lies in ``(t_start, t_start +
      t_end)``).
    init: the starting ``theta`` (the official ``torch.ones(1)``: 1, ``tau`` = 15.62 at the
      defaults).

  Returns:
    A `Teacher` whose params are ``{"base": base's params, "theta": float32 scalar}`` and whose
    output carries ``temperature``.
  """

  def bind(inner: Teacher) -> Teacher:
    def init_fn(student, **sizes) -> TeacherState:
      for field, value in (("t_start", t_start), ("t_end", t_end), ("init", init)):
        if callable(value):
          raise ValueError(f"learned_temperature {field}={value!r} is not allowed; allowed: a "
                           "number (the temperature's range and start are fixed).")
      state = inner.init(student, **sizes)
      return state.replace(params={"base": state.params,
                                   "theta": jnp.asarray(init, jnp.float32)})

    def logits(state: TeacherState, consts, inputs) -> TeacherOutput:
      out = inner.logits(state.replace(params=state.params["base"]), consts, inputs)
      return out._replace(temperature=temperature_of(state.params["theta"], t_start=t_start,
                                                     t_end=t_end))

    def update(state: TeacherState, student, step) -> TeacherState:
      new = inner.update(state.replace(params=state.params["base"]), student, step)
      return new.replace(params={"base": new.params, "theta": state.params["theta"]})

    setup = None if inner.setup is None else (lambda env: bind(inner.setup(env)))
    return Teacher(init=init_fn, logits=logits, update=update, consts=inner.consts,
                   setup=setup, host_batch=inner.host_batch,
                   loads_examples=inner.loads_examples, name=f"{inner.name}+T",
                   inactive_steps=inner.inactive_steps,
                   doc=f"{inner.doc}, with a global temperature learned through gradient "
                   "reversal (CTKD)")

  return bind(base)

"""CS-KD's partner teacher: the student itself on another example of the same class.

Class-wise self-knowledge distillation (Yun et al., CVPR 2020; alinlab/cs-kd) pairs every
example with a random example of its class and distils the student's prediction on the pair
into its prediction on the example.
"""
from __future__ import annotations

import jax
import numpy as np

from jaxkd.teachers._base import Teacher, TeacherInputs, TeacherOutput, TeacherState, apply_model

__all__ = ["partner"]


def _init(student, **_) -> TeacherState:
  del student
  return TeacherState()


def _partner_rows(labels: np.ndarray, order: np.ndarray, *, seed: int, epoch: int) -> dict:
  from jaxkd import data as data_lib  # pylint: disable=import-outside-toplevel
  return {"partners": data_lib.partner_indices(labels, order, seed=seed, epoch=epoch)}


def _logits(state: TeacherState, consts, inputs: TeacherInputs) -> TeacherOutput:
  """The partners' logits, from a train-mode pass without gradient after the student's pass.

  The running statistics see both halves in the official code's order (alinlab/cs-kd), so
  the returned ``batch_stats`` replace the student's.
  """
  del state, consts
  x = inputs.load(inputs.batch["partners"], inputs.rng)
  out, batch_stats = apply_model(inputs.model, inputs.student, x, train=True, rng=inputs.rng)
  return TeacherOutput(jax.lax.stop_gradient(out["logits"]), batch_stats=batch_stats)


def partner() -> Teacher:
  """CS-KD's teacher: the student's logits on each example's same-class partner.

  Every batch carries ``partners`` (int ``[B]``), drawn on the host from (seed, epoch) by
  `jaxkd.data.partner_indices`, so a resumed run sees the same pairs.
  """
  return Teacher(init=_init, logits=_logits, host_batch=_partner_rows, loads_examples=True,
                 name="partner",
                 doc="the student itself on another example of the same class in the batch")

"""RAS-KD's auxiliary head: a linear classifier on the student's features, trained jointly.

RECONSTRUCTED (RAS-KD: only the abstract is public): the head reads the student's penultimate
features through a stop-gradient, is trained by the objective's terms on the teacher's logits
(cross-entropy with the labels), and serves as the teacher of the student's KD term; its rows
are the class representatives of the relation targets.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxkd import losses
from jaxkd.teachers._base import Teacher, TeacherInputs, TeacherOutput, TeacherState

__all__ = ["aux_head", "head_logits", "init_head"]


def init_head(seed: int, feature_dim: int, num_classes: int) -> dict:
  """The head's parameters: a LeCun-normal ``kernel [D, K]`` from ``seed`` and a zero bias,
  in JAX's default float (float32; float64 under the x64 switch of a float64 run)."""
  kernel = jax.nn.initializers.lecun_normal()(
      jax.random.PRNGKey(seed), (feature_dim, num_classes))
  return {"kernel": kernel, "bias": jnp.zeros((num_classes,))}


def head_logits(params: dict, features: jax.Array) -> tuple[jax.Array, jax.Array]:
  """The head's logits on stop-gradient features, and its rows ``[K, D]`` (stop-gradient)."""
  features = jax.lax.stop_gradient(jnp.asarray(features, losses.float_dtype(features)))
  return (features @ params["kernel"] + params["bias"],
          jax.lax.stop_gradient(params["kernel"].T))


def aux_head(*, seed: int = 0) -> Teacher:
  """RAS-KD's teacher: the jointly trained linear head (`init_head`, `head_logits`)."""

  def init(student, *, num_classes: int, feature_dim: int, **_) -> TeacherState:
    del student
    if isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1:
      raise ValueError(f"aux_head: feature_dim={feature_dim!r} is not allowed; allowed: the "
                       "penultimate feature size, an int >= 1")
    return TeacherState(params=init_head(seed, feature_dim, num_classes))

  def logits(state: TeacherState, consts, inputs: TeacherInputs) -> TeacherOutput:
    del consts
    out, rows = head_logits(state.params, inputs.outputs["features"])
    return TeacherOutput(out, class_embeddings=rows)

  return Teacher(init=init, logits=logits, name="aux_head",
                 doc="a linear head on the student's features, trained jointly (RAS-KD)")

"""RAS-KD relation targets from class representative vectors (RECONSTRUCTED)."""
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxkd.targets import _base

__all__ = ["REPRESENTATIVES", "RelationState", "class_relation", "class_relation_matrix"]

REPRESENTATIVES = ("classifier", "ema")


class RelationState(NamedTuple):
  """State of `class_relation` with ``representatives="ema"``.

  Attributes:
    prototypes: ``[classes, dim]`` exponential moving averages of the class-mean features.
  """
  prototypes: chex.Array


def class_relation_matrix(representatives: chex.Array, *,
                          temperature: chex.Numeric) -> chex.Array:
  r"""Inter-class relations: a softmax over the other classes of scaled cosine similarity.

  .. math::
    R[k, j] = \frac{\exp(\cos(r_k, r_j) / \tau_r)}{\sum_{i \ne k} \exp(\cos(r_k, r_i) / \tau_r)}
    \ (j \ne k), \qquad R[k, k] = 0

  Args:
    representatives: ``[classes, dim]`` class representative vectors (a zero vector has
      cosine 0 with every class).
    temperature: ``tau_r`` > 0.

  Returns:
    ``[classes, classes]`` float32, zero diagonal, rows summing to 1.
  """
  reps = jnp.asarray(representatives, jnp.float32)
  norms = jnp.linalg.norm(reps, axis=-1, keepdims=True)
  unit = reps / jnp.maximum(norms, 1e-12)
  scores = unit @ unit.T / temperature
  eye = jnp.eye(reps.shape[0], dtype=bool)
  return jax.nn.softmax(jnp.where(eye, -jnp.inf, scores), axis=-1)


def class_relation(*, smoothing: _base.Hyperparam, relation_temperature: _base.Hyperparam,
                   representatives: str = "classifier",
                   momentum: _base.Hyperparam = 0.9) -> _base.TargetTransform:
  r"""RAS-KD targets: labels smoothed towards the relations of the true class.

  .. math::
    q = (1 - \epsilon)\, t + \epsilon\, R[y]

  with ``R`` from `class_relation_matrix`. RECONSTRUCTED from the abstract (docs/METHODS.md
  section 7), not the authors' code. The representatives are either the rows of
  the auxiliary classifier (``ctx.class_embeddings``), or exponential moving averages of the
  class-mean features (``ctx.features``), ``p <- m p + (1 - m) mean``, updated after use for
  the classes present in the batch.

  Args:
    smoothing: ``e`` in ``[0, 1]``, or a schedule.
    relation_temperature: ``tau_r`` > 0, or a schedule.
    representatives: ``"classifier"`` or ``"ema"``.
    momentum: ``m`` for ``"ema"``, or a schedule.

  Returns:
    A `TargetTransform`; with ``"ema"`` its ``init`` needs ``feature_dim``.

  References:
    Kim and Woo, "RAS-KD", PAKDD 2024 (abstract only; reconstructed).
  """
  if representatives not in REPRESENTATIVES:
    raise ValueError(f"representatives={representatives!r} is not supported; allowed: "
                     f"{', '.join(REPRESENTATIVES)}.")

  def init(*, num_classes, feature_dim=None, **_):
    if representatives == "classifier":
      return _base.EmptyState()
    if feature_dim is None:
      raise ValueError("class_relation with representatives='ema' needs feature_dim at init.")
    return RelationState(prototypes=jnp.zeros((num_classes, feature_dim), jnp.float32))

  def update(targets, state, ctx):
    if representatives == "classifier":
      if ctx.class_embeddings is None:
        raise ValueError("class_relation needs ctx.class_embeddings (the auxiliary "
                         "classifier's rows); got None.")
      reps = ctx.class_embeddings
    else:
      if ctx.features is None:
        raise ValueError("class_relation with representatives='ema' needs features; got None.")
      reps = state.prototypes
    eps = _base.value_at(smoothing, ctx.step)
    relation = class_relation_matrix(
        reps, temperature=_base.value_at(relation_temperature, ctx.step))
    one_hot = jax.nn.one_hot(ctx.labels, reps.shape[0], dtype=jnp.float32)
    new_targets = (1.0 - eps) * targets + eps * (one_hot @ relation)
    if representatives == "ema":
      counts = jnp.sum(one_hot, axis=0)[:, None]
      means = one_hot.T @ ctx.features / jnp.maximum(counts, 1.0)
      m = _base.value_at(momentum, ctx.step)
      state = RelationState(jnp.where(counts > 0, m * reps + (1.0 - m) * means, reps))
    return new_targets, state

  return _base.TargetTransform(init, update)

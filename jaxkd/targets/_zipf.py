"""Zipf's label smoothing: a non-target distribution ranked by dense per-position votes."""
import chex
import jax
import jax.numpy as jnp

from jaxkd.targets import _base

__all__ = ["dense_votes", "min_rank", "zipf_targets"]


def dense_votes(dense_logits: chex.Array, *, upsample: int = 1) -> chex.Array:
  """Counts, per example, how many feature-map positions vote for each class.

  Args:
    dense_logits: ``[batch, height, width, classes]``: the classifier applied at every position
      of the last feature map.
    upsample: integer factor of a bilinear upsampling of the map before voting (2 on CIFAR in
      the official code). Upsampling the logits equals upsampling the features first, since
      the classifier is affine and bilinear weights sum to one.

  Returns:
    float32 ``[batch, classes]`` vote counts.
  """
  batch, height, width, classes = dense_logits.shape
  if upsample > 1:
    # Half-pixel centres with edge clamping, as PyTorch's bilinear with align_corners=False.
    dense_logits = jax.image.resize(
        dense_logits, (batch, height * upsample, width * upsample, classes), "bilinear")
  winners = jnp.argmax(dense_logits, axis=-1).reshape(batch, -1)
  counts = jax.vmap(lambda w: jnp.bincount(w, length=classes))(winners)
  return counts.astype(jnp.float32)


def min_rank(scores: chex.Array) -> chex.Array:
  """Ranks classes by descending score, ties sharing the smallest rank (``'min'``).

  Equals ``scipy.stats.rankdata(-scores, axis=-1, method='min')``.

  Args:
    scores: ``[batch, classes]``.

  Returns:
    float32 ``[batch, classes]`` ranks starting at 1.
  """
  ascending = jnp.sort(scores, axis=-1)
  not_greater = jax.vmap(lambda row, s: jnp.searchsorted(row, s, side="right"))(
      ascending, scores)
  return (scores.shape[-1] - not_greater + 1).astype(jnp.float32)


def zipf_targets(*, power: _base.Hyperparam = 1.0, upsample: int = 2) -> _base.TargetTransform:
  r"""Zipf's non-target distribution: probability proportional to ``rank^-power``.

  Classes are ranked over ALL classes by their dense vote counts (`dense_votes`, ties
  ``'min'``); the true class is then removed and the rest renormalised:

  .. math::
    q_k \propto \mathbb{1}[k \ne y]\, \mathrm{rank}_k^{-p}

  The result is zero on the label; pair it with a KL restricted to the non-target classes.
  Needs ``ctx.dense_logits``. Replaces the incoming targets.

  Args:
    power: ``p`` (1 in the paper), or a schedule.
    upsample: bilinear upsampling factor of the dense map before voting (2 on CIFAR).

  Returns:
    A stateless `TargetTransform`.

  References:
    Liang et al., `Efficient One Pass Self-distillation with Zipf's Label Smoothing
    <https://arxiv.org/abs/2207.12980>`_, ECCV 2022; megvii-research/zipfls,
    ``pytorch_zipfls/losses.py::gen_pdf`` (``rank_zipf``, ``dense``, ``rank='hard'``).
  """
  if isinstance(upsample, bool) or not isinstance(upsample, int) or upsample < 1:
    raise ValueError(f"upsample={upsample!r} is not allowed; allowed: an int >= 1.")

  def fn(targets, ctx):
    if ctx.dense_logits is None:
      raise ValueError("zipf_targets needs dense_logits (per-position class scores on the "
                       "last feature map) to rank the classes; got None.")
    ranks = min_rank(dense_votes(ctx.dense_logits, upsample=upsample))
    non_target = 1.0 - jax.nn.one_hot(ctx.labels, targets.shape[-1], dtype=jnp.float32)
    weights = non_target * ranks ** (-_base.value_at(power, ctx.step))
    return weights / jnp.sum(weights, axis=-1, keepdims=True)

  return _base.stateless(fn)

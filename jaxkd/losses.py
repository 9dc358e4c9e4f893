"""Per-example losses on (logits, target distribution), always computed in float32 (float64
for float64 logits: the verification mode, `float_dtype`).

Both losses return one value per example, unreduced, like optax's. The distillation
conventions that differ between code bases (docs/METHODS.md section 0) are keywords:
``kl_reduction`` (``batchmean`` or PyTorch 1.x's ``elementwise_mean`` = batchmean / K), the
``T^2`` factor, and the student temperature.

Softmax, log and KL run in float32 whatever the logits' dtype: a bfloat16 KL of identical
logits can read negative.
"""
from typing import Optional

import chex
import jax
import jax.numpy as jnp

__all__ = [
    "KL_REDUCTIONS",
    "check_kl_reduction",
    "dist_relation",
    "float_dtype",
    "kl_divergence",
    "log_softmax",
    "non_target_kl",
    "pearson_correlation",
    "softmax_cross_entropy",
    "target_binary_kl",
]

KL_REDUCTIONS = ("batchmean", "elementwise_mean")


def float_dtype(x: chex.Array) -> jnp.dtype:
  """The dtype the loss math runs in for ``x``: float32 for float32, half and integer arrays,
  float64 for float64 ones (a run with ``model.dtype="float64"`` under JAX's x64 switch)."""
  return jnp.promote_types(jnp.result_type(x), jnp.float32)


def log_softmax(logits: chex.Array, *, temperature: chex.Numeric = 1.0,
                where: Optional[chex.Array] = None) -> chex.Array:
  """float32 ``log softmax(logits / T)``, optionally over the classes in ``where`` only.

  Args:
    logits: ``[..., classes]``, any float dtype.
    temperature: T > 0 (may be traced).
    where: bool, broadcastable to ``logits``: classes to normalise over; the others get 0.

  Returns:
    float32 log-probabilities, same shape as ``logits``.
  """
  scaled = jnp.asarray(logits, float_dtype(logits)) / temperature
  if where is None:
    return jax.nn.log_softmax(scaled, axis=-1)
  # Excluded classes are zeroed, not -inf, so gradients through the masked sum stay finite.
  top = jax.lax.stop_gradient(jnp.max(jnp.where(where, scaled, -jnp.inf), axis=-1,
                                      keepdims=True))
  shifted = scaled - top
  log_norm = jnp.log(jnp.sum(jnp.where(where, jnp.exp(shifted), 0.0), axis=-1, keepdims=True))
  return jnp.where(where, shifted - log_norm, 0.0)


def softmax_cross_entropy(logits: chex.Array, targets: chex.Array, *,
                          temperature: chex.Numeric = 1.0,
                          where: Optional[chex.Array] = None) -> chex.Array:
  r"""Soft-target cross-entropy ``CE(z, q) = -sum_k q_k log softmax(z / T)_k``.

  Args:
    logits: ``[batch, classes]``, any float dtype.
    targets: ``[batch, classes]`` target distributions.
    temperature: student temperature T > 0 (may be traced).
    where: optional bool mask of the classes the softmax runs over (others add 0).

  Returns:
    float32 ``[batch]``.

  References:
    Szegedy et al., `Rethinking the Inception Architecture for Computer Vision
    <https://arxiv.org/abs/1512.00567>`_, 2016 (soft targets for label smoothing).
  """
  log_probs = log_softmax(logits, temperature=temperature, where=where)
  return -jnp.sum(jnp.asarray(targets, log_probs.dtype) * log_probs, axis=-1)


def check_kl_reduction(kl_reduction: str) -> None:
  """Raises a ValueError unless ``kl_reduction`` is one of `KL_REDUCTIONS`."""
  if kl_reduction not in KL_REDUCTIONS:
    raise ValueError(f"kl_reduction={kl_reduction!r} is not supported; allowed: "
                     f"{', '.join(KL_REDUCTIONS)}.")


def kl_divergence(logits: chex.Array, targets: chex.Array, *,
                  temperature: chex.Numeric = 1.0, temperature_squared: bool = False,
                  kl_reduction: str = "batchmean",
                  where: Optional[chex.Array] = None) -> chex.Array:
  r"""The distillation divergence ``KL(q || softmax(z / T))`` per example, with conventions.

  .. math::
    \ell_i = c \sum_k q_{ik} (\log q_{ik} - \log \mathrm{softmax}(z_i / T)_k), \quad
    c = (T^2 \text{ if temperature\_squared}) \cdot (1/K \text{ if elementwise\_mean})

  The batch mean of ``l`` is PyTorch's ``KLDivLoss(reduction='batchmean')`` (Hinton, CS-KD,
  RepDistiller) or, with ``elementwise_mean``, the PyTorch 1.x default ``KLDivLoss()``, which
  also divides by the number of classes (the Tf-KD repository). ``q = 0`` entries add 0.

  Args:
    logits: student logits ``[batch, classes]``, any float dtype.
    targets: ``[batch, classes]`` target (teacher) distributions.
    temperature: student temperature T > 0 (may be traced).
    temperature_squared: multiply by ``T^2`` (Hinton's gradient-scale correction).
    kl_reduction: ``"batchmean"`` or ``"elementwise_mean"``.
    where: optional bool mask: the divergence over these classes only, with the student
      softmax renormalised over them (Zipf's non-target KL); ``K`` is then their count.

  Returns:
    float32 ``[batch]``.

  References:
    Hinton et al., `Distilling the Knowledge in a Neural Network
    <https://arxiv.org/abs/1503.02531>`_, 2015; yuanli2333/Teacher-free-Knowledge-Distillation,
    ``my_loss_function.py`` (``nn.KLDivLoss()``, elementwise mean).
  """
  check_kl_reduction(kl_reduction)
  log_probs = log_softmax(logits, temperature=temperature, where=where)
  # optax.losses.kl_divergence's value, with the log of q = 0 entries taken at 1 rather than
  # masked after: optax's masked log(0) makes the gradient to q NaN there, which a learned
  # teacher temperature (CTKD) differentiates, whenever a tempered teacher probability is 0
  # (a confident teacher in float32, a cached teacher's top-k renormalised).
  log_targets = jnp.log(jnp.where(targets == 0, 1.0, targets))
  loss = _squared(jnp.sum(targets * (log_targets - log_probs), axis=-1, where=where),
                  temperature, temperature_squared)
  if kl_reduction == "elementwise_mean":
    if where is None:
      loss = loss / logits.shape[-1]
    else:
      loss = loss / jnp.sum(jnp.broadcast_to(where, logits.shape), axis=-1)
  return loss


def _squared(loss, temperature, temperature_squared):
  if temperature_squared:
    loss = loss * jnp.square(jnp.asarray(temperature, loss.dtype))
  return loss


def target_binary_kl(logits: chex.Array, targets: chex.Array, labels: chex.Array, *,
                     temperature: chex.Numeric = 1.0,
                     temperature_squared: bool = False) -> chex.Array:
  r"""DKD's target-class KD (TCKD): the KL of the binary (target, rest) masses, per example.

  .. math::
    b = (p_y, \sum_{k \ne y} p_k), \quad
    \ell_i = c \sum_{j \in \{0, 1\}} b^t_{ij} (\log b^t_{ij} - \log b^s_{ij})

  with ``p^s = softmax(z / T)`` and the teacher's tempered distribution ``targets`` (``c = T^2``
  with ``temperature_squared``). The batch mean of ``l`` is mdistiller's ``kl_div(...,
  size_average=False) / batch``. The student's ``log b`` is taken from its log-softmax
  (``log sum_{k != y} p_k`` as a log-sum-exp): equal to mdistiller's ``torch.log`` of the
  summed softmax, without its ``log 0`` when a probability underflows.

  Args:
    logits: student logits ``[batch, classes]``, any float dtype.
    targets: the teacher's tempered distribution ``[batch, classes]``.
    labels: int ``[batch]``.
    temperature: T > 0 (may be traced).
    temperature_squared: multiply by ``T^2``.

  Returns:
    float32 ``[batch]``.

  References:
    Zhao et al., `Decoupled Knowledge Distillation <https://arxiv.org/abs/2203.08679>`_,
    CVPR 2022; megvii-research/mdistiller ``mdistiller/distillers/DKD.py`` (``dkd_loss``).
  """
  log_p = log_softmax(logits, temperature=temperature)
  is_target = jax.nn.one_hot(labels, log_p.shape[-1], dtype=bool)
  log_target = jnp.sum(jnp.where(is_target, log_p, 0.0), axis=-1)
  log_rest = jax.nn.logsumexp(jnp.where(is_target, -jnp.inf, log_p), axis=-1)
  targets = jnp.asarray(targets, float_dtype(logits))
  t_target = jnp.sum(jnp.where(is_target, targets, 0.0), axis=-1)
  t_rest = jnp.sum(jnp.where(is_target, 0.0, targets), axis=-1)
  loss = (jax.scipy.special.xlogy(t_target, t_target) - t_target * log_target +
          jax.scipy.special.xlogy(t_rest, t_rest) - t_rest * log_rest)
  return _squared(loss, temperature, temperature_squared)


# mdistiller subtracts 1000 from the target logit (after tempering) to leave it out of the
# non-target softmax.
_NON_TARGET_SHIFT = 1000.0


def non_target_kl(logits: chex.Array, targets: chex.Array, labels: chex.Array, *,
                  temperature: chex.Numeric = 1.0,
                  temperature_squared: bool = False) -> chex.Array:
  r"""DKD's non-target-class KD (NCKD): the KL among the non-target classes, per example.

  The student's side is mdistiller's ``log_softmax(z / T - 1000 * gt_mask)``. The teacher's side
  is its non-target distribution ``q_k / sum_{j != y} q_j`` (``k != y``, 0 at ``y``) from its
  tempered distribution ``targets``: mdistiller's ``softmax(z_t / T - 1000 * gt_mask)`` up to
  ``exp(-1000)``, and defined for a mixture of teachers too. A teacher with all of its mass on
  the target class (every other probability underflowed) adds 0.

  Args:
    logits: student logits ``[batch, classes]``, any float dtype.
    targets: the teacher's tempered distribution ``[batch, classes]``.
    labels: int ``[batch]``.
    temperature: T > 0 (may be traced).
    temperature_squared: multiply by ``T^2``.

  Returns:
    float32 ``[batch]``.

  References:
    megvii-research/mdistiller ``mdistiller/distillers/DKD.py`` (``nckd_loss``).
  """
  is_target = jax.nn.one_hot(labels, jnp.shape(logits)[-1], dtype=float_dtype(logits))
  scaled = jnp.asarray(logits, float_dtype(logits)) / temperature - _NON_TARGET_SHIFT * is_target
  log_p = jax.nn.log_softmax(scaled, axis=-1)
  rest = jnp.asarray(targets, float_dtype(logits)) * (1.0 - is_target)
  total = jnp.sum(rest, axis=-1, keepdims=True)
  rest = jnp.where(total > 0, rest / jnp.where(total > 0, total, 1.0), 0.0)
  loss = jnp.sum(jax.scipy.special.xlogy(rest, rest) - rest * log_p, axis=-1)
  return _squared(loss, temperature, temperature_squared)


_PEARSON_EPS = 1e-8  # DIST's official cosine: (a.b) / (|a| |b| + 1e-8)


def pearson_correlation(a: chex.Array, b: chex.Array, *, axis: int = -1) -> chex.Array:
  """DIST's Pearson correlation of ``a`` and ``b`` along ``axis``: the cosine of the centred
  vectors with ``1e-8`` added to the product of the norms (float32)."""
  dtype = jnp.promote_types(float_dtype(a), float_dtype(b))
  a = jnp.asarray(a, dtype)
  b = jnp.asarray(b, dtype)
  a = a - jnp.mean(a, axis=axis, keepdims=True)
  b = b - jnp.mean(b, axis=axis, keepdims=True)
  norms = jnp.linalg.norm(a, axis=axis) * jnp.linalg.norm(b, axis=axis)
  return jnp.sum(a * b, axis=axis) / (norms + _PEARSON_EPS)


def dist_relation(logits: chex.Array, targets: chex.Array, *, temperature: chex.Numeric = 1.0,
                  temperature_squared: bool = False, intra: bool = False) -> chex.Array:
  r"""DIST's relation loss terms: ``1 - pearson`` of the tempered probabilities.

  ``intra=False`` (inter-class relation): one value per example, ``1 - pearson(p^s_i, t_i)``
  over the classes; its batch mean is DIST's ``inter_class_relation``. ``intra=True``
  (intra-class relation): one value per class, ``1 - pearson`` over the batch of that class's
  probabilities; its mean over the classes is DIST's ``intra_class_relation``. ``c = T^2``
  multiplies both with ``temperature_squared``.

  Args:
    logits: student logits ``[batch, classes]``, any float dtype.
    targets: the teacher's tempered distribution ``[batch, classes]``.
    temperature: T > 0 (may be traced).
    temperature_squared: multiply by ``T^2``.
    intra: the intra-class (per class, over the batch) instead of the inter-class term.

  Returns:
    float32 ``[batch]`` (inter) or ``[classes]`` (intra).

  References:
    Huang et al., `Knowledge Distillation from A Stronger Teacher
    <https://arxiv.org/abs/2205.10536>`_, NeurIPS 2022; hunto/DIST_KD (its loss file
    ``lib/models/losses/dist_kd.py`` of hunto/image_classification_sota).
  """
  probs = jnp.exp(log_softmax(logits, temperature=temperature))
  loss = 1.0 - pearson_correlation(probs, targets, axis=0 if intra else -1)
  return _squared(loss, temperature, temperature_squared)

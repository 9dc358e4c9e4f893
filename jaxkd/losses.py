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
import optax

__all__ = [
    "KL_REDUCTIONS",
    "check_kl_reduction",
    "float_dtype",
    "kl_divergence",
    "log_softmax",
    "softmax_cross_entropy",
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
  targets = jnp.asarray(targets, log_probs.dtype)
  loss = optax.losses.kl_divergence(log_probs, targets, where=where)
  if temperature_squared:
    loss = loss * jnp.square(jnp.asarray(temperature, log_probs.dtype))
  if kl_reduction == "elementwise_mean":
    if where is None:
      loss = loss / logits.shape[-1]
    else:
      loss = loss / jnp.sum(jnp.broadcast_to(where, logits.shape), axis=-1)
  return loss

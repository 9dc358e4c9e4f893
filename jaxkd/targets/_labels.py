"""Label-derived targets: one-hot, label smoothing, uniform teachers, correction, re-softmax."""
from typing import Optional

import jax
import jax.numpy as jnp

from jaxkd.targets import _base

__all__ = [
    "SMOOTHING_CONVENTIONS",
    "label_smoothing",
    "one_hot",
    "soften",
    "teacher_correction",
    "uniform_teacher",
]

SMOOTHING_CONVENTIONS = ("uniform", "others")


def _one_hot(ctx):
  return jax.nn.one_hot(ctx.labels, ctx.logits.shape[-1], dtype=jnp.float32)


def _others(ctx):
  """Uniform over the K-1 wrong classes, zero on the label."""
  num_classes = ctx.logits.shape[-1]
  return (1.0 - _one_hot(ctx)) / (num_classes - 1)


def one_hot() -> _base.TargetTransform:
  """Resets the targets to the one-hot labels ``e_y``.

  Returns:
    A stateless `TargetTransform`.
  """
  return _base.stateless(lambda targets, ctx: _one_hot(ctx))


def label_smoothing(*, smoothing: _base.Hyperparam,
                    convention: str = "uniform") -> _base.TargetTransform:
  r"""Label smoothing regularization (LSR).

  .. math::
    q = (1 - \epsilon)\, t + \epsilon\, u, \quad
    u = \begin{cases} 1/K & \text{uniform} \\ (1 - e_y)/(K-1) & \text{others} \end{cases}

  With one-hot ``t`` the ``uniform`` convention gives ``1 - e + e/K`` on the label (Szegedy et
  al., optax, OLS); ``others`` gives ``1 - e`` on the label and ``e/(K-1)`` elsewhere (the
  Tf-KD and Zipf repositories, big_vision's ``hard`` smoothing).

  Args:
    smoothing: ``e`` in ``[0, 1]``, or a schedule.
    convention: ``"uniform"`` or ``"others"``.

  Returns:
    A stateless `TargetTransform`.

  References:
    Szegedy et al., `Rethinking the Inception Architecture for Computer Vision
    <https://arxiv.org/abs/1512.00567>`_, 2016.
  """
  if convention not in SMOOTHING_CONVENTIONS:
    raise ValueError(f"convention={convention!r} is not supported; allowed: "
                     f"{', '.join(SMOOTHING_CONVENTIONS)}.")

  def fn(targets, ctx):
    eps = _base.value_at(smoothing, ctx.step)
    if convention == "uniform":
      prior = jnp.full_like(targets, 1.0 / targets.shape[-1])
    else:
      prior = _others(ctx)
    return (1.0 - eps) * targets + eps * prior

  return _base.stateless(fn)


def uniform_teacher(*, correct_prob: Optional[_base.Hyperparam] = None) -> _base.TargetTransform:
  r"""The uniform teacher of LsrKD, optionally with Teacher Correction (TC).

  .. math::
    u = 1/K \quad\text{or, with TC,}\quad u_{TC} = b\, e_y + (1 - b)(1 - e_y)/(K-1)

  The result is a probability vector used as is (never re-softmaxed). Replaces the incoming
  targets. With ``correct_prob=0.99`` it is also Tf-KD's hand-made teacher ``p^d``.

  Args:
    correct_prob: ``b``, the share of the true class, or None for the plain uniform teacher.

  Returns:
    A stateless `TargetTransform`.

  References:
    Yuan et al., `Revisiting Knowledge Distillation via Label Smoothing Regularization
    <https://arxiv.org/abs/1909.11723>`_, 2020 (hand-made teacher);
    arXiv 2009.05226 (LsrKD and TC; reconstructed from the abstract).
  """

  def fn(targets, ctx):
    if correct_prob is None:
      return jnp.full_like(targets, 1.0 / targets.shape[-1])
    b = _base.value_at(correct_prob, ctx.step)
    return b * _one_hot(ctx) + (1.0 - b) * _others(ctx)

  return _base.stateless(fn)


def teacher_correction(*, weight: _base.Hyperparam) -> _base.TargetTransform:
  r"""Teacher Correction by mixing with the labels: ``t' = (1 - g) t + g e_y``.

  Args:
    weight: ``g`` in ``[0, 1]``, or a schedule.

  Returns:
    A stateless `TargetTransform`.

  References:
    arXiv 2009.05226 and "LSR-OS-TC", Appl. Sci. 2021 (reconstructed from the abstracts).
  """

  def fn(targets, ctx):
    g = _base.value_at(weight, ctx.step)
    return (1.0 - g) * targets + g * _one_hot(ctx)

  return _base.stateless(fn)


def soften(*, temperature: _base.Hyperparam) -> _base.TargetTransform:
  r"""Re-softmaxes the current targets at temperature T: ``t' = softmax(t / T)``.

  This treats a probability vector as logits, the double-softmax of Tf-KD_reg's official code
  (``F.softmax(teacher_soft / T)`` with ``teacher_soft`` the hand-made probabilities). At
  T=20 and K=100 the result is almost uniform (0.0105 on the label vs 0.00999 elsewhere).

  Args:
    temperature: T > 0, or a schedule.

  Returns:
    A stateless `TargetTransform`.

  References:
    Yuan et al., 2020; yuanli2333/Teacher-free-Knowledge-Distillation,
    ``my_loss_function.py::loss_kd_regularization``.
  """

  def fn(targets, ctx):
    return jax.nn.softmax(targets / _base.value_at(temperature, ctx.step), axis=-1)

  return _base.stateless(fn)

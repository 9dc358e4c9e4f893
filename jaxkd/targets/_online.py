"""Class-matrix targets learned online: Online Label Smoothing and (reconstructed) ALR.

Both keep a K x K matrix used as soft labels during an epoch, accumulate statistics of the
student's own predictions over the epoch, and replace the matrix at the epoch boundary. The
boundary update is a `jnp.where` on the step inside the compiled step, and the accumulation is
a plain reduction over the batch axis, so a batch sharded over devices is summed by `jit`.
"""
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxkd.targets import _base

__all__ = [
    "ClassMatrixState",
    "adaptive_label_regularization",
    "check_steps_per_epoch",
    "online_label_smoothing",
]


class ClassMatrixState(NamedTuple):
  """State of a class-matrix transform.

  Attributes:
    matrix: ``[classes, classes]`` soft labels used in the current epoch (row = true class).
    sums: ``[classes, classes]`` per-class sums of the selected predictions this epoch.
    counts: ``[classes]`` how many predictions were summed per class this epoch.
  """
  matrix: chex.Array
  sums: chex.Array
  counts: chex.Array


def check_steps_per_epoch(steps_per_epoch, method: str) -> None:
  """Raises a ValueError unless ``steps_per_epoch`` is a positive int."""
  if steps_per_epoch is None:
    raise ValueError(
        f"{method} needs steps_per_epoch (an int: optimizer steps per epoch) for its "
        "epoch-boundary update; the training engine or the config must set it.")
  if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or (
      steps_per_epoch < 1):
    raise ValueError(f"steps_per_epoch={steps_per_epoch!r} is not allowed; allowed: an int >= 1.")


def is_last_step_of_epoch(step: chex.Numeric, steps_per_epoch: int) -> chex.Array:
  """True on the last step of an epoch (epoch = step // steps_per_epoch)."""
  return (jnp.asarray(step) + 1) % steps_per_epoch == 0


def _class_matrix(initial: Callable[[int], chex.Array],
                  select: Callable[[chex.Array, chex.Array], tuple[chex.Array, chex.Array]],
                  finish: Callable[[ClassMatrixState, chex.Numeric], chex.Array],
                  steps_per_epoch: int) -> _base.TargetTransform:
  """A transform whose targets are rows of a class matrix refreshed once per epoch.

  Args:
    initial: ``num_classes -> [K, K]`` matrix for the first epoch.
    select: ``(probs, one_hot) -> (weight [B], contribution [B, K])``: which predictions are
      accumulated and what each adds to its true class's row.
    finish: ``(state, step) -> new matrix`` at the epoch boundary.
    steps_per_epoch: steps per epoch.
  """

  def init(*, num_classes, **_):
    zeros = jnp.zeros((num_classes, num_classes), jnp.float32)
    return ClassMatrixState(matrix=initial(num_classes), sums=zeros,
                            counts=jnp.zeros((num_classes,), jnp.float32))

  def update(targets, state, ctx):
    del targets
    one_hot = jax.nn.one_hot(ctx.labels, ctx.logits.shape[-1], dtype=jnp.float32)
    new_targets = one_hot @ state.matrix
    weight, contribution = select(jax.nn.softmax(ctx.logits, axis=-1), one_hot)
    if ctx.weights is not None:  # padding tokens of a sequence model count for nothing
      weight = weight * ctx.weights
    sums = state.sums + one_hot.T @ (weight[:, None] * contribution)
    counts = state.counts + weight @ one_hot
    accumulated = ClassMatrixState(state.matrix, sums, counts)
    end = is_last_step_of_epoch(ctx.step, steps_per_epoch)
    new_state = ClassMatrixState(
        matrix=jnp.where(end, finish(accumulated, ctx.step), state.matrix),
        sums=jnp.where(end, 0.0, sums), counts=jnp.where(end, 0.0, counts))
    return new_targets, new_state

  return _base.TargetTransform(init, update)


def _per_class_mean(state):
  return state.sums / jnp.maximum(state.counts, 1.0)[:, None]


def online_label_smoothing(*, steps_per_epoch: int) -> _base.TargetTransform:
  r"""Online Label Smoothing (OLS): soft labels from last epoch's correct predictions.

  During epoch e the target of a sample of class y is ``S[y]``. Over the epoch the softmax of
  every CORRECTLY classified sample (arg-max = label) is summed into its class's row; at the
  end ``S[c]`` becomes the mean of those softmaxes, or uniform ``1/K`` if class c had none.
  As in the official CIFAR script, ``S`` starts at zeros, so the soft term vanishes in the
  first epoch.

  Args:
    steps_per_epoch: optimizer steps per epoch (the epoch is ``step // steps_per_epoch``).

  Returns:
    A `TargetTransform` with `ClassMatrixState`.

  References:
    Zhang et al., `Delving Deep into Label Smoothing
    <https://arxiv.org/abs/2011.12562>`_, IEEE TIP 2021; zhangchbin/OnlineLabelSmoothing,
    ``cifar/scripts/train_cifar_all_methods.py`` (``update_loss_lams``, end of ``train``).
  """
  check_steps_per_epoch(steps_per_epoch, "online_label_smoothing")

  def select(probs, one_hot):
    correct = jnp.argmax(probs, axis=-1) == jnp.argmax(one_hot, axis=-1)
    return correct.astype(jnp.float32), probs

  def finish(state, step):
    del step
    num_classes = state.matrix.shape[-1]
    return jnp.where(state.counts[:, None] > 0, _per_class_mean(state), 1.0 / num_classes)

  return _class_matrix(lambda k: jnp.zeros((k, k), jnp.float32), select, finish,
                       steps_per_epoch)


def adaptive_label_regularization(*, momentum: _base.Hyperparam,
                                  steps_per_epoch: int) -> _base.TargetTransform:
  r"""Residual labels of Adaptive Label Regularization (ALR), RECONSTRUCTED.

  Only the abstract of the paper is public; this is the reconstruction of docs/METHODS.md
  section 5, not the authors' code. ``R`` (K x K, zero diagonal, rows summing to 1) starts
  uniform over the other classes. During an epoch the softmax of every MISCLASSIFIED sample,
  with its true-class entry zeroed and renormalised, is summed into its class's row; at the
  epoch end

  .. math::
    R[c] \leftarrow \mu R[c] + (1 - \mu)\, \mathrm{mean}_c

  (``R[c]`` is kept when class c had no errors). The target is the residual label ``R[y]``.

  Args:
    momentum: ``mu`` in ``[0, 1]``, or a schedule (read at the boundary step).
    steps_per_epoch: optimizer steps per epoch.

  Returns:
    A `TargetTransform` with `ClassMatrixState`.

  References:
    Ding et al., `Adaptive Regularization of Labels <https://arxiv.org/abs/1908.05474>`_, 2019
    (abstract only; the update rule is reconstructed).
  """
  check_steps_per_epoch(steps_per_epoch, "adaptive_label_regularization")

  def initial(num_classes):
    return (1.0 - jnp.eye(num_classes, dtype=jnp.float32)) / (num_classes - 1)

  def select(probs, one_hot):
    wrong = jnp.argmax(probs, axis=-1) != jnp.argmax(one_hot, axis=-1)
    residual = probs * (1.0 - one_hot)
    # A wrong prediction leaves at least half the mass off the label, so the sum is > 0 there;
    # the floor only guards the unselected rows.
    residual = residual / jnp.maximum(jnp.sum(residual, axis=-1, keepdims=True), 1e-12)
    return wrong.astype(jnp.float32), residual

  def finish(state, step):
    mu = _base.value_at(momentum, step)
    blended = mu * state.matrix + (1.0 - mu) * _per_class_mean(state)
    return jnp.where(state.counts[:, None] > 0, blended, state.matrix)

  return _class_matrix(initial, select, finish, steps_per_epoch)

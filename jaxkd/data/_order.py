"""Example order as a pure function of (seed, epoch), and CS-KD's same-class partners.

Every epoch's order is generated afresh from ``(seed, epoch)``, never from a
running generator, so a run resumed at epoch e sees exactly the batches the
uninterrupted run would have seen.
"""
import operator

import numpy as np

__all__ = ["batch_indices", "partner_indices"]

# Independent random streams drawn from one (seed, epoch).
_ORDER_STREAM = 0
_PARTNER_STREAM = 1


def _check_non_negative_int(field: str, value) -> int:
  try:
    value = operator.index(value)
  except TypeError:
    raise ValueError(f"{field} must be a non-negative integer; got {value!r}.") from None
  if value < 0:
    raise ValueError(f"{field} must be a non-negative integer; got {value}.")
  return value


def _rng(seed, epoch, stream: int) -> np.random.Generator:
  seed = _check_non_negative_int("seed", seed)
  epoch = _check_non_negative_int("epoch", epoch)
  return np.random.default_rng((seed, epoch, stream))


def batch_indices(num_examples: int, batch_size: int, *, seed: int,
                  epoch: int) -> np.ndarray:
  """One epoch of shuffled example indices, split into full batches.

  A random permutation of ``range(num_examples)`` drawn from
  ``np.random.default_rng((seed, epoch, 0))``; the last ``num_examples %
  batch_size`` examples of the permutation are dropped (drop remainder).

  Args:
    num_examples: dataset size N.
    batch_size: global batch size B, ``1 <= B <= N``.
    seed: non-negative integer run seed.
    epoch: non-negative epoch number.

  Returns:
    ``int32 [N // B, B]``; row s holds the example ids of step s.

  Example:
    >>> batch_indices(5, 2, seed=0, epoch=0).shape
    (2, 2)
  """
  num_examples = _check_non_negative_int("num_examples", num_examples)
  batch_size = _check_non_negative_int("batch_size", batch_size)
  if not 1 <= batch_size <= num_examples:
    raise ValueError(f"batch_size must be in [1, num_examples={num_examples}]; "
                     f"got {batch_size}.")
  order = _rng(seed, epoch, _ORDER_STREAM).permutation(num_examples)
  steps = num_examples // batch_size
  return order[:steps * batch_size].reshape(steps, batch_size).astype(np.int32)


def partner_indices(labels: np.ndarray, indices: np.ndarray, *, seed: int,
                    epoch: int, exclude_self: bool = True) -> np.ndarray:
  """For each index, a random other example of the same class (CS-KD's pairs).

  Class-wise self-knowledge distillation (Yun et al., CVPR 2020) pairs each
  example with a random sample of its class. With ``exclude_self`` the partner
  is never the example itself unless its class has a single member; without it,
  the draw is uniform over the whole class, itself included, as the reference
  ``PairBatchSampler`` (``random.choice`` over the class, alinlab/cs-kd
  datasets.py) does. Draws come from
  ``np.random.default_rng((seed, epoch, 1))``, a stream independent of the order.

  Args:
    labels: ``int [N]`` labels of the whole split.
    indices: ``int`` array of any shape with values in ``[0, N)``, e.g. the
      output of ``batch_indices``.
    seed: non-negative integer run seed.
    epoch: non-negative epoch number.
    exclude_self: draw among the other members of the class (default).

  Returns:
    ``int32`` array shaped like ``indices``: partner example ids.
  """
  labels = np.asarray(labels)
  indices = np.asarray(indices)
  if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"labels must be a 1-D integer array; got {labels.dtype} "
                     f"with shape {labels.shape}.")
  if not np.issubdtype(indices.dtype, np.integer):
    raise ValueError(f"indices must be integers; got {indices.dtype}.")
  if indices.size and (indices.min() < 0 or indices.max() >= labels.shape[0]):
    raise ValueError(f"indices must lie in [0, {labels.shape[0]}); got "
                     f"[{indices.min()}, {indices.max()}].")
  rng = _rng(seed, epoch, _PARTNER_STREAM)
  # Examples grouped by class: class c occupies by_class[start[c]:start[c] + count[c]].
  by_class = np.argsort(labels, kind="stable")
  classes, start, count = np.unique(labels[by_class], return_index=True,
                                    return_counts=True)
  rank = np.empty_like(by_class)
  rank[by_class] = np.arange(labels.shape[0]) - np.repeat(start, count)
  flat = indices.reshape(-1)
  group = np.searchsorted(classes, labels[flat])
  n, own = count[group], rank[flat]
  if exclude_self:
    # Uniform over the n - 1 others: draw from [0, n - 1) and skip over oneself.
    draw = rng.integers(0, np.maximum(n - 1, 1))
    partner_rank = np.where(n > 1, draw + (draw >= own), own)
  else:
    partner_rank = rng.integers(0, n)
  return by_class[start[group] + partner_rank].astype(np.int32).reshape(indices.shape)

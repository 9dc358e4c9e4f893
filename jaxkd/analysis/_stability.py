"""Shen et al.'s stability metric (ICLR 2021, Eq. 2) on probabilities, and our feature variant.

Shen et al. measure how much information about the individual example label smoothing
erases with the spread of a network's softmax probabilities around their class means:

  S = 1 - (1/K) sum_c (1/n_c) sum_{i in c} ||p_i - pbar_c||^2,   pbar_c = mean_{i in c} p_i.

Their Table 1 reports ``1 - S``, the mean intra-class variance: lower means more information
erased (ImageNet ResNet-50: 0.3217 trained with cross-entropy, 0.3106 with label smoothing).
The probabilities are neither features nor normalised. The paper's main text states neither
the split, the augmentation nor a temperature; ``temperature`` defaults to 1 (plain softmax)
and the caller picks the split.

`feature_stability` applies the same formula to L2-normalised penultimate features: a
variant of ours, not the paper's metric, whose values are not comparable with its Table 1.

Every statistic is a per-class sum, so the sums of several batches add up to the metric of a
whole split, inside ``jit`` or on the host.
"""
import numbers

import jax
import jax.numpy as jnp

__all__ = [
    "feature_stability",
    "feature_stability_statistics",
    "finalize_intra_class_variance",
    "finalize_stability",
    "intra_class_variance",
    "stability",
    "stability_statistics",
]

_STAT_KEYS = ("count", "sum", "squared_norm_sum")


def _check(values, labels, mask, num_classes, name):
  if values.ndim != 2:
    raise ValueError(f"{name} must have shape [batch, dim], got shape {values.shape}.")
  if labels.shape != values.shape[:1]:
    raise ValueError(f"labels must have shape [batch]={values.shape[:1]} (integer class "
                     f"ids), got shape {labels.shape}.")
  if mask is not None and jnp.shape(mask) != values.shape[:1]:
    raise ValueError(f"mask must have shape [batch]={values.shape[:1]}, got shape "
                     f"{jnp.shape(mask)}.")
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")


def _class_sums(h, labels, num_classes, mask):
  keep = jnp.ones(labels.shape, bool) if mask is None else jnp.asarray(mask, bool)
  # where, not multiply: padded rows may hold nan.
  h = jnp.where(keep[:, None], h, 0.0)
  segments = jnp.where(keep, labels.astype(jnp.int32), 0)
  segment_sum = lambda x: jax.ops.segment_sum(x, segments, num_segments=num_classes)
  return {
      "count": segment_sum(keep.astype(jnp.int32)),
      "sum": segment_sum(h),
      "squared_norm_sum": segment_sum(jnp.sum(h * h, axis=-1)),
  }


def stability_statistics(logits, labels, *, num_classes, temperature=1.0, mask=None):
  """Additive per-class sums of ``p = softmax(logits / temperature)`` for Eq. 2.

  Sums of several batches add elementwise. The spread is computed from them as
  ``E||p||^2 - ||E p||^2`` per class in float32; as ``||p|| <= 1`` its absolute error stays
  near 1e-6 per thousand examples of a class, far below the 4 decimals of Shen et al.'s
  Table 1. Jit-able.

  Args:
    logits: ``[batch, K]`` logits z (not probabilities); the softmax is taken in float32.
    labels: ``[batch]`` integer class ids in ``[0, num_classes)``.
    num_classes: number of classes K; static.
    temperature: T > 0 of ``softmax(z / T)``; 1 (the plain softmax) by default.
    mask: optional ``[batch]`` bool; False marks padded examples.

  Returns:
    A dict: ``count`` (int32 ``[K]``), ``sum`` (float32 ``[K, K]``, the per-class sums of
    p) and ``squared_norm_sum`` (float32 ``[K]``, the per-class sums of ``||p||^2``).
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  _check(logits, labels, mask, num_classes, "logits")
  if isinstance(temperature, numbers.Number) and (
      isinstance(temperature, bool) or not temperature > 0):
    raise ValueError(f"temperature must be a number > 0, got {temperature!r}.")
  p = jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  return _class_sums(p, labels, num_classes, mask)


def feature_stability_statistics(features, labels, *, num_classes, normalize=True,
                                 mask=None):
  """Additive per-class sums of (L2-normalised) features for `feature_stability`.

  The same sums as `stability_statistics`, of the rows of ``features`` instead of
  probabilities; with ``normalize=True`` ``||h|| = 1``, so the absolute error of the spread
  also stays near 1e-6. Jit-able.

  Args:
    features: ``[batch, dim]`` representations h, e.g. penultimate features.
    labels: ``[batch]`` integer class ids in ``[0, num_classes)``.
    num_classes: number of classes K; static.
    normalize: L2-normalise each row first (``h / ||h||``; an all-zero row stays zero).
    mask: optional ``[batch]`` bool; False marks padded examples.

  Returns:
    A dict: ``count`` (int32 ``[K]``), ``sum`` (float32 ``[K, dim]``) and
    ``squared_norm_sum`` (float32 ``[K]``).
  """
  features = jnp.asarray(features)
  labels = jnp.asarray(labels)
  _check(features, labels, mask, num_classes, "features")
  h = features.astype(jnp.float32)
  if normalize:
    norms = jnp.linalg.norm(h, axis=-1, keepdims=True)
    h = h / jnp.where(norms > 0, norms, 1.0)
  return _class_sums(h, labels, num_classes, mask)


def finalize_intra_class_variance(stats):
  """``1 - S``: the mean over classes of the mean squared distance to the class mean.

  ``(1/K') sum_c (1/n_c) sum_{i in c} ||h_i - hbar_c||^2`` over the K' classes with at least
  one example (on a split where every class has examples, K' = K: Eq. 2 exactly). Jit-able.

  Args:
    stats: (accumulated) `stability_statistics` or `feature_stability_statistics`.

  Returns:
    A float32 scalar (nan when no class has an example).
  """
  missing = [key for key in _STAT_KEYS if key not in stats]
  if missing:
    raise ValueError(f"stats is missing the keys {missing}; it must be the output of "
                     f"stability_statistics or feature_stability_statistics (keys "
                     f"{list(_STAT_KEYS)}).")
  count = jnp.asarray(stats["count"])
  present = count > 0
  n = jnp.where(present, count, 1).astype(jnp.float32)
  means = jnp.asarray(stats["sum"], jnp.float32) / n[:, None]
  spread = (jnp.asarray(stats["squared_norm_sum"], jnp.float32) / n
            - jnp.sum(means * means, axis=-1))
  # Rounding can make a collapsed class's spread a hair below zero.
  spread = jnp.maximum(spread, 0.0)
  return jnp.sum(jnp.where(present, spread, 0.0)) / jnp.sum(present)


def finalize_stability(stats):
  """``S = 1 - finalize_intra_class_variance(stats)``. Jit-able."""
  return 1.0 - finalize_intra_class_variance(stats)


def intra_class_variance(logits, labels, *, num_classes, temperature=1.0, mask=None):
  """``1 - S`` of Shen et al.'s Eq. 2, the number their Table 1 reports.

  With ``p_i = softmax(z_i / T)`` and class means ``pbar_c``,

    1 - S = (1/K) sum_c (1/n_c) sum_{i in c} ||p_i - pbar_c||^2.

  Lower means tighter classes, i.e. more information erased (label smoothing lowers it).
  Classes without an example in ``labels`` are left out of the mean over c. For a whole
  split in batches, add `stability_statistics` and call `finalize_intra_class_variance`.

  Args:
    logits: ``[batch, K]`` logits z (not probabilities).
    labels: ``[batch]`` integer class ids in ``[0, num_classes)``.
    num_classes: number of classes K; static.
    temperature: T > 0; 1 by default.
    mask: optional ``[batch]`` bool; False marks padded examples.

  Returns:
    A float32 scalar in ``[0, 1)``.

  Example:
    >>> import jax.numpy as jnp
    >>> # One class: p = (1, 0) and (1/2, 1/2), mean (3/4, 1/4), both 1/8 away.
    >>> logits = jnp.log(jnp.array([[1.0, 1e-30], [0.5, 0.5]]))
    >>> round(float(intra_class_variance(logits, jnp.array([0, 0]), num_classes=2)), 6)
    0.125

  References:
    Shen, Liu, Xu, Bai, Savvides and Cheng, "Is Label Smoothing Truly Incompatible with
    Knowledge Distillation: An Empirical Study", ICLR 2021, Eq. 2 and Table 1.
  """
  return finalize_intra_class_variance(stability_statistics(
      logits, labels, num_classes=num_classes, temperature=temperature, mask=mask))


def stability(logits, labels, *, num_classes, temperature=1.0, mask=None):
  """Shen et al.'s stability S (Eq. 2) of ``softmax(logits / T)``: ``1 - intra_class_variance``.

  Higher S means tighter classes, i.e. more information erased. Arguments as
  `intra_class_variance`; returns a float32 scalar in ``(0, 1]``.

  References:
    Shen et al., ICLR 2021 (see `intra_class_variance`).
  """
  return 1.0 - intra_class_variance(logits, labels, num_classes=num_classes,
                                    temperature=temperature, mask=mask)


def feature_stability(features, labels, *, num_classes, normalize=True, mask=None):
  """Our variant of the stability metric on (L2-normalised) features; NOT Shen et al.'s.

  The formula of Eq. 2 with the probabilities replaced by representations h_i (unit-norm
  penultimate features by default) and class centres ``c_k = mean_{i in k} h_i``:

    S_feat = 1 - (1/K) sum_k mean_{i in k} ||h_i - c_k||^2.

  For unit-norm h, ``mean_{i in k} ||h_i - c_k||^2 = 1 - ||c_k||^2``, so S_feat = mean_k
  ``||c_k||^2`` lies in [0, 1] and is 1 exactly when every class collapses to one direction.
  Its values are not comparable with Shen et al.'s Table 1. Classes with no example are left
  out of the mean over k.

  Args:
    features: ``[batch, dim]`` representations h.
    labels: ``[batch]`` integer class ids in ``[0, num_classes)``.
    num_classes: number of classes K; static.
    normalize: L2-normalise each row of ``features`` first.
    mask: optional ``[batch]`` bool; False marks padded examples.

  Returns:
    A float32 scalar.
  """
  return finalize_stability(feature_stability_statistics(
      features, labels, num_classes=num_classes, normalize=normalize, mask=mask))

"""The stability metric of Shen et al. (ICLR 2021): how much within-class information is erased.

RECONSTRUCTED: only the paper's abstract is public to us. The abstract introduces "a metric
to quantitatively measure the degree of erased information in [the] sample representation"
by label smoothing; the formula below is our reconstruction, consistent with it (see
shared/METHODS.md section 6), and every choice in it is an option. Its values are not the
paper's numbers.
"""
import jax
import jax.numpy as jnp

__all__ = ["finalize_stability", "stability", "stability_statistics"]

_STAT_KEYS = ("count", "feature_sum", "squared_norm_sum")


def stability_statistics(features, labels, *, num_classes, normalize=True, mask=None):
  """Additive per-class sums from which ``finalize_stability`` computes the metric.

  Sums of several batches add elementwise, so the metric over a whole split is exact up to
  float32 rounding (computed as ``E||h||^2 - ||E h||^2`` per class, which loses relative
  precision when the spread is tiny compared with ``||h||^2``; with ``normalize=True``
  ``||h|| = 1`` and the absolute error stays near 1e-6). Jit-able.

  Args:
    features: ``[batch, dim]`` representations h: penultimate features, or probabilities.
    labels: ``[batch]`` integer class ids in ``[0, num_classes)``.
    num_classes: number of classes K; static.
    normalize: L2-normalise each row first (``h / ||h||``; an all-zero row stays zero).
      True for penultimate features; False for probabilities taken as they are.
    mask: optional ``[batch]`` bool; False marks padded examples.

  Returns:
    A dict: ``count`` (int32 ``[K]``), ``feature_sum`` (float32 ``[K, dim]``) and
    ``squared_norm_sum`` (float32 ``[K]``).
  """
  features = jnp.asarray(features)
  labels = jnp.asarray(labels)
  if features.ndim != 2:
    raise ValueError(f"features must have shape [batch, dim], got shape {features.shape}.")
  if labels.shape != features.shape[:1]:
    raise ValueError(f"labels must have shape [batch]={features.shape[:1]}, got shape "
                     f"{labels.shape}.")
  if mask is not None and jnp.shape(mask) != features.shape[:1]:
    raise ValueError(f"mask must have shape [batch]={features.shape[:1]}, got shape "
                     f"{jnp.shape(mask)}.")
  if not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
  h = features.astype(jnp.float32)
  if normalize:
    norms = jnp.linalg.norm(h, axis=-1, keepdims=True)
    h = h / jnp.where(norms > 0, norms, 1.0)
  keep = jnp.ones(labels.shape, bool) if mask is None else jnp.asarray(mask, bool)
  # where, not multiply: padded rows may hold nan.
  h = jnp.where(keep[:, None], h, 0.0)
  segments = jnp.where(keep, labels.astype(jnp.int32), 0)
  segment_sum = lambda x: jax.ops.segment_sum(x, segments, num_segments=num_classes)
  return {
      "count": segment_sum(keep.astype(jnp.int32)),
      "feature_sum": segment_sum(h),
      "squared_norm_sum": segment_sum(jnp.sum(h * h, axis=-1)),
  }


def finalize_stability(stats):
  """The stability metric from (accumulated) ``stability_statistics``.

  ``S = 1 - (1/K') sum_k mean_{i in k} ||h_i - c_k||^2`` with class centres ``c_k`` the
  means of the (normalised) representations, where the sum runs over the K' classes that
  have at least one example. Jit-able.

  Args:
    stats: a mapping with the keys returned by ``stability_statistics``.

  Returns:
    A float32 scalar (nan when no class has an example).
  """
  missing = [key for key in _STAT_KEYS if key not in stats]
  if missing:
    raise ValueError(f"stats is missing the keys {missing}; it must be the output of "
                     f"stability_statistics (keys {list(_STAT_KEYS)}).")
  count = jnp.asarray(stats["count"])
  present = count > 0
  n = jnp.where(present, count, 1).astype(jnp.float32)
  centres = jnp.asarray(stats["feature_sum"], jnp.float32) / n[:, None]
  spread = (jnp.asarray(stats["squared_norm_sum"], jnp.float32) / n
            - jnp.sum(centres * centres, axis=-1))
  # Rounding can make a collapsed class's spread a hair below zero.
  spread = jnp.maximum(spread, 0.0)
  mean_spread = jnp.sum(jnp.where(present, spread, 0.0)) / jnp.sum(present)
  return 1.0 - mean_spread


def stability(features, labels, *, num_classes, normalize=True, mask=None):
  """Stability (degree of erased information) of representations; RECONSTRUCTED metric.

  Shen et al. (ICLR 2021) measure how much label smoothing erases the information that
  distinguishes examples within a class. Our reconstruction from their abstract (shared/
  METHODS.md section 6): with representations h_i (L2-normalised penultimate features by
  default, or probabilities with ``normalize=False``) and class centres
  ``c_k = mean_{i in k} h_i``,

    S = 1 - (1/K) sum_k mean_{i in k} ||h_i - c_k||^2.

  Higher S means tighter classes, i.e. more information erased. For unit-norm h,
  ``mean_{i in k} ||h_i - c_k||^2 = 1 - ||c_k||^2``, so S = mean_k ||c_k||^2 lies in
  [0, 1] and equals 1 exactly when every class collapses to one direction. Classes with no
  example are left out of the mean over k.

  Args:
    features: ``[batch, dim]`` representations h.
    labels: ``[batch]`` integer class ids in ``[0, num_classes)``.
    num_classes: number of classes K; static.
    normalize: L2-normalise each row of ``features`` first.
    mask: optional ``[batch]`` bool; False marks padded examples.

  Returns:
    A float32 scalar.

  References:
    Shen, Liu, Xu, Bai, Savvides and Cheng, "Is Label Smoothing Truly Incompatible with
    Knowledge Distillation: An Empirical Study", ICLR 2021 (abstract only).
  """
  return finalize_stability(stability_statistics(
      features, labels, num_classes=num_classes, normalize=normalize, mask=mask))

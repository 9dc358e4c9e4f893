"""Accuracy, negative log-likelihood and expected calibration error as additive sums.

Every metric is returned as a per-batch SUM so that an evaluation loop can add the sums of
its batches (on the device, inside a jitted step, or on the host) and finalize once: the
result over a whole split is then exact, including ECE, whose bin statistics add up.
"""
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "accumulate_metrics",
    "classification_metrics",
    "ece_bin_statistics",
    "expected_calibration_error",
    "finalize_metrics",
]

_SUM_KEYS = ("correct_top1", "correct_top5", "nll_sum", "count",
             "ece_bin_count", "ece_bin_confidence", "ece_bin_correct")


def _check_num_bins(num_bins):
  if not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
    raise ValueError(f"num_bins must be a positive int, got {num_bins!r}.")


def _check_inputs(scores, labels, mask, name):
  if scores.ndim != 2:
    raise ValueError(f"{name} must have shape [batch, classes], got shape {scores.shape}.")
  if labels.shape != scores.shape[:1]:
    raise ValueError(f"labels must have shape [batch]={scores.shape[:1]} (integer class "
                     f"ids), got shape {labels.shape}.")
  if mask is not None and mask.shape != scores.shape[:1]:
    raise ValueError(f"mask must have shape [batch]={scores.shape[:1]}, got shape "
                     f"{mask.shape}.")


def ece_bin_statistics(confidences, correct, *, num_bins=15, weights=None):
  """Per-bin count, summed confidence and summed correctness for the ECE.

  Bin ``b`` (0-based) holds the confidences in ``(b / B, (b + 1) / B]``: ``num_bins``
  equal-width bins on (0, 1], the binning of Guo et al. (2017) and of their reference code
  (gpleiss/temperature_scaling, ``_ECELoss``: ``lower < conf <= upper``). A confidence of
  exactly 0 falls into the first bin.

  Args:
    confidences: ``[batch]`` float, the probability of the predicted class.
    correct: ``[batch]`` bool or {0, 1}, whether the prediction is right.
    num_bins: number of bins ``B``.
    weights: optional ``[batch]`` {0, 1} weights (a padding mask as float).

  Returns:
    ``(count, confidence_sum, correct_sum)``, each ``[num_bins]``; count and correct_sum
    int32, confidence_sum float32.
  """
  _check_num_bins(num_bins)
  confidences = jnp.asarray(confidences, jnp.float32)
  correct = jnp.asarray(correct).astype(jnp.int32)
  weights = (jnp.ones_like(correct) if weights is None
             else jnp.asarray(weights).astype(jnp.int32))
  # Inner edges only: searchsorted(side="left") counts the edges strictly below a
  # confidence, which is exactly the index of its (lower, upper] bin.
  inner_edges = jnp.linspace(0.0, 1.0, num_bins + 1, dtype=jnp.float32)[1:-1]
  bins = jnp.searchsorted(inner_edges, confidences, side="left")
  count = jax.ops.segment_sum(weights, bins, num_segments=num_bins)
  # where, not multiply: a padded row may hold a nan confidence, and nan * 0 is nan.
  confidence_sum = jax.ops.segment_sum(jnp.where(weights > 0, confidences, 0.0), bins,
                                       num_segments=num_bins)
  correct_sum = jax.ops.segment_sum(correct * weights, bins, num_segments=num_bins)
  return count, confidence_sum, correct_sum


def classification_metrics(logits, labels, *, num_bins=15, mask=None):
  """Additive sums of top-1, top-5, NLL and ECE statistics for one batch.

  With ``p = softmax(z)`` computed in float32, confidence ``c_i = max_k p_ik`` and
  prediction ``argmax_k z_ik``:

    correct_top1 = sum_i [argmax_k z_ik = y_i]
    correct_top5 = sum_i [y_i in the 5 largest logits of i]
    nll_sum      = sum_i -log p_{i, y_i}
    ece_bin_*    = per-bin count, sum of c_i and sum of correctness (see
                   ``ece_bin_statistics``), from which
    ECE          = sum_b (n_b / N) |acc_b - conf_b|   (Guo et al., 2017).

  Sums of several batches add elementwise (``accumulate_metrics``); ``finalize_metrics``
  turns the total into rates. Jit-able; works on sharded batches. When there are fewer
  than 5 classes, ``correct_top5`` is top-K with K the number of classes (always 1 per
  example). Ties in the logits go to the lower class index, as in ``argmax``.

  Args:
    logits: ``[batch, classes]`` float logits (any float dtype; math in float32).
    labels: ``[batch]`` integer class ids.
    num_bins: number of equal-width ECE confidence bins on (0, 1]; static.
    mask: optional ``[batch]`` bool; False marks padded examples, which count nowhere.

  Returns:
    A dict of arrays: ``correct_top1``, ``correct_top5``, ``count`` (int32 scalars),
    ``nll_sum`` (float32 scalar), ``ece_bin_count``, ``ece_bin_correct`` (int32
    ``[num_bins]``) and ``ece_bin_confidence`` (float32 ``[num_bins]``).

  References:
    Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  mask = None if mask is None else jnp.asarray(mask)
  _check_inputs(logits, labels, mask, "logits")
  _check_num_bins(num_bins)
  logits = logits.astype(jnp.float32)
  labels = labels.astype(jnp.int32)
  weights = (jnp.ones(labels.shape, jnp.int32) if mask is None
             else mask.astype(jnp.int32))

  log_probs = jax.nn.log_softmax(logits, axis=-1)
  label_log_probs = jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  predictions = jnp.argmax(logits, axis=-1)
  correct = predictions == labels
  k = min(5, logits.shape[-1])
  _, top_k = jax.lax.top_k(logits, k)
  in_top_k = jnp.any(top_k == labels[:, None], axis=-1)
  confidences = jnp.exp(jnp.max(log_probs, axis=-1))

  bin_count, bin_confidence, bin_correct = ece_bin_statistics(
      confidences, correct, num_bins=num_bins, weights=weights)
  return {
      "correct_top1": jnp.sum(correct * weights),
      "correct_top5": jnp.sum(in_top_k * weights),
      # where, not multiply: a padded row may hold garbage whose NLL is inf or nan.
      "nll_sum": jnp.sum(jnp.where(weights > 0, -label_log_probs, 0.0)),
      "count": jnp.sum(weights),
      "ece_bin_count": bin_count,
      "ece_bin_confidence": bin_confidence,
      "ece_bin_correct": bin_correct,
  }


def accumulate_metrics(total: Optional[Mapping], batch: Mapping) -> dict:
  """Adds the sums of one batch to a running total (``None`` starts a total).

  Args:
    total: the running total from earlier batches, or None for the first batch.
    batch: the output of ``classification_metrics`` for one batch.

  Returns:
    The elementwise sum, as a dict with the same keys.
  """
  if total is None:
    return dict(batch)
  if set(total) != set(batch):
    raise ValueError(f"total and batch must have the same keys, got {sorted(total)} and "
                     f"{sorted(batch)}.")
  return {key: total[key] + batch[key] for key in batch}


def finalize_metrics(sums: Mapping) -> dict:
  """Turns (accumulated) sums from ``classification_metrics`` into rates.

  Computed on the host in float64 from the float32/int32 sums:
  ``top1 = correct_top1 / N``, ``top5 = correct_top5 / N``, ``nll = nll_sum / N`` and
  ``ece = sum_b |confidence_sum_b - correct_sum_b| / N``, which equals
  ``sum_b (n_b / N) |acc_b - conf_b|``.

  Args:
    sums: a mapping with the keys returned by ``classification_metrics``.

  Returns:
    ``dict(top1, top5, nll, ece)`` of python floats; accuracies are fractions in [0, 1].
  """
  missing = [key for key in _SUM_KEYS if key not in sums]
  if missing:
    raise ValueError(f"sums is missing the keys {missing}; it must be the output of "
                     f"classification_metrics (keys {list(_SUM_KEYS)}).")
  values = {key: np.asarray(jax.device_get(sums[key]), np.float64) for key in _SUM_KEYS}
  count = float(values["count"])
  if count <= 0:
    raise ValueError(f"sums['count'] must be positive, got {count}: no unmasked example "
                     "was evaluated.")
  gap = np.abs(values["ece_bin_confidence"] - values["ece_bin_correct"])
  return {
      "top1": float(values["correct_top1"] / count),
      "top5": float(values["correct_top5"] / count),
      "nll": float(values["nll_sum"] / count),
      "ece": float(np.sum(gap) / count),
  }


def expected_calibration_error(probs, labels, num_bins=15):
  """Expected calibration error of predicted probabilities (Guo et al., 2017).

  ECE = sum_b (n_b / N) |acc_b - conf_b| over ``num_bins`` equal-width confidence bins on
  (0, 1], where the confidence is ``max_k p_ik`` and the prediction ``argmax_k p_ik``.
  Jit-able (``num_bins`` static).

  Args:
    probs: ``[batch, classes]`` probabilities (rows sum to 1).
    labels: ``[batch]`` integer class ids.
    num_bins: number of bins.

  Returns:
    A float32 scalar in [0, 1].

  References:
    Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.
  """
  probs = jnp.asarray(probs)
  labels = jnp.asarray(labels)
  _check_inputs(probs, labels, None, "probs")
  probs = probs.astype(jnp.float32)
  correct = jnp.argmax(probs, axis=-1) == labels
  count, confidence_sum, correct_sum = ece_bin_statistics(
      jnp.max(probs, axis=-1), correct, num_bins=num_bins)
  gap = jnp.abs(confidence_sum - correct_sum.astype(jnp.float32))
  return jnp.sum(gap) / jnp.maximum(jnp.sum(count), 1).astype(jnp.float32)

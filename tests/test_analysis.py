"""Tests for jaxkd.analysis against independent numpy references and hand examples."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import analysis


def _reference_metrics(logits, labels, num_bins=15):
  """Float64 numpy metrics, written the way gpleiss/temperature_scaling's _ECELoss is."""
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  probs = np.exp(log_probs)
  n = len(labels)
  order = np.argsort(-logits, axis=1, kind="stable")
  k = min(5, logits.shape[1])
  top5 = np.mean([labels[i] in order[i, :k] for i in range(n)])
  confidences = probs.max(axis=1)
  accuracies = (probs.argmax(axis=1) == labels).astype(np.float64)
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  ece = 0.0
  for lower, upper in zip(edges[:-1], edges[1:]):
    in_bin = (confidences > lower) & (confidences <= upper)
    if in_bin.any():
      ece += in_bin.mean() * abs(confidences[in_bin].mean() - accuracies[in_bin].mean())
  return {"top1": accuracies.mean(), "top5": top5,
          "nll": -log_probs[np.arange(n), labels].mean(), "ece": ece}


def _random_problem(seed, n=300, k=10, scale=3.0):
  rng = np.random.default_rng(seed)
  logits = (rng.normal(size=(n, k)) * scale).astype(np.float32)
  # Labels correlated with the logits so that accuracy and ECE are far from trivial.
  noisy = logits + rng.gumbel(size=(n, k)) * 2.0
  return logits, noisy.argmax(axis=1).astype(np.int32)


@pytest.mark.parametrize("seed,k", [(0, 10), (1, 100), (2, 3)])
def test_metrics_match_numpy_reference(seed, k):
  logits, labels = _random_problem(seed, k=k)
  sums = jax.jit(analysis.classification_metrics)(logits, labels)
  got = analysis.finalize_metrics(sums)
  want = _reference_metrics(logits, labels)
  for key in ("top1", "top5", "nll", "ece"):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6, err_msg=key)
  # Not trivial cases: some right, some wrong, top-5 above top-1, miscalibrated.
  assert 0.1 < got["top1"] < 0.9 and got["ece"] > 0.01
  assert got["top5"] == 1.0 if k == 3 else got["top1"] < got["top5"] < 1.0


def test_expected_calibration_error_matches_reference():
  logits, labels = _random_problem(3)
  probs = jax.nn.softmax(jnp.asarray(logits), axis=-1)
  got = jax.jit(analysis.expected_calibration_error)(probs, labels)
  np.testing.assert_allclose(float(got), _reference_metrics(logits, labels)["ece"],
                             atol=1e-6)


def test_batches_with_padding_add_up_to_whole_set():
  logits, labels = _random_problem(4, n=250)
  whole = analysis.finalize_metrics(analysis.classification_metrics(logits, labels))
  step = jax.jit(analysis.classification_metrics)
  total = None
  for start in range(0, 250, 64):
    batch_logits = np.full((64, 10), np.nan, np.float32)
    batch_labels = np.full((64,), -1, np.int32)
    real = min(64, 250 - start)
    batch_logits[:real] = logits[start:start + real]
    batch_labels[:real] = labels[start:start + real]
    mask = np.arange(64) < real
    total = analysis.accumulate_metrics(total, step(batch_logits, batch_labels, mask=mask))
  assert int(total["count"]) == 250
  got = analysis.finalize_metrics(total)
  for key in whole:
    np.testing.assert_allclose(got[key], whole[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_perfectly_calibrated_predictions_have_zero_ece():
  # In every bin the accuracy equals the confidence: 10 examples at 0.8 with 8 right,
  # 4 at 0.5 with 2 right, 5 at 1.0 all right.
  rows, labels = [], []
  for i in range(10):
    rows.append([0.8, 0.1, 0.05, 0.05])
    labels.append(0 if i < 8 else 1)
  for i in range(4):
    rows.append([0.1, 0.5, 0.3, 0.1])
    labels.append(1 if i < 2 else 2)
  for _ in range(5):
    rows.append([0.0, 0.0, 1.0, 0.0])
    labels.append(2)
  probs, labels = np.asarray(rows, np.float32), np.asarray(labels)
  assert float(analysis.expected_calibration_error(probs, labels)) < 1e-6
  with np.errstate(divide="ignore"):
    log_probs = np.log(probs)
  sums = analysis.classification_metrics(log_probs, labels)
  assert analysis.finalize_metrics(sums)["ece"] < 1e-6


def test_hand_computed_ece_and_bin_edges():
  # Confidence 0.9 always wrong (gap 0.9) and exactly 0.6 always right (gap 0.4); 0.6 is an
  # upper bin edge for 5 bins and must fall in (0.4, 0.6], not (0.6, 0.8].
  probs = np.asarray([[0.9, 0.1]] * 3 + [[0.6, 0.4]], np.float32)
  labels = np.asarray([1, 1, 1, 0])
  ece = analysis.expected_calibration_error(probs, labels, num_bins=5)
  np.testing.assert_allclose(float(ece), (3 * 0.9 + 0.4) / 4, rtol=1e-6)
  count, _, _ = analysis.ece_bin_statistics(np.float32([0.6, 0.9, 0.0, 1.0]),
                                            np.ones(4, bool), num_bins=5)
  np.testing.assert_array_equal(count, [1, 0, 1, 0, 2])


def test_metrics_reject_bad_input():
  with pytest.raises(ValueError, match="labels must have shape"):
    analysis.classification_metrics(np.zeros((4, 3)), np.zeros((5,), np.int32))
  with pytest.raises(ValueError, match="num_bins"):
    analysis.classification_metrics(np.zeros((4, 3)), np.zeros((4,), np.int32), num_bins=0)
  with pytest.raises(ValueError, match="count"):
    analysis.finalize_metrics(analysis.classification_metrics(
        np.zeros((2, 3)), np.zeros((2,), np.int32), mask=np.zeros(2, bool)))

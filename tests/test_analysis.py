"""Tests for jaxkd.analysis against independent numpy references and hand examples."""
import os

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


def _reference_variance(vectors, labels):
  """Two-pass float64 numpy: class means first, then mean squared distances to them."""
  h = np.asarray(vectors, np.float64)
  spreads = []
  for k in np.unique(labels):
    members = h[labels == k]
    spreads.append(np.mean(np.sum((members - members.mean(axis=0)) ** 2, axis=1)))
  return np.mean(spreads)


def _softmax64(logits, temperature=1.0):
  z = np.asarray(logits, np.float64) / temperature
  e = np.exp(z - z.max(axis=1, keepdims=True))
  return e / e.sum(axis=1, keepdims=True)


# Probabilities worked out by hand. Class 0: (.6, .3, .1) and (.8, .1, .1), mean (.7, .2, .1),
# both at squared distance .01 + .01 = .02. Class 1: (.2, .5, .3), (.2, .7, .1), (.2, .6, .2),
# mean (.2, .6, .2), squared distances .02, .02, 0: mean 1/75. Class 2: one example, 0.
# 1 - S = (1/50 + 1/75 + 0) / 3 = 1/90.
_HAND_PROBS = np.asarray([[.6, .3, .1], [.8, .1, .1], [.2, .5, .3], [.2, .7, .1],
                          [.2, .6, .2], [.1, .1, .8]])
_HAND_LABELS = np.asarray([0, 0, 1, 1, 1, 2])


def test_stability_is_eq2_on_softmax_probabilities_by_hand():
  # Any per-row constant added to log p leaves the softmax, hence the metric, unchanged.
  logits = (np.log(_HAND_PROBS) + np.arange(6)[:, None] * 3.0).astype(np.float32)
  variance = jax.jit(analysis.intra_class_variance, static_argnames="num_classes")(
      logits, _HAND_LABELS, num_classes=3)
  np.testing.assert_allclose(float(variance), 1 / 90, atol=1e-6)
  stability = analysis.stability(logits, _HAND_LABELS, num_classes=3)
  np.testing.assert_allclose(float(stability), 89 / 90, atol=1e-6)
  # A class absent from the labels is left out of the mean over classes.
  np.testing.assert_allclose(
      float(analysis.intra_class_variance(logits[:5], _HAND_LABELS[:5], num_classes=4)),
      (1 / 50 + 1 / 75) / 2, atol=1e-6)


def test_stability_temperature_by_hand():
  # Class 0: z = (2 log 3, 0) and (0, 0). At T = 1, p = (.9, .1) and (.5, .5): mean (.7, .3),
  # squared distances .08. At T = 2, p = (.75, .25) and (.5, .5): mean (.625, .375),
  # squared distances 1/32. Class 1 has one example (spread 0): 1 - S is half of those.
  logits = np.asarray([[2 * np.log(3), 0.0], [0.0, 0.0], [0.0, 5.0]], np.float32)
  labels = np.asarray([0, 0, 1])
  for temperature, want in ((1.0, 0.04), (2.0, 1 / 64)):
    got = analysis.intra_class_variance(logits, labels, num_classes=2, temperature=temperature)
    np.testing.assert_allclose(float(got), want, atol=1e-6)
  # A very high temperature flattens every p to uniform: nothing left to vary.
  hot = analysis.intra_class_variance(logits, labels, num_classes=2, temperature=1e4)
  assert float(hot) < 1e-7


def test_stability_mask_drops_padded_rows():
  logits = np.log(_HAND_PROBS).astype(np.float32)
  padded = np.concatenate([logits, np.full((3, 3), np.nan, np.float32)])
  labels = np.concatenate([_HAND_LABELS, [0, 1, 2]])
  mask = np.arange(9) < 6
  got = analysis.intra_class_variance(padded, labels, num_classes=3, mask=mask)
  np.testing.assert_allclose(float(got), 1 / 90, atol=1e-6)
  # Unmasked, the same padded rows turn it into nan: the mask is what removes them.
  assert np.isnan(float(analysis.intra_class_variance(padded, labels, num_classes=3)))


def test_stability_batches_add_up_to_the_whole_split():
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 10, size=1000)
  logits = (rng.normal(size=(1000, 10)) * 2.0 + 4.0 * np.eye(10)[labels]).astype(np.float32)
  want = _reference_variance(_softmax64(logits, 1.5), labels)
  whole = analysis.intra_class_variance(logits, labels, num_classes=10, temperature=1.5)
  np.testing.assert_allclose(float(whole), want, atol=1e-6)
  statistics = jax.jit(analysis.stability_statistics, static_argnames="num_classes")
  total = None
  for start in range(0, 1000, 96):  # the last batch is padded with nan rows, masked out
    chunk = np.full((96, 10), np.nan, np.float32)
    chunk_labels = np.zeros((96,), np.int64)
    real = min(96, 1000 - start)
    chunk[:real], chunk_labels[:real] = logits[start:start + real], labels[start:start + real]
    stats = statistics(chunk, chunk_labels, num_classes=10, temperature=1.5,
                       mask=np.arange(96) < real)
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
  np.testing.assert_array_equal(total["count"], np.bincount(labels, minlength=10))
  np.testing.assert_allclose(float(analysis.finalize_intra_class_variance(total)), want,
                             atol=1e-6)
  np.testing.assert_allclose(float(analysis.finalize_stability(total)), 1 - want, atol=1e-6)


def test_smoothing_the_probabilities_scales_the_variance_exactly():
  # Mixing every p with the uniform distribution, (1 - a) p + a / K, moves every example and
  # its class mean alike, so each distance shrinks by (1 - a): 1 - S by (1 - a)^2.
  rng = np.random.default_rng(7)
  labels = rng.integers(0, 5, size=200)
  probs = _softmax64(rng.normal(size=(200, 5)) * 3.0)
  base = analysis.intra_class_variance(np.log(probs), labels, num_classes=5)
  for a in (0.1, 0.5):
    smoothed = np.log((1 - a) * probs + a / 5)
    got = analysis.intra_class_variance(smoothed, labels, num_classes=5)
    np.testing.assert_allclose(float(got), (1 - a) ** 2 * float(base), rtol=1e-5)


def _train_on_digits(smoothing, x, y, *, steps=300, batch=128, seed=0):
  """The ``mlp`` trained with Adam on soft targets ``(1 - e) e_y + e / K``; its logits fn."""
  import optax  # pylint: disable=import-outside-toplevel
  from jaxkd import models  # pylint: disable=import-outside-toplevel
  model = models.get("mlp", num_classes=10)
  params = model.init(jax.random.PRNGKey(seed), x[:1])
  tx = optax.adam(1e-3)
  targets = jnp.asarray((1 - smoothing) * np.eye(10, dtype=np.float32)[y] + smoothing / 10)
  order = jnp.asarray(np.random.default_rng(seed).integers(0, len(y), size=(steps, batch)))
  x = jnp.asarray(x)

  def step(carry, idx):
    params, opt_state = carry
    loss = lambda p: jnp.mean(-jnp.sum(
        targets[idx] * jax.nn.log_softmax(model.apply(p, x[idx])["logits"]), axis=-1))
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), None

  train = jax.jit(lambda carry: jax.lax.scan(step, carry, order)[0])
  params, _ = train((params, tx.init(params)))
  return lambda images: model.apply(params, images)["logits"]


@pytest.mark.slow
def test_label_smoothed_model_has_lower_intra_class_variance_on_digits():
  """Shen et al.'s Table 1 pattern: a model trained with LS has the lower 1 - S.

  Two ``mlp`` models, identical but for the targets (CE, and LS with e = 0.3), 300 Adam
  steps on 1,200 scikit-learn digits, measured on the other 597. Held-out data, because on
  the training split a CE model that fits it drives every p towards its one-hot label and
  1 - S towards 0: there the two are already within 0.002 at 300 steps (0.024, 0.023), and
  at 1,000 steps CE's is the lower (0.001 against 0.005). Measured on the held-out digits: 0.042 (CE)
  and 0.029 (LS) at about 97% top-1; seeds 0, 1, 2 give ratios 0.69, 0.64, 0.66.
  """
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  digits = load_digits()
  images = (digits.images / 16.0).astype(np.float32)[..., None]
  order = np.random.default_rng(0).permutation(len(digits.target))
  train, held_out = order[:1200], order[1200:]
  variances, accuracies = {}, {}
  for name, smoothing in (("ce", 0.0), ("ls", 0.3)):
    logits = _train_on_digits(smoothing, images[train], digits.target[train])(
        images[held_out])
    variances[name] = float(analysis.intra_class_variance(
        logits, digits.target[held_out], num_classes=10))
    accuracies[name] = float(np.mean(np.argmax(logits, -1) == digits.target[held_out]))
  assert min(accuracies.values()) > 0.9, accuracies  # both learned the task
  assert variances["ls"] < 0.8 * variances["ce"], variances


def test_stability_rejects_bad_input():
  logits, labels = np.zeros((4, 3), np.float32), np.zeros((4,), np.int32)
  with pytest.raises(ValueError, match="temperature must be a number > 0, got 0"):
    analysis.stability(logits, labels, num_classes=3, temperature=0)
  with pytest.raises(ValueError, match=r"logits must have shape \[batch, dim\]"):
    analysis.stability(np.zeros(4), labels, num_classes=3)
  with pytest.raises(ValueError, match=r"labels must have shape \[batch\]=\(4,\)"):
    analysis.stability(logits, labels[:3], num_classes=3)
  with pytest.raises(ValueError, match="num_classes must be a positive int, got 0"):
    analysis.intra_class_variance(logits, labels, num_classes=0)
  with pytest.raises(ValueError, match="missing the keys"):
    analysis.finalize_stability({"count": np.ones(3)})


def test_feature_stability_hand_examples():
  # Each class collapsed to one direction (norms differ, directions agree): S = 1.
  collapsed = np.asarray([[1, 0], [3, 0], [0, 2], [0, 0.5]], np.float32)
  assert float(analysis.feature_stability(collapsed, np.asarray([0, 0, 1, 1]),
                                          num_classes=2)) == pytest.approx(1.0, abs=1e-6)
  # Class 0 at angles +-60 degrees: centre (1/2, 0), spread sin^2(60) = 3/4; class 1
  # collapsed (spread 0); class 2 absent, so left out: S = 1 - (3/4 + 0) / 2 = 0.625.
  spread = np.asarray([[0.5, np.sqrt(3) / 2], [0.5, -np.sqrt(3) / 2], [0, 1], [0, 1]])
  got = jax.jit(analysis.feature_stability, static_argnames="num_classes")(
      spread.astype(np.float32), np.asarray([0, 0, 1, 1]), num_classes=3)
  np.testing.assert_allclose(float(got), 0.625, atol=1e-6)


@pytest.mark.parametrize("normalize", [True, False])
def test_feature_stability_matches_reference_and_accumulates(normalize):
  rng = np.random.default_rng(5)
  labels = rng.integers(0, 6, size=200)
  features = (rng.normal(size=(200, 16)) + 2.0 * np.eye(16)[labels]).astype(np.float32)
  h = features / np.linalg.norm(features, axis=1, keepdims=True) if normalize else features
  want = 1.0 - _reference_variance(h, labels)
  got = analysis.feature_stability(features, labels, num_classes=8, normalize=normalize)
  np.testing.assert_allclose(float(got), want, atol=1e-5)
  total = None
  for start in range(0, 200, 48):
    chunk = np.full((48, 16), np.nan, np.float32)
    chunk_labels = np.full((48,), 7)
    real = min(48, 200 - start)
    chunk[:real], chunk_labels[:real] = features[start:start + real], labels[start:start + real]
    stats = analysis.feature_stability_statistics(chunk, chunk_labels, num_classes=8,
                                                  normalize=normalize,
                                                  mask=np.arange(48) < real)
    total = stats if total is None else jax.tree.map(jnp.add, total, stats)
  np.testing.assert_allclose(float(analysis.finalize_stability(total)), want, atol=1e-5)
  if normalize:  # for unit vectors S is the mean squared norm of the class centres
    centres = total["sum"][:6] / total["count"][:6, None]
    np.testing.assert_allclose(want, np.mean(np.sum(centres ** 2, axis=1)), atol=1e-5)


def test_projection_of_templates_and_features():
  rng = np.random.default_rng(6)
  templates = rng.normal(size=(5, 8))
  classes = (3, 0, 4)
  labels = rng.integers(0, 5, size=60)
  features = rng.normal(size=(60, 8))
  proj = analysis.project_three_classes(features, labels, templates, classes)
  assert set(proj.labels.tolist()) <= set(classes) and len(proj.points) == np.isin(
      labels, classes).sum()
  # The templates, fed as features (rows in class order 0, 3, 4 = classes[1], [0], [2]),
  # land exactly on the triangle's vertices, which form a
  # triangle congruent to the templates' own, centred at the origin.
  on_templates = analysis.project_three_classes(templates, np.arange(5), templates, classes)
  np.testing.assert_allclose(on_templates.points, proj.vertices[[1, 0, 2]], atol=1e-12)
  w = templates[list(classes)]
  for i, j in [(0, 1), (0, 2), (1, 2)]:
    np.testing.assert_allclose(np.linalg.norm(proj.vertices[i] - proj.vertices[j]),
                               np.linalg.norm(w[i] - w[j]), rtol=1e-12)
  np.testing.assert_allclose(proj.vertices.mean(axis=0), 0.0, atol=1e-12)
  # u_1 points from w_a to w_b: their vertices share the second coordinate.
  np.testing.assert_allclose(proj.vertices[1, 1], proj.vertices[0, 1], atol=1e-12)
  assert proj.vertices[1, 0] > proj.vertices[0, 0]
  # Independent check: distances between projected points equal distances between the
  # orthogonal projections onto the affine plane, found by least squares.
  kept = features[np.isin(labels, classes)]
  edges = (w[1:] - w[0]).T
  coefficients = np.linalg.lstsq(edges, (kept - w[0]).T, rcond=None)[0]
  on_plane = (edges @ coefficients).T
  np.testing.assert_allclose(
      np.linalg.norm(on_plane[:, None] - on_plane[None], axis=-1),
      np.linalg.norm(proj.points[:, None] - proj.points[None], axis=-1), atol=1e-10)
  with pytest.raises(ValueError, match="collinear"):
    analysis.project_three_classes(features, labels, np.asarray(
        [[0.0] * 8, [1.0] * 8, [2.0] * 8]), (0, 1, 2))
  with pytest.raises(ValueError, match="classes must be 3 distinct"):
    analysis.project_three_classes(features, labels, templates, (1, 1, 2))
  with pytest.raises(ValueError, match="templates must have shape"):
    analysis.project_three_classes(features, labels, templates.T, classes)


def _write_metrics(workdir, lines):
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "metrics.jsonl").write_text(lines)


def test_load_metrics_resumed_run(tmp_path):
  # A run killed mid-write, resumed from step 2: the torn line is skipped, re-logged steps
  # take the resumed run's values.
  _write_metrics(tmp_path / "run", (
      '{"step": 1, "epoch": 0, "train/loss": 2.0}\n'
      '{"step": 2, "epoch": 0, "train/loss": 1.5}\n'
      '{"step": 3, "epoch": 1, "train/lo'
      '{"step": 3, "epoch": 1, "train/loss": 1.25}\n'
      '{"step": 3, "epoch": 1, "eval/top1": 0.5}\n'
      '{"step": 4, "epoch": 1, "train/lo'))
  with pytest.warns(UserWarning, match="line 3"):
    records = analysis.load_metrics(tmp_path / "run")
  assert len(records) == 4
  xs, ys = analysis.metric_series(records, "train/loss")
  np.testing.assert_array_equal(xs, [1, 2, 3])
  np.testing.assert_array_equal(ys, [2.0, 1.5, 1.25])
  xs, ys = analysis.metric_series(records, "eval/top1", x="epoch")
  np.testing.assert_array_equal(xs, [1]) and np.testing.assert_array_equal(ys, [0.5])


@pytest.mark.slow
def test_plots_write_png(tmp_path):
  logits, labels = _random_problem(7)
  sums = analysis.classification_metrics(logits, labels)
  rng = np.random.default_rng(8)
  proj = analysis.project_three_classes(rng.normal(size=(30, 4)), rng.integers(0, 3, 30),
                                        rng.normal(size=(3, 4)), (0, 1, 2))
  for run, loss in [("ce", 2.0), ("ls", 2.5)]:
    _write_metrics(tmp_path / run, "".join(
        f'{{"step": {s}, "epoch": {s // 2}, "train/loss": {loss / s}, "eval/top1": '
        f'{0.1 * s}}}\n' for s in range(1, 6)))
  paths = [
      analysis.reliability_diagram(sums, tmp_path / "reliability.png"),
      analysis.reliability_diagram({"CE": sums, "LS": sums}, tmp_path / "two.png",
                                   title="teachers"),
      analysis.plot_projection({"CE": proj, "LS": proj}, tmp_path / "proj.png",
                               class_names=["a", "b", "c"]),
      analysis.plot_training_curves({"ce": tmp_path / "ce", "ls": tmp_path / "ls"},
                                    tmp_path / "figs" / "curves.png"),
  ]
  for path in paths:
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 5000
  with pytest.raises(ValueError, match="eval/nll"):
    analysis.plot_training_curves(tmp_path / "ce", tmp_path / "x.png", keys=["eval/nll"])

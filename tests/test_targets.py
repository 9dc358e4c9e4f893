"""jaxkd.targets: each transform against hand-computed numbers or an independent numpy form."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from jaxkd import targets as T
from references import softmax as np_softmax
from references import torch_bilinear_x2


def ctx_for(labels, logits=None, num_classes=4, step=0, **kw):
  labels = np.asarray(labels)
  if logits is None:
    logits = np.zeros((len(labels), num_classes), np.float32)
  return T.make_context(labels, np.asarray(logits, np.float32), step=step, **kw)


def run(transform, ctx, state=None, **sizes):
  if state is None:
    state = transform.init(num_classes=ctx.logits.shape[-1], **sizes)
  return T.build_targets(transform, state, ctx)


def test_label_smoothing_conventions():
  ctx = ctx_for([2, 0])
  uniform, _ = run(T.label_smoothing(smoothing=0.2), ctx)
  others, _ = run(T.label_smoothing(smoothing=0.2, convention="others"), ctx)
  np.testing.assert_allclose(uniform[0], [0.05, 0.05, 0.85, 0.05], rtol=1e-6)
  np.testing.assert_allclose(others[1], [0.8, 0.2 / 3, 0.2 / 3, 0.2 / 3], rtol=1e-6)
  with pytest.raises(ValueError, match="convention='hard'.*uniform, others"):
    T.label_smoothing(smoothing=0.1, convention="hard")


def test_uniform_teacher_and_correction():
  ctx = ctx_for([1, 3])
  plain, _ = run(T.uniform_teacher(), ctx)
  tc, _ = run(T.uniform_teacher(correct_prob=0.5), ctx)
  np.testing.assert_allclose(plain, np.full((2, 4), 0.25))
  np.testing.assert_allclose(tc[0], [1 / 6, 0.5, 1 / 6, 1 / 6], rtol=1e-6)
  mixed, _ = run(T.chain(T.uniform_teacher(), T.teacher_correction(weight=0.4)), ctx)
  np.testing.assert_allclose(mixed[1], [0.15, 0.15, 0.15, 0.55], rtol=1e-6)


def test_tfkd_double_softmax_is_almost_uniform():
  """docs/METHODS.md section 3: at T=20, K=100 the target is 0.0105 on the label vs 0.00999 elsewhere."""
  ctx = ctx_for([7], num_classes=100)
  q, _ = run(T.chain(T.uniform_teacher(correct_prob=0.99), T.soften(temperature=20.0)), ctx)
  p_d = np.full(100, 0.01 / 99)
  p_d[7] = 0.99
  want = np_softmax(p_d / 20.0)
  np.testing.assert_allclose(q[0], want, rtol=1e-6)
  assert round(float(q[0, 7]), 4) == 0.0105 and round(float(q[0, 0]), 5) == 0.00999


def test_teacher_softmax_averages_valid_members():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 2, 4)).astype(np.float32)
  mask = np.array([True, False, True])
  ctx = ctx_for([0, 1], teacher_logits=logits, teacher_mask=mask)
  q, _ = run(T.teacher_softmax(temperature=2.0), ctx)
  want = (np_softmax(logits[0] / 2) + np_softmax(logits[2] / 2)) / 2
  np.testing.assert_allclose(q, want, rtol=1e-6)
  assert float(T.has_teacher(ctx)) == 1.0
  single = ctx_for([0, 1], teacher_logits=logits[1])
  np.testing.assert_allclose(run(T.teacher_softmax(temperature=2.0), single)[0],
                             np_softmax(logits[1] / 2), rtol=1e-6)
  empty = ctx_for([0, 1], teacher_logits=logits, teacher_mask=np.zeros(3, bool))
  np.testing.assert_allclose(run(T.teacher_softmax(temperature=2.0), empty)[0], 0.0)
  assert float(T.has_teacher(empty)) == 0.0


def test_teacher_softmax_top_k_renormalises_the_k_largest():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 3, 6)).astype(np.float32)
  ctx = ctx_for([0, 1, 2], teacher_logits=logits, teacher_mask=np.array([True, True]))
  q, _ = run(T.teacher_softmax(temperature=2.0, top_k=3), ctx)
  want = np.zeros((2, 3, 6))
  for member, row in np.ndindex(2, 3):
    keep = np.argsort(-logits[member, row])[:3]
    want[member, row, keep] = np_softmax(logits[member, row, keep][None] / 2.0)[0]
  np.testing.assert_allclose(q, want.mean(0), rtol=1e-6, atol=1e-7)
  full, _ = run(T.teacher_softmax(temperature=2.0), ctx)
  np.testing.assert_allclose(run(T.teacher_softmax(temperature=2.0, top_k=6), ctx)[0], full)
  with pytest.raises(ValueError, match="top_k=-1 is not allowed; allowed: an int >= 0"):
    T.teacher_softmax(temperature=1.0, top_k=-1)


def test_knowledge_adjustment_swaps_top_and_true_logits():
  logits = np.array([[[1.0, 5.0, 2.0, 0.0], [0.0, 1.0, 3.0, 2.0]],
                     [[4.0, 1.0, 2.0, 3.0], [0.5, 0.1, 0.2, 0.3]]], np.float32)
  labels = np.array([2, 2])
  got = T.knowledge_adjustment(jnp.asarray(logits), jnp.asarray(labels))
  want = logits.copy()
  for m, b in np.ndindex(2, 2):
    top, y = logits[m, b].argmax(), labels[b]
    want[m, b, top], want[m, b, y] = logits[m, b, y], logits[m, b, top]
  np.testing.assert_array_equal(got, want)
  assert np.all(np.argmax(got, -1) == labels)
  np.testing.assert_array_equal(got[0, 1], logits[0, 1])  # already right: unchanged


def test_online_label_smoothing_hand_computed_epoch():
  """Four classes, two steps per epoch; logits = log p so the softmax is exactly p."""
  ols = T.online_label_smoothing(steps_per_epoch=2)
  state = ols.init(num_classes=4)
  batch0 = ([0, 1, 2, 0], [[.7, .1, .1, .1], [.6, .2, .1, .1], [.1, .1, .5, .3],
                           [.5, .3, .1, .1]])  # correct, wrong, correct, correct
  batch1 = ([1, 3, 0, 2], [[.1, .6, .2, .1], [.4, .3, .2, .1], [.4, .2, .2, .2],
                           [.3, .4, .2, .1]])  # correct, wrong, correct, wrong
  for step, (labels, probs) in enumerate([batch0, batch1]):
    q, state = run(ols, ctx_for(labels, np.log(probs), step=step), state)
    np.testing.assert_array_equal(q, 0.0)  # S starts at zeros (official CIFAR script)
  want = np.array([[1.6 / 3, 0.2, 0.4 / 3, 0.4 / 3], [.1, .6, .2, .1], [.1, .1, .5, .3],
                   [.25, .25, .25, .25]])
  np.testing.assert_allclose(state.matrix, want, rtol=1e-6)
  np.testing.assert_array_equal(state.sums, 0.0)
  np.testing.assert_array_equal(state.counts, 0.0)
  q, _ = run(ols, ctx_for([3, 0], step=2), state)
  np.testing.assert_allclose(q, want[[3, 0]], rtol=1e-6)


def test_adaptive_label_regularization_hand_computed_epoch():
  alr = T.adaptive_label_regularization(momentum=0.9, steps_per_epoch=1)
  state = alr.init(num_classes=4)
  third = 1 / 3
  np.testing.assert_allclose(state.matrix[0], [0, third, third, third], rtol=1e-6)
  probs = [[.2, .5, .2, .1], [.1, .7, .1, .1], [.3, .1, .1, .5]]  # wrong, correct, wrong
  q, state = run(alr, ctx_for([0, 1, 0], np.log(probs)), state)
  np.testing.assert_allclose(q[1], [third, 0, third, third], rtol=1e-6)
  # Residuals: [0, .5, .2, .1] / .8 and [0, .1, .1, .5] / .7; R[0] = .9 R[0] + .1 mean.
  mean = (np.array([0, .625, .25, .125]) + np.array([0, 1, 1, 5]) / 7) / 2
  np.testing.assert_allclose(state.matrix[0], 0.9 * third * np.array([0, 1, 1, 1]) + 0.1 * mean,
                             rtol=1e-6)
  np.testing.assert_allclose(state.matrix[0], [0, .3383929, .3196429, .3419643], rtol=1e-6)
  np.testing.assert_allclose(state.matrix[1:], (1 - np.eye(4))[1:] / 3, rtol=1e-6)


def test_progressive_self_knowledge_hand_computed():
  pskd = T.progressive_self_knowledge(alpha_final=0.8, total_epochs=4, steps_per_epoch=1)
  state = pskd.init(num_classes=4, num_examples=3)
  p_a, p_b = [.1, .6, .2, .1], [.25, .25, .25, .25]
  q, state = run(pskd, ctx_for([1, 3], np.log([p_a, p_b]), example_ids=np.array([2, 0])),
                 state)
  np.testing.assert_allclose(q, [[0, 1, 0, 0], [0, 0, 0, 1]])  # epoch 0: e_y
  np.testing.assert_allclose(state.table, [p_b, [0, 0, 0, 0], p_a], rtol=1e-6)
  p_c = [.4, .3, .2, .1]
  q, state = run(pskd, ctx_for([1, 0], np.log([p_c, p_c]), step=1,
                               example_ids=np.array([2, 1])), state)
  # alpha_1 = 0.8 * 2 / 4 = 0.4; example 1 was never seen, its row is still zeros.
  np.testing.assert_allclose(q, [[.04, .84, .08, .04], [.6, 0, 0, 0]], rtol=1e-6)
  np.testing.assert_allclose(state.table, [p_b, p_c, p_c], rtol=1e-6)
  with pytest.raises(ValueError, match="num_examples"):
    pskd.init(num_classes=4)
  with pytest.raises(ValueError, match="example_ids"):
    run(pskd, ctx_for([1]), state)


def test_epoch_transforms_need_steps_per_epoch():
  with pytest.raises(ValueError, match="needs steps_per_epoch.*engine or the config"):
    T.online_label_smoothing(steps_per_epoch=None)
  with pytest.raises(ValueError, match="steps_per_epoch=0 .*int >= 1"):
    T.adaptive_label_regularization(momentum=0.9, steps_per_epoch=0)
  with pytest.raises(ValueError, match="total_epochs"):
    T.progressive_self_knowledge(alpha_final=0.8, total_epochs=None, steps_per_epoch=3)


def test_min_rank_matches_scipy():
  scores = np.array([[3, 1, 3, 0, 2, 2], [0, 0, 0, 0, 5, 1]], np.float32)
  np.testing.assert_array_equal(T.min_rank(jnp.asarray(scores)),
                                stats.rankdata(-scores, axis=1, method="min"))


def test_dense_votes_upsample_like_pytorch():
  rng = np.random.default_rng(1)
  dense = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
  upsampled = jax.image.resize(dense, (2, 6, 8, 5), "bilinear")
  np.testing.assert_allclose(upsampled, torch_bilinear_x2(dense), rtol=1e-5, atol=1e-6)
  want = np.stack([np.bincount(torch_bilinear_x2(dense)[b].argmax(-1).ravel(), minlength=5)
                   for b in range(2)])
  np.testing.assert_array_equal(T.dense_votes(dense, upsample=2), want)
  plain = np.stack([np.bincount(dense[b].argmax(-1).ravel(), minlength=5) for b in range(2)])
  np.testing.assert_array_equal(T.dense_votes(dense, upsample=1), plain)


def test_zipf_targets_match_official_gen_pdf():
  rng = np.random.default_rng(2)
  dense = rng.normal(size=(3, 2, 2, 6)).astype(np.float32)
  labels = np.array([0, 4, 5])
  for power in (1.0, 1.5):
    q, _ = run(T.zipf_targets(power=power, upsample=1), ctx_for(labels, num_classes=6,
                                                          dense_logits=dense))
    # gen_pdf(rank_zipf, dense, rank='hard'): votes, rankdata(-votes, 'min'), (1/rank)**power,
    # target column removed, renormalised.
    votes = np.stack([np.bincount(dense[b].argmax(-1).ravel(), minlength=6) for b in range(3)])
    dist = (1 / stats.rankdata(-votes, axis=1, method="min")) ** power
    for b in range(3):
      kept = np.delete(dist[b], labels[b])
      np.testing.assert_allclose(np.delete(q[b], labels[b]), kept / kept.sum(), rtol=1e-6)
      assert q[b, labels[b]] == 0.0
  with pytest.raises(ValueError, match="upsample=0"):
    T.zipf_targets(upsample=0)


def test_class_relation_matrix_and_targets():
  rng = np.random.default_rng(3)
  reps = rng.normal(size=(4, 3)).astype(np.float32)
  unit = reps / np.linalg.norm(reps, axis=1, keepdims=True)
  scores = unit @ unit.T / 0.5
  want = np.zeros((4, 4))
  for k in range(4):
    others = [j for j in range(4) if j != k]
    want[k, others] = np_softmax(scores[k, others])
  np.testing.assert_allclose(T.class_relation_matrix(reps, temperature=0.5), want, rtol=1e-5,
                             atol=1e-7)
  ctx = ctx_for([2, 0], class_embeddings=reps)
  q, _ = run(T.class_relation(smoothing=0.1, relation_temperature=0.5), ctx)
  np.testing.assert_allclose(q, 0.9 * np.eye(4)[[2, 0]] + 0.1 * want[[2, 0]], rtol=1e-5)


def test_class_relation_ema_prototypes():
  relation = T.class_relation(smoothing=0.1, relation_temperature=0.5,
                              representatives="ema", momentum=0.5)
  features = np.array([[1., 0.], [3., 2.], [0., 4.]], np.float32)
  ctx = ctx_for([1, 1, 3], features=features)
  q, state = run(relation, ctx, feature_dim=2)
  # Zero prototypes: cosine 0 everywhere, so the relation is uniform over the other classes.
  np.testing.assert_allclose(q[0], [0.1 / 3, 0.9, 0.1 / 3, 0.1 / 3], rtol=1e-6)
  np.testing.assert_allclose(state.prototypes, [[0, 0], [1, 0.5], [0, 0], [0, 2]])
  with pytest.raises(ValueError, match="feature_dim"):
    relation.init(num_classes=4)
  with pytest.raises(ValueError, match="representatives='rows'"):
    T.class_relation(smoothing=0.1, relation_temperature=0.5, representatives="rows")


def test_chain_composes_left_to_right():
  ctx = ctx_for([1, 2])
  both, state = run(T.chain(T.label_smoothing(smoothing=0.2), T.teacher_correction(weight=0.5)),
                    ctx)
  smooth = 0.8 * np.eye(4)[[1, 2]] + 0.05
  np.testing.assert_allclose(both, 0.5 * smooth + 0.5 * np.eye(4)[[1, 2]], rtol=1e-6)
  assert state == (T.EmptyState(), T.EmptyState())


def test_schedules_compile_once_and_track_the_step():
  schedule = optax.linear_schedule(0.0, 0.4, transition_steps=4)
  transform = T.chain(T.label_smoothing(smoothing=schedule),
                      T.soften(temperature=optax.constant_schedule(2.0)))
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def targets_at(step):
    return run(transform, ctx_for([0, 3], step=step))[0]

  for step in range(4):
    fixed = T.chain(T.label_smoothing(smoothing=float(schedule(step))),
                    T.soften(temperature=2.0))
    want, _ = run(fixed, ctx_for([0, 3]))
    np.testing.assert_allclose(targets_at(jnp.asarray(step)), want, rtol=1e-6)

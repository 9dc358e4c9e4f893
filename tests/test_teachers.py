"""jaxkd.teachers: each teacher's state and logits against plain statements of what it is."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import models, teachers


def _inputs(model, x, student, batch=None, outputs=None):
  return teachers.TeacherInputs(model=model, inputs=x, student=student, outputs=outputs or {},
                                batch=batch or {}, load=None, rng=jax.random.PRNGKey(0))


def test_ema_teacher_averages_weights_and_statistics():
  params = {"w": np.array([1.0, -2.0], np.float32)}
  stats = {"m": np.array([0.5], np.float32)}
  teacher = teachers.ema(decay=0.9)
  state = teacher.init({"params": params, "batch_stats": stats})
  want_w, want_m = params["w"].astype(np.float64), stats["m"].astype(np.float64)
  for step, (w, m) in enumerate([([3.0, 0.0], [1.5]), ([5.0, 4.0], [-0.5])], start=1):
    new = {"params": {"w": np.array(w, np.float32)}, "batch_stats": {"m": np.array(m, np.float32)}}
    state = jax.jit(teacher.update)(state, new, step)
    want_w = 0.9 * want_w + 0.1 * np.array(w)
    want_m = 0.9 * want_m + 0.1 * np.array(m)
  np.testing.assert_allclose(state.state["params"]["w"], want_w, rtol=1e-6)
  np.testing.assert_allclose(state.state["batch_stats"]["m"], want_m, rtol=1e-6)
  copied = teachers.ema(decay=0.9, average_batch_stats=False).update(
      state, {"params": params, "batch_stats": {"m": np.array([7.0], np.float32)}}, 3)
  np.testing.assert_array_equal(copied.state["batch_stats"]["m"], [7.0])


def test_ema_teacher_with_decay_zero_is_the_current_student():
  model = models.get("mlp", num_classes=10)
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
  first = model.init(jax.random.PRNGKey(2), x)
  later = model.init(jax.random.PRNGKey(3), x)
  teacher = teachers.ema(decay=lambda step: jnp.where(step > 0, 0.0, 0.5))
  state = teacher.update(teacher.init(first), later, 1)
  out = teacher.logits(state, None, _inputs(model, x, later))
  np.testing.assert_allclose(out.logits, model.apply(later, x)["logits"], rtol=1e-6)
  assert out.mask is None and out.batch_stats is None


def test_frozen_teacher_runs_its_own_variables():
  model = models.get("small_cnn", num_classes=10)
  x = jax.random.normal(jax.random.PRNGKey(4), (4, 8, 8, 1))
  variables = model.init(jax.random.PRNGKey(5), x)
  teacher = teachers.frozen(model, variables)
  out = teacher.logits(teacher.init(None), teacher.consts, _inputs(model, x, None))
  np.testing.assert_allclose(out.logits, model.apply(variables, x)["logits"], rtol=1e-6)


def test_unbound_run_teacher_says_how_to_bind_it():
  with pytest.raises(ValueError, match="not loaded yet; call its setup"):
    teachers.from_run().logits(None, None, None)


def test_partner_teacher_draws_same_class_partners_on_the_host():
  labels = np.array([0, 1, 0, 1, 0, 1], np.int32)
  order = np.array([[0, 1, 2], [3, 4, 5]])
  rows = teachers.partner().host_batch(labels, order, seed=0, epoch=0)["partners"]
  assert rows.shape == order.shape
  np.testing.assert_array_equal(labels[rows], labels[order])
  assert not np.any(rows == order)


def test_aux_head_logits_are_a_linear_map_of_stop_gradient_features():
  features = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
  teacher = teachers.aux_head(seed=0)
  state = teacher.init(None, num_classes=5, feature_dim=3)
  out = teacher.logits(state, None, _inputs(None, None, None, outputs={"features": features}))
  kernel, bias = (np.asarray(state.params[k], np.float64) for k in ("kernel", "bias"))
  np.testing.assert_allclose(out.logits, features @ kernel + bias, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.class_embeddings, kernel.T, rtol=1e-6)
  grad = jax.grad(lambda f: teacher.logits(state, None, _inputs(
      None, None, None, outputs={"features": f})).logits.sum())(features)
  np.testing.assert_array_equal(grad, 0.0)  # the head never trains the student's features


@pytest.mark.slow
def test_replay_learned_ensemble_is_a_linear_layer_over_the_backups():
  """MrKD's learned combiner starts as the logit average and is trained by CE on its output."""
  model = models.get("mlp", num_classes=10)
  x = jax.random.normal(jax.random.PRNGKey(6), (4, 8, 8, 1))
  backups = [model.init(jax.random.PRNGKey(seed), x) for seed in (7, 8)]
  teacher = teachers.replay(num_backups=2, combine="learned")
  state = teacher.init(backups[0], num_classes=10)
  ring = teachers.ReplayRing(params=jax.tree.map(lambda *a: jnp.stack(a),
                                                 *[b["params"] for b in backups]),
                             batch_stats={}, refreshes=jnp.int32(2))
  state = state.replace(state=ring)
  members = np.stack([np.asarray(model.apply(b, x)["logits"], np.float64) for b in backups])
  out = teacher.logits(state, None, _inputs(model, x, None))
  np.testing.assert_allclose(out.logits, members.mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(out.mask, [True])
  half = teacher.logits(state.replace(state=ring.replace(refreshes=jnp.int32(1))), None,
                        _inputs(model, x, None))
  np.testing.assert_allclose(half.logits, members[0] / 2, rtol=1e-5, atol=1e-6)  # slot 1 empty
  labels = np.array([0, 3, 3, 9])

  def ce(params):
    z = teacher.logits(state.replace(params=params), None, _inputs(model, x, None)).logits
    return -jnp.mean(jax.nn.log_softmax(z)[jnp.arange(4), labels])

  grad = jax.grad(ce)(state.params)
  inputs = np.concatenate(list(members), axis=-1)  # [B, n K], backup-major as the layer reads
  probs = np.exp(members.mean(0) - members.mean(0).max(1, keepdims=True))
  residual = (probs / probs.sum(1, keepdims=True) - np.eye(10)[labels]) / 4
  np.testing.assert_allclose(grad["kernel"], inputs.T @ residual, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="combine='vote' is not allowed; allowed: mean, learned"):
    teachers.replay(combine="vote")


@pytest.mark.slow
def test_mrkd_learned_ensemble_trains_its_combiner_in_the_step():
  from jaxkd import train
  from jaxkd.config import defaults
  config = defaults.get_config("smoke")
  config.mesh.data = 1
  config.method = {"name": "mrkd", "ensemble": "learned", "num_backups": 2,
                   "refresh_every": 1, "start_from_init": True}
  trainer = train.build(config)
  state, batches = trainer.init_state(), trainer.batches()
  start = jax.device_get(state.teacher.params)
  for step in range(3):
    state, metrics = trainer.steps.train(state, trainer.consts, batches.get(step))
  assert np.isfinite(float(metrics["ensemble_ce"])) and float(metrics["ensemble_ce"]) > 0
  moved = np.abs(np.asarray(state.teacher.params["kernel"]) - start["kernel"]).max()
  assert moved > 1e-6, "the combiner is trained with the student"


@pytest.mark.parametrize("refresh_every,start_from_init,inactive", [
    (3, False, 3), (5, False, 5), (3, True, 0), (None, False, 0)])
def test_replay_teacher_reports_the_steps_before_its_first_snapshot(refresh_every,
                                                                   start_from_init, inactive):
  teacher = teachers.replay(num_backups=2, refresh_every=refresh_every,
                            start_from_init=start_from_init)
  assert teacher.inactive_steps == inactive
  if refresh_every is None:
    return
  student = {"params": {"w": np.ones(2, np.float32)}, "batch_stats": {}}
  state = teacher.init(student)
  masks = []
  for step in range(12):  # as the training step: logits at step t, then update to t + 1
    masks.append(bool(state.state.filled().any()))
    state = teacher.update(state, student, step + 1)
  assert masks == [False] * inactive + [True] * (12 - inactive)


def test_teachers_without_a_warm_up_are_active_from_the_first_step():
  assert teachers.ema().inactive_steps == 0 and teachers.partner().inactive_steps == 0
  assert teachers.aux_head().inactive_steps == 0 and teachers.from_run().inactive_steps == 0

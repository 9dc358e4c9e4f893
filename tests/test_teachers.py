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

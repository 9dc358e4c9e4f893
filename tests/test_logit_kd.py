"""DKD, DIST, logit standardization, CTKD and teacher ensembles against their official formulas.

Every reference below restates the official PyTorch code in float64 numpy (the file each comes
from is named); the library runs in float32 and must agree to 1e-5.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import losses
from jaxkd import objectives
from jaxkd import targets
from jaxkd import teachers

TOL = 1e-5


def _softmax(z):
  z = z - z.max(-1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(-1, keepdims=True)


def _log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _kl_div_sum(log_input, target):
  """``F.kl_div(log_input, target, reduction="sum")`` (0 where target is 0)."""
  safe = np.where(target > 0, target, 1.0)
  return np.sum(np.where(target > 0, target * (np.log(safe) - log_input), 0.0))


def _ce(z, y):
  return -np.mean(_log_softmax(z)[np.arange(len(y)), y])


def _normalize(z):
  """logit-standardization-KD ``normalize``: torch's unbiased std, 1e-7 added to it."""
  return (z - z.mean(-1, keepdims=True)) / (1e-7 + z.std(-1, ddof=1, keepdims=True))


def _kd_term(zs, zt, T, logit_stand=False):
  """logit-standardization-KD ``KD.py`` ``kd_loss``: KL summed over classes, batch mean, T^2."""
  if logit_stand:
    zs, zt = _normalize(zs), _normalize(zt)
  pt = _softmax(zt / T)
  return _kl_div_sum(_log_softmax(zs / T), pt) / len(zs) * T * T


def _dkd_term(zs, zt, y, alpha, beta, T, logit_stand=False):
  """mdistiller ``DKD.py`` ``dkd_loss`` (and the logit-standardization fork's)."""
  if logit_stand:
    zs, zt = _normalize(zs), _normalize(zt)
  gt = np.zeros_like(zs)
  gt[np.arange(len(y)), y] = 1.0
  ps, pt = _softmax(zs / T), _softmax(zt / T)
  cat = lambda p: np.stack([(p * gt).sum(1), (p * (1 - gt)).sum(1)], 1)
  tckd = _kl_div_sum(np.log(cat(ps)), cat(pt)) * T ** 2 / len(y)
  pt2 = _softmax(zt / T - 1000.0 * gt)
  log_ps2 = _log_softmax(zs / T - 1000.0 * gt)
  nckd = _kl_div_sum(log_ps2, pt2) * T ** 2 / len(y)
  return alpha * tckd + beta * nckd


def _pearson(a, b, eps=1e-8):
  a = a - a.mean(1, keepdims=True)
  b = b - b.mean(1, keepdims=True)
  return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + eps)


def _dist_term(zs, zt, beta, gamma, tau):
  """DIST ``dist_kd.py``: ``tau^2 (beta inter + gamma intra)``."""
  ys, yt = _softmax(zs / tau), _softmax(zt / tau)
  inter = 1 - _pearson(ys, yt).mean()
  intra = 1 - _pearson(ys.T, yt.T).mean()
  return tau ** 2 * (beta * inter + gamma * intra)


def _batch(num_classes, batch=16, seed=0, members=None):
  rng = np.random.default_rng(seed + num_classes)
  zs = rng.normal(0, 3, (batch, num_classes))
  shape = (batch, num_classes) if members is None else (members, batch, num_classes)
  zt = rng.normal(0, 3, shape) + 0.5
  y = rng.integers(0, num_classes, batch)
  return zs, zt, y


def _loss(name, zs, zt, y, step=0, **hparams):
  obj = objectives.get(name, **hparams)
  state = obj.init(num_classes=zs.shape[-1])
  loss, metrics, _ = obj.loss(jnp.asarray(zs, jnp.float32), jnp.asarray(y), state, step=step,
                              teacher_logits=jnp.asarray(zt, jnp.float32))
  return float(loss), metrics


def _close(got, want):
  diff = abs(got - want)
  assert diff <= TOL * max(1.0, abs(want)), (got, want, diff)
  return diff


# ---------------------------------------------------------------------------------- DKD


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("hp", [
    {},  # mdistiller's CIFAR defaults: alpha 1, beta 8, T 4, CE 1, warm-up 20
    {"beta": 0.5, "temperature": 1.0, "warmup_epochs": 1},  # its ImageNet setting
    {"alpha": 2.0, "beta": 3.0, "temperature": 2.0, "ce_weight": 0.5, "warmup_epochs": 0},
    {"logit_standardization": True, "beta": 2.0},
])
def test_dkd_equals_mdistiller(num_classes, hp):
  zs, zt, y = _batch(num_classes)
  spe, step = 7, 30  # epoch 30 // 7 + 1 = 5
  full = dict(alpha=1.0, beta=8.0, temperature=4.0, ce_weight=1.0, warmup_epochs=20,
              logit_standardization=False)
  full.update(hp)
  got, metrics = _loss("dkd", zs, zt, y, step=step, steps_per_epoch=spe, **hp)
  warm = min(5 / full["warmup_epochs"], 1.0) if full["warmup_epochs"] else 1.0
  want = full["ce_weight"] * _ce(zs, y) + warm * _dkd_term(
      zs, zt, y, full["alpha"], full["beta"], full["temperature"],
      full["logit_standardization"])
  _close(got, want)
  assert set(metrics) >= {"ce", "tckd", "nckd", "loss"}


def test_dkd_warmup_counts_epochs_from_one_and_is_constant_within_an_epoch():
  zs, zt, y = _batch(10)
  obj = objectives.get("dkd", warmup_epochs=4, steps_per_epoch=5, ce_weight=0.0)
  args = (jnp.asarray(zs, jnp.float32), jnp.asarray(y), {})
  at = lambda s: float(obj.loss(*args, step=s, teacher_logits=jnp.asarray(zt, jnp.float32))[0])
  full = _dkd_term(zs, zt, y, 1.0, 8.0, 4.0)
  for step, epoch in [(0, 1), (4, 1), (5, 2), (9, 2), (15, 4), (100, 4)]:
    _close(at(step), min(epoch / 4, 1.0) * full)


def test_dkd_needs_steps_per_epoch_only_for_its_warmup():
  with pytest.raises(ValueError, match="dkd needs hparam steps_per_epoch"):
    objectives.get("dkd").init(num_classes=10)
  objectives.get("dkd", warmup_epochs=0).init(num_classes=10)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_tckd_plus_weighted_nckd_is_kd_per_example(num_classes):
  """Zhao et al.'s decomposition: KD = TCKD + (1 - t_y) NCKD, t the teacher's probabilities."""
  zs, zt, y = _batch(num_classes)
  q = jax.nn.softmax(jnp.asarray(zt, jnp.float32) / 2.0)
  zs = jnp.asarray(zs, jnp.float32)
  kd = losses.kl_divergence(zs, q, temperature=2.0)
  tckd = losses.target_binary_kl(zs, q, jnp.asarray(y), temperature=2.0)
  nckd = losses.non_target_kl(zs, q, jnp.asarray(y), temperature=2.0)
  rest = 1.0 - q[np.arange(len(y)), y]
  np.testing.assert_allclose(tckd + rest * nckd, kd, rtol=1e-5, atol=1e-6)


def test_tckd_stays_finite_where_the_official_log_of_a_sum_underflows():
  zs = jnp.asarray([[200.0, 0.0, 0.0]])  # softmax rest mass underflows to 0 in float32
  q = jnp.asarray([[0.5, 0.25, 0.25]])
  value = losses.target_binary_kl(zs, q, jnp.asarray([0]))
  np.testing.assert_allclose(value, 0.5 * math.log(0.5) + 0.5 * (math.log(0.5) + 200.0 -
                                                                 math.log(2.0)), rtol=1e-5)


# ------------------------------------------------------------------ logit standardization


@pytest.mark.parametrize("num_classes", [10, 100])
def test_kd_with_logit_standardization_equals_the_official_kd(num_classes):
  """Their CIFAR setting (CE 0.1, KD 9, T 2) is kd with alpha 0.9, multiplier 10, T 2."""
  zs, zt, y = _batch(num_classes)
  got, _ = _loss("kd", zs, zt, y, alpha=0.9, multiplier=10.0, temperature=2.0,
                 kl_reduction="batchmean", logit_standardization=True)
  _close(got, 0.1 * _ce(zs, y) + 9.0 * _kd_term(zs, zt, 2.0, logit_stand=True))
  plain, _ = _loss("kd", zs, zt, y)
  _close(plain, 0.1 * _ce(zs, y) + 0.9 * _kd_term(zs, zt, 4.0))


def test_standardize_logits_uses_the_unbiased_std_and_ignores_shift_and_scale():
  z = np.random.default_rng(1).normal(0, 2, (4, 10))
  got = np.asarray(targets.standardize_logits(jnp.asarray(z, jnp.float32)))
  np.testing.assert_allclose(got, _normalize(z), rtol=1e-5, atol=1e-5)
  moved = np.asarray(targets.standardize_logits(jnp.asarray(3.0 * z - 7.0, jnp.float32)))
  np.testing.assert_allclose(moved, got, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got.std(-1, ddof=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("name", ["kd", "dkd"])
def test_logit_standardization_makes_the_loss_blind_to_the_students_scale(name):
  zs, zt, y = _batch(10)
  hp = dict(logit_standardization=True, alpha=1.0) if name == "kd" else dict(
      logit_standardization=True, ce_weight=0.0, warmup_epochs=0)
  base, _ = _loss(name, zs, zt, y, **hp)
  moved, _ = _loss(name, 2.5 * zs + 4.0, zt, y, **hp)
  _close(moved, base)
  unstandardized, _ = _loss(name, 2.5 * zs + 4.0, zt, y,
                            **{**hp, "logit_standardization": False})
  assert abs(unstandardized - base) > 1e-2


def test_cross_entropy_sees_the_raw_logits_under_logit_standardization():
  zs, zt, y = _batch(10)
  _, metrics = _loss("kd", zs, zt, y, logit_standardization=True)
  _close(float(metrics["ce"]), _ce(zs, y))


# ---------------------------------------------------------------------------------- DIST


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("hp", [{}, {"beta": 2.0, "gamma": 0.5, "temperature": 4.0,
                                     "ce_weight": 0.3}])
def test_dist_equals_the_official_loss(num_classes, hp):
  zs, zt, y = _batch(num_classes)
  full = {**dict(beta=1.0, gamma=1.0, temperature=1.0, ce_weight=1.0), **hp}
  got, metrics = _loss("dist", zs, zt, y, **hp)
  _close(got, full["ce_weight"] * _ce(zs, y) + _dist_term(
      zs, zt, full["beta"], full["gamma"], full["temperature"]))
  assert set(metrics) >= {"inter", "intra"}


def test_dist_is_zero_for_a_student_equal_to_its_teacher():
  zs, _, y = _batch(10)
  got, metrics = _loss("dist", zs, zs, y, ce_weight=0.0)
  assert abs(got) < 1e-5 and abs(float(metrics["intra"])) < 1e-5


# ---------------------------------------------------------------------------------- CTKD


def _ctkd_loss(zs, zt, y, tau, step, **hp):
  obj = objectives.get("ctkd", steps_per_epoch=5, **hp)

  def f(t):
    return obj.loss(jnp.asarray(zs, jnp.float32), jnp.asarray(y), {}, step=step,
                    teacher_logits=jnp.asarray(zt, jnp.float32), teacher_temperature=t)

  return f, jnp.float32(tau)


def _cosine_decay(i, max_value=0.0, min_value=-1.0, loops=10):
  """CTKD ``train_student.py`` ``CosineDecay.get_value``."""
  i = min(max(i, 0), loops)
  return (math.cos(i * math.pi / loops) + 1.0) * 0.5 * (max_value - min_value) + min_value


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("standardize", [False, True])
def test_ctkd_forward_is_kd_at_the_learned_temperature(num_classes, standardize):
  zs, zt, y = _batch(num_classes)
  tau = float(teachers.temperature_of(jnp.float32(1.0), t_start=1.0, t_end=20.0))
  np.testing.assert_allclose(tau, 1.0 + 20.0 / (1.0 + math.exp(-1.0)), rtol=1e-6)
  f, t = _ctkd_loss(zs, zt, y, tau, step=12, logit_standardization=standardize)
  loss, metrics, _ = f(t)
  _close(float(loss), 0.1 * _ce(zs, y) + 0.9 * _kd_term(zs, zt, tau, standardize))
  np.testing.assert_allclose(float(metrics["temperature"]), tau, rtol=1e-6)


@pytest.mark.parametrize("step", [0, 12, 22, 49, 80])
def test_ctkd_temperature_gradient_is_the_reversed_kd_gradient(step):
  """d loss / d tau = lambda(epoch) * d (a tau^2 KL) / d tau, lambda from 0 to -1 (cosine)."""
  zs, zt, y = _batch(10)
  tau = 3.0
  f, t = _ctkd_loss(zs, zt, y, tau, step=step)
  got = float(jax.grad(lambda x: f(x)[0])(t))
  h = 1e-4  # central finite difference of the float64 reference
  want_plain = 0.9 * (_kd_term(zs, zt, tau + h) - _kd_term(zs, zt, tau - h)) / (2 * h)
  factor = _cosine_decay(step // 5 + 1)
  np.testing.assert_allclose(got, factor * want_plain, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(
      float(objectives._methods.ctkd_gradient_factor(step, steps_per_epoch=5, decay_max=0.0,
                                                     decay_min=-1.0, decay_loops=10.0)),
      factor, rtol=1e-6, atol=1e-7)
  # the student's gradient is the plain KD one
  g_student = jax.grad(lambda z: objectives.get("ctkd", steps_per_epoch=5).loss(
      z, jnp.asarray(y), {}, step=step, teacher_logits=jnp.asarray(zt, jnp.float32),
      teacher_temperature=t)[0])(jnp.asarray(zs, jnp.float32))
  g_kd = jax.grad(lambda z: objectives.get("kd", temperature=tau).loss(
      z, jnp.asarray(y), {}, step=step, teacher_logits=jnp.asarray(zt, jnp.float32))[0])(
          jnp.asarray(zs, jnp.float32))
  np.testing.assert_allclose(g_student, g_kd, rtol=1e-5, atol=1e-7)


def test_ctkd_teacher_trains_theta_against_the_student():
  """The learned-temperature teacher: theta gets lambda * dL/dtau * dtau/dtheta."""
  zs, zt, y = _batch(10)
  model_logits = jnp.asarray(zt, jnp.float32)
  base = teachers.Teacher(init=lambda student, **_: teachers.TeacherState(),
                          logits=lambda s, c, i: teachers.TeacherOutput(model_logits))
  teacher = teachers.learned_temperature(base, t_start=1.0, t_end=20.0, init=0.3)
  state = teacher.init({}, num_classes=10, feature_dim=4)
  obj = objectives.get("ctkd", steps_per_epoch=5)

  def loss(params):
    out = teacher.logits(state.replace(params=params), None, None)
    return obj.loss(jnp.asarray(zs, jnp.float32), jnp.asarray(y), {}, step=40,
                    teacher_logits=out.logits, teacher_temperature=out.temperature)[0]

  got = float(jax.grad(loss)(state.params)["theta"])
  sig = 1.0 / (1.0 + math.exp(-0.3))
  tau = 1.0 + 20.0 * sig
  h = 1e-4
  dkd_dtau = 0.9 * (_kd_term(zs, zt, tau + h) - _kd_term(zs, zt, tau - h)) / (2 * h)
  want = _cosine_decay(40 // 5 + 1) * dkd_dtau * 20.0 * sig * (1 - sig)
  np.testing.assert_allclose(got, want, rtol=1e-4)


# ------------------------------------------------------------------------------ ensembles


@pytest.mark.parametrize("name,hp", [("kd", {}), ("dkd", {"warmup_epochs": 0}),
                                     ("dist", {"temperature": 2.0})])
@pytest.mark.parametrize("ensemble", ["probs", "kl"])
def test_one_teacher_or_identical_teachers_are_the_single_teacher(name, hp, ensemble):
  zs, zt, y = _batch(10)
  single, _ = _loss(name, zs, zt, y, **hp)
  one, _ = _loss(name, zs, zt[None], y, ensemble=ensemble, teacher_weights=(2.0,), **hp)
  same, _ = _loss(name, zs, np.stack([zt, zt, zt]), y, ensemble=ensemble,
                  teacher_weights=(0.2, 0.3, 0.5), **hp)
  _close(one, single)
  _close(same, single)


def _mixture_kd(zs, zt, y, w, T=4.0, alpha=0.9):
  w = np.asarray(w) / np.sum(w)
  mix = sum(wm * _softmax(z / T) for wm, z in zip(w, zt))
  return (1 - alpha) * _ce(zs, y) + alpha * T * T * _kl_div_sum(_log_softmax(zs / T),
                                                                mix) / len(zs)


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("weights", [(), (0.5, 0.3, 0.2)])
def test_kd_ensemble_forms_equal_their_formulas(num_classes, weights):
  zs, zt, y = _batch(num_classes, members=3)
  w = weights or (1.0, 1.0, 1.0)
  probs, _ = _loss("kd", zs, zt, y, ensemble="probs", teacher_weights=weights)
  _close(probs, _mixture_kd(zs, zt, y, w))
  kl, _ = _loss("kd", zs, zt, y, ensemble="kl", teacher_weights=weights)
  wn = np.asarray(w) / np.sum(w)
  _close(kl, 0.1 * _ce(zs, y) + 0.9 * sum(wm * _kd_term(zs, z, 4.0) for wm, z in zip(wn, zt)))
  # the two forms differ by a constant in the student (the teachers' Jensen gap)
  g = lambda form: jax.grad(lambda z: objectives.get("kd", ensemble=form,
                                                     teacher_weights=weights).loss(
      z, jnp.asarray(y), {}, step=0, teacher_logits=jnp.asarray(zt, jnp.float32))[0])(
          jnp.asarray(zs, jnp.float32))
  np.testing.assert_allclose(g("probs"), g("kl"), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_dkd_and_dist_ensembles_equal_their_formulas(num_classes):
  zs, zt, y = _batch(num_classes, members=2)
  w = np.asarray([0.25, 0.75])
  kl, _ = _loss("dist", zs, zt, y, ensemble="kl", teacher_weights=tuple(w))
  _close(kl, _ce(zs, y) + sum(wm * _dist_term(zs, z, 1.0, 1.0, 1.0) for wm, z in zip(w, zt)))
  kl, _ = _loss("dkd", zs, zt, y, ensemble="kl", teacher_weights=tuple(w), warmup_epochs=0)
  _close(kl, _ce(zs, y) + sum(wm * _dkd_term(zs, z, y, 1.0, 8.0, 4.0) for wm, z in zip(w, zt)))
  # "probs": DIST against the mixture of the tempered probabilities
  mix = sum(wm * _softmax(z) for wm, z in zip(w, zt))
  ys = _softmax(zs)
  want = _ce(zs, y) + (1 - _pearson(ys, mix).mean()) + (1 - _pearson(ys.T, mix.T).mean())
  probs, _ = _loss("dist", zs, zt, y, ensemble="probs", teacher_weights=tuple(w))
  _close(probs, want)


def test_teacher_weights_must_match_the_teachers():
  zs, zt, y = _batch(10, members=3)
  with pytest.raises(ValueError, match=r"teacher_weights=\(1\.0, 2\.0\) has 2 weights for 3"):
    _loss("kd", zs, zt, y, ensemble="kl", teacher_weights=(1.0, 2.0))
  with pytest.raises(ValueError, match=r"kd\.teacher_weights=\(0\.0, 0\.0\) is not allowed"):
    objectives.get("kd", teacher_weights=(0.0, 0.0))
  with pytest.raises(ValueError, match=r"kd\.ensemble='vote' is not allowed; allowed: "
                                       r"one of 'probs', 'kl'"):
    objectives.get("kd", ensemble="vote")


def test_workdirs_accepts_one_run_a_comma_list_or_a_list():
  assert teachers.workdirs("/a") == ["/a"]
  assert teachers.workdirs("/a, /b,/c") == ["/a", "/b", "/c"]
  assert teachers.workdirs(["/a", "/b"]) == ["/a", "/b"]
  assert teachers.workdirs("") == []


def test_ensemble_teacher_stacks_its_members_logits():
  make = lambda v: teachers.Teacher(
      init=lambda student, **_: teachers.TeacherState(),
      logits=lambda s, c, i: teachers.TeacherOutput(jnp.full((2, 3), c, jnp.bfloat16)),
      consts=v)
  ens = teachers.ensemble([make(1.0), make(2.0)])
  out = ens.logits(teachers.TeacherState(), ens.consts, None)
  assert out.logits.dtype == jnp.float32
  np.testing.assert_array_equal(out.logits[:, 0, 0], [1.0, 2.0])


@pytest.mark.slow
def test_ctkd_trains_its_temperature_in_the_step_and_logs_it():
  """Through the engine: theta is trained with the student, the metric is tau before the step."""
  from jaxkd import train  # pylint: disable=import-outside-toplevel
  from jaxkd.config import defaults  # pylint: disable=import-outside-toplevel
  config = defaults.get_config("smoke")
  config.mesh.data = 1
  config.method = {"name": "ctkd"}
  self_teacher = teachers.Teacher(  # the student's own logits, doubled, stop-gradient
      init=lambda student, **_: teachers.TeacherState(),
      logits=lambda s, c, i: teachers.TeacherOutput(
          2.0 * jax.lax.stop_gradient(i.outputs["logits"])))
  teacher = teachers.learned_temperature(self_teacher, t_start=1.0, t_end=20.0, init=0.0)
  trainer = train.build(config, teacher=teacher)
  state, batches = trainer.init_state(), trainer.batches()
  for step in range(3):
    theta = float(state.teacher.params["theta"])
    state, metrics = trainer.steps.train(state, trainer.consts, batches.get(step))
    np.testing.assert_allclose(float(metrics["temperature"]), 1.0 + 20.0 / (1.0 + math.exp(
        -theta)), rtol=1e-6)
  assert abs(float(state.teacher.params["theta"])) > 1e-7, "theta is trained with the student"

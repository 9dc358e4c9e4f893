"""Objective properties, teacher gating, the RAS-KD head, the API and its errors."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxkd import objectives, teachers


def logits_and_labels(batch=8, classes=5, seed=0, scale=2.0):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, classes, batch)
  return (rng.normal(size=(batch, classes)) * scale).astype(np.float32), labels


def loss_and_grad(obj, z, y, **kw):
  state = obj.init(num_classes=z.shape[-1])
  (loss, metrics), grad = jax.value_and_grad(
      lambda z: obj.loss(z, y, state, step=0, **kw)[:2], has_aux=True)(z)
  return loss, metrics, grad


def entropy(p):
  p = np.asarray(p, np.float64)
  return -(p * np.log(p)).sum(-1)


def test_lsrkd_at_temperature_one_is_label_smoothing():
  """(1-a) CE + a KL(u || s) = CE(z, (1-a) e_y + a u) - a H(u): same gradient, loss - a log K."""
  z, y = logits_and_labels()
  kd_loss, _, kd_grad = loss_and_grad(objectives.get("lsrkd", alpha=0.3, temperature=1.0), z, y)
  ls_loss, _, ls_grad = loss_and_grad(objectives.get("lsr", smoothing=0.3), z, y)
  np.testing.assert_allclose(kd_grad, ls_grad, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(kd_loss + 0.3 * np.log(5), ls_loss, rtol=1e-6)


def test_tfkd_reg_code_form_is_close_to_label_smoothing():
  """T=20, K=100, a=0.1, m=100, elementwise mean: within 1% of lsr(others, 0.1).

  The KL term differs from a cross-entropy by the target's entropy, a constant of the logits,
  so the losses are compared with it added back; the gradients are compared directly.
  """
  z, y = logits_and_labels(batch=16, classes=100, seed=1)
  obj = objectives.get("tfkd_reg")
  assert (obj.hparams["temperature"], obj.hparams["alpha"], obj.hparams["multiplier"],
          obj.hparams["form"]) == (20.0, 0.1, 100.0, "code")
  tf_loss, _, tf_grad = loss_and_grad(obj, z, y)
  ls_loss, _, ls_grad = loss_and_grad(objectives.get("lsr", smoothing=0.1, convention="others"),
                                      z, y)
  p_d = np.full(100, 0.01 / 99)
  p_d[0] = 0.99
  target = np.exp(p_d / 20) / np.exp(p_d / 20).sum()
  constant = 0.1 * 100 / 100 * entropy(target)
  np.testing.assert_allclose(tf_loss + constant, ls_loss, rtol=0.01)
  assert np.linalg.norm(tf_grad - ls_grad) < 0.01 * np.linalg.norm(ls_grad)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", ["kd", "tfkd_self", "mrkd", "cskd"])
def test_teacher_equal_to_student_gives_zero_kd_term(name, dtype):
  z, y = logits_and_labels(seed=2)
  z = jnp.asarray(z, dtype)
  obj = objectives.get(name)
  loss, metrics, _ = obj.loss(z, y, obj.init(num_classes=5), step=0, teacher_logits=z)
  np.testing.assert_allclose(metrics["kd"], 0.0, atol=1e-6)
  ce_weight = 1.0 if name == "cskd" else 1 - obj.hparams["alpha"]
  # Float32 rounding of the zero KD term is amplified by a m (47.5 for tfkd_self).
  np.testing.assert_allclose(loss, ce_weight * metrics["ce"], atol=1e-4)


@pytest.mark.parametrize("name,extra", [("mrkd", {}), ("mrkd_tc", {}),
                                        ("mrkd_tc", {"correction": "swap"})])
def test_replay_teacher_uses_only_filled_backups(name, extra):
  z, y = logits_and_labels(seed=3)
  backups = np.random.default_rng(4).normal(size=(3, 8, 5)).astype(np.float32)
  obj = objectives.get(name, num_backups=3, **extra)
  state = obj.init(num_classes=5)
  empty, metrics, _ = obj.loss(z, y, state, step=0, teacher_logits=backups,
                               teacher_mask=np.zeros(3, bool))
  np.testing.assert_allclose(empty, metrics["ce"], rtol=1e-6)  # plain CE, KD off
  assert float(metrics["kd"]) == 0.0
  grad_off = jax.grad(lambda z: obj.loss(z, y, state, step=0, teacher_logits=backups,
                                         teacher_mask=np.zeros(3, bool))[0])(z)
  grad_ce = jax.grad(lambda z: objectives.get("ce").loss(z, y, {}, step=0)[0])(z)
  np.testing.assert_allclose(grad_off, grad_ce, rtol=1e-6, atol=1e-8)
  partial, _, _ = obj.loss(z, y, state, step=0, teacher_logits=backups,
                           teacher_mask=np.array([False, True, False]))
  single, _, _ = obj.loss(z, y, state, step=0, teacher_logits=backups[1])
  np.testing.assert_allclose(partial, single, rtol=1e-6)


def test_ras_kd_head_is_a_trainable_teacher():
  z, y = logits_and_labels(seed=5)
  features = np.random.default_rng(6).normal(size=(8, 3)).astype(np.float32)
  obj = objectives.get("ras_kd")
  head = obj.teacher.init(None, num_classes=5, feature_dim=3).params
  again = obj.teacher.init(None, num_classes=5, feature_dim=3).params
  np.testing.assert_array_equal(head["kernel"], again["kernel"])
  other = objectives.get("ras_kd", seed=1).teacher.init(None, num_classes=5, feature_dim=3)
  assert not np.allclose(head["kernel"], other.params["kernel"])
  state = obj.init(num_classes=5, feature_dim=3)

  def loss(params):
    aux, rows = teachers.head_logits(params, features)
    return obj.loss(z, y, state, step=0, features=features, teacher_logits=aux,
                    class_embeddings=rows)

  grad = jax.grad(lambda p: loss(p)[0])(head)
  # Targets and the distillation teacher are stop-gradient: only CE(A f, y) reaches A.
  kernel, bias = (np.asarray(a, np.float64) for a in (head["kernel"], head["bias"]))
  aux = features @ kernel + bias
  probs = np.exp(aux - aux.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  residual = (probs - np.eye(5)[y]) / len(y)
  np.testing.assert_allclose(grad["kernel"], features.T @ residual, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(grad["bias"], residual.sum(0), rtol=1e-5, atol=1e-7)


def test_api_table():
  assert set(objectives.names()) == {
      "ce", "lsr", "kd", "tfkd_self", "tfkd_reg", "lsrkd", "lsrkd_tc", "mrkd", "mrkd_tc",
      "alr", "ols", "pskd", "cskd", "zipf", "ema_kd", "ras_kd", "dkd", "dist", "ctkd"}
  expect = {"dkd": ("frozen", {"teacher_logits"}), "dist": ("frozen", {"teacher_logits"}),
            "ctkd": ("frozen+T", {"teacher_logits", "teacher_temperature"}),
            "kd": ("frozen", {"teacher_logits"}), "tfkd_self": ("frozen", {"teacher_logits"}),
            "mrkd": ("replay", {"teacher_logits"}), "mrkd_tc": ("replay", {"teacher_logits"}),
            "cskd": ("partner", {"teacher_logits"}), "pskd": (None, {"example_ids"}),
            "zipf": (None, {"dense_logits"}), "ema_kd": ("ema", {"teacher_logits"}),
            "ras_kd": ("aux_head", {"features", "teacher_logits"})}
  for name in objectives.names():
    obj = objectives.get(name, **{k: 3 for k, v in objectives.defaults(name).items()
                                  if v is None})
    teacher = None if obj.teacher is None else obj.teacher.name
    assert (teacher, set(obj.requires)) == expect.get(name, (None, set())), name
    assert obj.hparams.keys() == objectives.defaults(name).keys()
    assert objectives.describe(name)
  assert objectives.defaults("tfkd_self") == {
      "alpha": 0.95, "temperature": 6.0, "multiplier": 50.0,
      "kl_reduction": "elementwise_mean", "temperature_squared": True, "teacher_top_k": 0,
      "smoothing": 0.0}
  params = {"w": np.ones(3, np.float32)}
  ring = objectives.get("mrkd", num_backups=2, start_from_init=True).teacher.init(
      {"params": params, "batch_stats": {}}, num_classes=5, feature_dim=3).state
  assert ring.num_backups == 2 and int(ring.refreshes) == 2
  np.testing.assert_array_equal(ring.params["w"], np.ones((2, 3)))


@pytest.mark.parametrize("call,match", [
    (lambda: objectives.get("kdd"), "unknown method 'kdd'; allowed: ce, lsr, kd"),
    (lambda: objectives.get("kd", alpah=0.5), "kd: unknown hparam 'alpah'; allowed: alpha"),
    (lambda: objectives.get("kd", alpha=1.5), r"kd.alpha=1.5 .*allowed: a float in \[0.0, 1.0\]"),
    (lambda: objectives.get("kd", temperature=0.0), r"kd.temperature=0.0 .*\(0.0, inf\]"),
    (lambda: objectives.get("kd", kl_reduction="sum"), "kd.kl_reduction='sum'.*'batchmean'"),
    (lambda: objectives.get("kd", temperature_squared=1), "temperature_squared=1 .*True or"),
    (lambda: objectives.get("tfkd_reg", form="eq9"), "tfkd_reg.form='eq9'.*'code', 'paper'"),
    (lambda: objectives.get("mrkd", num_backups=0), "mrkd.num_backups=0 .*int >= 1"),
    (lambda: objectives.get("zipf", upsample=1.5), "zipf.upsample=1.5 .*int >= 1"),
    (lambda: objectives.get("ols", steps_per_epoch=-2), "ols.steps_per_epoch=-2"),
    (lambda: objectives.get("ols").init(num_classes=5),
     "ols needs hparam steps_per_epoch .*engine or the config must set it"),
    (lambda: objectives.get("pskd", steps_per_epoch=2).init(num_classes=5, num_examples=4),
     "pskd needs hparam total_epochs"),
    (lambda: objectives.get("pskd", steps_per_epoch=2, total_epochs=3).init(num_classes=5),
     "needs num_examples"),
    (lambda: objectives.get("ras_kd").teacher.init(None, num_classes=5, feature_dim=None),
     "aux_head: feature_dim=None is not allowed"),
    (lambda: objectives.get("lsrkd_tc", correct_prob=0.1).init(num_classes=10),
     r"lsrkd_tc.correct_prob=0.1 is not allowed for K=10 classes; allowed: \(1/K, 1\)"),
    (lambda: objectives.get("ce").init(num_classes=1), "num_classes=1 .*int >= 2"),
])
def test_bad_configuration_is_rejected_by_name(call, match):
  with pytest.raises(ValueError, match=match):
    call()


@pytest.mark.parametrize("name,kw,match", [
    ("kd", {}, r"kd needs teacher_logits: the teacher's logits.*from its frozen teacher"),
    ("mrkd", {}, r"mrkd needs teacher_logits: .*from its replay teacher"),
    ("cskd", {}, r"cskd needs teacher_logits: .*from its partner teacher"),
    ("zipf", {}, "zipf needs dense_logits: per-position class scores"),
    ("ras_kd", {}, "ras_kd needs features"),
    ("kd", {"teacher_logits": np.zeros((8, 4))}, r"teacher_logits must be \[B, K\]"),
    ("mrkd", {"teacher_logits": np.zeros((2, 8, 5)), "teacher_mask": np.ones(3, bool)},
     r"teacher_mask must be bool \[2\]"),
    ("zipf", {"dense_logits": np.zeros((8, 2, 2, 4))}, "dense_logits must have shape"),
])
def test_missing_or_misshapen_inputs_are_rejected(name, kw, match):
  z, y = logits_and_labels()
  obj = objectives.get(name)
  state = obj.init(num_classes=5, feature_dim=3)
  with pytest.raises(ValueError, match=match):
    obj.loss(z, y, state, step=0, **kw)


def test_methods_derive_their_run_hparams_from_the_run_info(monkeypatch):
  """The engine passes one `RunInfo`; each method fills its own None hparams from it."""
  run = objectives.RunInfo(num_examples=100, steps_per_epoch=7, total_steps=30, num_classes=5)
  assert run.total_epochs == 5  # ceil(30 / 7): a last partial epoch counts
  got = {name: {k: v for k, v in objectives.get(name, run_info=run).hparams.items()
                if objectives.defaults(name)[k] is None}
         for name in objectives.names()}
  assert {name: hp for name, hp in got.items() if hp} == {
      "mrkd": {"refresh_every": 7}, "mrkd_tc": {"refresh_every": 7},
      "alr": {"steps_per_epoch": 7}, "ols": {"steps_per_epoch": 7},
      "pskd": {"steps_per_epoch": 7, "total_epochs": 5}, "dkd": {"steps_per_epoch": 7},
      "ctkd": {"steps_per_epoch": 7}}
  # A value the config gives wins over the derived one; without run info nothing is derived.
  assert objectives.get("mrkd", run_info=run, refresh_every=3).hparams["refresh_every"] == 3
  assert objectives.get("pskd").hparams["total_epochs"] is None
  # A user's Method: without derive it ignores the run info; with one, it reads it.
  from jaxkd import targets
  build = lambda hp: (objectives.Term("ce", targets.one_hot()),)
  plain = objectives.Method({"weight": objectives.Spec(1.0, objectives.real(0.0))}, build)
  epochs = objectives.Method(
      {"epochs": objectives.Spec(None, objectives.integer(1, optional=True))}, build,
      derive=lambda r: {"epochs": r.total_epochs})
  wrong = epochs._replace(derive=lambda r: {"epoch": r.total_epochs})
  for name, method in (("plain", plain), ("epochs", epochs), ("wrong", wrong)):
    monkeypatch.setitem(objectives._REGISTRY, name, method)
  assert objectives.get("plain", run_info=run).hparams == {"weight": 1.0}
  assert objectives.get("epochs", run_info=run).hparams == {"epochs": 5}
  with pytest.raises(ValueError, match=r"wrong: its derive\(\) gives hparam 'epoch'.*allowed: "
                     "epochs"):
    objectives.get("wrong", run_info=run)


def test_pskd_needs_example_ids():
  z, y = logits_and_labels()
  obj = objectives.get("pskd", steps_per_epoch=2, total_epochs=3)
  with pytest.raises(ValueError, match="pskd needs example_ids"):
    obj.loss(z, y, obj.init(num_classes=5, num_examples=10), step=0)


def test_hyperparameters_can_be_vmapped_over():
  """Several settings in one compiled step: a traced alpha/temperature is accepted as is."""
  z, y = logits_and_labels(seed=7)
  teacher = np.random.default_rng(8).normal(size=z.shape).astype(np.float32)
  alphas, temps = np.array([0.1, 0.5, 0.9], np.float32), np.array([1.0, 2.0, 4.0], np.float32)

  def loss(alpha, temperature):
    obj = objectives.get("kd", alpha=alpha, temperature=temperature)
    return obj.loss(z, y, {}, step=0, teacher_logits=teacher)[0]

  batched = jax.jit(jax.vmap(loss))(alphas, temps)
  for i in range(3):
    np.testing.assert_allclose(batched[i], loss(float(alphas[i]), float(temps[i])), rtol=1e-6)
  with pytest.raises(ValueError, match="kd.alpha=1.5 is not allowed"):
    objectives.get("kd", alpha=jnp.float32(1.5))


def test_user_recipe_from_terms_equals_the_built_in():
  from jaxkd import targets
  z, y = logits_and_labels(seed=9)
  teacher = np.random.default_rng(10).normal(size=z.shape).astype(np.float32)
  custom = objectives.Objective("my_kd", objectives.with_teacher_fallback([
      objectives.Term("ce", targets.label_smoothing(smoothing=0.0), 0.5),
      objectives.Term("kd", targets.teacher_softmax(temperature=4.0), 0.5, kind="kl",
                      temperature=4.0, temperature_squared=True),
  ], fallback=[objectives.Term("ce", targets.one_hot())]), requires=["teacher_logits"])
  built_in = objectives.get("kd", alpha=0.5, temperature=4.0)
  got, metrics, _ = custom.loss(z, y, custom.init(num_classes=5), step=0, teacher_logits=teacher)
  want, want_metrics, _ = built_in.loss(z, y, {}, step=0, teacher_logits=teacher)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  np.testing.assert_allclose(metrics["kd"], want_metrics["kd"], rtol=1e-6)
  # With no valid member the fallback alone counts: plain cross-entropy, as the built-in.
  off = dict(teacher_logits=teacher[None], teacher_mask=np.array([False]))
  got, metrics, _ = custom.loss(z, y, {}, step=0, **off)
  want, want_metrics, _ = built_in.loss(z, y, {}, step=0, **off)
  np.testing.assert_allclose(got, want_metrics["ce"], rtol=1e-6)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert float(metrics["kd"]) == 0.0
  with pytest.raises(ValueError, match="my_kd needs teacher_logits"):
    custom.loss(z, y, {}, step=0)


def test_term_weights_may_be_schedules():
  """A schedule as a term weight compiles once and equals the fixed weight at every step."""
  from jaxkd import targets
  z, y = logits_and_labels(seed=11)
  schedule = optax.linear_schedule(0.0, 1.0, transition_steps=4)
  obj = objectives.Objective("ls_ramp", [objectives.Term("lsr", targets.label_smoothing(
      smoothing=0.2), schedule)])
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def loss(step):
    return obj.loss(z, y, {}, step=step)[0]

  plain = objectives.get("lsr", smoothing=0.2).loss(z, y, {}, step=0)[0]
  for step in range(5):
    np.testing.assert_allclose(loss(jnp.asarray(step)), float(schedule(step)) * plain,
                               rtol=1e-6)


def test_stateful_objective_refuses_a_state_init_did_not_make():
  z, y = logits_and_labels(seed=12)
  obj = objectives.get("ols", steps_per_epoch=2)
  with pytest.raises(ValueError, match="ols: state has no entry for term 'soft_ce'"):
    obj.loss(z, y, {}, step=0)


def test_teacher_active_is_reported_whenever_teacher_logits_are_given():
  z, y = logits_and_labels(seed=11)
  members = np.stack([z, -z])
  obj = objectives.get("mrkd", num_backups=2)
  loss = jax.jit(lambda mask: obj.loss(z, y, {}, step=0, teacher_logits=members,
                                       teacher_mask=mask)[1]["teacher_active"])
  assert float(loss(np.array([False, False]))) == 0.0
  assert float(loss(np.array([False, True]))) == 1.0
  assert float(loss(np.array([True, True]))) == 1.0
  _, metrics, _ = objectives.get("kd").loss(z, y, {}, step=0, teacher_logits=z)
  assert float(metrics["teacher_active"]) == 1.0
  _, metrics, _ = objectives.get("lsr").loss(z, y, {}, step=0)
  assert "teacher_active" not in metrics

"""Every method against a float64 numpy statement of its official (or reconstructed) formula.

Each reference below is written from the method's source (PyTorch semantics: ``KLDivLoss()``
averages over every element, ``reduction='batchmean'`` over the batch) independently of the
library's recipes. Each case runs several steps (stateful methods cross epoch boundaries) and
checks the loss to 1e-6, the gradient against finite differences of the reference, and the
method under ``jax.jit``, ``jax.vmap`` and with schedules as hyperparameters.
"""
import dataclasses
from typing import Callable

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from jaxkd import objectives, teachers
from references import cross_entropy, kl_div, log_softmax, softmax, torch_bilinear_x2

B, K, D, M, N = 6, 5, 3, 2, 8


def one_hot(y, k=K):
  return np.eye(k)[y]


# ---- references: ref(z, y, inputs, rstate, hp) -> (loss, rstate) -----------------------------


def ref_ce(z, y, x, s, hp):
  return cross_entropy(z, y), s


def ref_lsr(z, y, x, s, hp):
  e = hp["smoothing"]
  if hp["convention"] == "uniform":  # OLS repo loss_all_methods.py::label_smooth
    q = one_hot(y) * (1 - e) + e / K
  else:  # Tf-KD repo my_loss_function.py::loss_label_smoothing
    q = np.full((len(y), K), e / (K - 1))
    q[np.arange(len(y)), y] = 1 - e
  return -(q * log_softmax(z)).sum() / len(y), s


def ref_kd(z, y, x, s, hp):
  """Tf-KD my_loss_function.py::loss_kd / loss_kd_self; an ensemble averages probabilities."""
  a, t, m = hp["alpha"], hp["temperature"], hp.get("multiplier", 1.0)
  teacher = np.asarray(x["teacher_logits"], np.float64).reshape(-1, len(y), K)
  mask = x.get("teacher_mask", np.ones(len(teacher), bool))
  if not mask.any():
    return cross_entropy(z, y), s
  logits = teacher[mask]
  if hp.get("correction") == "swap":
    logits = logits.copy()
    for member, i in np.ndindex(logits.shape[:2]):
      top = logits[member, i].argmax()
      logits[member, i, [top, y[i]]] = logits[member, i, [y[i], top]]
  probs = softmax(logits, t).mean(0)
  if hp.get("correction") == "mix":
    probs = (1 - hp["correct_weight"]) * probs + hp["correct_weight"] * one_hot(y)
  reduction = "mean" if hp["kl_reduction"] == "elementwise_mean" else "batchmean"
  kd = kl_div(log_softmax(z, t), probs, reduction) * m
  kd *= t * t if hp["temperature_squared"] else 1.0
  return (1 - a) * cross_entropy(z, y) + a * kd, s


def ref_kd_tan(z, y, x, s, hp):
  """Tan et al.'s word-level KD (RayeRen/multilingual-kd-pytorch,
  distill_label_smoothed_cross_entropy_loss.py): the teacher's top-K logits, softmax(topk / T)
  among themselves, against the student's log_softmax(z / T) at those indices, times T^2, plus
  (1 - a) times ``(1 - eps) nll + eps / V * smooth_loss``. That code's distillation loss is the
  cross-entropy; the KL is it minus the teacher's entropy (a constant)."""
  a, t, k, eps = hp["alpha"], hp["temperature"], hp["teacher_top_k"], hp["smoothing"]
  teacher = np.asarray(x["teacher_logits"], np.float64)
  idx = np.argsort(-teacher, axis=1)[:, :k]
  p = softmax(np.take_along_axis(teacher, idx, 1), t)
  cross = -(p * np.take_along_axis(log_softmax(z, t), idx, 1)).sum(1)
  entropy = -(p * np.log(p)).sum(1)
  lprobs = log_softmax(z)
  nll, smooth = -lprobs[np.arange(len(y)), y], -lprobs.sum(1)
  s_loss = ((1 - eps) * nll + eps / K * smooth).mean()
  return (1 - a) * s_loss + a * t * t * (cross - entropy).mean(), s


def ref_tfkd_reg(z, y, x, s, hp):
  """Tf-KD my_loss_function.py::loss_kd_regularization (code form) and paper eq. 9."""
  a, t, m, b = hp["alpha"], hp["temperature"], hp["multiplier"], hp["correct_prob"]
  teacher_soft = np.ones((len(y), K)) * (1 - b) / (K - 1)
  teacher_soft[np.arange(len(y)), y] = b
  reduction = "mean" if hp["kl_reduction"] == "elementwise_mean" else "batchmean"
  if hp["form"] == "code":
    reg = kl_div(log_softmax(z), softmax(teacher_soft / t), reduction) * m
  else:
    reg = kl_div(log_softmax(z, t), softmax(teacher_soft, t), reduction) * t * t * m
  return (1 - a) * cross_entropy(z, y) + a * reg, s


def ref_lsrkd(z, y, x, s, hp):
  a, t, b = hp["alpha"], hp["temperature"], hp.get("correct_prob")
  u = np.full((len(y), K), 1.0 / K)
  if b is not None:
    u = np.full((len(y), K), (1 - b) / (K - 1))
    u[np.arange(len(y)), y] = b
  return (1 - a) * cross_entropy(z, y) + a * t * t * kl_div(log_softmax(z, t), u,
                                                            "batchmean"), s


def ref_cskd(z, y, x, s, hp):
  """alinlab/cs-kd KDLoss: KLDivLoss(sum)(log_softmax(z/T), softmax(partner/T)) T^2 / B."""
  t = hp["temperature"]
  kd = kl_div(log_softmax(z, t), softmax(x["teacher_logits"], t), "sum") * t * t / len(y)
  return cross_entropy(z, y) + hp["weight"] * kd, s


def ref_zipf(z, y, x, s, hp):
  """zipfls pytorch_zipfls/losses.py: gen_pdf(rank_zipf, dense, hard) and kl_loss."""
  dense = torch_bilinear_x2(x["dense_logits"]) if hp["upsample"] == 2 else x["dense_logits"]
  votes = np.stack([np.bincount(d.argmax(-1).ravel(), minlength=K) for d in dense])
  dist = (1 / stats.rankdata(-votes, axis=1, method="min")) ** hp["power"]
  total = 0.0
  for i in range(len(y)):
    pdf = np.delete(dist[i], y[i])
    pdf = pdf / pdf.sum()
    res = log_softmax(np.delete(z[i], y[i])[None])
    total += kl_div(res, pdf[None], "sum")
  return cross_entropy(z, y) + hp["weight"] * total / len(y), s


def relation(reps, tau):
  unit = reps / np.maximum(np.linalg.norm(reps, axis=1, keepdims=True), 1e-12)
  out = np.zeros((K, K))
  for k in range(K):
    others = [j for j in range(K) if j != k]
    out[k, others] = softmax((unit[k] @ unit[others].T)[None] / tau)[0]
  return out


def ref_ras_kd(z, y, x, s, hp):
  """docs/METHODS.md section 7 (reconstruction); ``s`` holds the EMA prototypes."""
  kernel, bias = x["params"]["kernel"].astype(np.float64), x["params"]["bias"]
  f = np.asarray(x["features"], np.float64)
  aux = f @ kernel + bias
  reps = kernel.T if hp["representatives"] == "classifier" else s
  q = (1 - hp["smoothing"]) * one_hot(y) + hp["smoothing"] * relation(
      reps, hp["relation_temperature"])[y]
  t = hp["temperature"]
  loss = (-(q * log_softmax(z)).sum(-1).mean()
          + hp["weight"] * t * t * kl_div(log_softmax(z, t), softmax(aux, t), "batchmean")
          + cross_entropy(aux, y))
  if hp["representatives"] == "ema":
    s = s.copy()
    for c in set(y.tolist()):
      s[c] = hp["ema_momentum"] * s[c] + (1 - hp["ema_momentum"]) * f[y == c].mean(0)
  return loss, s


def ref_ols(z, y, x, s, hp):
  """zhangchbin/OnlineLabelSmoothing cifar/scripts/train_cifar_all_methods.py (ols)."""
  lams, cur, cnt = s if s is not None else (np.zeros((K, K)), np.zeros((K, K)), np.zeros(K))
  cur, cnt = cur.copy(), cnt.copy()
  probs = softmax(z)
  for k in range(len(y)):  # update_loss_lams
    if y[k] != np.argsort(-probs[k])[0]:
      continue
    cur[y[k]] += probs[k]
    cnt[y[k]] += 1
  soft = np.sum(-log_softmax(z) * lams[y]) / len(y)
  loss = hp["hard_weight"] * cross_entropy(z, y) + hp["soft_weight"] * soft
  if (x["step"] + 1) % hp["steps_per_epoch"] == 0:
    lams = np.stack([cur[c] / cnt[c] if cnt[c] >= 0.5 else np.full(K, 1.0 / K)
                     for c in range(K)])
    cur, cnt = np.zeros((K, K)), np.zeros(K)
  return loss, (lams, cur, cnt)


def ref_alr(z, y, x, s, hp):
  """docs/METHODS.md section 5 (reconstruction)."""
  r, acc, cnt = s if s is not None else ((1 - np.eye(K)) / (K - 1), np.zeros((K, K)),
                                         np.zeros(K))
  acc, cnt = acc.copy(), cnt.copy()
  loss = cross_entropy(z, y) + hp["alpha"] * (-(r[y] * log_softmax(z)).sum(-1).mean())
  probs = softmax(z)
  for k in range(len(y)):
    if probs[k].argmax() != y[k]:
      residual = probs[k].copy()
      residual[y[k]] = 0.0
      acc[y[k]] += residual / residual.sum()
      cnt[y[k]] += 1
  if (x["step"] + 1) % hp["steps_per_epoch"] == 0:
    mu = hp["momentum"]
    r = np.stack([mu * r[c] + (1 - mu) * acc[c] / cnt[c] if cnt[c] else r[c] for c in range(K)])
    acc, cnt = np.zeros((K, K)), np.zeros(K)
  return loss, (r, acc, cnt)


def ref_pskd(z, y, x, s, hp):
  """lgcnsai/PS-KD-Pytorch main.py::train (PSKD branch)."""
  table = np.zeros((N, K)) if s is None else s.copy()
  epoch = x["step"] // hp["steps_per_epoch"]
  alpha_t = max(0.0, hp["alpha_final"] * ((epoch + 1) / hp["total_epochs"]))
  ids = x["example_ids"]
  if epoch == 0:
    table[ids] = one_hot(y)
  soft_targets = (1 - alpha_t) * one_hot(y) + alpha_t * table[ids]
  loss = (-(soft_targets * log_softmax(z)).sum(-1)).mean()
  table[ids] = softmax(z)
  return loss, table


@dataclasses.dataclass
class Case:
  name: str
  ref: Callable
  hparams: dict = dataclasses.field(default_factory=dict)
  steps: int = 1
  label: str = ""

  def __str__(self):
    return self.label or self.name


EPOCH = dict(steps_per_epoch=2)
CASES = [
    Case("ce", ref_ce),
    Case("lsr", ref_lsr),
    Case("lsr", ref_lsr, dict(smoothing=0.2, convention="others"), label="lsr_others"),
    Case("kd", ref_kd),
    Case("kd", ref_kd, dict(kl_reduction="elementwise_mean", temperature_squared=False,
                            multiplier=3.0), label="kd_conventions"),
    Case("kd", ref_kd_tan, dict(teacher_top_k=2, alpha=0.5, temperature=0.6),
         label="kd_top_k"),
    Case("kd", ref_kd_tan, dict(teacher_top_k=3, alpha=0.9, temperature=0.6, smoothing=0.1),
         label="kd_tan_et_al"),
    Case("tfkd_self", ref_kd),
    Case("tfkd_reg", ref_tfkd_reg),
    Case("tfkd_reg", ref_tfkd_reg, dict(form="paper", temperature=4.0, alpha=0.6),
         label="tfkd_reg_paper"),
    Case("lsrkd", ref_lsrkd),
    Case("lsrkd_tc", ref_lsrkd),
    Case("mrkd", ref_kd),
    Case("ema_kd", ref_kd),
    Case("mrkd_tc", ref_kd),
    Case("mrkd_tc", ref_kd, dict(correction="swap"), label="mrkd_tc_swap"),
    Case("alr", ref_alr, EPOCH, steps=5),
    Case("ols", ref_ols, EPOCH, steps=5),
    Case("pskd", ref_pskd, dict(total_epochs=3, **EPOCH), steps=5),
    Case("cskd", ref_cskd),
    Case("zipf", ref_zipf),
    Case("zipf", ref_zipf, dict(upsample=1, power=1.5, weight=0.5), label="zipf_plain"),
    Case("ras_kd", ref_ras_kd),
    Case("ras_kd", ref_ras_kd, dict(representatives="ema"), steps=3, label="ras_kd_ema"),
]


def step_inputs(obj, step, seed=0):
  """Random per-step inputs; labels biased so that some predictions are right, some wrong."""
  rng = np.random.default_rng(1000 * seed + step)
  y = rng.integers(0, K, B)
  z = (rng.normal(size=(B, K)) * 1.5 + 1.5 * one_hot(y)).astype(np.float32)
  x = {}
  teacher = None if obj.teacher is None else obj.teacher.name
  if teacher == "replay":
    x["teacher_logits"] = rng.normal(size=(M, B, K)).astype(np.float32) * 2
    x["teacher_mask"] = np.array([True, step % 2 == 0])
  elif teacher is not None and teacher != "aux_head":
    x["teacher_logits"] = rng.normal(size=(B, K)).astype(np.float32) * 2
  if "features" in obj.requires:
    x["features"] = rng.normal(size=(B, D)).astype(np.float32)
  if teacher == "aux_head":  # RAS-KD's head: its logits and rows are the teacher's output
    x["teacher_logits"], x["class_embeddings"] = (
        np.asarray(a) for a in teachers.head_logits(head_params(obj), x["features"]))
  if "teacher_temperature" in obj.requires:  # CTKD's learned temperature
    x["teacher_temperature"] = np.float32(2.0 + rng.uniform())
  if "dense_logits" in obj.requires:
    x["dense_logits"] = rng.normal(size=(B, 2, 2, K)).astype(np.float32)
  if "example_ids" in obj.requires:
    x["example_ids"] = rng.permutation(N)[:B]
  return z, y, x


def jax_loss(obj, z, y, state, step, x):
  return obj.loss(z, y, state, step=step, **x)


def jitted(obj):
  return jax.jit(lambda z, y, state, step, x: jax_loss(obj, z, y, state, step, x))


def init_state(obj):
  return obj.init(num_classes=K, num_examples=N, feature_dim=D)


def initial_ref_state(obj, case):
  return np.zeros((K, D)) if case.label == "ras_kd_ema" else None


def head_params(obj):
  return obj.teacher.init(None, num_classes=K, feature_dim=D).params


def ref_inputs(obj, x, step):
  out = dict(x, step=step)
  if obj.teacher is not None and obj.teacher.name == "aux_head":
    out["params"] = jax.tree.map(np.asarray, head_params(obj))
  return out


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_numpy_reference_and_finite_differences(case):
  obj = objectives.get(case.name, **case.hparams)
  hp = obj.hparams
  def with_aux(z, y, state, step, x):
    loss, metrics, new_state = jax_loss(obj, z, y, state, step, x)
    return loss, (metrics, new_state)

  loss_and_grad = jax.jit(jax.value_and_grad(with_aux, has_aux=True))
  state, rstate = init_state(obj), initial_ref_state(obj, case)
  for step in range(case.steps):
    z, y, x = step_inputs(obj, step)
    rx = ref_inputs(obj, x, step)
    want, new_rstate = case.ref(z, y, rx, rstate, hp)
    (loss, (metrics, new_state)), grad = loss_and_grad(z, y, state, step, x)
    np.testing.assert_allclose(loss, want, rtol=1e-6, atol=1e-6, err_msg=f"step {step}")
    np.testing.assert_allclose(metrics["loss"], loss)
    np.testing.assert_allclose(metrics["ce"], cross_entropy(z, y), rtol=1e-6)
    chex.assert_trees_all_equal_structs(new_state, state)
    if step == case.steps - 1:
      fd, z64 = np.zeros((B, K)), z.astype(np.float64)
      for idx in np.ndindex(B, K):
        up, down = z64.copy(), z64.copy()
        up[idx] += 1e-6
        down[idx] -= 1e-6
        fd[idx] = (case.ref(up, y, rx, rstate, hp)[0] - case.ref(down, y, rx, rstate, hp)[0]) / 2e-6
      np.testing.assert_allclose(grad, fd, rtol=1e-3, atol=2e-5)
    state, rstate = new_state, new_rstate


REQUIRED = {"alr": EPOCH, "ols": EPOCH, "pskd": dict(total_epochs=3, **EPOCH), "dkd": EPOCH,
            "ctkd": EPOCH}


def run_steps(obj, steps, seed=0, cast=None, loss_fn=None):
  """Runs ``steps`` jitted steps; returns the per-step losses and the final state."""
  loss_fn = loss_fn or jitted(obj)
  state, out = init_state(obj), []
  for step in range(steps):
    z, y, x = step_inputs(obj, step, seed)
    if cast is not None:
      z, x = cast(z), {k: cast(v) if v.dtype == np.float32 else v for k, v in x.items()}
    loss, metrics, state = loss_fn(z, y, state, step, x)
    out.append((loss, metrics))
  return out, state


@pytest.mark.parametrize("name", objectives.names())
def test_vmap_equals_per_instance(name):
  obj = objectives.get(name, **REQUIRED.get(name, {}))
  steps = 3 if name in REQUIRED else 1
  loss_fn = jitted(obj)
  per_seed = [run_steps(obj, steps, seed, loss_fn=loss_fn) for seed in (0, 1)]
  vloss = jax.jit(jax.vmap(lambda z, y, state, x, step: jax_loss(obj, z, y, state, step, x),
                           in_axes=(0, 0, 0, 0, None)))
  state = jax.tree.map(lambda *a: jnp.stack(a), init_state(obj), init_state(obj))
  for step in range(steps):
    inputs = [step_inputs(obj, step, seed) for seed in (0, 1)]
    z, y, x = jax.tree.map(lambda *a: np.stack(a), *inputs)
    loss, metrics, state = vloss(z, y, state, x, step)
    for seed in (0, 1):
      np.testing.assert_allclose(loss[seed], per_seed[seed][0][step][0], rtol=1e-6)
      chex.assert_trees_all_close(jax.tree.map(lambda a: a[seed], metrics),
                                  per_seed[seed][0][step][1], rtol=1e-6)
  for seed in (0, 1):
    chex.assert_trees_all_close(jax.tree.map(lambda a: a[seed], state), per_seed[seed][1],
                                rtol=1e-6, atol=1e-7)


def float_hparams(name):
  return [k for k, v in objectives.defaults(name).items() if isinstance(v, float)]


@pytest.mark.parametrize("name", [n for n in objectives.names() if float_hparams(n)])
def test_schedules_compile_once_and_equal_their_values(name):
  base = dict(objectives.get(name, **REQUIRED.get(name, {})).hparams)
  schedules = {k: optax.linear_schedule(base[k], 0.5 * base[k], transition_steps=8)
               for k in float_hparams(name)}
  obj = objectives.get(name, **{**base, **schedules})
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def scheduled(z, y, state, step, x):
    return jax_loss(obj, z, y, state, step, x)

  state = init_state(obj)
  for step in range(3):
    z, y, x = step_inputs(obj, step)
    fixed = objectives.get(name, **{**base, **{k: float(s(step)) for k, s in schedules.items()}})
    want, _, want_state = jax_loss(fixed, z, y, state, step, x)
    loss, _, state = scheduled(z, y, state, jnp.asarray(step), x)
    np.testing.assert_allclose(loss, want, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(state, want_state, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", objectives.names())
def test_bfloat16_inputs_give_the_float32_loss(name):
  obj = objectives.get(name, **REQUIRED.get(name, {}))
  steps = 3 if name in REQUIRED else 1
  bf16 = lambda a: jnp.asarray(a, jnp.bfloat16)
  low, _ = run_steps(obj, steps, cast=bf16)
  high, _ = run_steps(obj, steps, cast=lambda a: np.asarray(bf16(a), np.float32))
  for (loss16, metrics16), (loss32, _) in zip(low, high):
    assert loss16.dtype == jnp.float32
    assert all(v.dtype == jnp.float32 for v in metrics16.values())
    np.testing.assert_allclose(loss16, loss32, atol=1e-3)

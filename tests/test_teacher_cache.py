"""Cached teachers: `jaxkd cache-teacher` stores a frozen teacher's outputs for every step of a
run; a run with ``teacher.cache`` reads them and no longer runs the teacher."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from jaxkd import cli, teachers
from jaxkd import config as config_lib
from jaxkd.config import defaults
from jaxkd.train import ConfigError, build, cache_teacher, precision

SMOKE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                     "default.py") + ":smoke"
# 1442 digits at batch 256: 5 steps an epoch, so 7 steps read two epochs of the cache.
STEPS, BATCH = 7, 256


def _config(method="kd", *, teacher="", cache="", dtype="float64", num_steps=STEPS,
            image_size=224, **changes):
  """The run's config; ``changes``: ``section__key=value`` overrides."""
  config = defaults.base_config()
  config.method.name = method
  config.model.name, config.model.dtype = "mlp", dtype
  config.mesh.data = 1
  config.train.batch_size, config.train.num_steps = BATCH, num_steps
  config.data.image_size = image_size
  config.train.optimizer.warmup_epochs = 0.0
  config.teacher.workdir, config.teacher.cache = teacher, cache
  for key, value in changes.items():
    config_lib.override(config, key.replace("__", "."), repr(value))
  return config


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("teacher"))
  assert cli.main(["train", "--workdir", workdir, "--config.method.name=ce",
                   "--config.model.name=mlp", "--config.mesh.data=1",
                   "--config.train.batch_size=64", "--config.train.num_steps=20"]) == 0
  return workdir


@pytest.fixture(scope="module")
def full_cache(teacher_run, tmp_path_factory):
  """A k = K cache of the float64 KD run, and its manifest."""
  directory = str(tmp_path_factory.mktemp("cache") / "full")
  manifest = cache_teacher(_config(teacher=teacher_run), directory)
  return directory, manifest


def _train(config):
  """The params at the end of the run of ``config``, and its trainer."""
  with precision(config):
    trainer = build(config)
    state, batches = trainer.init_state(), trainer.batches()
    for step in range(trainer.run.total_steps):
      state, _ = trainer.steps.train(state, trainer.consts, batches.get(step))
    return jax.device_get(state.params), trainer


def _flops(trainer):
  with precision(trainer.run.config):
    state, batch = trainer.init_state(), trainer.batches().get(0)
    cost = trainer.steps.train.lower(state, trainer.consts, batch).compile().cost_analysis()
  return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])


@pytest.mark.slow
def test_kd_from_a_full_cache_equals_kd_from_the_online_teacher_and_costs_what_ce_costs(
    teacher_run, full_cache):
  directory, manifest = full_cache
  assert manifest["k"] == manifest["num_classes"] == 10 and "classes" not in manifest["shapes"]
  online, online_trainer = _train(_config(teacher=teacher_run))
  cached, cached_trainer = _train(_config(teacher=teacher_run, cache=directory))
  diffs = [np.max(np.abs(a - b)) for a, b in zip(jax.tree_util.tree_leaves(online),
                                                 jax.tree_util.tree_leaves(cached))]
  print(f"\nkd from a k=K cache vs the online teacher, {STEPS} steps in float64: max |param "
        f"difference| {max(diffs):.3g}; cache {manifest['bytes_per_example']:.0f} bytes per "
        "example and step")
  assert max(diffs) <= 1e-9
  # The parameters moved: the test compares trained students, not initialisations.
  with precision(online_trainer.run.config):
    start = jax.device_get(online_trainer.init_state().params)
  assert max(np.max(np.abs(a - b)) for a, b in zip(jax.tree_util.tree_leaves(start),
                                                   jax.tree_util.tree_leaves(online))) > 1e-3
  ce = _flops(_ce_trainer())
  kd_online, kd_cached = _flops(online_trainer), _flops(cached_trainer)
  print(f"XLA flops of a step: ce {ce:.4g}, kd online {kd_online:.4g} ({kd_online / ce:.3f}x), "
        f"kd cached {kd_cached:.4g} ({kd_cached / ce:.4f}x)")
  assert abs(kd_cached / ce - 1.0) < 0.03
  assert kd_online / ce > 1.15


@pytest.mark.slow
def test_an_ensembles_full_cache_gives_the_online_ensembles_run_bit_for_bit(teacher_run,
                                                                            tmp_path):
  """Two teachers (``teacher.workdir`` a list): the cache stacks them per example, ``[B, M,
  K]``; in float32 the MLP's run from it is the online run's, bit for bit."""
  directory = str(tmp_path / "ensemble")
  pair = dict(teacher=f"{teacher_run},{teacher_run}", dtype="float32", method__ensemble="kl")
  manifest = cache_teacher(_config(**pair), directory)
  assert manifest["members"] == 2 and manifest["shapes"]["values"] == [STEPS, BATCH, 2, 10]
  online, _ = _train(_config(**pair))
  cached, trainer = _train(_config(cache=directory, **pair))
  assert trainer.run.teacher.name.startswith("cached")
  for a, b in zip(jax.tree_util.tree_leaves(online), jax.tree_util.tree_leaves(cached)):
    np.testing.assert_array_equal(a, b)


def _ce_trainer():
  config = _config("ce")
  with precision(config):
    return build(config)


@pytest.mark.parametrize("field,value", [
    ("seed", 1), ("data__name", "mock"), ("data__rotation_degrees", 5.0),
    ("data__flip", True), ("train__batch_size", 128), ("train__num_steps", STEPS + 1),
    ("model__dtype", "float32"), ("teacher__step", 10)])
def test_a_cache_made_for_another_run_is_refused_naming_the_field(field, value, teacher_run,
                                                                  full_cache):
  config = _config(teacher=teacher_run, cache=full_cache[0], **{field: value})
  name = field.replace("__", ".")
  with precision(config), pytest.raises(ConfigError) as err:
    build(config)
  message = str(err.value)
  assert message.startswith(f"config.{name}={value!r}: ")
  assert "teacher.cache=" in message and "was made for" in message


def test_a_cache_of_another_teacher_is_refused(teacher_run, full_cache, tmp_path):
  other = str(tmp_path / "other_teacher")
  shutil.copytree(teacher_run, other)
  config = _config(teacher=other, cache=full_cache[0])
  with precision(config), pytest.raises(ConfigError, match=r"^config\.teacher\.workdir=.*"
                                        r"was made for teacher\.workdir="):
    build(config)
  # The same workdir with other variables (retrained in place): refused by the fingerprint.
  copy = str(tmp_path / "cache")
  shutil.copytree(full_cache[0], copy)
  path = os.path.join(copy, "manifest.json")
  with open(path) as f:
    manifest = json.load(f)
  manifest["fingerprint"] = "0" * 64
  with open(path, "w") as f:
    json.dump(manifest, f)
  config = _config(teacher=teacher_run, cache=copy)
  with precision(config), pytest.raises(ConfigError, match=r"teacher\.workdir=.*fingerprint"):
    build(config)


def test_a_method_without_a_frozen_teacher_refuses_a_cache(full_cache):
  with pytest.raises(ConfigError, match=r"^config\.teacher\.cache=.*method 'ce' has no teacher"):
    build(_config("ce", cache=full_cache[0], dtype="float32"))


def _softmax(z, axis=-1):
  z = z - z.max(axis=axis, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("rest", ["renormalize", "uniform"])
def test_top_k_cache_holds_numpys_top_k_and_its_rest_convention(rest, teacher_run, full_cache,
                                                                tmp_path, capsys):
  k, num_classes = 3, 10
  directory = str(tmp_path / "top3")
  # The command line writes it, from the flags of the full cache's run (`_config`: the base
  # config, which the default config's smoke variant is, trained on the whole train split).
  assert cli.main(["cache-teacher", "--out", directory, "--k", str(k), "--rest", rest,
                   "--config", SMOKE, "--config.method.name=kd", "--config.model.name=mlp",
                   "--config.model.dtype=float64", "--config.mesh.data=1",
                   f"--config.train.batch_size={BATCH}", f"--config.train.num_steps={STEPS}",
                   f"--config.teacher.workdir={teacher_run}"]) == 0
  assert f"train with --config.teacher.cache={directory}" in capsys.readouterr().out
  with open(os.path.join(directory, "manifest.json")) as f:
    manifest = json.load(f)
  assert manifest["run"] == full_cache[1]["run"] and manifest["rest"] == rest
  # The teacher's logits, as the k = K cache holds them (equal to the online teacher's).
  full = np.load(os.path.join(full_cache[0], "values.npy")).astype(np.float64)
  values, classes, lse = (np.load(os.path.join(directory, f"{n}.npy"))
                          for n in ("values", "classes", "lse"))
  size = np.dtype(manifest["dtype"]).itemsize
  assert manifest["bytes_per_example"] == 4 + k * (size + 4) + size  # id, values, classes, lse
  values, lse = values.astype(np.float64), lse.astype(np.float64)
  probs = _softmax(full)
  order = np.argsort(-probs, axis=-1)[..., :k]
  np.testing.assert_array_equal(classes, order)
  np.testing.assert_allclose(np.exp(values - lse[..., None]),
                             np.take_along_axis(probs, order, axis=-1), rtol=1e-6, atol=0)
  temperature = 1.0 if rest == "uniform" else 2.0
  with jax.enable_x64(True):
    expanded = np.asarray(teachers.expand(values, classes, lse, num_classes=num_classes,
                                          rest=rest))
  got = _softmax(expanded / temperature)
  kept = np.take_along_axis(probs, order, axis=-1)
  want = np.zeros_like(probs)
  if rest == "uniform":  # at T = 1: the top-k probabilities, the rest shared evenly
    want += ((1.0 - kept.sum(-1)) / (num_classes - k))[..., None]
    np.put_along_axis(want, order, kept, axis=-1)
  else:  # the top-k probabilities at T, renormalised over the kept classes; none elsewhere
    tempered = kept ** (1.0 / temperature)
    np.put_along_axis(want, order, tempered / tempered.sum(-1, keepdims=True), axis=-1)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)


def test_cache_teacher_command_refuses_a_bad_k_naming_it(teacher_run, tmp_path, capsys):
  assert cli.main(["cache-teacher", "--out", str(tmp_path / "c"), "--k", "11",
                   "--config.method.name=kd", f"--config.teacher.workdir={teacher_run}",
                   "--config.model.name=mlp", "--config.mesh.data=1"]) == 2
  assert "k=11 (jaxkd cache-teacher --k): allowed: 1..10" in capsys.readouterr().err


def test_a_renormalised_top_k_teacher_has_the_finite_difference_temperature_gradient():
  """CTKD differentiates the teacher's tempered distribution; the classes a renormalised top-k
  cache leaves out have probability 0 there, and the KL's gradient through them must be 0,
  not NaN: the temperature's gradient equals a central difference of the numpy KL over the
  kept classes."""
  from jaxkd import losses  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  logits, student = rng.normal(size=(4, 10)) * 3, rng.normal(size=(4, 10))
  classes = np.argsort(-logits, axis=-1)[:, :3]
  values = np.take_along_axis(logits, classes, axis=-1)
  lse = np.log(np.exp(logits).sum(-1))
  with jax.enable_x64(True):
    teacher = teachers.expand(values, classes, lse, num_classes=10)
    grad = jax.grad(lambda t: losses.kl_divergence(
        student, jax.nn.softmax(teacher / t)).sum())(2.0)

  def kl(t):
    q = _softmax(values / t)
    log_p = np.log(_softmax(student))
    return float(np.sum(q * (np.log(q) - np.take_along_axis(log_p, classes, axis=-1))))

  assert np.isfinite(grad)
  np.testing.assert_allclose(float(grad), (kl(2.0 + 1e-6) - kl(2.0 - 1e-6)) / 2e-6, rtol=1e-6)


@pytest.mark.slow
def test_a_streamed_run_reads_its_cache_and_ends_as_the_online_run(imagenet_dir, tmp_path):
  """Streamed data (the tests' tiny ImageNet, read and cropped on host threads): the cache is
  written through the run's own reader, each process's rows of it ride with the batch, and the
  KD run from it ends with the online run's parameters (float64, 4 steps over two epochs); from
  a k = 2 cache, with those of the online ``kd`` keeping its teacher's top 2
  (``teacher_top_k=2``, its own implementation of the renormalised top k)."""
  from jaxkd.train import loop  # pylint: disable=import-outside-toplevel

  def streamed(method, **changes):
    config = _config(method, num_steps=4, image_size=16, **changes)
    config.data.name, config.data.data_dir, config.data.num_workers = (
        "imagenet2012", imagenet_dir, 2)
    config.data.crop_padding, config.data.rotation_degrees, config.data.flip = 0, 0.0, False
    config.train.batch_size = 8  # 3 steps an epoch
    return config

  teacher = str(tmp_path / "teacher")
  loop.train_and_evaluate(streamed("ce", dtype="float32"), teacher)
  directory = str(tmp_path / "cache")
  manifest = cache_teacher(streamed("kd", teacher=teacher), directory, k=2)
  assert manifest["shapes"]["classes"] == [4, 8, 2]
  for k, path in ((0, str(tmp_path / "full")), (2, directory)):
    if k == 0:
      cache_teacher(streamed("kd", teacher=teacher), path)
    online, _ = _train(streamed("kd", teacher=teacher, method__teacher_top_k=k))
    cached, trainer = _train(streamed("kd", teacher=teacher, cache=path))
    assert trainer.run.teacher.name.startswith("cached")
    gap = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree_util.tree_leaves(online),
                                                            jax.tree_util.tree_leaves(cached)))
    print(f"\nstreamed kd from a k={k or 'K'} cache vs online (teacher_top_k={k}): {gap:.3g}")
    assert gap <= 1e-9

"""Seed packing: S runs in one vmapped program equal S separate runs of the same step, and
the packed training loop writes the workdirs and records of separate runs.

Everything runs in the float64 verification mode (``model.dtype="float64"``, JAX's x64
switch), where packed and separate runs agree to 1e-9 or better (issue 23's line); the
differences measured are printed (``pytest -s``).
"""
import json
import os
import shutil
import textwrap

import jax
import numpy as np
import pytest

from jaxkd import objectives
from jaxkd.reporting import runner
from jaxkd.config import defaults
from jaxkd.train import ConfigError, build, checkpoint, make_steps, packed

SEEDS = (0, 1)
STEPS = 3
TOLERANCE = 1e-9  # float64: packed vs separate


@pytest.fixture(autouse=True)
def x64():
  with jax.enable_x64(True):
    yield


def _trainer(method, model="mlp", **hparams):
  config = defaults.base_config()
  config.method.name = method
  config.model.name = model
  config.model.dtype = "float64"
  with config.method.unlocked():
    config.method.update(hparams)
  config.mesh.data = 1
  config.train.batch_size = 32
  config.train.num_steps = STEPS
  config.train.optimizer.warmup_epochs = 0.0
  return build(config)


def _separate(trainer, steps, seed):
  state, batches = trainer.init_state(seed=seed), trainer.batches(seed=seed)
  for i in range(STEPS):
    state, metrics = steps.train(state, trainer.consts, batches.get(i))
  return jax.device_get(state), jax.device_get(metrics)


def _max_difference(a, b) -> float:
  """The largest absolute difference between the float leaves of two trees (same structure)."""
  diffs = [np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max(initial=0.0)
           for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                           strict=True) if np.issubdtype(np.asarray(x).dtype, np.floating)]
  return max(diffs, default=0.0)


def _assert_close(packed_tree, separate_tree, index):
  difference = _max_difference(packed.unstack(packed_tree, index), separate_tree)
  print(f"packed vs separate, run {index}: max |difference| {difference:.3g}")
  assert difference <= TOLERANCE


# The convolutional net (BatchNorm statistics, a refresh) unrolled, as XLA:CPU runs it faster;
# the MLP, which compiles in a second, vmapped. (In float32 a vmapped small_cnn, one grouped
# convolution, rounded differently from the separate runs and through ReLU kinks moved a
# seed's momentum by 6e-3 after 3 steps; float64 has no such lottery.)
@pytest.mark.parametrize("method,hparams,strategy,model", [
    ("mrkd", {"refresh_every": 2}, "unroll", "small_cnn"),
    ("mrkd", {"refresh_every": 2}, "vmap", "mlp"), ("ols", {}, "vmap", "mlp")])
@pytest.mark.slow
def test_packed_seeds_equal_separate_runs(method, hparams, strategy, model):
  trainer = _trainer(method, model, **hparams)
  states = packed.init_states(trainer, seeds=SEEDS)
  step = packed.pack_step(trainer.steps.train_fn, mesh=trainer.run.mesh, strategy=strategy)
  batches = packed.Batches(trainer, seeds=SEEDS)
  for i in range(STEPS):
    states, metrics = step(states, trainer.consts, batches.get(i))
  states = jax.device_get(states)
  assert metrics["loss"].shape == (len(SEEDS),)
  for index, seed in enumerate(SEEDS):
    state, last = _separate(trainer, trainer.steps, seed)
    _assert_close(states.params, state.params, index)
    _assert_close(states.opt_state, state.opt_state, index)
    _assert_close(states.objective, state.objective, index)
    assert abs(float(metrics["loss"][index]) - float(last["loss"])) <= TOLERANCE
  if method == "mrkd":  # a refresh at step 2 (not 1, 3) under the packed lax.cond
    np.testing.assert_array_equal(states.teacher.state.refreshes, [1] * len(SEEDS))
  seeds_differ = np.abs(packed.unstack(states.params, 0)["Dense_0"]["kernel"]
                        - packed.unstack(states.params, 1)["Dense_0"]["kernel"]).max()
  assert seeds_differ > 1e-3, "every packed run must start from its own seed"


@pytest.mark.slow
def test_packed_refresh_stays_a_conditional():
  """The shared step is unbatched, so vmap keeps MrKD's refresh a conditional, not a select."""
  trainer = _trainer("mrkd", refresh_every=2)
  states = packed.init_states(trainer, seeds=SEEDS)
  step = packed.pack_settings_step(lambda setting: trainer.steps.train_fn, mesh=trainer.run.mesh)
  batch = packed.Batches(trainer, seeds=SEEDS).get(0)
  hlo = step.lower(states, {}, trainer.consts, batch).compile().as_text()
  assert " conditional(" in hlo


@pytest.mark.slow
def test_packed_settings_equal_separate_runs():
  alphas = np.asarray([0.0, 0.9], np.float64)
  trainer = _trainer("mrkd", refresh_every=1, start_from_init=True)
  run, hparams = trainer.run, dict(trainer.run.objective.hparams)

  def steps_of(alpha):
    objective = objectives.get("mrkd", **{**hparams, "alpha": alpha})
    return make_steps(model=run.model, objective=objective, optimizer=trainer.optimizer,
                      task=run.task, mesh=run.mesh, teacher=objective.teacher)

  states = packed.init_states(trainer, seeds=(0,) * len(alphas))
  step = packed.pack_settings_step(lambda setting: steps_of(setting["alpha"]).train_fn,
                                   mesh=run.mesh)
  batches = packed.Batches(trainer, seeds=(0,) * len(alphas))
  for i in range(STEPS):
    states, _ = step(states, {"alpha": alphas}, trainer.consts, batches.get(i))
  states = jax.device_get(states)
  for index, alpha in enumerate(alphas):
    state, _ = _separate(trainer, steps_of(float(alpha)), 0)
    _assert_close(states.params, state.params, index)
  spread = np.abs(packed.unstack(states.params, 0)["Dense_0"]["kernel"]
                  - packed.unstack(states.params, 1)["Dense_0"]["kernel"]).max()
  assert spread > 1e-4, "alpha must change the packed runs"


def test_bad_arguments_are_rejected():
  trainer = _trainer("ce")
  with pytest.raises(ValueError, match="seeds"):
    packed.init_states(trainer, seeds=())
  with pytest.raises(ValueError, match="strategy='loop'.*vmap, unroll"):
    packed.pack_step(lambda *a: a, mesh=trainer.run.mesh, strategy="loop")


TABLE = textwrap.dedent('''
    """A one-row float64 table on digits for the packing tests: MrKD (its replay teacher's
    state is vmapped too), best epoch kept on a validation split."""
    from jaxkd.reporting import Row, Table
    from jaxkd.config import defaults

    def get_config(arg=None):
      config = defaults.base_config()
      config.method.name = "mrkd"
      config.method.refresh_every = 3
      config.model.name = "mlp"
      config.model.dtype = "float64"
      config.mesh.data = 1
      config.data.train_split, config.data.eval_split = "train[:90%]", "train[90%:]"
      config.train.batch_size = 256  # 5 steps an epoch
      config.train.num_epochs = 2
      config.train.log_every_steps = 2
      config.train.checkpoint_every_steps = 3
      config.train.keep_best = True
      return config

    def table():
      return Table(name="packing", title="Packing", description="One row.",
                   rows=(Row("mrkd", "method=mrkd"),))
''')

# What a run measures about its machine and its own start, not about the training.
_TIMES = ("wall_time_s", "time_split_s", "images_per_sec")


def _numbers(tree, path=""):
  """``{path: value}`` of a record's numbers, the timings left out."""
  if isinstance(tree, dict):
    return {k: v for key, value in tree.items() if key not in _TIMES
            for k, v in _numbers(value, f"{path}/{key}").items()}
  if isinstance(tree, list):
    return {k: v for i, value in enumerate(tree) for k, v in _numbers(value, f"{path}/{i}").items()}
  return {path: tree}


def _curves(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in _TIMES} for line in f]


def _compare_runs(packed_dir, separate_dir) -> float:
  """The largest difference between two workdirs' final and best parameters and their logged
  metrics; asserts that they hold the same checkpoints and log the same steps."""
  worst = 0.0
  for name in ("checkpoints", checkpoint.BEST):
    assert os.listdir(os.path.join(packed_dir, name)) == os.listdir(
        os.path.join(separate_dir, name))
    (a, step_a), (b, step_b) = (checkpoint.load_variables(d, name=name)
                                for d in (packed_dir, separate_dir))
    assert step_a == step_b
    worst = max(worst, _max_difference(a, b))
  got, want = _curves(packed_dir), _curves(separate_dir)
  assert [r["step"] for r in got] == [r["step"] for r in want] and len(got) > 5
  for a, b in zip(got, want):
    assert a.keys() == b.keys()
    worst = max(worst, max(abs(a[k] - b[k]) for k in a))
  return worst


@pytest.mark.slow
def test_packed_table_runs_write_the_records_and_workdirs_of_separate_runs(tmp_path):
  """`jaxkd report one ROW --seed 0,1` (packed) against `--seed 0` and `--seed 1`: the same
  checkpoints (last and best), metrics.jsonl and result records, in float64 to 1e-9; an
  interrupted packed run resumes together from the newest checkpoint step all seeds hold."""
  config = _table(tmp_path)
  roots = {name: (str(tmp_path / name / "work"), str(tmp_path / name / "results"))
           for name in ("packed", "separate")}
  together = runner.run_seeds(config, "mrkd", SEEDS, workroot=roots["packed"][0],
                              results_dir=roots["packed"][1])
  apart = [runner.run_one(config, "mrkd", seed, workroot=roots["separate"][0],
                          results_dir=roots["separate"][1]) for seed in SEEDS]
  table = runner.load_table(config)[1]
  worst = 0.0
  for seed, got, want in zip(SEEDS, together, apart):
    with open(runner.result_path(roots["packed"][1], table, "mrkd", seed)) as f:
      assert json.load(f) == got
    got, want = _numbers(got), _numbers(want)
    assert got.keys() == want.keys() and got["/seed"] == seed
    for key, value in want.items():
      if isinstance(value, float):
        worst = max(worst, abs(got[key] - value))
      elif key not in ("/machine", "/config/seed") and "workdir" not in key:
        assert got[key] == value, key
    dirs = [runner.workdir(root, table, "mrkd", seed) for root, _ in roots.values()]
    worst = max(worst, _compare_runs(*dirs))
    with open(os.path.join(dirs[0], "run.json")) as f:
      assert json.load(f)["packed_seeds"] == list(SEEDS)
  print(f"packed vs separate records, workdirs: max |difference| {worst:.3g}")
  assert worst <= TOLERANCE
  # Killed before seed 0's last checkpoint (10): both seeds resume from 9 and end as before.
  dirs = [runner.workdir(roots["packed"][0], table, "mrkd", seed) for seed in SEEDS]
  shutil.rmtree(os.path.join(dirs[0], "checkpoints", "10"))
  for d in dirs:
    os.remove(os.path.join(d, "summary.json"))
  resumed = packed.train_and_evaluate(runner.load_table(config)[0].get_config(), dirs,
                                      SEEDS)
  for seed, summary, d in zip(SEEDS, resumed, dirs):
    separate = runner.workdir(roots["separate"][0], table, "mrkd", seed)
    with open(os.path.join(separate, "summary.json")) as f:
      assert summary["best"] == pytest.approx(json.load(f)["best"], rel=0, abs=TOLERANCE)
    assert _compare_runs(d, separate) <= TOLERANCE
  # Workdirs without a common checkpoint step are refused, naming their steps.
  shutil.rmtree(os.path.join(dirs[1], "checkpoints", "9"))
  shutil.rmtree(os.path.join(dirs[0], "checkpoints", "10"))
  os.remove(os.path.join(dirs[0], "summary.json"))
  with pytest.raises(ConfigError, match=r"no common checkpoint step.*\[9\].*\[10\]"):
    packed.train_and_evaluate(runner.load_table(config)[0].get_config(), dirs, SEEDS)


def test_what_cannot_be_packed_is_refused_by_name(tmp_path):
  config = runner.load_table(_table(tmp_path))[0].get_config()
  config.train.steps_per_dispatch = 2
  dirs = [str(tmp_path / f"s{seed}") for seed in SEEDS]
  with pytest.raises(ConfigError, match=r"train.steps_per_dispatch=2.*allowed: 1"):
    packed.train_and_evaluate(config, dirs, SEEDS)
  config.train.steps_per_dispatch = 1
  with pytest.raises(ConfigError, match=r"seeds=\[0, 0\]: allowed: distinct"):
    packed.train_and_evaluate(config, dirs, (0, 0))
  with pytest.raises(ConfigError, match=r"one workdir per seed"):
    packed.train_and_evaluate(config, dirs[:1], SEEDS)
  assert not any(os.path.exists(d) for d in dirs)  # refused before anything was written


def _table(tmp_path) -> str:
  path = tmp_path / "packing.py"
  path.write_text(TABLE)
  return str(path)

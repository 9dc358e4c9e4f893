"""The loop and the command line: two processes, every method.

SIGKILL-and-resume is tested by tests/test_faults.py (experiments/faults/kill_resume.py).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from jaxkd import cli, objectives
from jaxkd.config import defaults
from jaxkd.train import checkpoint, loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "default.py") + ":smoke"


def _env(devices: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _jaxkd(workdir, *overrides, devices=1, extra_env=None):
  env = {**_env(devices), **(extra_env or {})}
  return subprocess.Popen(
      [sys.executable, "-m", "jaxkd.cli", "train", "--config", SMOKE, "--workdir", str(workdir),
       *overrides], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _params(workdir):
  variables, step = checkpoint.load_variables(str(workdir))
  return variables["params"], step


def _assert_trees_equal(a, b):
  leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(leaves_a) == len(leaves_b)
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  """2 processes of 2 devices equal 1 process of 4, in float64 (`model.dtype`) to 1e-9: the
  two orders of the sums differ by float64 rounding only (float32 rounding flips ReLU ties).
  The MLP: what is checked is each process's part of the in-memory batches and the sums across
  processes (BatchNorm over devices: tests/test_train_step.py)."""
  args = ("--config.train.num_steps=5", "--config.train.batch_size=16",
          "--config.method.refresh_every=2", "--config.model.dtype=float64",
          "--config.model.name=mlp")
  port = _free_port()
  procs = [
      _jaxkd(tmp_path / "two", *args, devices=2, extra_env={
          "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
          "JAX_PROCESS_ID": str(i)}) for i in range(2)]
  single = _jaxkd(tmp_path / "one", *args, devices=4)
  for p in procs + [single]:
    assert p.wait(timeout=300) == 0, p.stdout.read()
  with jax.enable_x64(True):  # float64 checkpoints read as float64
    (two, _), (one, _) = _params(tmp_path / "two"), _params(tmp_path / "one")
    two, one = jax.device_get(two), jax.device_get(one)
  assert {x.dtype for x in jax.tree_util.tree_leaves(one)} == {np.dtype(np.float64)}
  gap = max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(
      jax.tree_util.tree_leaves(two), jax.tree_util.tree_leaves(one), strict=True))
  print(f"2 processes vs 1, float64, max relative gap {gap:.1e}")
  assert gap <= 1e-9, gap
  summary = json.load(open(tmp_path / "two" / "summary.json"))
  assert summary["num_processes"] == 2 and len(summary["devices"]) == 4


# The MLP (it compiles in about a second), long enough to learn the digits well above chance
# (10 classes). Tf-KD_self weighs its KD term by multiplier 50 x T^2 36 (the official
# settings), which the MLP, without BatchNorm, does not survive at this learning rate (its CE
# stays above ln 10 for 90 steps): it trains the default small CNN.
LEARN = ["--config.mesh.data=1", "--config.model.name=mlp", "--config.train.num_steps=120",
         "--config.train.batch_size=32", "--config.train.optimizer.learning_rate=0.1",
         "--config.train.log_every_steps=30", "--config.train.checkpoint_every_steps=120"]
NEEDS_BATCHNORM = {"tfkd_self"}


@pytest.fixture(scope="module")
def teacher_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("teacher")
  assert cli.main(["train", "--config", SMOKE, "--workdir", str(workdir),
                   "--config.method.name=ce", *LEARN]) == 0
  return workdir


# The fast lane keeps MrKD (a teacher, refreshes, the defaults' method); every method: slow.
@pytest.mark.parametrize("method", [m if m == "mrkd" else pytest.param(m, marks=pytest.mark.slow)
                                    for m in objectives.names()])
def test_every_method_learns_from_the_command_line(method, teacher_workdir, tmp_path):
  """Every method trains through `jaxkd train` and learns: CE falls, top-1 far above chance."""
  overrides = [f"--config.method.name={method}", *LEARN]
  if method in NEEDS_BATCHNORM:  # overrides LEARN's model
    overrides.append("--config.model.name=small_cnn")
  if "refresh_every" in objectives.defaults(method):  # MrKD: distil from step 30 on
    overrides.append("--config.method.refresh_every=30")
  teacher = objectives.get(method, run_info=objectives.RunInfo(
      num_examples=100, steps_per_epoch=10, total_steps=10)).teacher
  if teacher is not None and teacher.setup is not None:  # a frozen teacher, loaded from a run
    overrides.append(f"--config.teacher.workdir={teacher_workdir}")
  assert cli.main(["train", "--config", SMOKE, "--workdir", str(tmp_path), *overrides]) == 0
  records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  train = [r for r in records if "train/loss" in r]
  assert train and all(np.isfinite(r["train/loss"]) for r in train)
  assert train[-1]["train/ce"] < 0.8 * train[0]["train/ce"], [r["train/ce"] for r in train]
  summary = json.load(open(tmp_path / "summary.json"))
  assert summary["method"] == method and summary["steps"] == 120
  assert summary["last"]["top1"] > 0.5, summary["last"]  # chance: 0.1
  print(f"{method}: CE {train[0]['train/ce']:.3f} -> {train[-1]['train/ce']:.3f}, "
        f"top-1 {summary['last']['top1']:.3f}")


USER_RECIPE = '''
from jaxkd import objectives, targets

def _build(hp):
  return (objectives.Term("ce", targets.one_hot(), 1.0 - hp["mix"]),
          objectives.Term("smooth", targets.label_smoothing(smoothing=hp["smoothing"]),
                          hp["mix"]))

smoothed = objectives.Method(
    {"smoothing": objectives.Spec(0.2, objectives.real(0.0, 1.0, hi_open=True)),
     "mix": objectives.Spec(0.5, objectives.real(0.0, 1.0))}, _build, doc="a user recipe")
'''


@pytest.mark.slow
def test_a_recipe_module_in_the_current_directory_is_found_by_the_jaxkd_script(tmp_path):
  """The `jaxkd` script (unlike `python -m`) does not put the current directory on sys.path;
  jaxkd does, so ``my_recipes.py`` there is found without PYTHONPATH=."""
  work, bin_dir = tmp_path / "work", tmp_path / "bin"
  work.mkdir()
  bin_dir.mkdir()
  (work / "my_recipes.py").write_text(USER_RECIPE)
  script = bin_dir / "jaxkd"  # what pip's console script does: sys.path[0] is its folder
  script.write_text("import sys\nfrom jaxkd.cli import main\nsys.exit(main())\n")
  env = dict(os.environ, PYTHONPATH=ROOT)

  def train(*overrides):
    return subprocess.run([sys.executable, str(script), "train", "--workdir", "w", *overrides],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
  # A bad value of the recipe's own hyperparameter: refused by the imported recipe, before
  # anything compiles.
  found = train("--config.method.name=my_recipes:smoothed", "--config.method.mix=1.5")
  assert found.returncode == 2 and "my_recipes:smoothed.mix=1.5 is not allowed" in found.stderr
  missing = train("--config.method.name=other_recipes:smoothed")
  assert missing.returncode == 2
  assert (f"cannot import module 'other_recipes' (No module named 'other_recipes'); allowed: a "
          f"module in the current directory ({work}) or on the Python path (PYTHONPATH)."
          ) in missing.stderr
  assert not (work / "w").exists()


@pytest.mark.slow
def test_user_recipe_trains_from_the_command_line(tmp_path, monkeypatch, capsys):
  """``--config.method.name=module:attribute`` trains a Method of the user's own module."""
  (tmp_path / "my_recipes.py").write_text(USER_RECIPE)
  monkeypatch.syspath_prepend(str(tmp_path))
  workdir = tmp_path / "run"
  args = ["train", "--config", SMOKE, "--workdir", str(workdir), "--config.mesh.data=1",
          "--config.method.name=my_recipes:smoothed", "--config.method.mix=0.25"]
  assert cli.main(args) == 0
  records = [json.loads(l) for l in open(workdir / "metrics.jsonl")]
  train = [r for r in records if "train/loss" in r]
  for r in train:  # the recipe's own terms, weighted as overridden
    want = 0.75 * r["train/ce"] + 0.25 * r["train/smooth"]
    assert abs(r["train/loss"] - want) <= 1e-5 * abs(want)
  bad = args[:-1] + ["--config.method.mix=1.5"]
  assert cli.main(bad[:4] + [str(tmp_path / "bad")] + bad[5:]) == 2
  assert "my_recipes:smoothed.mix=1.5 is not allowed" in capsys.readouterr().err
  assert cli.main(["train", "--config", SMOKE, "--workdir", str(tmp_path / "missing"),
                   "--config.method.name=my_recipes:nothing"]) == 2
  assert "my_recipes.nothing is nothing; allowed: a jaxkd.objectives.Method" in (
      capsys.readouterr().err)


# MLP (bit-exact in a loop), 80 training examples in batches of 16: 5 steps an epoch, not a
# multiple of the 3 steps per dispatch; a checkpoint every 8 steps, a log record every step.
DISPATCH = ["--config.mesh.data=1", "--config.model.name=mlp",
            "--config.data.train_split=train[:80]", "--config.train.num_steps=16", "--config.train.log_every_steps=1",
            "--config.train.checkpoint_every_steps=8"]


def _dispatches(config, steps_per_epoch, total_steps):
  run = types.SimpleNamespace(config=config, steps_per_epoch=steps_per_epoch,
                              total_steps=total_steps)
  step, lengths = 0, []
  while step < total_steps:
    lengths.append(loop._dispatch_length(step, run))
    step += lengths[-1]
  return lengths


@pytest.mark.slow
def test_steps_per_dispatch_logs_every_step_and_resumes_like_single_steps(tmp_path):
  """``train.steps_per_dispatch=3``: one record per step in metrics.jsonl, the records and the
  parameters of single steps, and the same after a resume from the middle checkpoint."""
  config = defaults.get_config("smoke")
  config.train.num_steps, config.train.checkpoint_every_steps = 16, 8
  config.train.steps_per_dispatch = 3
  # Dispatches end at epochs (5, 10, 15), checkpoints (8, 16) and the end; shorter rests run
  # one step at a time.
  assert _dispatches(config, 5, 16) == [3, 1, 1, 3, 1, 1, 3, 1, 1, 1]

  def run(workdir, k):
    args = ["train", "--config", SMOKE, "--workdir", str(workdir), *DISPATCH,
            f"--config.train.steps_per_dispatch={k}"]
    assert cli.main(args) == 0
    return [{key: v for key, v in json.loads(line).items() if key != "images_per_sec"}
            for line in open(workdir / "metrics.jsonl")]

  single, dispatched = run(tmp_path / "k1", 1), run(tmp_path / "k3", 3)
  train_steps = [r["step"] for r in dispatched if "train/loss" in r]
  assert train_steps == list(range(1, 17))
  assert [r["step"] for r in dispatched if "eval/top1" in r] == [5, 10, 15, 16]
  assert [sorted(r) for r in dispatched] == [sorted(r) for r in single]
  for a, b in zip(dispatched, single):  # stacked loop outputs: the loss may move by an ulp
    np.testing.assert_allclose([a[k] for k in sorted(a)], [b[k] for k in sorted(a)], rtol=1e-6)
  final, step = _params(tmp_path / "k3")
  assert step == 16
  _assert_trees_equal(final, _params(tmp_path / "k1")[0])
  # Killed before its last checkpoint: the resumed run redoes steps 9-16 the same way.
  shutil.rmtree(tmp_path / "k3" / "checkpoints" / "16")
  (tmp_path / "k3" / "summary.json").unlink()
  assert run(tmp_path / "k3", 3) == dispatched
  _assert_trees_equal(_params(tmp_path / "k3")[0], final)


@pytest.mark.slow
def test_model_init_from_starts_from_a_runs_latest_checkpoint(tmp_path):
  """``model.init_from``: the params and batch_stats of another run's latest checkpoint
  initialise the model (fine-tuning, ReActNet's stage 2); a workdir without checkpoints or of
  another network is a ConfigError naming the key."""
  from jaxkd.train import run as run_lib, trainer  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  source = tmp_path / "source"
  assert cli.main(["train", "--config", SMOKE, "--workdir", str(source), "--config.mesh.data=1",
                   "--config.method.name=ce", "--config.train.num_steps=2",
                   "--config.train.checkpoint_every_steps=2"]) == 0
  loaded, step = checkpoint.load_variables(str(source))
  assert step == 2
  config = defaults.get_config("smoke")
  config.method.name = "ce"
  config.mesh.data = 1
  config.model.init_from = str(source)
  state = trainer.init_state(run_lib.build_run(config), optax.sgd(0.1))
  _assert_trees_equal(state.params, loaded["params"])
  _assert_trees_equal(state.batch_stats, loaded["batch_stats"])
  assert int(state.step) == 0
  config.model.init_from = str(tmp_path / "nothing")
  with pytest.raises(run_lib.ConfigError, match=r"config\.model\.init_from='.*nothing'.*allowed"):
    run_lib.build_run(config)
  config.model.init_from = str(source)
  config.model.name = "mlp" if config.model.name != "mlp" else "small_cnn"
  with pytest.raises(run_lib.ConfigError, match=r"init_from=.*do not fit model\.name="):
    trainer.init_state(run_lib.build_run(config), optax.sgd(0.1))

"""The loop and the command line: two processes, every method.

SIGKILL-and-resume is tested by tests/test_faults.py (experiments/faults/kill_resume.py).
"""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxkd import cli, objectives
from jaxkd.train import checkpoint
from references import assert_relative_close

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


def test_two_processes_match_one_process(tmp_path):
  args = ("--config.train.num_steps=5", "--config.train.batch_size=16",
          "--config.method.refresh_every=2")
  port = _free_port()
  procs = [
      _jaxkd(tmp_path / "two", *args, devices=2, extra_env={
          "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
          "JAX_PROCESS_ID": str(i)}) for i in range(2)]
  single = _jaxkd(tmp_path / "one", *args, devices=4)
  for p in procs + [single]:
    assert p.wait(timeout=300) == 0, p.stdout.read()
  two, _ = _params(tmp_path / "two")
  one, _ = _params(tmp_path / "one")
  assert_relative_close(one, two, 1e-5)
  summary = json.load(open(tmp_path / "two" / "summary.json"))
  assert summary["num_processes"] == 2 and len(summary["devices"]) == 4


# Long enough to learn the digits well above chance (10 classes), short enough to compile-bound.
LEARN = ["--config.mesh.data=1", "--config.train.num_steps=40", "--config.train.batch_size=32",
         "--config.train.log_every_steps=10"]


@pytest.fixture(scope="module")
def teacher_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("teacher")
  assert cli.main(["train", "--config", SMOKE, "--workdir", str(workdir),
                   "--config.method.name=ce", *LEARN]) == 0
  return workdir


@pytest.mark.parametrize("method", objectives.names())
def test_every_method_learns_from_the_command_line(method, teacher_workdir, tmp_path):
  """Every method trains through `jaxkd train` and learns: CE falls, top-1 far above chance."""
  overrides = [f"--config.method.name={method}", *LEARN]
  if "refresh_every" in objectives.defaults(method):  # MrKD: distil from step 10 on
    overrides.append("--config.method.refresh_every=10")
  teacher = objectives.get(method, **_derived(method)).teacher
  if teacher is not None and teacher.setup is not None:  # a frozen teacher, loaded from a run
    overrides.append(f"--config.teacher.workdir={teacher_workdir}")
  assert cli.main(["train", "--config", SMOKE, "--workdir", str(tmp_path), *overrides]) == 0
  records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  train = [r for r in records if "train/loss" in r]
  assert train and all(np.isfinite(r["train/loss"]) for r in train)
  assert train[-1]["train/ce"] < 0.8 * train[0]["train/ce"], [r["train/ce"] for r in train]
  summary = json.load(open(tmp_path / "summary.json"))
  assert summary["method"] == method and summary["steps"] == 40
  assert summary["last"]["top1"] > 0.5, summary["last"]  # chance: 0.1


def _derived(method):
  values = {"steps_per_epoch": 10, "total_epochs": 1, "num_examples": 100, "refresh_every": 10}
  return {k: v for k, v in values.items() if k in objectives.defaults(method)}


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

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


@pytest.fixture(scope="module")
def teacher_workdir(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("teacher")
  assert cli.main(["train", "--config", SMOKE, "--workdir", str(workdir),
                   "--config.method.name=ce", "--config.mesh.data=1"]) == 0
  return workdir


@pytest.mark.parametrize("method", objectives.names())
def test_every_method_trains_from_the_command_line(method, teacher_workdir, tmp_path):
  overrides = [f"--config.method.name={method}", "--config.mesh.data=1"]
  teacher = objectives.get(method, **_derived(method)).teacher
  if teacher is not None and teacher.setup is not None:  # a frozen teacher, loaded from a run
    overrides.append(f"--config.teacher.workdir={teacher_workdir}")
  assert cli.main(["train", "--config", SMOKE, "--workdir", str(tmp_path), *overrides]) == 0
  records = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  train = [r for r in records if "train/loss" in r]
  assert train and all(np.isfinite(r["train/loss"]) for r in train)
  summary = json.load(open(tmp_path / "summary.json"))
  assert summary["method"] == method and summary["steps"] == 4
  assert 0.0 <= summary["last"]["top1"] <= 1.0


def _derived(method):
  values = {"steps_per_epoch": 10, "total_epochs": 1, "num_examples": 100, "refresh_every": 10}
  return {k: v for k, v in values.items() if k in objectives.defaults(method)}

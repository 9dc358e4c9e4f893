"""Resuming with operational changes, extending a finished run, keeping the best checkpoint."""
import json
import math
import os
import shutil

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from jaxkd import cli
from jaxkd.config import defaults
from jaxkd.train import checkpoint, run as run_lib, workdir as workdir_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = ["--config", os.path.join(ROOT, "configs", "default.py") + ":smoke",
         "--config.mesh.data=1"]  # 4 steps of 16, a checkpoint every 2, keep 2


def _train(workdir, *overrides):
  return cli.main(["train", *SMOKE, "--workdir", str(workdir), *overrides])


def _records(workdir):
  return [json.loads(line) for line in open(workdir / "metrics.jsonl")]


def _files(workdir):
  return {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}


def _assert_same(a, b):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_resume_may_change_logging_and_checkpointing_only(tmp_path, capsys):
  workdir = tmp_path / "run"
  assert _train(workdir) == 0
  final, _ = checkpoint.load_variables(str(workdir))
  shutil.rmtree(workdir / "checkpoints" / "4")  # killed before its last checkpoint
  (workdir / "summary.json").unlink()
  capsys.readouterr()
  assert _train(workdir, "--config.train.log_every_steps=1",
                "--config.train.keep_checkpoints=3") == 0
  err = capsys.readouterr().err
  assert ("config changed at step 2: train.keep_checkpoints 2 -> 3, train.log_every_steps 2 -> 1"
          "\n") in err
  _assert_same(checkpoint.load_variables(str(workdir))[0], final)  # the numbers are the same
  assert [r["step"] for r in _records(workdir)] == [2, 3, 4, 4]
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["train"]["log_every_steps"] == 1 and saved["train"]["keep_checkpoints"] == 3
  assert json.loads((workdir / "run.json").read_text())["config_changes"] == [
      {"step": 2, "changes": {"train.keep_checkpoints": [2, 3],
                              "train.log_every_steps": [2, 1]}}]
  # Anything else is refused, naming the keys that differ (not the allowed ones).
  before = _files(workdir)
  assert _train(workdir, "--config.seed=1", "--config.train.log_every_steps=1",
                "--config.train.optimizer.learning_rate=0.1") == 2
  err = capsys.readouterr().err
  assert ("holds a run of another config (differs in seed, train.optimizer.learning_rate); use "
          "a new workdir, or the same config to resume (a resume may change only "
          "train.checkpoint_every_steps, train.eval_batch_size, train.extend, "
          "train.keep_checkpoints, train.log_every_steps, train.steps_per_dispatch, "
          "data.num_workers, data.data_dir, distributed_timeout_s, and extend a finished run's "
          "length)") in err
  assert _files(workdir) == before


@pytest.mark.slow
def test_extend_a_finished_run(tmp_path, capsys):
  workdir = tmp_path / "run"
  assert _train(workdir) == 0
  original, _ = checkpoint.load_variables(str(workdir))
  original_lines = (workdir / "metrics.jsonl").read_text().splitlines()
  before = _files(workdir)
  capsys.readouterr()
  assert _train(workdir, "--config.train.num_steps=8") == 2
  err = capsys.readouterr().err
  assert ("config.train.num_steps=8: 8 steps, more than the 4-step run in "
          f"workdir={str(workdir)!r}, which finished; set train.extend=True to continue it from "
          "step 4 to 8") in err
  assert _files(workdir) == before
  assert _train(workdir, "--config.train.num_steps=8", "--config.train.extend=True",
                "--config.train.keep_checkpoints=10", "--config.train.log_every_steps=1") == 0
  err = capsys.readouterr().err
  assert "resumed from step 4 of 8\n" in err
  assert "run length now 8 steps, from step 4 on: the learning-rate schedule" in err
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["steps"] == 8 and summary["last"]["step"] == 8
  assert checkpoint.load_variables(str(workdir))[1] == 8
  # Steps 1-4 are the original run's, not replayed: its checkpoint and its log lines.
  _assert_same(checkpoint.load_variables(str(workdir), step=4)[0], original)
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  assert lines[:len(original_lines)] == original_lines
  assert [json.loads(l)["step"] for l in lines[len(original_lines):]] == [5, 6, 7, 8, 8]
  run_json = json.loads((workdir / "run.json").read_text())
  assert run_json["start_step"] == 4 and run_json["total_steps"] == 8
  assert run_json["config_changes"][0]["changes"]["train.num_steps"] == [4, 8]
  # The schedule is rebuilt for 8 steps and read at the optimizer's step count: the cosine
  # of the 4-step run ended near 0 (update 4 at 0.05 * (1 + cos(3pi/4)) / 2); update 5 runs
  # at the 8-step cosine's rate for step 4, 0.025.
  lr = {r["step"]: r["train/lr"] for r in map(json.loads, lines) if "train/lr" in r}
  assert lr[4] == pytest.approx(0.025 * (1 + math.cos(3 * math.pi / 4)), rel=1e-6)
  assert lr[5] == pytest.approx(float(optax.cosine_decay_schedule(0.05, 8)(4)), rel=1e-6)
  assert lr[5] == pytest.approx(0.025, rel=1e-6)


def _config_json(workdir, **train):
  config = defaults.get_config("smoke")
  config.train.update(train)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json())


@pytest.mark.parametrize("latest,train,message", [
    (4, dict(num_steps=2, extend=True), "config.train.num_steps=2: 2 steps, fewer than the 4-step "
     "run in workdir='W'; a run cannot be shortened"),
    (2, dict(num_steps=8, extend=True), "config.train.num_steps=8: 8 steps, more than the 4-step "
     "run in workdir='W', which stopped at step 2; only a finished run can be extended"),
    (None, dict(num_steps=-1, num_epochs=2), "config.train.num_epochs=2, config.train.num_steps=-1:"
     " 180 steps, more than the 4-step run in workdir='W', which stopped at step 0"),
])
def test_length_changes_that_are_refused(tmp_path, latest, train, message):
  workdir = str(tmp_path)
  _config_json(workdir)
  config = defaults.get_config("smoke")
  config.train.update(train)
  with pytest.raises(run_lib.ConfigError) as err:
    workdir_lib.check_config(config, workdir, steps_per_epoch=90, latest_step=latest)
  assert message.replace("'W'", repr(workdir)) in str(err.value)


def test_a_config_json_without_the_newer_keys_reads_them_at_their_defaults(tmp_path):
  config = defaults.get_config("smoke")
  saved = json.loads(config.to_json())
  del saved["train"]["keep_best"], saved["train"]["extend"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  assert workdir_lib.check_config(config, str(tmp_path), steps_per_epoch=90,
                                  latest_step=4) == {}


def test_keep_best_needs_a_validation_split(tmp_path, capsys):
  assert _train(tmp_path / "run", "--config.train.keep_best=True") == 2
  err = capsys.readouterr().err
  assert ("config.data.eval_split='test': train.keep_best=True selects the kept checkpoint on "
          "this split, so it must be a validation split carved from the training set: set "
          "data.eval_split='train[90%:]' and data.train_split='train[:90%]'") in err
  assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_keep_best_keeps_the_best_evaluation_outside_the_rotation(tmp_path):
  workdir = tmp_path / "run"
  # 1297 training examples in batches of 256: 5 steps an epoch, evaluations at 5, 10 and 15.
  assert _train(workdir, "--config.train.keep_best=True", "--config.data.train_split=train[:90%]",
                "--config.data.eval_split=train[90%:]", "--config.train.batch_size=256",
                "--config.train.num_steps=15", "--config.train.checkpoint_every_steps=5",
                "--config.train.keep_checkpoints=1") == 0
  summary = json.loads((workdir / "summary.json").read_text())
  evaluations = [r for r in _records(workdir) if "eval/top1" in r]
  assert [r["step"] for r in evaluations] == [5, 10, 15]
  best = max(evaluations, key=lambda r: r["eval/top1"])  # the first of equals
  assert summary["best_checkpoint_step"] == summary["best"]["step"] == best["step"]
  assert checkpoint.load_variables(str(workdir))[1] == 15
  assert sorted(os.listdir(workdir / "checkpoints")) == ["15"]
  assert sorted(os.listdir(workdir / checkpoint.BEST)) == [str(best["step"])]
  path = workdir / checkpoint.BEST / str(best["step"])
  with ocp.StandardCheckpointer() as checkpointer:
    state = checkpointer.restore(path / "state")
  assert int(state["step"]) == best["step"]
  assert json.loads((path / "meta" / "metadata").read_text())["eval"] == best
  if best["step"] == 15:
    _assert_same(state["params"], checkpoint.load_variables(str(workdir))[0]["params"])

"""What a run tells people: the console, TensorBoard, run.json, the teacher's share."""
import json
import logging
import math
import os
import platform
import shutil
import subprocess

import jax
import pytest
from tensorboard.backend.event_processing import event_accumulator

import jaxkd
from jaxkd import cli, objectives
from jaxkd.train import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "default.py") + ":smoke"
# The default config (MrKD, digits, 22 steps of 64 per epoch), short: 26 steps cross an epoch.
SHORT = ["--config.mesh.data=1", "--config.train.num_steps=26",
         "--config.train.log_every_steps=4", "--config.train.checkpoint_every_steps=8"]


def _records(workdir):
  return [json.loads(line) for line in open(workdir / "metrics.jsonl")]


def _scalars(workdir) -> dict:
  """``{(tag, step): value}`` as TensorBoard reads the event files (purges applied)."""
  events = event_accumulator.EventAccumulator(
      str(workdir / "tensorboard"), size_guidance={event_accumulator.SCALARS: 0})
  events.Reload()
  scalars = {}
  for tag in events.Tags()["scalars"]:
    for event in events.Scalars(tag):
      assert (tag, event.step) not in scalars, (tag, event.step)  # each step once
      scalars[tag, event.step] = event.value
  return scalars


def _assert_tensorboard_equals_metrics(workdir):
  logged = {(key, r["step"]): value for r in _records(workdir) for key, value in r.items()
            if key not in ("step", "epoch")}
  scalars = _scalars(workdir)
  assert set(scalars) == set(logged)
  for key, value in logged.items():
    assert scalars[key] == pytest.approx(value, rel=1e-6, abs=1e-30), key  # float32 events


def _lr(t, total=26, warmup=2, peak=0.05):
  """The default optimizer's rate at update t: warm-up clipped to 10% of the run, cosine."""
  if t < warmup:
    return peak * t / warmup
  return 0.5 * peak * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


def _git_head():
  return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                        check=True).stdout.strip()


def test_console_tensorboard_and_provenance_of_a_run_resumed_and_rerun(tmp_path, capsys, caplog):
  workdir = tmp_path / "run"
  args = ["train", "--workdir", str(workdir), *SHORT]
  with caplog.at_level(logging.WARNING):
    assert cli.main(args) == 0
  out, err = capsys.readouterr()
  summary = json.loads((workdir / "summary.json").read_text())
  variables, _ = checkpoint.load_variables(str(workdir))
  num_params = sum(x.size for x in jax.tree_util.tree_leaves(variables["params"]))
  # The header, plain lines at every log step (stderr is no terminal here), the evaluations.
  assert f"jaxkd train: method mrkd, model small_cnn ({num_params:,} parameters)\n" in err
  assert "  data digits: 1442 train / 355 eval examples, 8x8x1, 10 classes\n" in err
  assert (f"  26 steps (1.18 epochs of 22 steps, batch 64) on 1 device (cpu), 1 process; "
          f"workdir {workdir}\n") in err
  assert "\r" not in err and "it/s" not in err and "step/s" not in err
  lines = err.splitlines()
  for step in (4, 8, 24, 26):
    assert any(l.startswith(f"step {step}/26 (epoch {round(step / 22, 2):g}): loss ")
               for l in lines), step
  assert any(l.startswith("epoch 1 (step 22): top-1 ") and ", lr " in l for l in lines)
  last = summary["last"]
  assert (f"epoch 1.18 (step 26): top-1 {last['top1']:.4f}, NLL {last['nll']:.4f}, ECE "
          f"{last['ece']:.4f}, lr {_lr(25):.4g}") in lines
  best = summary["best"]
  assert out == (f"best top-1 {best['top1']:.4f} (epoch {round(best['epoch'], 2):g}), last top-1 "
                 f"{last['top1']:.4f}, NLL {last['nll']:.4f}, ECE {last['ece']:.4f}; teacher "
                 f"active in {4 / 26:.1%} of steps; {workdir}\n")
  # MrKD's ring fills after one epoch (refresh_every = 22 steps): 4 of 26 steps distil.
  assert "inactive for 22 of this run's 26 steps (85%)" in caplog.text
  assert summary["teacher_active_share"] == pytest.approx(4 / 26)
  records = _records(workdir)
  for r in records:
    if "train/lr" in r:
      assert r["train/lr"] == pytest.approx(_lr(r["step"] - 1), rel=1e-5, abs=1e-8)  # float32
  # Windows of 4 steps (2 at the end): steps 23 to 26 distil.
  assert [r["train/teacher_active"] for r in records if "train/loss" in r] == [0] * 5 + [0.5, 1]
  _assert_tensorboard_equals_metrics(workdir)
  # Provenance, in run.json and summary.json; config.json stays the user's config.
  run_json = json.loads((workdir / "run.json").read_text())
  for info in (run_json, summary):
    assert info["jaxkd_version"] == jaxkd.__version__ and info["git_commit"] == _git_head()
    assert info["versions"]["jax"] == jax.__version__
    assert info["python"] == platform.python_version()
    assert info["devices"] == ["cpu:0"] and info["num_processes"] == 1
    assert info["hparams"] == {**objectives.defaults("mrkd"), "refresh_every": 22}
  assert run_json["start_step"] == 0 and run_json["total_steps"] == 26
  saved = json.loads((workdir / "config.json").read_text())
  assert set(saved) == {"seed", "method", "model", "data", "train", "teacher", "mesh",
                        "distributed"} and saved["method"] == {"name": "mrkd"}

  # A kill after the log of step 24's window and before checkpoint 26: the resumed run redoes
  # 25 and 26, and TensorBoard shows each step once, as metrics.jsonl does.
  shutil.rmtree(workdir / "checkpoints" / "26")
  (workdir / "summary.json").unlink()
  assert cli.main(args) == 0
  out, err = capsys.readouterr()
  assert "resumed from step 24 of 26\n" in err and out.startswith("best top-1 ")
  assert json.loads((workdir / "run.json").read_text())["start_step"] == 24
  assert [r["step"] for r in _records(workdir)] == [4, 8, 12, 16, 20, 22, 24, 26, 26]
  _assert_tensorboard_equals_metrics(workdir)
  again = json.loads((workdir / "summary.json").read_text())
  assert again["teacher_active_share"] == pytest.approx(4 / 26)

  # A complete run is not trained again: its summary is printed.
  before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
  assert cli.main(args) == 0
  out, err = capsys.readouterr()
  assert "already finished at step 26; nothing to train\n" in err and "resumed" not in err
  assert out.startswith(f"best top-1 {again['best']['top1']:.4f}")
  assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("start_from_init,share", [(False, 0.0), (True, 1.0)])
def test_teacher_share_and_the_warning_when_it_is_never_active(start_from_init, share, tmp_path,
                                                               capsys, caplog):
  """4 steps of 16 examples: MrKD's first snapshot would come after 90 steps (one epoch)."""
  with caplog.at_level(logging.WARNING):
    assert cli.main(["train", "--config", SMOKE, "--workdir", str(tmp_path),
                     "--config.mesh.data=1",
                     f"--config.method.start_from_init={start_from_init}"]) == 0
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["teacher_active_share"] == share
  assert f"; teacher active in {share:.1%} of steps; " in capsys.readouterr().out
  assert [r["train/teacher_active"] for r in _records(tmp_path) if "train/loss" in r] == [share] * 2
  warning = ("the replay teacher of mrkd has no valid member during its first 90 steps and this "
             "run has 4: the teacher is NEVER ACTIVE, so the whole run trains on the method's "
             "no-teacher terms alone (no distillation); train for more than 90 steps to distil")
  assert (warning in caplog.text) == (not start_from_init), caplog.text

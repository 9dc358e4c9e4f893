"""What a run tells people: the console, TensorBoard, run.json, the teacher's share, signals."""
import json
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

import jaxkd
from jaxkd import cli, objectives
from jaxkd.train import checkpoint, signals

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "default.py") + ":smoke"
# The default config (MrKD, digits), short, on the whole training split (22 steps of 64 per
# epoch) evaluated on test: 26 steps cross an epoch. (The default run's validation split and
# kept best checkpoint: tests/test_eval_compare.py.)
SHORT = ["--config.mesh.data=1", "--config.train.num_steps=26",
         "--config.train.log_every_steps=4", "--config.train.checkpoint_every_steps=8",
         "--config.data.train_split=train", "--config.data.eval_split=test",
         "--config.train.keep_best=False"]


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
  """The commit of this source tree, or None outside a git checkout (an unpacked sdist)."""
  out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                       check=False)
  return out.stdout.strip() if out.returncode == 0 else None


@pytest.mark.slow
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
  assert out == (f"best top-1 {best['top1']:.4f} (epoch {round(best['epoch'], 2):g}) on test, last top-1 "
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
    assert info["git_dirty"] in ((True, False) if info["git_commit"] else (None,))
    assert info["versions"]["jax"] == jax.__version__
    assert info["python"] == platform.python_version()
    assert info["devices"] == ["cpu:0"] and info["num_processes"] == 1
    assert info["hparams"] == {**objectives.defaults("mrkd"), "refresh_every": 22}
  assert run_json["start_step"] == 0 and run_json["total_steps"] == 26
  saved = json.loads((workdir / "config.json").read_text())
  assert set(saved) == {"seed", "method", "model", "data", "train", "teacher", "mesh",
                        "generate", "distributed", "distributed_timeout_s"}
  assert saved["method"] == {"name": "mrkd"}

  # A kill after the log of step 24's window and before checkpoint 26: the resumed run redoes
  # 25 and 26, and TensorBoard shows each step once, as metrics.jsonl does.
  shutil.rmtree(workdir / "checkpoints" / "26")
  (workdir / "summary.json").unlink()
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    assert cli.main(args) == 0
  out, err = capsys.readouterr()
  assert "resumed from step 24 of 26\n" in err and out.startswith("best top-1 ")
  # Steps 1-22, the teacher's inactive ones, are done: no warning about them again.
  assert "inactive" not in caplog.text and "clipped" not in caplog.text
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
@pytest.mark.slow
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


def test_a_signal_stops_after_the_step_and_a_second_one_at_once():
  # A background job (`nohup pytest ... &`) starts with SIGINT ignored, which StopRequests
  # rightly keeps; this test needs Python's own handler, as an interactive shell gives it.
  inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    _signal_stops_after_the_step_and_a_second_one_at_once()
  finally:
    signal.signal(signal.SIGINT, inherited)


def test_the_signal_test_passes_in_a_background_job():
  """As under `nohup pytest ... &`: SIGINT ignored when the test starts."""
  inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    test_a_signal_stops_after_the_step_and_a_second_one_at_once()
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # given back as found
  finally:
    signal.signal(signal.SIGINT, inherited)


def _signal_stops_after_the_step_and_a_second_one_at_once():
  before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  with signals.StopRequests() as stop:
    assert stop.requested(sync=False) is None
    os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: only noted
    # The handler runs in the main thread at its next check, not always before the next line.
    deadline = time.time() + 5.0
    while stop.requested(sync=False) is None and time.time() < deadline:
      time.sleep(0.01)
    assert stop.requested(sync=False) == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(1.0)  # the handler runs between bytecodes
  assert {s: signal.getsignal(s) for s in before} == before  # restored
  assert signals.Interrupted(3, signal.SIGINT, "w").exit_status == 130
  assert signals.Interrupted(3, signal.SIGTERM, "w").exit_status == 143


def test_ctrl_c_outside_the_loop_is_one_line_and_status_130(tmp_path, capsys, monkeypatch):
  """Before training starts (data, compilation) or on a second Ctrl-C: no traceback."""
  from jaxkd.train import loop  # pylint: disable=import-outside-toplevel

  def interrupted(config, workdir):
    raise KeyboardInterrupt
  monkeypatch.setattr(loop, "train_and_evaluate", interrupted)
  assert cli.main(["train", "--workdir", str(tmp_path)]) == 130
  assert capsys.readouterr().err == (f"jaxkd: interrupted; the newest complete checkpoint in "
                                     f"{tmp_path}, if any, is kept; run the same command to "
                                     "resume\n")


def _has_checkpoint(workdir) -> bool:
  ckpt = workdir / "checkpoints"
  return ckpt.is_dir() and any(p.name.isdigit() and (p / "commit_success.txt").exists()
                               for p in ckpt.iterdir())


@pytest.mark.slow
def test_sigterm_checkpoints_exits_143_and_resumes_to_the_uninterrupted_result(tmp_path, capsys):
  """A preempted VM's SIGTERM: the step finishes, a checkpoint is written, the run resumes."""
  args = ["--config.mesh.data=1", "--config.train.num_steps=30",
          "--config.train.checkpoint_every_steps=3"]
  workdir = tmp_path / "run"
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.Popen([sys.executable, "-m", "jaxkd.cli", "train", "--workdir", str(workdir),
                           *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  while not _has_checkpoint(workdir) and proc.poll() is None:
    time.sleep(0.02)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 143, err
  step = checkpoint.load_variables(str(workdir))[1]
  assert 3 <= step < 30
  assert err.splitlines()[-1] == (f"jaxkd: interrupted at step {step}; checkpoint saved in "
                                  f"{workdir}; run the same command to resume")
  assert "Traceback" not in err and out == ""
  assert not (workdir / "summary.json").exists()
  assert cli.main(["train", "--workdir", str(workdir), *args]) == 0
  assert f"resumed from step {step} of 30\n" in capsys.readouterr().err
  assert cli.main(["train", "--workdir", str(tmp_path / "reference"), *args]) == 0
  resumed, reference = (checkpoint.load_variables(str(w))[0]
                        for w in (workdir, tmp_path / "reference"))
  for a, b in zip(jax.tree_util.tree_leaves(resumed), jax.tree_util.tree_leaves(reference),
                  strict=True):
    np.testing.assert_array_equal(a, b)
  # Each step logged once, in order; the interrupted step adds a log line unless it was one.
  steps = [r["step"] for r in _records(workdir)]
  reference_steps = [r["step"] for r in _records(tmp_path / "reference")]
  assert steps == sorted(steps) and set(steps) - set(reference_steps) <= {step}
  assert sorted(set(steps) | {step}) == sorted(set(reference_steps) | {step})

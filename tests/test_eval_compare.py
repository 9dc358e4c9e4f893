"""`jaxkd eval` and `jaxkd compare` on two tiny finished runs."""
import json
import os
import shutil
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from jaxkd import analysis, cli, objectives, reporting, teachers
from jaxkd import train as train_lib
from jaxkd.train import checkpoint, evaluate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "default.py") + ":smoke"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """Two 4-step runs on digits: MrKD (the default) and CE with another seed."""
  root = tmp_path_factory.mktemp("runs")
  workdirs = {"mrkd": str(root / "mrkd"), "ce": str(root / "ce")}
  for method, workdir in workdirs.items():
    assert cli.main(["train", "--config", SMOKE, "--workdir", workdir, "--config.mesh.data=1",
                     f"--config.method.name={method}",
                     f"--config.seed={int(method == 'ce')}"]) == 0
  return workdirs


def _summary(workdir):
  with open(os.path.join(workdir, "summary.json")) as f:
    return json.load(f)


def _config(workdir):
  with open(os.path.join(workdir, "config.json")) as f:
    return ml_collections.ConfigDict(json.load(f))


@pytest.mark.slow
def test_eval_reproduces_the_loops_last_evaluation(runs, capsys):
  workdir = runs["mrkd"]
  assert cli.main(["eval", "--workdir", workdir]) == 0
  out = capsys.readouterr().out
  last = _summary(workdir)["last"]
  with open(os.path.join(workdir, "eval", f"eval_test_{last['step']}.json")) as f:
    result = json.load(f)
  assert result["step"] == last["step"] and result["split"] == "test"
  assert result["num_examples"] == 355 and result["method"] == "mrkd"
  metrics = result["metrics"]
  assert metrics["top1"] == last["top1"] and metrics["top5"] == last["top5"]
  assert metrics["nll"] == pytest.approx(last["nll"], abs=1e-6)
  assert metrics["ece"] == pytest.approx(last["ece"], abs=1e-6)
  assert f"| {metrics['top1']:.4f} | {metrics['top5']:.4f} | {metrics['nll']:.4f} |" in out
  png = os.path.join(workdir, "eval", f"reliability_test_{last['step']}.png")
  with open(png, "rb") as f:
    assert f.read(8) == PNG

  # Stability from the logits of the whole split in one batch, without the batched sums.
  trainer = train_lib.build(_config(workdir))
  variables, _ = checkpoint.load_variables(workdir, step=last["step"])
  data = trainer.run.eval_data
  x = trainer.run.task.preprocess(None, jax.numpy.asarray(data.inputs))
  out, _ = teachers.apply_model(trainer.run.model, variables, x, train=False)
  logits = np.asarray(out["logits"], np.float64)
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  labels = np.asarray(data.labels)
  spread = np.mean([np.mean(np.sum((probs[labels == c] - probs[labels == c].mean(0)) ** 2, 1))
                    for c in np.unique(labels)])
  # After 4 steps the probabilities barely differ (1 - S near 7e-5); the float32 sums
  # E||p||^2 - ||E p||^2 still give it to 3e-5 relative (measured).
  assert metrics["intra_class_variance"] == pytest.approx(spread, rel=1e-3)
  assert metrics["stability"] == pytest.approx(1.0 - spread, abs=1e-6)
  assert analysis.finalize_metrics(result["sums"])["top1"] == last["top1"]


@pytest.mark.slow
def test_eval_of_the_best_checkpoint_on_a_validation_slice(runs, tmp_path):
  workdir = runs["ce"]
  best = _summary(workdir)["best"]
  result = train_lib.evaluate_checkpoint(workdir, checkpoint="best", split="train[90%:]")
  assert result["step"] == best["step"] and result["split"] == "train[90%:]"
  assert result["num_examples"] == 1442 - 1298  # round(0.9 * 1442) = 1298
  json_path, png_path = evaluate.write_outputs(result, str(tmp_path))
  assert os.path.basename(json_path) == f"eval_train_90pct-_{best['step']}.json"
  with open(png_path, "rb") as f:
    assert f.read(8) == PNG


@pytest.mark.parametrize("args, flag", [
    (["--workdir", "{missing}"], "--workdir="),
    (["--workdir", "{empty}"], "--workdir="),
    (["--workdir", "{run}", "--checkpoint", "3"], "--checkpoint='3'"),
    (["--workdir", "{run}", "--checkpoint", "first"], "--checkpoint='first'"),
    (["--workdir", "{run}", "--split", "valid"], "--split='valid'"),
    (["--workdir", "{run}", "--split", "test[400:]"], "--split='test[400:]'"),
])
def test_eval_bad_input_exits_2_naming_the_flag_and_writes_nothing(runs, tmp_path, capsys, args,
                                                                  flag):
  empty = tmp_path / "empty"
  empty.mkdir()
  shutil.copy(os.path.join(runs["ce"], "config.json"), empty / "config.json")
  paths = dict(missing=str(tmp_path / "nope"), empty=str(empty), run=runs["ce"])
  out = tmp_path / "out"
  argv = ["eval", *[a.format(**paths) for a in args], "--out", str(out)]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"jaxkd: error: {flag}") and err.count("\n") == 1, err
  assert "allowed" in err
  assert not out.exists()


def test_best_checkpoint_not_kept_is_a_clear_error(tmp_path):
  for step in (2, 4):
    (tmp_path / "checkpoints" / str(step)).mkdir(parents=True)
  (tmp_path / "config.json").write_text("{}")
  (tmp_path / "summary.json").write_text(json.dumps({"best": {"step": 3, "top1": 0.5}}))
  with pytest.raises(ValueError, match=r"--checkpoint=best: .*step 3.* was not kept: the run had "
                     r"train.keep_best=False.*allowed: last or one of the kept steps \[2, 4\] "
                     r"\(train with --config.train.keep_best=True"):
    evaluate.resolve_checkpoint(str(tmp_path), "best")
  with pytest.raises(ValueError, match=r"--checkpoint='5'.*allowed: last or one of the kept "
                     r"steps \[2, 4\]$"):  # no "best" where it is not kept
    evaluate.resolve_checkpoint(str(tmp_path), "5")
  assert evaluate.resolve_checkpoint(str(tmp_path), "last") == 4
  assert evaluate.resolve_checkpoint(str(tmp_path), "2") == 2
  (tmp_path / "checkpoints_best" / "3").mkdir(parents=True)  # kept by train.keep_best
  assert evaluate.resolve_checkpoint(str(tmp_path), "best") == 3
  with pytest.raises(ValueError, match=r"allowed: last, best or one of the kept steps \[2, 4\]"):
    evaluate.resolve_checkpoint(str(tmp_path), "5")


@pytest.mark.slow
def test_the_default_run_selects_on_validation_and_eval_best_loads_it(tmp_path):
  """The README's commands: `jaxkd train --workdir W` (shortened), then `jaxkd eval --workdir W
  --checkpoint best --split test`: the best epoch is chosen on train[90%:], said in the last
  line, and its checkpoint (in checkpoints_best/, not among the latest) is evaluated."""
  workdir = tmp_path / "run"
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  # 1298 training images of 64: 20 steps an epoch, 3 epochs, 1 checkpoint kept; the third
  # epoch's learning rate (x40) wrecks the model, so the best epoch is not the last.
  train = subprocess.run(
      [sys.executable, "-m", "jaxkd.cli", "train", "--workdir", str(workdir),
       "--config.mesh.data=1", "--config.train.num_epochs=3", "--config.train.keep_checkpoints=1",
       "--config.train.optimizer.schedule=multistep", "--config.train.optimizer.milestones=(2,)",
       "--config.train.optimizer.gamma=40.0", "--config.train.skip_nonfinite=True"],
      env=env, capture_output=True, text=True, timeout=600, check=False)
  assert train.returncode == 0, train.stderr
  summary = json.loads((workdir / "summary.json").read_text())
  best = summary["best"]
  assert "1298 train / 144 eval examples" in train.stderr
  assert best["step"] < summary["last"]["step"]
  assert best["step"] not in checkpoint.checkpoint_steps(str(workdir))  # only in checkpoints_best
  assert train.stdout.startswith(
      f"best top-1 {best['top1']:.4f} (epoch {round(best['epoch'], 2):g}) on the validation split "
      "train[90%:], its checkpoint kept (jaxkd eval --checkpoint best); last top-1 ")
  assert os.listdir(workdir / "checkpoints_best") == [str(best["step"])]
  out = tmp_path / "eval"
  evaluated = subprocess.run(
      [sys.executable, "-m", "jaxkd.cli", "eval", "--workdir", str(workdir), "--checkpoint",
       "best", "--split", "test", "--out", str(out)], env=env, capture_output=True, text=True,
      timeout=600, check=False)
  assert evaluated.returncode == 0, evaluated.stderr
  # Nothing about training (the warm-up clipped) nor orbax's optional metadata file.
  assert "clipped" not in evaluated.stderr and "Metadata file" not in evaluated.stderr
  assert "clipped to 6 steps" in train.stderr  # said once, by the run that clips it
  (result,) = [json.loads(p.read_text()) for p in out.glob("eval_*.json")]
  assert (result["step"], result["split"], result["num_examples"]) == (best["step"], "test", 355)
  # A refused config on that workdir: its one line, no training warnings before it.
  refused = subprocess.run(
      [sys.executable, "-m", "jaxkd.cli", "train", "--workdir", str(workdir), "--config.seed=1",
       "--config.mesh.data=1"], env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert refused.returncode == 2
  assert refused.stderr.startswith("jaxkd: error: workdir=") and refused.stderr.count("\n") == 1, (
      refused.stderr)
  again = evaluate.evaluate_checkpoint(str(workdir), checkpoint="best")  # on the validation split
  assert again["step"] == best["step"] and again["split"] == "train[90%:]"
  assert again["metrics"]["top1"] == pytest.approx(best["top1"], abs=1e-6)  # the loop's number


def test_compare_prints_both_runs_and_draws_their_curves(runs, tmp_path, capsys):
  out = tmp_path / "out"
  assert cli.main(["compare", runs["mrkd"], runs["ce"], "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  markdown, records = reporting.compare_runs([runs["mrkd"], runs["ce"]])
  assert markdown in printed
  for record, method in zip(records, ("mrkd", "ce")):
    summary = _summary(runs[method])
    assert record["method"] == method and record["finished"]
    assert record["best"]["top1"] == summary["best"]["top1"]
    assert record["hparams"] == summary["hparams"]
    row = next(line for line in printed.splitlines() if line.startswith(f"| {runs[method]} |"))
    assert f"| {method} |" in row and f"| {summary['best']['top1']:.4f} |" in row
  temperature = objectives.defaults("mrkd")["temperature"]
  assert f"temperature={temperature:.4g}" in markdown  # MrKD's resolved hyperparameters
  with open(out / "compare.png", "rb") as f:
    assert f.read(8) == PNG


@pytest.mark.slow
def test_compare_writes_its_table_with_steps_and_epochs_beside_the_png(runs, tmp_path):
  """`jaxkd compare A B --out DIR` as a user runs it: DIR/compare.md holds the printed table,
  whose steps and epochs columns are each run's (its last evaluation: the end of the run)."""
  out = tmp_path / "out"
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-m", "jaxkd.cli", "compare", runs["mrkd"], runs["ce"],
                         "--out", str(out)], env=env, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  table = (out / "compare.md").read_text()
  assert proc.stdout == f"{table}wrote {out / 'compare.md'} and {out / 'compare.png'}\n"
  header, _, *rows = table.splitlines()
  columns = [c.strip() for c in header.strip("|").split("|")]
  assert columns[3:5] == ["steps", "epochs"]
  for method, row in zip(("mrkd", "ce"), rows):
    cells = [c.strip() for c in row.strip("|").split("|")]
    summary = _summary(runs[method])
    assert cells[0] == runs[method] and cells[1] == method
    assert (int(cells[3]), float(cells[4])) == (summary["steps"], pytest.approx(
        summary["last"]["epoch"], rel=1e-2))
  with open(out / "compare.png", "rb") as f:
    assert f.read(8) == PNG


def test_compare_reads_an_older_run_without_summary_or_run_json(runs, tmp_path):
  old = tmp_path / "old"
  old.mkdir()
  for name in ("config.json", "metrics.jsonl"):
    shutil.copy(os.path.join(runs["ce"], name), old / name)
  _, (record,) = reporting.compare_runs([str(old)])
  summary = _summary(runs["ce"])
  assert record["method"] == "ce" and not record["finished"] and record["wall_time_s"] is None
  assert record["best"]["top1"] == summary["best"]["top1"]
  assert record["last"]["nll"] == summary["last"]["nll"]


def test_compare_bad_input_exits_2(tmp_path, capsys):
  assert cli.main(["compare", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("jaxkd: error: workdir=") and err.count("\n") == 1
  assert not (tmp_path / "out").exists()

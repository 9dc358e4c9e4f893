"""Fault injection: SIGKILL real `jaxkd train` runs at random points, resume, compare.

Each trial starts a run in a fresh workdir, kills it with SIGKILL at a random moment of its
training, after its first checkpoint (checkpoints are written every 3 steps, so kills land
during writes too; the first trial dies right after its first complete checkpoint), then
runs the same command again until it finishes. The final parameters must equal those of an
uninterrupted run bit for bit, and metrics.jsonl must hold each step once.

    python experiments/faults/kill_resume.py --trials 10 --out experiments/results/faults.json

The test suite runs a short form (tests/test_faults.py).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

from jaxkd.train import checkpoint

__all__ = ["run_trials"]

# Kill points are drawn over this share of the reference's training time: a trial that runs a
# little faster than the reference must still be killed (an unkilled trial does not pass).
_KILL_SHARE = 0.85
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ("--config", os.path.join(ROOT, "configs", "default.py") + ":smoke",
        "--config.train.num_steps=60", "--config.train.checkpoint_every_steps=3",
        "--config.train.keep_checkpoints=2", "--config.method.refresh_every=4",
        "--config.mesh.data=1")


def _start(workdir: str) -> subprocess.Popen:
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.Popen([sys.executable, "-m", "jaxkd.cli", "train", "--workdir", workdir,
                           *ARGS], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)


def _finish(workdir: str) -> dict:
  proc = _start(workdir)
  output, _ = proc.communicate(timeout=600)
  if proc.returncode != 0:
    raise RuntimeError(f"run in {workdir} failed:\n{output}")
  params, step = checkpoint.load_variables(workdir)
  return {"params": params["params"], "step": step}


def _started(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, "config.json"))


def _has_checkpoint(workdir: str) -> bool:
  ckpt = os.path.join(workdir, "checkpoints")
  return os.path.isdir(ckpt) and any(
      name.isdigit() and os.path.exists(os.path.join(ckpt, name, "commit_success.txt"))
      for name in os.listdir(ckpt))


def _same(a, b) -> bool:
  leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  return len(leaves_a) == len(leaves_b) and all(
      np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b))


def _trial(root: str, index: int, rng: random.Random, reference: dict,
           train_seconds: float) -> dict:
  workdir = os.path.join(root, f"trial{index}")
  proc = _start(workdir)
  while not _started(workdir) and proc.poll() is None:
    time.sleep(0.02)
  started = time.time()
  if index > 0:  # trial 0 dies right after its first complete checkpoint
    # Others die at a uniform moment of training proper (after the first checkpoint, so not
    # in compilation), where checkpoint writes happen every few steps.
    while not _has_checkpoint(workdir) and proc.poll() is None:
      time.sleep(0.02)
    time.sleep(rng.uniform(0.0, _KILL_SHARE * train_seconds))
  while not _has_checkpoint(workdir) and proc.poll() is None:
    time.sleep(0.02)
  delay = time.time() - started
  killed = proc.poll() is None
  if killed:
    proc.send_signal(signal.SIGKILL)
  proc.wait()
  ckpt = os.path.join(workdir, "checkpoints")
  on_disk = sorted(os.listdir(ckpt)) if os.path.isdir(ckpt) else []
  result = _finish(workdir)
  steps = [json.loads(line)["step"] for line in open(os.path.join(workdir, "metrics.jsonl"))]
  kinds = [tuple(sorted(json.loads(line))) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  return {"trial": index, "kill_after_s": round(delay, 3), "killed": killed,
          "checkpoints_at_kill": on_disk,
          "mid_write": any("tmp" in name for name in on_disk),
          "final_step": result["step"], "params_equal": _same(result["params"], reference["params"]),
          "metrics_steps_ordered": steps == sorted(steps) and len(set(zip(steps, kinds))) == len(steps)}


def run_trials(trials: int, *, seed: int = 0, root: str | None = None) -> dict:
  """Runs ``trials`` kill/resume trials; returns a JSON-able report."""
  root = root or tempfile.mkdtemp(prefix="jaxkd-faults-")
  rng = random.Random(seed)
  start = time.time()
  reference_dir = os.path.join(root, "reference")
  proc = _start(reference_dir)
  while not _has_checkpoint(reference_dir) and proc.poll() is None:
    time.sleep(0.02)
  first_checkpoint = time.time()
  proc.communicate(timeout=600)
  # Kill points are uniform over most of the reference's time from its first checkpoint on.
  train_seconds = max(0.5, time.time() - first_checkpoint)
  reference = _finish(reference_dir)  # already complete: restores and checks the result
  results = [_trial(root, i, rng, reference, train_seconds) for i in range(trials)]
  passed = sum(r["killed"] and r["params_equal"] and r["metrics_steps_ordered"]
               and r["final_step"] == 60 for r in results)
  shutil.rmtree(root, ignore_errors=True)
  return {"trials": trials, "passed": passed, "results": results, "args": list(ARGS),
          "seed": seed, "kill_window_s": round(train_seconds, 2),
          "wall_time_s": round(time.time() - start, 1)}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--trials", type=int, default=10)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=None, help="write the report JSON here")
  args = parser.parse_args()
  report = run_trials(args.trials, seed=args.seed)
  text = json.dumps(report, indent=2)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text + "\n")
  print(text)
  print(f"{report['passed']} passed, {report['trials'] - report['passed']} failed")
  return 0 if report["passed"] == report["trials"] else 1


if __name__ == "__main__":
  sys.exit(main())

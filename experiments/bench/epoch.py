"""A fraction of a CIFAR epoch end to end through ``jaxkd train``: images/s and where time went.

    python experiments/bench/epoch.py --model resnet18 --batch-size 128 --num-examples 6144 \
        --epochs 2 --steps-per-dispatch 8 --out experiments/results/bench/FILE.json

The run is `jaxkd train` itself (`jaxkd.cli.main`, the default config with the overrides
below) on CIFAR-100-shaped data: tensorflow-datasets' mock of ``cifar100`` (uint8 32x32x3, 100
classes, ``--num-examples`` in each split; the GPU machines hold no CIFAR copy), loaded into
device memory as a real CIFAR run loads it, with CIFAR augmentation on the device (crop 4,
flip, rotation 15), ``model.dtype`` bfloat16 and ``train.steps_per_dispatch``. It trains
``--epochs`` epochs of that split, evaluating on the test split after each and saving a
checkpoint every epoch. The same run goes twice, each in a fresh workdir: ``cold`` compiles
every program (train, train_many, eval); ``warm`` finds them in JAX's persistent compilation
cache (``JAX_COMPILATION_CACHE_DIR``), as a resumed or repeated run does.

From each run's ``summary.json``: ``time_split_s`` (host seconds of the training loop spent
preparing batches, dispatching and awaiting train steps, evaluating, saving checkpoints; the
rest of the wall time is logging and setup) and ``wall_time_s``. ``train_images_per_s`` is
the training images over data + step seconds (the first dispatch's compiling or cache loading
included); ``steady_images_per_s`` the median rate of the log intervals (4 an epoch) that hold
neither the start nor an evaluation. ``images_per_s`` is the warm run's steady rate, and
``epoch_s_cifar`` extrapolates a full CIFAR epoch (50,000 training and 10,000 test images, one
checkpoint) from it and the warm run's evaluation and checkpoint times.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

import default_run

_CIFAR = {"train": 50_000, "test": 10_000}


def _log_every(args) -> int:
  return max(1, args.num_examples // args.batch_size // 4)


def _overrides(args) -> list[str]:
  steps = args.num_examples // args.batch_size
  return [f"--config.{key}={value}" for key, value in (
      ("data.name", "cifar100"), ("data.data_dir", args.data_dir),
      # A CIFAR run's splits: all of train, evaluated on test (the default run carves a
      # validation split from train instead).
      ("data.train_split", "train"), ("data.eval_split", "test"), ("train.keep_best", False),
      ("data.crop_padding", 4), ("data.flip", True), ("data.rotation_degrees", 15.0),
      ("model.name", args.model), ("model.dtype", args.dtype), ("model.cpu_conv", "xla"),
      ("method.name", args.method), ("mesh.data", 1),
      ("train.batch_size", args.batch_size), ("train.eval_batch_size", 2 * args.batch_size),
      ("train.num_epochs", args.epochs), ("train.steps_per_dispatch", args.steps_per_dispatch),
      ("train.log_every_steps", _log_every(args)),
      ("train.checkpoint_every_steps", steps))]


def _one_run(args, workdir: str) -> dict:
  """``jaxkd train`` once in ``workdir``; its timings from summary.json and metrics.jsonl."""
  from jaxkd import cli
  start = time.perf_counter()
  status = cli.main(["train", "--workdir", workdir] + _overrides(args))
  elapsed = time.perf_counter() - start
  if status != 0:
    raise SystemExit(f"jaxkd train exited with {status}")
  with open(os.path.join(workdir, "summary.json")) as f:
    summary = json.load(f)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  split, steps = summary["time_split_s"], summary["steps"]
  epochs = args.epochs
  train_images, eval_images = steps * args.batch_size, epochs * args.num_examples
  # Log intervals that hold neither the run's start (compiling or loading programs) nor an
  # evaluation and checkpoint (those follow the log record of an epoch's last step).
  every, per_epoch = _log_every(args), args.num_examples // args.batch_size
  steady = [r["images_per_sec"] for r in records
            if "images_per_sec" in r and (r["step"] - every) % per_epoch]
  return {"wall_time_s": summary["wall_time_s"], "process_s": elapsed, "steps": steps,
          "time_split_s": split,
          "other_s": summary["wall_time_s"] - sum(split.values()),
          "train_images_per_s": train_images / (split["data_s"] + split["step_s"]),
          "step_images_per_s": train_images / split["step_s"],
          "data_share_of_train": split["data_s"] / (split["data_s"] + split["step_s"]),
          "eval_images_per_s": eval_images / split["eval_s"],
          "checkpoint_s_per_save": split["checkpoint_s"] / epochs,
          "steady_images_per_s": float(np.median(steady)) if steady else None,
          "steady_intervals": len(steady),
          "last_top1": summary["last"]["top1"]}


def run(args) -> dict:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from jaxkd import bench  # pylint: disable=import-outside-toplevel
  root = tempfile.mkdtemp(prefix="jaxkd-epoch-")
  args.data_dir = os.path.join(root, "tfds")  # empty: the mock answers every read
  load_before = os.getloadavg()
  runs = {}
  with tfds.testing.mock_data(num_examples=args.num_examples):
    for name in ("cold", "warm"):
      runs[name] = _one_run(args, os.path.join(root, name))
  warm = runs["warm"]
  rate = warm["steady_images_per_s"] or warm["train_images_per_s"]
  epoch_s = (_CIFAR["train"] / rate
             + _CIFAR["test"] / warm["eval_images_per_s"] + warm["checkpoint_s_per_save"])
  return {"command": default_run.command(),
          "model": args.model, "method": args.method, "batch_size": args.batch_size,
          "dtype": args.dtype, "steps_per_dispatch": args.steps_per_dispatch,
          "num_examples": args.num_examples, "epochs": args.epochs,
          "data": "tfds mock of cifar100 (uint8 32x32x3, 100 classes) in device memory; CIFAR "
                  "augmentation on the device",
          "train_cli": "jaxkd train --workdir W " + " ".join(_overrides(args)),
          "machine": bench.machine(),
          "load_average": {"before": load_before, "after": os.getloadavg()},
          "cold": runs["cold"], "warm": warm,
          "images_per_s": rate,
          "epoch_s_cifar": epoch_s,
          "epoch_s_cifar_arithmetic":
              f"{_CIFAR['train']} / {rate:.0f} + {_CIFAR['test']} / "
              f"{warm['eval_images_per_s']:.0f} + {warm['checkpoint_s_per_save']:.2f} s"}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", default="resnet18")
  parser.add_argument("--method", default="ce")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
  parser.add_argument("--steps-per-dispatch", type=int, default=8)
  parser.add_argument("--num-examples", type=int, default=6144,
                      help="examples in each mock split (train epoch and evaluation)")
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  if args.num_examples < args.batch_size * args.steps_per_dispatch:
    parser.error(f"--num-examples {args.num_examples}: at least --batch-size x "
                 f"--steps-per-dispatch = {args.batch_size * args.steps_per_dispatch}")
  result = run(args)
  for name in ("cold", "warm"):
    r = result[name]
    split = ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in r["time_split_s"].items())
    print(f"epoch {name}: {r['train_images_per_s']:.0f} train images/s, eval "
          f"{r['eval_images_per_s']:.0f}/s; {split}, other {r['other_s']:.2f} s")
  print(f"a CIFAR epoch: {result['epoch_s_cifar']:.1f} s ({result['epoch_s_cifar_arithmetic']})")
  default_run.dump(args.out, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""Seed packing through the training loop: wall time per seed of S seeds trained in one packed
program (`jaxkd.train.packed.train_and_evaluate`) for S = 1, 2, 4, side by side in one process.

    python experiments/bench/packed_loop.py --seeds 1,2,4 --steps 198 \
        --out experiments/results/bench/packed_loop_cpu_fashion_resnet8.json

The run is a row of the Fashion-MNIST study (configs/fashion_mnist.py, ``method=ce`` unless
``--method``: resnet8 on 14x14 images, batch 128, 33 steps an epoch, an evaluation of the
validation split after each epoch and the best epoch kept) cut to ``--steps`` steps, with its
logs, evaluations and checkpoints, in fresh workdirs. S = 1 is the plain loop
(`jaxkd.train.train_and_evaluate`); S > 1 packs S seeds with ``--strategies`` (`packed.pack_step`:
``vmap`` or ``unroll``). Every S runs ``--repeats`` times, the sizes alternating (1, 2, 4, 4, 2,
1, ...) so that a drift of the machine's load falls on all of them. Reported per S: the wall time
of the whole call (compilation included) divided by S, its ratio to S = 1's (below 1: packing
pays), the loop's own split of the time (`summary.json`'s ``time_split_s``, the packed program's
step seconds shared by its S seeds) and the load average before and after. ``--synthetic``
trains on random images of the subset's shapes and sizes (a GPU machine has no Fashion-MNIST).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import default_run
from jaxkd import bench, config as config_lib
from jaxkd.data import fashion_subset
from jaxkd.train import packed


def _synthetic_subset(root: str) -> None:
  """The study's subset (`fashion_subset.prepare`) drawn from random 28x28 images with balanced
  labels, under ``JAXKD_CACHE=root`` (where configs/fashion_mnist.py looks for it)."""
  os.environ["JAXKD_CACHE"] = root
  source = os.path.join(root, "random_fashion_mnist")
  os.makedirs(source)
  rng = np.random.default_rng(0)
  for prefix, count in (("train", 5000), ("t10k", 3000)):
    fashion_subset.write_idx(os.path.join(source, f"{prefix}-labels-idx1-ubyte"),
                             np.arange(count) % 10)
    fashion_subset.write_idx(os.path.join(source, f"{prefix}-images-idx3-ubyte"),
                             rng.integers(0, 256, (count, 28, 28), np.uint8))
  fashion_subset.prepare(per_class_train=500, per_class_test=300, source_dir=source)


def _config(args):
  config = config_lib.load(f"configs/fashion_mnist.py:method={args.method}")
  config.train.num_steps = args.steps
  config.train.log_every_steps = 33
  if args.model:
    config.model.name = args.model
  return config


def _time_one(args, num_seeds: int, strategy: str, root: str) -> dict:
  config = _config(args)
  seeds = list(range(num_seeds))
  workdirs = [os.path.join(root, f"S{num_seeds}_{strategy}_s{s}") for s in seeds]
  load = os.getloadavg()
  start = time.perf_counter()
  summaries = packed.train_and_evaluate(config, workdirs, seeds, strategy=strategy)
  wall = time.perf_counter() - start
  for w in workdirs:
    shutil.rmtree(w)
  return {"num_seeds": num_seeds, "strategy": strategy if num_seeds > 1 else "plain loop",
          "wall_s": wall, "wall_per_seed_s": wall / num_seeds,
          "time_split_s": summaries[0]["time_split_s"],
          "last_top1": [s["last"]["top1"] for s in summaries],
          "load_average": {"before": load, "after": os.getloadavg()}}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--method", default="ce")
  parser.add_argument("--model", default=None, help="instead of the study's resnet8 (smoke runs)")
  parser.add_argument("--seeds", default="1,2,4")
  parser.add_argument("--steps", type=int, default=198)
  parser.add_argument("--strategies", default="vmap,unroll")
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--synthetic", action="store_true",
                      help="random images of the study subset's shapes (no Fashion-MNIST needed)")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  sizes = [int(s) for s in args.seeds.split(",")]
  cases = [(s, st) for s in sizes for st in (args.strategies.split(",") if s > 1 else ["-"])]
  order = [c for r in range(args.repeats) for c in (cases if r % 2 == 0 else cases[::-1])]
  load_before = os.getloadavg()
  runs = {}
  with tempfile.TemporaryDirectory() as root:
    if args.synthetic:
      _synthetic_subset(os.path.join(root, "cache"))
    config = _config(args)
    for num_seeds, strategy in order:
      r = _time_one(args, num_seeds, strategy if num_seeds > 1 else "vmap", root)
      runs.setdefault((num_seeds, strategy), []).append(r)
      print(f"S={num_seeds} {r['strategy']}: {r['wall_s']:.1f} s, {r['wall_per_seed_s']:.1f} s "
            f"per seed (load {r['load_average']['before'][0]:.1f})", flush=True)
  base = float(np.median([r["wall_per_seed_s"] for r in runs[(sizes[0], "-")]])) \
      if (sizes[0], "-") in runs else None
  results = []
  for (num_seeds, strategy), rs in runs.items():
    per_seed = float(np.median([r["wall_per_seed_s"] for r in rs]))
    results.append({"num_seeds": num_seeds, "strategy": rs[0]["strategy"],
                    "wall_per_seed_s": per_seed, "wall_per_seed_s_all": [r["wall_per_seed_s"]
                                                                         for r in rs],
                    "to_one_seed": per_seed / base if base else None, "runs": rs})
  out = {"command": default_run.command(), "method": args.method, "model": config.model.name,
         "cpu_conv": config.model.cpu_conv, "batch_size": config.train.batch_size,
         "data": config.data.name + (" (synthetic images)" if args.synthetic else ""),
         "steps": args.steps, "repeats": args.repeats,
         "machine": bench.machine(),
         "load_average": {"before": load_before, "after": os.getloadavg()},
         "uptime": os.popen("uptime").read().strip(), "results": results}
  for r in results:
    print(f"S={r['num_seeds']} {r['strategy']}: {r['wall_per_seed_s']:.1f} s per seed"
          + (f", {r['to_one_seed']:.2f}x of one seed's" if r["to_one_seed"] else ""))
  default_run.dump(args.out, out)
  return 0


if __name__ == "__main__":
  sys.exit(main())

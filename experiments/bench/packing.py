"""Seed packing throughput: S seeds in one packed step against S separate runs, interleaved.

    python experiments/bench/packing.py --model mlp --seeds 2,4,8 --steps 100 \
        --out experiments/results/bench/packing_cpu_mlp.json

The run is the default config (configs/default.py: MrKD on 8x8 digits, batch 64) with the
model given. Every round times one packed step of S seeds and, in the other order on
alternate rounds, one step of each of S separately jitted runs (what S sequential runs pay per
step: the training loop waits on every step's loss). ``speedup`` is median(S separate steps) /
median(packed step): the throughput of packing relative to running the S seeds one after
another. ``paired_speedup`` takes the ratio within each round (which cancels slow drifts of
machine load) and gives its quartiles; ``cpu_speedup`` compares process CPU times.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

from jaxkd import bench, config as config_lib, models, train
from jaxkd.train import packed


def _build(args):
  config = config_lib.default()
  config.method.name = args.method
  config.model.name = args.model
  config.train.batch_size = args.batch_size
  config.model.cpu_conv = args.cpu_conv
  config.mesh.data = 1
  return train.build(config)


def _time_one(trainer, num_seeds: int, rounds: int, strategy: str) -> dict:
  seeds = tuple(range(num_seeds))
  n = trainer.run.steps_per_epoch
  rows = packed.Batches(trainer, seeds=seeds)
  packed_rows = [rows.get(i) for i in range(n)]
  singles = [trainer.batches(seed=s) for s in seeds]
  single_rows = [[singles[s].get(i) for s in range(num_seeds)] for i in range(n)]
  states = packed.init_states(trainer, seeds=seeds)
  separate = [packed.unstack(states, s) for s in range(num_seeds)]
  separate = [jax.tree_util.tree_map(lambda x: x.copy(), s) for s in separate]
  step = packed.pack_step(trainer.steps.train_fn, mesh=trainer.run.mesh, strategy=strategy)
  times = {"packed": [], "separate": []}
  cpu = {"packed": [], "separate": []}

  def run_packed(i):
    nonlocal states
    states, metrics = step(states, trainer.consts, packed_rows[i % n])
    jax.block_until_ready((states, metrics))

  def run_separate(i):
    for s in range(num_seeds):
      separate[s], metrics = trainer.steps.train(separate[s], trainer.consts,
                                                 single_rows[i % n][s])
      jax.block_until_ready((separate[s], metrics))

  start = time.perf_counter()
  run_packed(0)
  compile_packed = time.perf_counter() - start
  run_separate(0)
  for i in range(1, rounds + 2):
    order = [("packed", run_packed), ("separate", run_separate)]
    for name, fn in order if i % 2 else order[::-1]:
      start, start_cpu = time.perf_counter(), time.process_time()
      fn(i)
      if i >= 2:  # one more untimed round after compilation
        times[name].append(time.perf_counter() - start)
        cpu[name].append(time.process_time() - start_cpu)
  p, s = np.median(times["packed"]), np.median(times["separate"])
  paired = np.asarray(times["separate"]) / np.asarray(times["packed"])
  batch = trainer.run.config.train.batch_size
  return {"num_seeds": num_seeds, "strategy": strategy, "packed_median_s": float(p),
          "separate_median_s": float(s), "speedup": float(s / p),
          "paired_speedup": {q: float(np.percentile(paired, v))
                             for q, v in (("p25", 25), ("median", 50), ("p75", 75))},
          "cpu_speedup": float(np.median(cpu["separate"]) / np.median(cpu["packed"])),
          "packed_images_per_s": num_seeds * batch / float(p),
          "separate_images_per_s": num_seeds * batch / float(s),
          "packed_first_call_s": compile_packed, "n": len(times["packed"])}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--method", default="mrkd")
  parser.add_argument("--model", default="small_cnn")
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--cpu-conv", default="xla", choices=models.CPU_CONVS)
  parser.add_argument("--seeds", default="2,4,8")
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--strategies", default="vmap,unroll")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  trainer = _build(args)
  run = trainer.run
  load_before = os.getloadavg()
  results = [_time_one(trainer, int(s), args.steps, strategy)
             for s in args.seeds.split(",") for strategy in args.strategies.split(",")]
  for r in results:
    paired = r["paired_speedup"]
    print(f"S={r['num_seeds']} {r['strategy']}: packed {1e3 * r['packed_median_s']:.2f} ms, "
          f"{r['num_seeds']} separate {1e3 * r['separate_median_s']:.2f} ms, speedup "
          f"{r['speedup']:.2f}x (paired {paired['p25']:.2f}-{paired['p75']:.2f}, "
          f"CPU time {r['cpu_speedup']:.2f}x)")
  out = {"command": " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:]),
         "method": args.method, "model": args.model, "batch_size": args.batch_size,
         "cpu_conv": args.cpu_conv,
         "data": run.config.data.name, "image_shape": list(run.train_data.image_shape),
         "machine": bench.machine(),
         "load_average": {"before": load_before, "after": os.getloadavg()}, "results": results}
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(out, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())

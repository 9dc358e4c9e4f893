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
import os
import sys
import time

import jax

import default_run
from jaxkd import bench, models
from jaxkd.train import packed


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
  samples = bench.interleave({"packed": run_packed, "separate": run_separate}, rounds=rounds)
  ratios = bench.paired_ratios(samples, "separate", "packed")
  p, s = (ratios["median_s"][k] for k in ("packed", "separate"))
  batch = trainer.run.config.train.batch_size
  return {"num_seeds": num_seeds, "strategy": strategy, "packed_median_s": p,
          "separate_median_s": s, "speedup": ratios["ratio"],
          "paired_speedup": ratios["paired"], "cpu_speedup": ratios["cpu_ratio"],
          "packed_images_per_s": num_seeds * batch / p,
          "separate_images_per_s": num_seeds * batch / s,
          "packed_first_call_s": compile_packed, "n": len(samples["packed"])}


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
  trainer = default_run.build(args)
  load_before = os.getloadavg()
  results = [_time_one(trainer, int(s), args.steps, strategy)
             for s in args.seeds.split(",") for strategy in args.strategies.split(",")]
  for r in results:
    paired = r["paired_speedup"]
    print(f"S={r['num_seeds']} {r['strategy']}: packed {1e3 * r['packed_median_s']:.2f} ms, "
          f"{r['num_seeds']} separate {1e3 * r['separate_median_s']:.2f} ms, speedup "
          f"{r['speedup']:.2f}x (paired {paired['p25']:.2f}-{paired['p75']:.2f}, "
          f"CPU time {r['cpu_speedup']:.2f}x)")
  default_run.write(args, trainer, results, load_before)
  return 0


if __name__ == "__main__":
  sys.exit(main())

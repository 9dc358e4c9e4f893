"""Steps per dispatch: K training steps in one `lax.scan` program against K single steps.

    python experiments/bench/steps_per_dispatch.py --model mlp --k 8 --rounds 300 \
        --out experiments/results/bench/steps_per_dispatch_cpu_mlp.json

The run is the default config (configs/default.py: MrKD on 8x8 digits, batch 64) with the
model given: the job whose step is so short that its dispatch from Python counts. Every round
runs K steps both ways, in alternating order: K calls of ``StepFns.train`` fed as the training
loop feeds them (``Batches.get`` per step, one step in flight: each call waits on the previous
step's loss), and one call of ``StepFns.train_many`` on ``Batches.get_many`` (what
``train.steps_per_dispatch=K`` runs). Both include preparing and sharding the batch rows on the
host. The first call of each compiles and one more round is untimed. ``speedup`` is
median(K single steps) / median(one dispatch of K); ``paired_speedup`` takes the ratio within
each round (cancelling slow drifts of machine load) and gives its quartiles; ``cpu_speedup``
compares process CPU times.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax

import default_run
from jaxkd import bench, models


def _time(trainer, k: int, rounds: int) -> dict:
  batches = trainer.batches()
  starts = list(range(0, trainer.run.steps_per_epoch - k + 1, k))  # dispatches within epoch 0
  single_state, many_state = trainer.init_state(), trainer.init_state()

  def run_single(i):
    nonlocal single_state
    start, previous = starts[i % len(starts)], None
    for step in range(start, start + k):
      single_state, metrics = trainer.steps.train(single_state, trainer.consts,
                                                  batches.get(step))
      if previous is not None:
        previous.block_until_ready()
      previous = metrics["loss"]
    jax.block_until_ready((single_state, metrics))

  def run_dispatched(i):
    nonlocal many_state
    many_state, metrics = trainer.steps.train_many(many_state, trainer.consts,
                                                   batches.get_many(starts[i % len(starts)], k))
    jax.block_until_ready((many_state, metrics))

  start = time.perf_counter()
  run_dispatched(0)
  compile_dispatched = time.perf_counter() - start
  start = time.perf_counter()
  run_single(0)
  compile_single = time.perf_counter() - start
  samples = bench.interleave({"dispatched": run_dispatched, "single": run_single},
                             rounds=rounds)
  ratios = bench.paired_ratios(samples, "single", "dispatched")
  single, dispatched = (ratios["median_s"][name] for name in ("single", "dispatched"))
  batch = trainer.run.config.train.batch_size
  return {"k": k, "single_step_median_s": single / k,
          "dispatched_step_median_s": dispatched / k, "speedup": ratios["ratio"],
          "paired_speedup": ratios["paired"], "cpu_speedup": ratios["cpu_ratio"],
          "single_images_per_s": k * batch / single,
          "dispatched_images_per_s": k * batch / dispatched,
          "first_call_s": {"single": compile_single, "dispatched": compile_dispatched},
          "n": len(samples["single"])}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--method", default="mrkd")
  parser.add_argument("--model", default="mlp")
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--cpu-conv", default="fast", choices=models.CPU_CONVS)
  parser.add_argument("--k", type=int, default=8, help="steps per dispatch")
  parser.add_argument("--rounds", type=int, default=300)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  trainer = default_run.build(args)
  if args.k > trainer.run.steps_per_epoch:
    parser.error(f"--k {args.k}: at most the {trainer.run.steps_per_epoch} steps of an epoch")
  load_before = os.getloadavg()
  result = _time(trainer, args.k, args.rounds)
  paired = result["paired_speedup"]
  print(f"K={args.k}: single steps {1e3 * result['single_step_median_s']:.3f} ms a step, one "
        f"dispatch {1e3 * result['dispatched_step_median_s']:.3f} ms a step, speedup "
        f"{result['speedup']:.2f}x (paired {paired['p25']:.2f}-{paired['p75']:.2f}, CPU time "
        f"{result['cpu_speedup']:.2f}x)")
  default_run.write(args, trainer, [result], load_before)
  return 0


if __name__ == "__main__":
  sys.exit(main())

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
import json
import os
import sys
import time

import jax
import numpy as np

from jaxkd import bench, config as config_lib, models, train


def _build(args):
  config = config_lib.default()
  config.method.name = args.method
  config.model.name = args.model
  config.train.batch_size = args.batch_size
  config.model.cpu_conv = args.cpu_conv
  config.mesh.data = 1
  return train.build(config)


def _time(trainer, k: int, rounds: int) -> dict:
  batches = trainer.batches()
  starts = list(range(0, trainer.run.steps_per_epoch - k + 1, k))  # dispatches within epoch 0
  single_state, many_state = trainer.init_state(), trainer.init_state()
  times = {"single": [], "dispatched": []}
  cpu = {"single": [], "dispatched": []}

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
  for i in range(1, rounds + 2):
    order = [("dispatched", run_dispatched), ("single", run_single)]
    for name, fn in order if i % 2 else order[::-1]:
      start, start_cpu = time.perf_counter(), time.process_time()
      fn(i)
      if i >= 2:  # one more untimed round after compilation
        times[name].append(time.perf_counter() - start)
        cpu[name].append(time.process_time() - start_cpu)
  single, dispatched = np.median(times["single"]), np.median(times["dispatched"])
  paired = np.asarray(times["single"]) / np.asarray(times["dispatched"])
  batch = trainer.run.config.train.batch_size
  return {"k": k, "single_step_median_s": float(single / k),
          "dispatched_step_median_s": float(dispatched / k), "speedup": float(single / dispatched),
          "paired_speedup": {q: float(np.percentile(paired, v))
                             for q, v in (("p25", 25), ("median", 50), ("p75", 75))},
          "cpu_speedup": float(np.median(cpu["single"]) / np.median(cpu["dispatched"])),
          "single_images_per_s": k * batch / float(single),
          "dispatched_images_per_s": k * batch / float(dispatched),
          "first_call_s": {"single": compile_single, "dispatched": compile_dispatched},
          "n": len(times["single"])}


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
  trainer = _build(args)
  run = trainer.run
  if args.k > run.steps_per_epoch:
    parser.error(f"--k {args.k}: at most the {run.steps_per_epoch} steps of an epoch")
  load_before = os.getloadavg()
  result = _time(trainer, args.k, args.rounds)
  paired = result["paired_speedup"]
  print(f"K={args.k}: single steps {1e3 * result['single_step_median_s']:.3f} ms a step, one "
        f"dispatch {1e3 * result['dispatched_step_median_s']:.3f} ms a step, speedup "
        f"{result['speedup']:.2f}x (paired {paired['p25']:.2f}-{paired['p75']:.2f}, CPU time "
        f"{result['cpu_speedup']:.2f}x)")
  out = {"command": " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:]),
         "method": args.method, "model": args.model, "batch_size": args.batch_size,
         "cpu_conv": args.cpu_conv, "data": run.config.data.name,
         "image_shape": list(run.train_data.image_shape),
         "device": bench.machine()["device"], "jax": jax.__version__,
         "machine": bench.machine(),
         "load_average": {"before": load_before, "after": os.getloadavg()}, "results": [result]}
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(out, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())

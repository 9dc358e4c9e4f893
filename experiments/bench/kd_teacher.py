"""The KD train step from a frozen teacher against the same step from a cached teacher.

    python experiments/bench/kd_teacher.py --model resnet18 --batch-size 128 --steps 20 \
        --dtype bfloat16 --out experiments/results/bench/FILE.json

``frozen``: `jaxkd bench`'s ``kd`` case (a frozen teacher of the student's architecture,
randomly initialised: the cost of its forward pass does not depend on its weights) against
``ce``, interleaved, on CIFAR-shaped mock data held on the device. ``cached``: the same step
reading the teacher's outputs from a cache instead of running its forward pass. jaxkd has no
such cache yet, so that half is written as skipped, its fields None, ready to be filled
(`_cached`) once the cache exists.
"""
from __future__ import annotations

import argparse
import sys

import default_run
from jaxkd import bench

CACHE_MISSING = ("skipped: jaxkd has no cache of teacher outputs yet; this half is timed once "
                 "it exists")


def _cached() -> dict:
  """The cached-teacher half: skipped until jaxkd has a teacher-output cache."""
  return {"status": CACHE_MISSING, "median_s": None, "images_per_s": None,
          "ratio_to_ce": None, "ratio_to_frozen": None}


def run(args) -> dict:
  result = bench.run_bench(model=args.model, batch_size=args.batch_size, methods=["ce", "kd"],
                           steps=args.steps, warmup=args.warmup, dtype=args.dtype,
                           num_examples=args.num_examples, refresh=False, control=False)
  ce, kd = result["methods"]["ce"], result["methods"]["kd"]
  frozen = {"status": "timed", "median_s": kd["median_s"], "images_per_s": kd["images_per_s"],
            "ratio_to_ce": kd["ratio_to_ce"], "cpu_ratio_to_ce": kd["cpu_ratio_to_ce"],
            "compile_s": kd["compile_s"], "teacher": result["teacher"]}
  cached = _cached()
  if cached["median_s"] is not None:
    cached["ratio_to_frozen"] = cached["median_s"] / frozen["median_s"]
  return {"command": default_run.command(),
          "model": args.model, "batch_size": args.batch_size, "dtype": args.dtype,
          "steps": args.steps, "machine": result["machine"],
          "load_average": result["load_average"],
          "ce": {"median_s": ce["median_s"], "images_per_s": ce["images_per_s"]},
          "frozen": frozen, "cached": cached, "bench": result}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", default="resnet18")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
  parser.add_argument("--num-examples", type=int, default=50_000)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  result = run(args)
  frozen = result["frozen"]
  print(f"kd from a frozen teacher: {1e3 * frozen['median_s']:.2f} ms a step, "
        f"{frozen['ratio_to_ce']:.3f}x ce; cached teacher: {result['cached']['status']}")
  default_run.dump(args.out, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())

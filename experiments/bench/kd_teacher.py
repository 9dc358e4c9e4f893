"""The KD train step from a frozen teacher against the same step from a cached teacher.

    python experiments/bench/kd_teacher.py --model resnet18 --batch-size 128 --steps 20 \
        --dtype bfloat16 --out experiments/results/bench/FILE.json

``frozen``: `jaxkd bench`'s ``kd`` case (a frozen teacher of the student's architecture,
randomly initialised: the cost of its forward pass does not depend on its weights) against
``ce``, interleaved, on CIFAR-shaped mock data held on the device. ``cached``: the same KD step
reading that teacher's outputs from a cache (`jaxkd.bench.cache_case_teacher`, ``jaxkd
cache-teacher``'s writer, k = K, for the 8 batches a case cycles through) instead of running
its forward pass, timed in a second interleaved pass of ce, kd from the frozen teacher (the
first pass's programs again, from the compilation cache) and kd from the cache; its ratios come
from that pass, with XLA's flop ratios beside them. The cached run is 8 steps long, the others
200 epochs: their schedules' constants differ, not their programs' work.
"""
from __future__ import annotations

import argparse
import sys
import tempfile

import default_run
from jaxkd import bench
from jaxkd.bench import _report

_STEPS = 8  # the batches a case cycles through: the cached run's length


def _cached(args) -> dict:
  """ce, kd (frozen) and kd (cached), interleaved: the cached half."""
  dataset = bench.mock_cifar(args.num_examples)
  common = dict(model_name=args.model, dataset=dataset, batch_size=args.batch_size,
                dtype=args.dtype)
  with tempfile.TemporaryDirectory() as directory:
    manifest = bench.cache_case_teacher(directory, model_name=args.model, dataset=dataset,
                                        batch_size=args.batch_size, steps=_STEPS,
                                        dtype=args.dtype)
    cases = [bench.build_case("ce", "ce", **common)]
    cases += [bench.build_case("kd (frozen)", "kd", share=cases[0], **common),
              bench.build_case("kd (cached)", "kd", share=cases[0], teacher_cache=directory,
                               num_steps=_STEPS, **common)]
    times = bench.time_interleaved(cases, steps=args.steps, warmup=args.warmup)
  methods = _report.summarize(cases, times, args.batch_size)
  cached, frozen = methods["kd (cached)"], methods["kd (frozen)"]
  return {"status": "timed", "median_s": cached["median_s"],
          "images_per_s": cached["images_per_s"], "ratio_to_ce": cached["ratio_to_ce"],
          "ratio_to_frozen": cached["median_s"] / frozen["median_s"],
          "cpu_ratio_to_ce": cached["cpu_ratio_to_ce"],
          "xla_flops_ratio_to_ce": cached["xla_cost_ratio_to_ce"].get("flops"),
          "frozen_xla_flops_ratio_to_ce": frozen["xla_cost_ratio_to_ce"].get("flops"),
          "compile_s": cached["compile_s"],
          "cache_bytes_per_example": manifest["bytes_per_example"],
          "pass": {"cached_run_steps": _STEPS, "methods": methods}}


def run(args) -> dict:
  result = bench.run_bench(model=args.model, batch_size=args.batch_size, methods=["ce", "kd"],
                           steps=args.steps, warmup=args.warmup, dtype=args.dtype,
                           num_examples=args.num_examples, refresh=False, control=False)
  ce, kd = result["methods"]["ce"], result["methods"]["kd"]
  frozen = {"status": "timed", "median_s": kd["median_s"], "images_per_s": kd["images_per_s"],
            "ratio_to_ce": kd["ratio_to_ce"], "cpu_ratio_to_ce": kd["cpu_ratio_to_ce"],
            "compile_s": kd["compile_s"], "teacher": result["teacher"]}
  return {"command": default_run.command(),
          "model": args.model, "batch_size": args.batch_size, "dtype": args.dtype,
          "steps": args.steps, "machine": result["machine"],
          "load_average": result["load_average"],
          "ce": {"median_s": ce["median_s"], "images_per_s": ce["images_per_s"]},
          "frozen": frozen, "cached": _cached(args), "bench": result}


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
  frozen, cached = result["frozen"], result["cached"]
  print(f"kd from a frozen teacher: {1e3 * frozen['median_s']:.2f} ms a step, "
        f"{frozen['ratio_to_ce']:.3f}x ce; from a cached teacher: "
        f"{1e3 * cached['median_s']:.2f} ms, {cached['ratio_to_ce']:.3f}x ce, "
        f"{cached['ratio_to_frozen']:.3f}x frozen (XLA flops {cached['xla_flops_ratio_to_ce']:.3f}x "
        "ce)")
  default_run.dump(args.out, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""``jaxkd bench``: every method's real train step timed against plain cross-entropy.

    jaxkd bench --model resnet18 --batch-size 128 --methods all --steps 10 --out FILE.json

Every method gets its own state and its own compiled `jaxkd.train.make_steps` program over one
CIFAR-shaped mock dataset (uint8 32x32x3, 100 classes, 50,000 examples, held on the device).
After everything is compiled the steps run interleaved, one step of each program per round
(the order rotates every round), each awaited before the next starts, so the load of a shared
machine falls on every method alike; the ratio to ``ce`` is the ratio of median step times.
Beside it the JSON gives the ratios of median CPU times and of the fastest steps (both less
disturbed by load), XLA's static flop and byte counts, and a second ``ce`` program
(``ce@control``) whose ratio to ``ce`` is the noise floor of the run.

Conventions, stated in the JSON as well:
  * kd and tfkd_self distil from a randomly initialised frozen teacher of the same model (the
    cost of a teacher forward does not depend on its weights);
  * mrkd and mrkd_tc start with a full replay ring (``start_from_init``), so every timed step
    pays for the backup forward; a second MrKD program with ``refresh_every=2`` times its
    refresh steps against its normal steps;
  * every timed step runs under ``jax.transfer_guard("disallow")``, and the compiled programs
    are searched for host callbacks, infeed/outfeed and send/recv.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys

import jax

from jaxkd import models
from jaxkd.bench._cases import (AUGMENTS, Case, build_case, cache_case_teacher, interleave,
                                mock_cifar, paired_ratios, snapshot_cost, time_interleaved)
from jaxkd.bench._flops import model_flops_per_image, peak_flops
from jaxkd.bench._report import (device_peak_bytes, format_table, machine, refresh_summary,
                                 rss_bytes, summarize)

__all__ = ["HELP", "Case", "add_arguments", "build_case", "cache_case_teacher", "format_table",
           "interleave", "machine", "main", "mock_cifar", "model_flops_per_image", "paired_ratios",
           "peak_flops", "refresh_summary", "run_bench", "snapshot_cost", "summarize",
           "time_interleaved"]

HELP = "time every method's train step against ce (interleaved) and write a JSON"
_REFRESH = "mrkd@refresh_every=2"
_CONTROL = "ce@control"


def run_bench(*, model: str, batch_size: int, methods: list[str], steps: int, warmup: int = 2,
              augment: str = "cifar", dtype: str = "float32", cpu_conv: str = "xla",
              num_examples: int = 50_000, refresh: bool = True, control: bool = True,
              peak_tflops: float | None = None) -> dict:
  """Builds every case, times them interleaved under the transfer guard, returns the JSON.

  ``peak_tflops`` is the device's dense peak for MFU; None: `peak_flops`'s datasheet table.
  """
  dataset = mock_cifar(num_examples)
  plan = [(m, m, {}) for m in ["ce"] + [m for m in methods if m != "ce"]]
  if control:
    # A second, identical ce program: its ratio to ce is the noise floor of this run.
    plan.insert(1, (_CONTROL, "ce", {}))
  if refresh and "mrkd" in methods:
    plan.append((_REFRESH, "mrkd", {"refresh_every": 2}))
  cases = []
  for label, method, overrides in plan:
    before = rss_bytes()
    case = build_case(label, method, model_name=model, dataset=dataset,
                      batch_size=batch_size, augment=augment, dtype=dtype, cpu_conv=cpu_conv,
                      overrides=overrides, share=cases[0] if cases else None)
    case.rss_delta = rss_bytes() - before
    cases.append(case)
  load_before = os.getloadavg()
  # Any implicit transfer between host and device raises here, so reaching the result below
  # means the timed steps moved no bytes to the host.
  with jax.transfer_guard("disallow"):
    times = time_interleaved(cases, steps=steps, warmup=warmup)
  result = {
      "model": model, "batch_size": batch_size, "dtype": dtype, "augment": augment,
      "cpu_conv": cpu_conv,
      "steps": steps, "warmup": warmup, "num_examples": num_examples,
      "data": f"mock CIFAR: uint8 {dataset.image_shape}, {dataset.num_classes} classes, "
              "on the device",
      "teacher": "kd/tfkd_self: randomly initialised frozen teacher of the same model",
      "mrkd": "replay ring full from step 0 (start_from_init=True), one backup",
      "control": f"{_CONTROL}: a second ce program; its ratios show the noise of this run",
      "machine": machine(), "load_average": {"before": load_before, "after": os.getloadavg()},
      "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "device_peak_bytes": device_peak_bytes(),
      "transfer_guard": "passed", "device_to_host_bytes": 0,
      "methods": summarize(cases, times, batch_size)}
  result["ratio_to_ce"] = {label: entry["ratio_to_ce"] for label, entry in result["methods"].items()}
  _add_mfu(result, model_flops_per_image(models.get(model, num_classes=dataset.num_classes),
                                         dataset.image_shape),
           (peak_tflops * 1e12, "--peak-tflops") if peak_tflops else peak_flops(dtype))
  refresh_case = next((case for case in cases if case.label == _REFRESH), None)
  if refresh_case is not None:
    result["mrkd_refresh"] = refresh_summary(times[_REFRESH], 2)
    result["mrkd_refresh"].update(snapshot_cost(refresh_case))
    normal = result["methods"][_REFRESH]["median_s"]
    result["mrkd_refresh"]["snapshot_over_step"] = (
        result["mrkd_refresh"]["snapshot_taken_median_s"] / normal)
  return result


def _add_mfu(result: dict, flops_per_image: float, peak: tuple[float | None, str]) -> None:
  """Model TFLOP/s and MFU of every method (see `jaxkd.bench._flops`)."""
  result["model_flops_per_image"] = flops_per_image
  result["peak_flops"], result["peak_source"] = peak
  for entry in result["methods"].values():
    achieved = entry["images_per_s"] * flops_per_image
    entry["model_tflops_per_s"] = achieved / 1e12
    entry["mfu"] = achieved / peak[0] if peak[0] else None


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.description = __doc__.split("\n\n", 1)[0] + "\n\n" + __doc__.split("\n\n")[2]
  parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
  parser.add_argument("--model", default="resnet18", help="a jaxkd.models name")
  parser.add_argument("--batch-size", type=int, default=128, help="images per step")
  parser.add_argument("--methods", default="all", help="all, or a comma-separated list")
  parser.add_argument("--steps", type=int, default=10, help="timed steps per method")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method")
  parser.add_argument("--augment", default="cifar", choices=sorted(AUGMENTS),
                      help="on-device augmentation in the step (cifar: crop 4, flip, rot 15)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="compute dtype (model.dtype)")
  parser.add_argument("--cpu-conv", default="xla", choices=models.CPU_CONVS,
                      help="how convolutions run on CPU (model.cpu_conv; fast: im2col for "
                           "small maps, per-tap kernel gradients)")
  parser.add_argument("--num-examples", type=int, default=50_000,
                      help="mock training-set size (sets PS-KD's table and epoch length)")
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="the device's dense peak for MFU; None: the datasheet table by "
                           "device kind (no peak for CPUs)")
  parser.add_argument("--out", default=None, help="write the result JSON here")


def _check_args(args) -> list[str]:
  """The method list; raises ValueError naming the bad flag, its value and what is allowed."""
  from jaxkd import objectives
  known = objectives.names()
  methods = list(known) if args.methods == "all" else [m for m in args.methods.split(",") if m]
  bad = [m for m in methods if m not in known]
  if bad or not methods:
    raise ValueError(f"--methods={args.methods!r}: unknown {bad}; allowed: all, or a "
                     f"comma-separated list of {', '.join(known)}")
  if args.model not in models.names():
    raise ValueError(f"--model={args.model!r}: allowed: {', '.join(models.names())}")
  for flag, value, low in (("--batch-size", args.batch_size, 1), ("--steps", args.steps, 1),
                           ("--warmup", args.warmup, 0),
                           ("--num-examples", args.num_examples, args.batch_size)):
    if value < low:
      raise ValueError(f"{flag}={value}: must be >= {low}")
  if args.peak_tflops is not None and not args.peak_tflops > 0:
    raise ValueError(f"--peak-tflops={args.peak_tflops}: must be > 0")
  return methods


def _command(args) -> str:
  """The command that repeats this run, every flag spelled out (defaults included)."""
  flags = {"model": args.model, "batch-size": args.batch_size, "methods": args.methods,
           "steps": args.steps, "warmup": args.warmup, "augment": args.augment,
           "dtype": args.dtype, "cpu-conv": args.cpu_conv,
           "num-examples": args.num_examples}
  if args.peak_tflops:
    flags["peak-tflops"] = args.peak_tflops
  command = "jaxkd bench " + " ".join(f"--{k} {v}" for k, v in flags.items())
  return command + (f" --out {args.out}" if args.out else "")


def main(args, *, extra: dict | None = None) -> int:
  """Runs the benchmark of ``args``; ``extra`` entries are added to (or replace) the JSON's."""
  try:
    methods = _check_args(args)
  except ValueError as err:
    print(f"jaxkd bench: error: {err}", file=sys.stderr)
    return 2
  result = run_bench(model=args.model, batch_size=args.batch_size, methods=methods,
                     steps=args.steps, warmup=args.warmup, augment=args.augment,
                     dtype=args.dtype, cpu_conv=args.cpu_conv,
                     num_examples=args.num_examples, peak_tflops=args.peak_tflops)
  result["command"] = _command(args)
  result.update(extra or {})
  print(format_table(result))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
  return 0

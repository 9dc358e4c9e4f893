"""jaxkd's train step against the same step in PyTorch, interleaved in one process.

    python experiments/bench/compare_torch.py --model resnet18 --batch-size 128 \
        --methods ce,tfkd_reg,mrkd --steps 5 --out experiments/results/bench/FILE.json

Both sides train the same network with the same loss on the same uint8 CIFAR-shaped mock data
held in device memory (no augmentation; PyTorch: see torch_step.py), on the CPU or on a GPU
(``--torch-device cuda``, the default where PyTorch sees one; ``--dtype bfloat16`` computes in
bfloat16 with float32 parameters on both sides). One step of
each (method, framework) pair runs per round, the order rotating every round, each step awaited,
so machine load falls on both frameworks alike. ``jax/torch`` is the ratio of median step times
(below 1: jaxkd is faster). jaxkd runs once per ``--conv`` value (``model.cpu_conv``; keys
``METHOD`` for xla, ``METHOD@fast`` for fast), all against the same PyTorch steps. XLA_FLAGS
are read from the environment, as JAX does at start.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default_run  # noqa: E402
import torch_step  # noqa: E402

from jaxkd import bench, models  # noqa: E402


def _timers(args, dataset):
  """(label, framework, method, step function) for every pair, jaxkd cases compiled."""
  from jaxkd import data as data_lib
  order = data_lib.batch_indices(dataset.num_examples, args.batch_size, seed=0, epoch=0)[:8]
  torch_batches = [torch.from_numpy(row.astype(np.int64)) for row in order]
  images = torch.from_numpy(dataset.images)
  labels = torch.from_numpy(dataset.labels.astype(np.int64))
  steps_per_epoch = dataset.num_examples // args.batch_size
  timers, compile_s, first = [], {}, None
  for method in args.methods:
    for conv in args.conv:
      case = bench.build_case(method, method, model_name=args.model, dataset=dataset,
                              batch_size=args.batch_size, augment="none", dtype=args.dtype,
                              cpu_conv=conv, share=first)
      first = first or case
      compile_s[_label(method, conv)] = case.compile_s
      timers.append((f"jax/{_label(method, conv)}", "jax", method, case.step))
    side = torch_step.TorchStep(args.model, method, images, labels, dataset.mean, dataset.std,
                                num_classes=dataset.num_classes, refresh_every=steps_per_epoch,
                                channels_last=args.channels_last, device=args.torch_device,
                                autocast=torch.bfloat16 if args.dtype == "bfloat16" else None)
    timers.append((f"torch/{method}", "torch", method,
                   lambda s=side: s.step(torch_batches[s.steps_done % 8])))
  return timers, compile_s


def _label(method: str, conv: str) -> str:
  """A result key: the method, with ``@fast`` where jaxkd ran with cpu_conv=fast."""
  return method if conv == "xla" else f"{method}@{conv}"


def compare(args) -> dict:
  torch.set_num_threads(args.torch_threads)
  # XLA's default float32 precision on NVIDIA GPUs is TF32 for convolutions and matrix
  # products; PyTorch gets the same, and cuDNN picks its fastest algorithms.
  torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
  torch.backends.cudnn.benchmark = True
  dataset = bench.mock_cifar(args.num_examples)
  timers, compile_s = _timers(args, dataset)
  load_before = os.getloadavg()
  samples = bench.interleave({label: lambda _, fn=fn: fn() for label, _, _, fn in timers},
                             rounds=args.steps, warmup=args.warmup)
  methods = {}
  for method, conv in [(m, c) for m in args.methods for c in args.conv]:
    label = _label(method, conv)
    jax_label, torch_label = f"jax/{label}", f"torch/{method}"
    ratios = bench.paired_ratios(samples, jax_label, torch_label)
    j, t = ratios["median_s"][jax_label], ratios["median_s"][torch_label]
    j_cpu, t_cpu = ratios["cpu_median_s"][jax_label], ratios["cpu_median_s"][torch_label]
    methods[label] = {"cpu_conv": conv,
        "jax_median_s": j, "torch_median_s": t,
        "jax_over_torch": ratios["ratio"],
        "paired_jax_over_torch_median": ratios["paired"]["median"],
        "jax_images_per_s": args.batch_size / j, "torch_images_per_s": args.batch_size / t,
        "jax_cpu_median_s": j_cpu, "torch_cpu_median_s": t_cpu,
        "cpu_jax_over_torch": ratios["cpu_ratio"], "jax_compile_s": compile_s[label],
        "jax_s": [wall for _, wall, _ in samples[jax_label]],
        "torch_s": [wall for _, wall, _ in samples[torch_label]]}
  for label, entry in methods.items():
    ce = methods.get(_label("ce", entry["cpu_conv"]))
    if ce:
      entry["jax_ratio_to_ce"] = entry["jax_median_s"] / ce["jax_median_s"]
      entry["torch_ratio_to_ce"] = entry["torch_median_s"] / ce["torch_median_s"]
  machine = bench.machine()
  machine["versions"]["torch"] = torch.__version__
  return {"command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
          "label": args.label, "model": args.model, "batch_size": args.batch_size,
          "dtype": args.dtype, "steps": args.steps, "warmup": args.warmup,
          "torch_threads": torch.get_num_threads(), "channels_last": args.channels_last,
          "torch_device": args.torch_device,
          "torch_autocast": "bfloat16" if args.dtype == "bfloat16" else None,
          "cpu_convs": args.conv,
          "machine": machine,
          "load_average": {"before": load_before, "after": os.getloadavg()},
          "jax_over_torch": {m: e["jax_over_torch"] for m, e in methods.items()},
          "methods": methods}


def _cpu_convs(text: str) -> list[str]:
  values = [v for v in text.split(",") if v]
  if not values or any(v not in models.CPU_CONVS for v in values):
    raise argparse.ArgumentTypeError(
        f"--conv={text!r}: a comma-separated list of {', '.join(models.CPU_CONVS)}")
  return values


def _parse(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--model", default="resnet18", choices=("resnet18", "small_cnn"))
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--methods", default="ce,tfkd_reg,mrkd",
                      type=lambda s: [m for m in s.split(",") if m])
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--num-examples", type=int, default=10_000)
  parser.add_argument("--torch-threads", type=int, default=os.cpu_count())
  parser.add_argument("--channels-last", action="store_true")
  parser.add_argument("--torch-device", default="cuda" if torch.cuda.is_available() else "cpu",
                      help="PyTorch's device (jaxkd uses JAX's default device); --dtype "
                           "bfloat16 runs PyTorch under torch.autocast(bfloat16)")
  parser.add_argument("--conv", default="xla,fast", type=_cpu_convs,
                      help="jaxkd's model.cpu_conv values to time, comma-separated (fast: "
                           "kernel gradients as per-tap matrix products, small maps as im2col)")
  parser.add_argument("--label", default="", help="a name for this variant in the JSON")
  parser.add_argument("--out", default=None)
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = _parse(argv)
  result = compare(args)
  for method, entry in result["methods"].items():
    print(f"{args.model} b{args.batch_size} {method:<14} jax {1e3 * entry['jax_median_s']:8.1f} ms"
          f"  torch {1e3 * entry['torch_median_s']:8.1f} ms  jax/torch "
          f"{entry['jax_over_torch']:.3f} (paired {entry['paired_jax_over_torch_median']:.3f}, "
          f"CPU time {entry['cpu_jax_over_torch']:.3f})")
  default_run.dump(args.out, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())

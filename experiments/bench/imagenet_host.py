"""The streamed ImageNet input on this host's cores against ResNet-50's and ResNet-18's steps.

    python experiments/bench/imagenet_host.py --per-class 64 --batch-size 128 --steps 10 \
        --out experiments/results/bench/FILE.json

Is the host or the accelerator the bottleneck of an ImageNet run? Three measurements, one
process, the JSON rewritten after each (a run cut short keeps what finished):

  * ``streamed``: `jaxkd.data.open_stream` (grain over tfds's array_record source: read,
    decode, RandomResizedCrop + flip to ``--size``, batch) on a tiny ``imagenet2012``
    written by `jaxkd prepare imagenet2012 --demo`'s writer (image-net.org-style tars of real
    JPEGs, prepared by `jaxkd.data.prepare_imagenet2012`), with 1 thread and with one per
    core; images/s by wall time and by the process's CPU time. Those JPEGs are 20-48 pixels
    a side, far cheaper to decode than ImageNet's: this row is the pipeline's own cost
    (records, threads, batching, the resize up to ``--size``), an upper bound on the rate;
  * ``decode``: `jaxkd bench-pipeline`'s train view (the same function the stream calls) on
    synthetic JPEGs of ImageNet's size and weight, in 1 process and in one per core: the
    per-core and whole-host rates of the decode that dominates a real ImageNet epoch;
  * ``steps``: the ``ce`` train step of ``resnet50_imagenet`` and ``resnet18_imagenet`` on
    ``--size`` mock images held on the device (no host input at all), images/s.

``host_over_step`` divides each host rate (all cores) by each model's step rate: below 1, the
host cannot feed that model at this batch size.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

import default_run



def tiny_imagenet(root: str, per_class: int) -> tuple[str, dict]:
  """A tfds data_dir with a tiny ``imagenet2012`` of ``per_class`` images in each of the demo's
  classes; ``(data_dir, facts)``."""
  from jaxkd import data  # pylint: disable=import-outside-toplevel
  from jaxkd.data import _demo  # pylint: disable=import-outside-toplevel
  start = time.perf_counter()
  _demo.write_imagenet_tars(os.path.join(root, "manual"), per_class=per_class)
  counts = data.prepare_imagenet2012(os.path.join(root, "manual"), os.path.join(root, "data"))
  return os.path.join(root, "data"), {
      "writer": "jaxkd.data._demo.write_imagenet_tars + jaxkd.data.prepare_imagenet2012",
      "examples": counts, "jpeg_sides": "20-48 pixels (the demo's tiny JPEGs)",
      "prepare_s": time.perf_counter() - start}


def streamed(data_dir: str, *, threads: list[int], batch_size: int, size: int,
             repeats: int) -> dict:
  """Images/s of whole training epochs of the stream, per thread count (medians)."""
  from jaxkd import data  # pylint: disable=import-outside-toplevel
  out = {}
  for n in threads:
    split = data.open_stream("imagenet2012", "train", data_dir=data_dir, image_size=size,
                             num_threads=n)
    walls, cpus, images = [], [], 0
    for epoch in range(repeats + 1):  # epoch 0 warms up (threads, page cache)
      start, start_cpu, images = time.perf_counter(), time.process_time(), 0
      for batch in split.batches(global_batch_size=batch_size, train=True, epoch=epoch,
                                 process_index=0, process_count=1):
        images += len(batch["label"])
      if epoch:
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - start_cpu)
    wall, cpu = float(np.median(walls)), float(np.median(cpus))
    out[f"threads{n}"] = {"threads": n, "images": images, "images_per_s": images / wall,
                          "cpu_images_per_s": images / cpu, "wall_s": walls, "cpu_s": cpus}
  return out


def decode(*, workers: list[int], size: int, images: int, repeats: int) -> dict:
  """`jaxkd bench-pipeline`'s train view and bare decode in 1 and N worker processes."""
  from jaxkd.bench import _pipeline  # pylint: disable=import-outside-toplevel
  result = _pipeline.run_pipeline_bench(images=images, repeats=repeats, workers=tuple(workers),
                                        size=size, kinds=("process",),
                                        cases=["decode", "train"])
  train, most = result["cases"]["train"], f"processx{workers[-1]}"
  return {"per_core_images_per_s": train["processx1"]["cpu_images_per_s_per_worker"],
          "all_cores_images_per_s": train[most]["images_per_s"], "workers": workers,
          "data": result["data"], "cases": result["cases"], "ratios": result["ratios"]}


def steps(model: str, *, batch_size: int, size: int, dtype: str, steps_: int,
          warmup: int) -> dict:
  """Median ce step of ``model`` on device-held mock images of ``size``, images/s."""
  from jaxkd import bench  # pylint: disable=import-outside-toplevel
  dataset = bench.mock_cifar(4 * batch_size, image_shape=(size, size, 3), num_classes=1000)
  case = bench.build_case(model, "ce", model_name=model, dataset=dataset,
                          batch_size=batch_size, augment="none", dtype=dtype)
  times = bench.time_interleaved([case], steps=steps_, warmup=warmup)
  median = float(np.median([w for _, w, _ in times[case.label]]))
  return {"model": model, "median_s": median, "images_per_s": batch_size / median,
          "compile_s": case.compile_s, "n": len(times[case.label])}


def _ratios(result: dict) -> dict:
  hosts = {}
  if "streamed" in result:
    hosts["streamed_all_threads"] = result["streamed"][f"threads{max(result['threads'])}"][
        "images_per_s"]
  if "decode" in result:
    hosts["decode_all_cores"] = result["decode"]["all_cores_images_per_s"]
  return {host: {model: rate / entry["images_per_s"] for model, entry in result["steps"].items()}
          for host, rate in hosts.items()}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--per-class", type=int, default=64,
                      help="images per class of the tiny ImageNet (the tests use 6)")
  parser.add_argument("--threads", default=None,
                      help="comma-separated stream thread counts (default: 1 and the cores)")
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3, help="timed epochs / repetitions")
  parser.add_argument("--decode-images", type=int, default=32,
                      help="ImageNet-sized JPEGs each decode worker passes over")
  parser.add_argument("--models", default="resnet50_imagenet,resnet18_imagenet")
  parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  cores = os.cpu_count() or 1
  threads = ([int(t) for t in args.threads.split(",")] if args.threads
             else sorted({1, cores}))
  load_before = os.getloadavg()
  # First, before JAX starts its runtime: the decode workers are forked processes.
  decoded = decode(workers=sorted({1, cores}), size=args.size, images=args.decode_images,
                   repeats=args.repeats)
  from jaxkd import bench  # pylint: disable=import-outside-toplevel
  result = {"command": default_run.command(),
            "size": args.size, "batch_size": args.batch_size, "dtype": args.dtype,
            "threads": threads, "machine": bench.machine(),
            "load_average": {"before": load_before}, "decode": decoded, "steps": {}}

  def write():
    result["load_average"]["after"] = os.getloadavg()
    result["host_over_step"] = _ratios(result)
    default_run.dump(args.out, result)

  with tempfile.TemporaryDirectory(prefix="jaxkd-imagenet-") as root:
    data_dir, result["tiny_imagenet"] = tiny_imagenet(root, args.per_class)
    result["streamed"] = streamed(data_dir, threads=threads, batch_size=args.batch_size,
                                  size=args.size, repeats=args.repeats)
  write()
  for name, rate in result["streamed"].items():
    print(f"streamed {name}: {rate['images_per_s']:.0f} images/s "
          f"(CPU time {rate['cpu_images_per_s']:.0f}/s)")
  print(f"decode + train view: {result['decode']['per_core_images_per_s']:.0f} images/s a "
        f"core, {result['decode']['all_cores_images_per_s']:.0f} on {cores} cores")
  for model in [m for m in args.models.split(",") if m]:
    result["steps"][model] = steps(model, batch_size=args.batch_size, size=args.size,
                                   dtype=args.dtype, steps_=args.steps, warmup=args.warmup)
    write()
    print(f"{model}: {result['steps'][model]['images_per_s']:.0f} images/s a step; host/step "
          + ", ".join(f"{h} {r[model]:.2f}" for h, r in result["host_over_step"].items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())

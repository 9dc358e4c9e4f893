"""``jaxkd bench-pipeline``: the host-side ImageNet input pipeline, images per second per worker.

    jaxkd bench-pipeline --images 64 --repeats 5 --workers 1,2 --out FILE.json

Synthetic JPEGs of ImageNet's size (about 400x350, sides varied, quality 90, texture and noise
tuned to ImageNet's average of about 110 KB a file) go through, in one run:

  * ``decode``: full JPEG decode into Pillow's buffer, nothing else: the floor no view can beat
    without decoding less;
  * ``decode_draft``: the decode the train view does (the same box, the same DCT reduction,
    no resize): the floor of the train view when the reduction applies;
  * ``decode_array``: full decode to a ``uint8 [H, W, 3]`` array (what tfds hands back);
  * ``train``: `jaxkd.data._decode.train_view` (RandomResizedCrop to ``--size`` + flip);
  * ``train_nodraft``: the same without DCT reduction;
  * ``train_before``: the path it replaces: full decode to an array, crop, resize, flip;
  * ``eval``: `jaxkd.data._decode.eval_view`;
  * ``simplejpeg_decode``, ``opencv_decode``, ``opencv_train_linear`` where those libraries
    import: other decoders, and OpenCV's bilinear resize without antialiasing (a different
    filter from torchvision's, shown for its cost only).

Every case runs with 1 and 2 (``--workers``) threads and processes, each worker decoding the
whole image set once per measurement; measurements are interleaved (cases in a rotating order,
repetition by repetition) and summarised by medians. A worker's CPU time gives a second rate
that machine load disturbs less than wall time.
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import platform
import sys
import threading
import time

import numpy as np
from PIL import Image

from jaxkd.data import _decode

__all__ = ["HELP", "add_arguments", "main", "run_pipeline_bench", "synthetic_jpegs"]

HELP = "time JPEG decoding and the train/eval crops on the host (images/s per worker)"

# Published ResNet-50 training rates (images/s) behind the host-core estimate; see `_cores`.
_STEP_RATES = {
    "8x A100 80GB (DGX A100)": (
        16621, "published: NVIDIA DeepLearningExamples, PyTorch ResNet50 v1.5, mixed "
               "precision, 8 GPUs, pytorch-21.03 container (2470 img/s on 1 GPU)"),
    "8x H100": (
        2 * 16621, "assumption: 2x the DGX A100 rate (no published figure checked here)"),
    "TPU v4 host (4 chips)": (
        4 * 2470, "assumption: one TPU v4 chip as fast as one A100 at ResNet-50 (no "
                  "published per-chip figure checked here)"),
}


def _synthetic(rng: np.random.Generator, height: int, width: int, noise: float) -> np.ndarray:
  """A photo-like image: smooth cosines, blobs at three scales, per-pixel noise."""
  y = np.linspace(0, 1, height)[:, None]
  x = np.linspace(0, 1, width)[None, :]
  image = np.zeros((height, width, 3), np.float32)
  for c in range(3):
    for _ in range(4):
      image[..., c] += rng.uniform(20, 50) * np.cos(
          2 * np.pi * (rng.uniform(0, 6) * y + rng.uniform(0, 6) * x) + rng.uniform(0, 6.3))
  for cells, weight in ((8, 0.6), (32, 0.6), (96, 0.5)):
    coarse = rng.normal(0, 40, (cells * height // width + 2, cells + 2, 3)) + 128
    blobs = Image.fromarray(coarse.clip(0, 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC)
    image += weight * (np.asarray(blobs, np.float32) - 128)
  image += rng.normal(0, noise, (height, width, 1)) + rng.normal(0, noise / 3, (height, width, 3))
  return (image + 128).clip(0, 255).astype(np.uint8)


def synthetic_jpegs(count: int, seed: int = 0, quality: int = 90,
                    noise: float = 45.0) -> list[bytes]:
  """``count`` JPEGs of about 400x350 (width 330-469, height 290-409), ~110 KB on average."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(count):
    width, height = int(rng.integers(330, 470)), int(rng.integers(290, 410))
    buffer = io.BytesIO()
    Image.fromarray(_synthetic(rng, height, width, noise)).save(buffer, "JPEG", quality=quality)
    out.append(buffer.getvalue())
  return out


def _rng(index: int) -> np.random.Generator:
  return np.random.default_rng((0, index))  # as streaming does: one stream per example


def _decode_only(encoded: bytes, size: int, index: int) -> None:
  Image.open(io.BytesIO(encoded)).load()


def _decode_draft(encoded: bytes, size: int, index: int) -> None:
  image = Image.open(io.BytesIO(encoded))
  width, height = image.size
  _, _, h, w = _decode.random_resized_box(_rng(index), height, width)
  _decode._draft(image, _decode.reduction(h, w, size))  # pylint: disable=protected-access
  image.load()


def _decode_array(encoded: bytes, size: int, index: int) -> None:
  _decode.decode(encoded)


def _train(encoded: bytes, size: int, index: int) -> None:
  _decode.train_view(encoded, size, _rng(index))


def _train_nodraft(encoded: bytes, size: int, index: int) -> None:
  _decode.train_view(encoded, size, _rng(index), draft=False)


def _train_before(encoded: bytes, size: int, index: int) -> None:
  """The view before `jaxkd.data._decode`: tfds's full decode to an array, then crops."""
  image = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
  rng = _rng(index)
  top, left, h, w = _decode.random_resized_box(rng, *image.shape[:2])
  out = np.asarray(Image.fromarray(image[top:top + h, left:left + w]).resize(
      (size, size), Image.Resampling.BILINEAR))
  np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out)


def _eval(encoded: bytes, size: int, index: int) -> None:
  _decode.eval_view(encoded, size)


def _optional_cases() -> tuple[dict, dict]:
  """Cases of decoders that are not jaxkd dependencies, where they import; their versions."""
  cases, versions = {}, {}
  try:
    import simplejpeg  # pylint: disable=import-outside-toplevel
    versions["simplejpeg"] = simplejpeg.__version__
    cases["simplejpeg_decode"] = lambda encoded, size, index: simplejpeg.decode_jpeg(encoded)
  except ImportError:
    pass
  try:
    import cv2  # pylint: disable=import-outside-toplevel
    cv2.setNumThreads(1)
    versions["opencv"] = cv2.__version__
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION

    def opencv_decode(encoded, size, index):
      cv2.imdecode(np.frombuffer(encoded, np.uint8), flags)

    def opencv_train_linear(encoded, size, index):
      image = cv2.imdecode(np.frombuffer(encoded, np.uint8), flags)
      rng = _rng(index)
      top, left, h, w = _decode.random_resized_box(rng, *image.shape[:2])
      out = cv2.resize(image[top:top + h, left:left + w], (size, size),
                       interpolation=cv2.INTER_LINEAR)[..., ::-1]
      np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out)

    cases["opencv_decode"] = opencv_decode
    cases["opencv_train_linear"] = opencv_train_linear
  except ImportError:
    pass
  return cases, versions


_DEFINITIONS = {
    "decode": "full JPEG decode into Pillow's buffer (Image.open + load), no array: the floor",
    "decode_draft": "the train view's decode alone: same box, same DCT reduction, no resize",
    "decode_array": "full decode to a uint8 [H, W, 3] array (tfds's decode)",
    "train": "jaxkd.data._decode.train_view: RandomResizedCrop + flip, Pillow, DCT reduction",
    "train_nodraft": "train_view(draft=False): the same pixels as torchvision's PIL path",
    "train_before": "the path train_view replaces: decode to an array, crop, fromarray, "
                    "resize, flip",
    "eval": "jaxkd.data._decode.eval_view: shorter side to size/0.875, centre crop",
    "simplejpeg_decode": "simplejpeg.decode_jpeg, full size (not a jaxkd dependency)",
    "opencv_decode": "cv2.imdecode, full size (not a jaxkd dependency)",
    "opencv_train_linear": "cv2.imdecode + crop + cv2.resize INTER_LINEAR (no antialiasing: "
                           "not torchvision's filter) + flip (not a jaxkd dependency)",
}
_CASES = {"decode": _decode_only, "decode_draft": _decode_draft, "decode_array": _decode_array,
          "train": _train, "train_nodraft": _train_nodraft, "train_before": _train_before,
          "eval": _eval}
# Set before the worker processes fork: they read the images and cases from here.
_STATE: dict = {}


def _work(case: str, offset: int) -> float:
  """One worker's pass over every image; returns its CPU seconds."""
  function, images, size = _STATE["cases"][case], _STATE["images"], _STATE["size"]
  start = time.thread_time()
  for i in range(len(images)):
    j = (i + offset) % len(images)
    function(images[j], size, j)
  return time.thread_time() - start


def _process_worker(connection) -> None:
  while True:
    message = connection.recv()
    if message is None:
      return
    connection.send(_work(*message))


class _Processes:
  """``n`` forked worker processes, each answering one pass per request."""

  def __init__(self, n: int):
    context = multiprocessing.get_context("fork")
    self.pipes, self.procs = [], []
    for _ in range(n):
      parent, child = context.Pipe()
      proc = context.Process(target=_process_worker, args=(child,), daemon=True)
      proc.start()
      self.pipes.append(parent)
      self.procs.append(proc)

  def run(self, case: str) -> tuple[float, list[float]]:
    start = time.perf_counter()
    for k, pipe in enumerate(self.pipes):
      pipe.send((case, k * 7))
    cpu = [pipe.recv() for pipe in self.pipes]
    return time.perf_counter() - start, cpu

  def close(self) -> None:
    for pipe, proc in zip(self.pipes, self.procs):
      pipe.send(None)
      proc.join()


def _run_threads(n: int, case: str) -> tuple[float, list[float]]:
  cpu = [0.0] * n

  def target(k):
    cpu[k] = _work(case, k * 7)

  threads = [threading.Thread(target=target, args=(k,)) for k in range(n)]
  start = time.perf_counter()
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  return time.perf_counter() - start, cpu


def _versions(extra: dict) -> dict:
  import PIL  # pylint: disable=import-outside-toplevel
  from PIL import features  # pylint: disable=import-outside-toplevel
  return {"python": platform.python_version(), "numpy": np.__version__,
          "pillow": PIL.__version__, "libjpeg": features.version("jpg"),
          "libjpeg_turbo": bool(features.check_feature("libjpeg_turbo")), **extra}


def _cpu_model() -> str:
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      return next((line.split(":", 1)[1].strip() for line in f
                   if line.startswith("model name")), platform.processor())
  return platform.processor()


def _cores(per_core: float) -> dict:
  """Host cores the train view needs to feed each machine's ResNet-50 step rate.

  ``per_core`` is one worker process's train-view rate by its CPU time; the estimate leaves
  out reading the records, batching and the transfer, and assumes the host's cores are as
  fast as the measuring machine's and scale linearly (separate processes share nothing).
  """
  return {name: {"images_per_s": rate, "source": source, "per_core_images_per_s": per_core,
                 "cores": rate / per_core,
                 "arithmetic": f"{rate} / {per_core:.0f} = {rate / per_core:.1f} cores"}
          for name, (rate, source) in _STEP_RATES.items()}


def run_pipeline_bench(*, images: int = 64, repeats: int = 5, workers=(1, 2), size: int = 224,
                       kinds=("thread", "process"), cases=None, seed: int = 0) -> dict:
  """Times every case with every worker count and kind, interleaved; returns the JSON."""
  optional, versions = _optional_cases()
  all_cases = {**_CASES, **optional}
  names = list(all_cases) if cases is None else list(cases)
  unknown = [n for n in names if n not in all_cases]
  if unknown:
    raise ValueError(f"unknown cases {unknown}; known: {', '.join(all_cases)}")
  encoded = synthetic_jpegs(images, seed)
  shapes = [Image.open(io.BytesIO(b)).size for b in encoded]
  _STATE.update(cases=all_cases, images=encoded, size=size)
  for name in names:  # warm-up: imports, caches, page faults
    _work(name, 0)
  pools = {n: _Processes(n) for n in workers} if "process" in kinds else {}
  configs = [(kind, n) for kind in kinds for n in workers]
  samples = {(name, kind, n): [] for name in names for kind, n in configs}
  load_before = os.getloadavg()
  try:
    for rep in range(repeats):
      for kind, n in configs:
        for name in names[rep % len(names):] + names[:rep % len(names)]:
          wall, cpu = pools[n].run(name) if kind == "process" else _run_threads(n, name)
          samples[(name, kind, n)].append((wall, cpu))
  finally:
    for pool in pools.values():
      pool.close()
  rates = {}
  for (name, kind, n), values in samples.items():
    walls = np.asarray([w for w, _ in values])
    cpus = np.asarray([sum(c) / n for _, c in values])
    rates.setdefault(name, {})[f"{kind}x{n}"] = {
        "images_per_s": n * images / float(np.median(walls)),
        "images_per_s_per_worker": images / float(np.median(walls)),
        "cpu_images_per_s_per_worker": images / float(np.median(cpus)),
        "cpu_best_images_per_s_per_worker": images / float(np.min(cpus)),
        "wall_s": walls.tolist(), "cpu_s_per_worker": cpus.tolist()}
  result = {
      "size": size, "images": images, "repeats": repeats, "workers": list(workers),
      "kinds": list(kinds),
      "data": {"count": images, "mean_bytes": float(np.mean([len(b) for b in encoded])),
               "min_bytes": min(map(len, encoded)), "max_bytes": max(map(len, encoded)),
               "mean_width": float(np.mean([w for w, _ in shapes])),
               "mean_height": float(np.mean([h for _, h in shapes])),
               "jpeg_quality": 90, "subsampling": "4:2:0",
               "content": "cosines + blobs at three scales + per-pixel noise (sigma 45)"},
      "machine": {"cpu": _cpu_model(), "cpu_count": os.cpu_count(),
                  "platform": platform.platform(), "versions": _versions(versions)},
      "load_average": {"before": load_before, "after": os.getloadavg()},
      "definitions": {name: _DEFINITIONS[name] for name in names},
      "rates": "images_per_s: all workers together by wall time; images_per_s_per_worker: "
               "the same over the worker count; cpu_images_per_s_per_worker: images over "
               "each worker's CPU time (thread_time), median over repetitions; cpu_best: "
               "the repetition with the least CPU time (the least disturbed by load)",
      "cases": rates}
  result["ratios"] = _ratios(rates, configs)
  if "train" in rates and ("process", 1) in configs:
    # CPU time, not wall: on a shared machine a waiting worker uses no core.
    per_core = rates["train"]["processx1"]["cpu_images_per_s_per_worker"]
    result["host_cores_for_resnet50"] = _cores(per_core)
  return result


def _ratios(rates: dict, configs) -> dict:
  """Per configuration: each view against its floor, and the speed-up over the old view."""
  pairs = {"train/decode": ("train", "decode"), "train/decode_draft": ("train", "decode_draft"),
           "train/decode_array": ("train", "decode_array"), "eval/decode": ("eval", "decode"),
           "train/train_before": ("train", "train_before"),
           "train/train_nodraft": ("train", "train_nodraft"),
           "opencv_train_linear/decode": ("opencv_train_linear", "decode"),
           "opencv_train_linear/opencv_decode": ("opencv_train_linear", "opencv_decode"),
           "simplejpeg_decode/decode": ("simplejpeg_decode", "decode"),
           "opencv_decode/decode": ("opencv_decode", "decode")}
  out = {}
  for label, (a, b) in pairs.items():
    if a in rates and b in rates:
      out[label] = {
          f"{kind}x{n}": {
              "wall": rates[a][f"{kind}x{n}"]["images_per_s"]
                      / rates[b][f"{kind}x{n}"]["images_per_s"],
              "cpu": rates[a][f"{kind}x{n}"]["cpu_images_per_s_per_worker"]
                     / rates[b][f"{kind}x{n}"]["cpu_images_per_s_per_worker"],
              "cpu_best": rates[a][f"{kind}x{n}"]["cpu_best_images_per_s_per_worker"]
                          / rates[b][f"{kind}x{n}"]["cpu_best_images_per_s_per_worker"]}
          for kind, n in configs}
  scaling = {}
  for name, by_config in rates.items():
    for kind in {k for k, _ in configs}:
      ns = sorted(n for k, n in configs if k == kind)
      if len(ns) > 1:
        scaling.setdefault(name, {})[f"{kind} {ns[-1]}/{ns[0]}"] = (
            by_config[f"{kind}x{ns[-1]}"]["images_per_s"]
            / by_config[f"{kind}x{ns[0]}"]["images_per_s"])
  out["scaling"] = scaling
  return out


def format_table(result: dict) -> str:
  """Rows of cases, columns of configurations: images/s per worker (wall), and CPU-time rate."""
  configs = list(next(iter(result["cases"].values())))
  head = (f"{'case':<22}" + "".join(f"{c + ' /s/w':>16}" for c in configs)
          + f"{'cpu /s/w':>11}{'cpu best':>10}")
  data = result["data"]
  rows = [f"{data['count']} synthetic JPEGs, mean {data['mean_width']:.0f}x"
          f"{data['mean_height']:.0f}, {data['mean_bytes'] / 1e3:.0f} KB; view size "
          f"{result['size']}; {result['machine']['cpu']} ({result['machine']['cpu_count']} "
          f"cores); medians of {result['repeats']} interleaved repetitions; /s/w: images/s "
          "per worker (wall), cpu: of one process by its CPU time (median, best)", head]
  for name, by_config in result["cases"].items():
    cpu = by_config.get("processx1", next(iter(by_config.values())))
    rows.append(f"{name:<22}" + "".join(f"{by_config[c]['images_per_s_per_worker']:>16.0f}"
                                        for c in configs)
                + f"{cpu['cpu_images_per_s_per_worker']:>11.0f}"
                + f"{cpu['cpu_best_images_per_s_per_worker']:>10.0f}")
  for label, by_config in result["ratios"].items():
    if label != "scaling":
      rows.append(f"{label:<34}" + "  ".join(
          f"{c} {v['wall']:.2f} (cpu {v['cpu']:.2f}, best {v['cpu_best']:.2f})"
          for c, v in by_config.items()))
  for name, cores in result.get("host_cores_for_resnet50", {}).items():
    rows.append(f"host cores for {name}: {cores['arithmetic']}")
  return "\n".join(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--images", type=int, default=64,
                      help="synthetic JPEGs; each worker decodes all of them per measurement")
  parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions")
  parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
  parser.add_argument("--kinds", default="thread,process", help="thread, process or both")
  parser.add_argument("--size", type=int, default=224, help="side of the views")
  parser.add_argument("--cases", default="all", help="all, or a comma-separated list")
  parser.add_argument("--out", default=None, help="write the result JSON here")


def main(args, *, extra: dict | None = None) -> int:
  """Runs the pipeline benchmark of ``args``; prints a table, writes the JSON to ``--out``."""
  try:
    workers = tuple(int(w) for w in args.workers.split(",") if w)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if not workers or min(workers) < 1:
      raise ValueError(f"--workers={args.workers!r}: positive integers, comma-separated")
    if not kinds or set(kinds) - {"thread", "process"}:
      raise ValueError(f"--kinds={args.kinds!r}: allowed: thread, process")
    for flag, value in (("--images", args.images), ("--repeats", args.repeats),
                        ("--size", args.size)):
      if value < 1:
        raise ValueError(f"{flag}={value}: must be >= 1")
    cases = None if args.cases == "all" else [c for c in args.cases.split(",") if c]
    result = run_pipeline_bench(images=args.images, repeats=args.repeats, workers=workers,
                                size=args.size, kinds=kinds, cases=cases)
  except ValueError as err:
    print(f"jaxkd bench-pipeline: error: {err}", file=sys.stderr)
    return 2
  result["command"] = (f"jaxkd bench-pipeline --images {args.images} --repeats {args.repeats} "
                       f"--workers {args.workers} --kinds {args.kinds} --size {args.size} "
                       f"--cases {args.cases}" + (f" --out {args.out}" if args.out else ""))
  result.update(extra or {})
  print(format_table(result))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
  return 0

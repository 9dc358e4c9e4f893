"""``jaxkd bench``: every method's real train step timed against plain cross-entropy.

    jaxkd bench --model resnet18 --batch-size 128 --methods all --steps 10 --out FILE.json

Every method gets its own state and its own compiled `jaxkd.train.make_steps` program over one
CIFAR-shaped mock dataset (uint8 32x32x3, 100 classes, 50,000 examples, held on the device).
After everything is compiled the steps run interleaved, one step of each program per round
(the order rotates every round), each awaited before the next starts, so the load of a shared
machine falls on every method alike; the ratio to ``ce`` is the ratio of median step times.

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
import dataclasses
import json
import os
import platform
import resource
import sys
import time
from typing import Any

import jax
import numpy as np

__all__ = ["HELP", "Case", "add_arguments", "build_case", "format_table", "main",
           "mock_cifar", "run_bench", "time_interleaved"]

HELP = "time every method's train step against ce (interleaved) and write a JSON"

# CIFAR-100 normalisation constants of the Tf-KD code; any positive values would do.
_MEAN, _STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
_AUGMENTS = {"cifar": dict(crop_padding=4, flip=True, rotation_degrees=15.0),
             "none": dict(crop_padding=0, flip=False, rotation_degrees=0.0)}
_REFRESH = "mrkd@refresh_every=2"
_HOST_OPS = ("outfeed", "infeed", " send(", " recv(", "callback", "host_compute")


def mock_cifar(num_examples: int = 50_000, *, image_shape=(32, 32, 3), num_classes: int = 100,
               seed: int = 0):
  """A CIFAR-shaped random `ArrayDataset` (uint8 images, balanced int32 labels)."""
  from jaxkd import data as data_lib
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (num_examples,) + tuple(image_shape), dtype=np.uint8)
  labels = rng.permutation(np.arange(num_examples) % num_classes).astype(np.int32)
  channels = image_shape[-1]
  return data_lib.ArrayDataset("mock", "train", images, labels, num_classes,
                               (_MEAN * channels)[:channels], (_STD * channels)[:channels])


@dataclasses.dataclass
class Case:
  """One compiled train step and the state it advances (``state`` is donated every call)."""
  label: str
  method: str
  compiled: Any
  state: Any
  teacher_vars: Any
  compile_s: float
  memory: dict
  host_ops: int
  hparams: dict
  cost: dict = dataclasses.field(default_factory=dict)
  rss_delta: int = 0
  steps_done: int = 0

  def step(self, data, indices, partners) -> None:
    """One awaited train step."""
    self.state, metrics = self.compiled(self.state, data, indices, partners, self.teacher_vars)
    jax.block_until_ready((self.state, metrics))
    self.steps_done += 1


def _memory(compiled) -> dict:
  """XLA's buffer assignment of the program (what the step needs beyond its inputs)."""
  try:
    stats = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):
    stats = None
  if stats is None:
    return {}
  keys = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes",
          "alias_size_in_bytes", "generated_code_size_in_bytes")
  return {k: int(getattr(stats, k)) for k in keys if hasattr(stats, k)}


def _cost(compiled) -> dict:
  """XLA's static cost estimate of the program: flops, transcendentals, bytes accessed.

  Independent of machine load, so it backs the timed ratios on a shared machine.
  """
  try:
    cost = compiled.cost_analysis()
  except (NotImplementedError, RuntimeError):
    return {}
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost or {}
  return {k: float(cost[k]) for k in ("flops", "transcendentals", "bytes accessed") if k in cost}


def _host_ops(compiled) -> int:
  """How many instructions of the optimised HLO could move data to or from the host."""
  text = compiled.as_text() or ""
  return sum(line.count(op) for line in text.splitlines() for op in _HOST_OPS
             if not line.lstrip().startswith(("//", "#")))


def _hparams(method: str, dataset, batch_size: int, overrides: dict) -> dict:
  """The engine-derived hyperparameters of a CIFAR-length run (200 epochs), then overrides."""
  from jaxkd import objectives
  steps_per_epoch = dataset.num_examples // batch_size
  derived = {"steps_per_epoch": steps_per_epoch, "num_examples": dataset.num_examples,
             "total_epochs": 200, "refresh_every": steps_per_epoch}
  defaults = objectives.defaults(method)
  hp = {k: v for k, v in derived.items() if k in defaults}
  if "start_from_init" in defaults:
    hp["start_from_init"] = True
  hp.update(overrides)
  return hp


def build_case(label: str, method: str, *, model_name: str, dataset, data: dict, batch_size: int,
               augment: str = "cifar", dtype: str = "float32", seed: int = 0,
               overrides: dict | None = None, example: tuple = ()) -> Case:
  """Builds, compiles and initialises one method's train step on a one-device mesh.

  ``example`` is ``(indices, partners)`` on the device, used to lower the program.
  """
  from jaxkd import cli, models, objectives
  from jaxkd.train import loop, setup, step as step_lib
  hp = _hparams(method, dataset, batch_size, overrides or {})
  objective = objectives.get(method, **hp)
  mesh = setup.make_mesh(1)
  model = models.get(model_name, num_classes=dataset.num_classes, dtype=setup._DTYPES[dtype])
  config = cli.load_config(None)
  config.seed, config.model.name, config.model.dtype = seed, model_name, dtype
  steps_per_epoch = dataset.num_examples // batch_size
  total_steps = 200 * steps_per_epoch
  optimizer = setup.make_optimizer(config.train.optimizer, steps_per_epoch=steps_per_epoch,
                                   total_steps=total_steps)
  run = setup.Run(config=config, train_data=dataset, eval_data=dataset, model=model,
                  objective=objective, steps_per_epoch=steps_per_epoch,
                  total_steps=total_steps, mesh=mesh)
  aug = step_lib.Augment(mean=dataset.mean, std=dataset.std, **_AUGMENTS[augment])
  teacher_vars = None
  if objective.teacher == "model":
    # A frozen teacher of the same architecture from another seed's initialisation.
    teacher_state = loop.init_state(dataclasses.replace(
        run, config=_with_seed(config, seed + 1)), optimizer, aug)
    teacher_vars = {"params": teacher_state.params, "batch_stats": teacher_state.batch_stats}
  steps = step_lib.make_steps(model=model, objective=objective, optimizer=optimizer, aug=aug,
                              mesh=mesh, teacher_model=model if teacher_vars else None)
  state = loop.init_state(run, optimizer, aug)
  indices, partners = example
  start = time.perf_counter()
  compiled = steps.train.lower(state, data, indices, partners if objective.teacher == "partner"
                               else None, teacher_vars).compile()
  compile_s = time.perf_counter() - start
  return Case(label=label, method=method, compiled=compiled, state=state,
              teacher_vars=teacher_vars, compile_s=compile_s, memory=_memory(compiled),
              host_ops=_host_ops(compiled), hparams=_jsonable(objective.hparams),
              cost=_cost(compiled))


def _with_seed(config, seed: int):
  config = config.copy_and_resolve_references()
  config.seed = seed
  return config


def _jsonable(hparams: dict) -> dict:
  return {k: v if isinstance(v, (bool, int, float, str, type(None))) else repr(v)
          for k, v in hparams.items()}


def time_interleaved(cases: list[Case], data: dict, batches: list, partners: list, *,
                     steps: int, warmup: int = 1) -> dict[str, list[tuple[int, float]]]:
  """``steps`` timed rounds after ``warmup`` untimed ones; one step of every case per round.

  Returns:
    label -> ``[(step_number, seconds), ...]``; ``step_number`` is the state's step after the
    call, so MrKD refresh steps can be told apart.
  """
  times = {case.label: [] for case in cases}
  for round_ in range(warmup + steps):
    shift = round_ % len(cases)
    for case in cases[shift:] + cases[:shift]:
      i = case.steps_done % len(batches)
      pair = partners[i] if case.method == "cskd" else None
      start = time.perf_counter()
      case.step(data, batches[i], pair)
      elapsed = time.perf_counter() - start
      if round_ >= warmup:
        times[case.label].append((case.steps_done, elapsed))
  return times


def _summary(samples: list[tuple[int, float]], batch_size: int) -> dict:
  seconds = np.asarray([s for _, s in samples])
  median = float(np.median(seconds))
  return {"median_s": median, "p25_s": float(np.percentile(seconds, 25)),
          "p75_s": float(np.percentile(seconds, 75)), "n": int(seconds.size),
          "images_per_s": batch_size / median}


def _refresh_summary(samples: list[tuple[int, float]], refresh_every: int) -> dict:
  refresh = [s for n, s in samples if n % refresh_every == 0]
  normal = [s for n, s in samples if n % refresh_every != 0]
  out = {"refresh_every": refresh_every, "n_refresh": len(refresh), "n_normal": len(normal)}
  if refresh and normal:
    out.update(refresh_median_s=float(np.median(refresh)), normal_median_s=float(np.median(normal)))
    out["refresh_over_normal"] = out["refresh_median_s"] / out["normal_median_s"]
  return out


def summarize(cases: list[Case], times: dict, batch_size: int) -> dict:
  """Per-case statistics; ``ratio_to_ce`` is median(case) / median(ce)."""
  methods = {}
  for case in cases:
    methods[case.label] = {
        **_summary(times[case.label], batch_size), "method": case.method,
        "compile_s": case.compile_s, "xla_memory_bytes": case.memory,
        "rss_delta_bytes": case.rss_delta, "host_ops_in_hlo": case.host_ops,
        "xla_cost": case.cost, "hparams": case.hparams}
  ce = methods["ce"]["median_s"]
  ce_times = [s for _, s in times["ce"]]
  ce_cost = methods["ce"]["xla_cost"]
  for label, entry in methods.items():
    entry["ratio_to_ce"] = entry["median_s"] / ce
    entry["xla_cost_ratio_to_ce"] = {k: v / ce_cost[k] for k, v in entry["xla_cost"].items()
                                     if ce_cost.get(k)}
    # Same-round pairs cancel slow load drift; the headline stays the ratio of medians.
    entry["paired_ratio_median"] = float(np.median(
        [s / c for (_, s), c in zip(times[label], ce_times)]))
  return methods


def _rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _machine() -> dict:
  import flax
  import jaxlib
  import optax
  cpu = platform.processor()
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as f:
      cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                 cpu)
  device = jax.devices()[0]
  return {"platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
          "device": f"{device.platform}: {device.device_kind}", "num_devices": jax.device_count(),
          "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "versions": {"python": platform.python_version(), "jax": jax.__version__,
                       "jaxlib": jaxlib.__version__, "flax": flax.__version__,
                       "optax": optax.__version__, "numpy": np.__version__}}


def _device_peak_bytes() -> int | None:
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def run_bench(*, model: str, batch_size: int, methods: list[str], steps: int, warmup: int = 2,
              augment: str = "cifar", dtype: str = "float32", num_examples: int = 50_000,
              refresh: bool = True) -> dict:
  """Builds every case, times them interleaved under the transfer guard, returns the JSON."""
  from jaxkd import data as data_lib
  from jaxkd.train import loop, setup
  dataset = mock_cifar(num_examples)
  mesh = setup.make_mesh(1)
  data = {k: loop.replicate(mesh, getattr(dataset, k)) for k in ("images", "labels")}
  order = data_lib.batch_indices(num_examples, batch_size, seed=0, epoch=0)[:8]
  pairs = data_lib.partner_indices(dataset.labels, order, seed=0, epoch=0)
  batches = [loop.shard_batch(mesh, row) for row in order]
  partners = [loop.shard_batch(mesh, row) for row in pairs]
  plan = [(m, m, {}) for m in ["ce"] + [m for m in methods if m != "ce"]]
  if refresh and "mrkd" in methods:
    plan.append((_REFRESH, "mrkd", {"refresh_every": 2}))
  cases = []
  for label, method, overrides in plan:
    before = _rss_bytes()
    case = build_case(label, method, model_name=model, dataset=dataset, data=data,
                      batch_size=batch_size, augment=augment, dtype=dtype, overrides=overrides,
                      example=(batches[0], partners[0]))
    case.rss_delta = _rss_bytes() - before
    cases.append(case)
  load_before = os.getloadavg()
  # Any implicit transfer between host and device raises here, so reaching the result below
  # means the timed steps moved no bytes to the host.
  with jax.transfer_guard("disallow"):
    times = time_interleaved(cases, data, batches, partners, steps=steps, warmup=warmup)
  result = {
      "model": model, "batch_size": batch_size, "dtype": dtype, "augment": augment,
      "steps": steps, "warmup": warmup, "num_examples": num_examples,
      "data": f"mock CIFAR: uint8 {dataset.image_shape}, {dataset.num_classes} classes, "
              "on the device",
      "teacher": "kd/tfkd_self: randomly initialised frozen teacher of the same model",
      "mrkd": "replay ring full from step 0 (start_from_init=True), one backup",
      "machine": _machine(), "load_average": {"before": load_before, "after": os.getloadavg()},
      "max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      "device_peak_bytes": _device_peak_bytes(),
      "transfer_guard": "passed", "device_to_host_bytes": 0,
      "methods": summarize(cases, times, batch_size)}
  result["ratio_to_ce"] = {label: entry["ratio_to_ce"] for label, entry in result["methods"].items()}
  if any(case.label == _REFRESH for case in cases):
    result["mrkd_refresh"] = _refresh_summary(times[_REFRESH], 2)
  return result


def format_table(result: dict) -> str:
  """A plain-text table of the result (one row per method)."""
  head = (f"{'method':<22}{'median ms':>11}{'ratio':>8}{'paired':>8}{'flops':>8}"
          f"{'bytes':>8}{'compile s':>11}{'XLA temp MiB':>14}{'images/s':>10}")
  rows = [f"{result['model']}, batch {result['batch_size']}, {result['dtype']}, augment "
          f"{result['augment']}, {result['machine']['device']}, "
          f"{result['steps']} timed steps each", head]
  for label, m in result["methods"].items():
    temp = m["xla_memory_bytes"].get("temp_size_in_bytes")
    cost = m["xla_cost_ratio_to_ce"]
    rows.append(f"{label:<22}{1e3 * m['median_s']:>11.1f}{m['ratio_to_ce']:>8.3f}"
                f"{m['paired_ratio_median']:>8.3f}{cost.get('flops', float('nan')):>8.3f}"
                f"{cost.get('bytes accessed', float('nan')):>8.3f}{m['compile_s']:>11.1f}"
                f"{'-' if temp is None else f'{temp / 2**20:.1f}':>14}"
                f"{m['images_per_s']:>10.1f}")
  refresh = result.get("mrkd_refresh")
  if refresh and "refresh_over_normal" in refresh:
    rows.append(f"mrkd refresh step / normal step (refresh_every=2): "
                f"{refresh['refresh_over_normal']:.3f} ({1e3 * refresh['refresh_median_s']:.1f} "
                f"vs {1e3 * refresh['normal_median_s']:.1f} ms)")
  rows.append(f"transfer guard: {result['transfer_guard']}, device-to-host bytes "
              f"{result['device_to_host_bytes']}, host ops in the HLO "
              f"{sum(m['host_ops_in_hlo'] for m in result['methods'].values())}")
  return "\n".join(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--model", default="resnet18", help="a jaxkd.models name")
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--methods", default="all", help="all, or a comma-separated list")
  parser.add_argument("--steps", type=int, default=10, help="timed steps per method")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method")
  parser.add_argument("--augment", default="cifar", choices=sorted(_AUGMENTS),
                      help="on-device augmentation in the step (cifar: crop 4, flip, rot 15)")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  parser.add_argument("--num-examples", type=int, default=50_000,
                      help="mock training-set size (sets PS-KD's table and epoch length)")
  parser.add_argument("--out", default=None, help="write the result JSON here")


def _check_args(args) -> list[str]:
  """The method list; raises ValueError naming the bad flag, its value and what is allowed."""
  from jaxkd import models, objectives
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
  return methods


def _command(args) -> str:
  """The command that repeats this run, every flag spelled out (defaults included)."""
  flags = {"model": args.model, "batch-size": args.batch_size, "methods": args.methods,
           "steps": args.steps, "warmup": args.warmup, "augment": args.augment,
           "dtype": args.dtype, "num-examples": args.num_examples}
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
                     dtype=args.dtype, num_examples=args.num_examples)
  result["command"] = _command(args)
  result.update(extra or {})
  print(format_table(result))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
  return 0

"""The benchmark's cases: one method's compiled train step and state, and the timing loop."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import numpy as np

__all__ = ["AUGMENTS", "Case", "bench_config", "build_case", "cache_case_teacher", "interleave",
           "mock_cifar", "paired_ratios", "random_frozen_teacher", "snapshot_cost",
           "time_interleaved"]

# CIFAR-100 normalisation constants of the Tf-KD code; any positive values would do.
_MEAN, _STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
AUGMENTS = {"cifar": dict(crop_padding=4, flip=True, rotation_degrees=15.0),
            "none": dict(crop_padding=0, flip=False, rotation_degrees=0.0)}
# The batches a case cycles through.
_CASE_BATCHES = 8
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
  """One compiled train step, the state it advances (donated every call) and its inputs.

  ``inputs`` is ``(consts, batches)``: the run's constants on the device and a few batch
  dicts, cycled through.
  """
  label: str
  method: str
  compiled: Any
  state: Any
  inputs: Any
  compile_s: float
  memory: dict
  host_ops: int
  hparams: dict
  cost: dict = dataclasses.field(default_factory=dict)
  rss_delta: int = 0
  steps_done: int = 0
  trainer: Any = None

  def step(self) -> None:
    """One awaited train step on the next batch."""
    consts, batches = self.inputs
    batch = batches[self.steps_done % len(batches)]
    self.state, metrics = self.compiled(self.state, consts, batch)
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


def bench_config(method: str, *, model_name: str, batch_size: int, augment: str = "cifar",
                 dtype: str = "float32", cpu_conv: str = "xla", seed: int = 0,
                 overrides: dict | None = None):
  """The config of one case: a CIFAR-length run (200 epochs) of ``method`` on mock data.

  MrKD's ring starts full (``start_from_init``), so every step pays for the backup forward.
  """
  from jaxkd import objectives
  from jaxkd import config as config_lib
  config = config_lib.default()
  config.seed, config.model.name, config.model.dtype = seed, model_name, dtype
  config.model.cpu_conv = cpu_conv
  config.data.name = "mock"
  config.data.update(AUGMENTS[augment])
  config.train.batch_size, config.train.num_epochs = batch_size, 200
  config.mesh.data = 1
  hparams = dict(overrides or {})
  if "start_from_init" in objectives.defaults(method):
    hparams.setdefault("start_from_init", True)
  config.method = {"name": method, **hparams}
  return config


def random_frozen_teacher(config, dataset, seed: int):
  """A frozen teacher of the student's architecture from another seed's initialisation."""
  from jaxkd import models, teachers
  from jaxkd.train import DTYPES
  model = models.get(config.model.name, num_classes=dataset.num_classes,
                     dtype=DTYPES[config.model.dtype], cpu_conv=config.model.cpu_conv)
  sample = jax.numpy.zeros((1,) + tuple(dataset.image_shape), jax.numpy.float32)
  return teachers.frozen(model, model.init(jax.random.PRNGKey(seed), sample, train=False))


def build_case(label: str, method: str, *, model_name: str, dataset, batch_size: int,
               augment: str = "cifar", dtype: str = "float32", cpu_conv: str = "xla",
               seed: int = 0, overrides: dict | None = None, share: Case | None = None,
               num_steps: int = 0, teacher_cache: str = "") -> Case:
  """Builds (`jaxkd.train.build`), compiles and initialises one method's train step.

  Methods whose teacher loads a finished run (kd, tfkd_self) get a randomly initialised
  frozen teacher of the same model instead (`random_frozen_teacher`), or, with
  ``teacher_cache``, read its outputs from that cache (`cache_case_teacher`). ``share``: a
  `Case` whose dataset on the device this case reuses. ``num_steps``: the run's length (0:
  `bench_config`'s 200 epochs; the schedule's constants only).
  """
  from jaxkd import objectives
  from jaxkd.train import build
  config = bench_config(method, model_name=model_name, batch_size=batch_size, augment=augment,
                        dtype=dtype, cpu_conv=cpu_conv, seed=seed, overrides=overrides)
  config.train.num_steps, config.teacher.cache = num_steps, teacher_cache
  method_hparams = {k: v for k, v in config.method.items() if k != "name"}
  teacher = objectives.get(method, **method_hparams).teacher
  frozen = None
  if teacher is not None and teacher.setup is not None and not teacher_cache:
    frozen = random_frozen_teacher(config, dataset, seed + 1)
  trainer = build(config, datasets=(dataset, dataset), teacher=frozen,
                  share_data_with=None if share is None else share.trainer)
  state = trainer.init_state()
  batches = trainer.batches()
  inputs = (trainer.consts, [batches.get(i) for i in range(_CASE_BATCHES)])
  start = time.perf_counter()
  compiled = trainer.steps.train.lower(state, inputs[0], inputs[1][0]).compile()
  compile_s = time.perf_counter() - start
  return Case(label=label, method=method, compiled=compiled, state=state, inputs=inputs,
              compile_s=compile_s, memory=_memory(compiled), host_ops=_host_ops(compiled),
              hparams=_jsonable(trainer.run.objective.hparams), cost=_cost(compiled),
              trainer=trainer)


def cache_case_teacher(directory: str, *, model_name: str, dataset, batch_size: int,
                       steps: int = _CASE_BATCHES, augment: str = "cifar",
                       dtype: str = "float32", cpu_conv: str = "xla", seed: int = 0) -> dict:
  """Writes the cache (`jaxkd.train.cache_teacher`, k = K) of the randomly initialised frozen
  teacher a ``kd`` case of ``steps`` steps would run; its manifest. ``build_case(...,
  num_steps=steps, teacher_cache=directory)`` reads it."""
  from jaxkd.train import cache_teacher
  config = bench_config("kd", model_name=model_name, batch_size=batch_size, augment=augment,
                        dtype=dtype, cpu_conv=cpu_conv, seed=seed)
  config.train.num_steps = steps
  return cache_teacher(config, directory, datasets=(dataset, dataset),
                       teacher=random_frozen_teacher(config, dataset, seed + 1))


def _jsonable(hparams: dict) -> dict:
  return {k: v if isinstance(v, (bool, int, float, str, type(None))) else repr(v)
          for k, v in hparams.items()}


def interleave(fns: dict[str, Callable[[int], Any]], *, rounds: int,
               warmup: int = 1) -> dict[str, list[tuple[Any, float, float]]]:
  """One call of every function per round: ``warmup`` untimed rounds, then ``rounds`` timed.

  The order rotates every round (with two functions it alternates), so slow drifts of the
  machine's load fall on every function alike. Each function gets the round's index and must
  wait on its own results (``jax.block_until_ready``) before it returns.

  Returns:
    label -> ``[(returned value, wall seconds, cpu seconds), ...]`` over the timed rounds;
    ``cpu_seconds`` is the CPU time of every thread of this process during the call.
  """
  labels = list(fns)
  times = {label: [] for label in labels}
  for round_ in range(warmup + rounds):
    shift = round_ % len(labels)
    for label in labels[shift:] + labels[:shift]:
      start, start_cpu = time.perf_counter(), time.process_time()
      value = fns[label](round_)
      wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
      if round_ >= warmup:
        times[label].append((value, wall, cpu))
  return times


def paired_ratios(times: dict[str, list[tuple[Any, float, float]]], numerator: str,
                  denominator: str) -> dict:
  """``numerator``'s time over ``denominator``'s, from `interleave`'s samples.

  ``median_s`` and ``cpu_median_s``: label -> median wall and CPU seconds of a call;
  ``ratio``: of the median wall times; ``paired``: quartiles of the ratio within each round
  (which cancels slow drifts of load); ``cpu_ratio``: of the median CPU times.
  """
  labels = (numerator, denominator)
  wall = {label: np.asarray([w for _, w, _ in times[label]]) for label in labels}
  median = {label: float(np.median(wall[label])) for label in labels}
  cpu = {label: float(np.median([c for _, _, c in times[label]])) for label in labels}
  paired = wall[numerator] / wall[denominator]
  return {"median_s": median, "cpu_median_s": cpu,
          "ratio": median[numerator] / median[denominator],
          "paired": {q: float(np.percentile(paired, v))
                     for q, v in (("p25", 25), ("median", 50), ("p75", 75))},
          "cpu_ratio": cpu[numerator] / cpu[denominator]}


def time_interleaved(cases: list[Case], *, steps: int,
                     warmup: int = 1) -> dict[str, list[tuple[int, float, float]]]:
  """`interleave` of one step of every case: ``steps`` timed rounds after ``warmup``.

  Returns:
    label -> ``[(step_number, wall_seconds, cpu_seconds), ...]``; ``step_number`` is the
    state's step after the call (it tells MrKD refresh steps apart).
  """
  def step(case):
    def fn(round_):
      case.step()
      return case.steps_done
    return fn
  return interleave({case.label: step(case) for case in cases}, rounds=steps, warmup=warmup)


def snapshot_cost(case: Case, reps: int = 20) -> dict:
  """Median time of MrKD's snapshot (`refresh_ring`) alone, taken and skipped, interleaved.

  The refresh step differs from a normal step only by this copy of the parameters into the
  replay ring; timing it alone measures that difference far below the noise of whole steps.
  """
  from jaxkd import teachers
  refresh = jax.jit(teachers.refresh_ring, donate_argnums=0)
  ring, params, stats = case.state.teacher.state, case.state.params, case.state.batch_stats
  ring = jax.tree_util.tree_map(lambda x: x.copy(), ring)
  flags = {"taken": jax.numpy.asarray(True), "skipped": jax.numpy.asarray(False)}
  times = {name: [] for name in flags}
  for rep in range(reps + 1):
    for name, flag in flags.items():
      start = time.perf_counter()
      ring = jax.block_until_ready(refresh(ring, params, stats, flag))
      if rep:
        times[name].append(time.perf_counter() - start)
  return {f"snapshot_{name}_median_s": float(np.median(t)) for name, t in times.items()}

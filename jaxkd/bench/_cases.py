"""The benchmark's cases: one method's compiled train step and state, and the timing loop."""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np

__all__ = ["AUGMENTS", "Case", "build_case", "mock_cifar", "snapshot_cost", "time_interleaved"]

# CIFAR-100 normalisation constants of the Tf-KD code; any positive values would do.
_MEAN, _STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
AUGMENTS = {"cifar": dict(crop_padding=4, flip=True, rotation_degrees=15.0),
            "none": dict(crop_padding=0, flip=False, rotation_degrees=0.0)}
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
               augment: str = "cifar", dtype: str = "float32", kernel_grad: str = "xla",
               seed: int = 0, overrides: dict | None = None, example: tuple = ()) -> Case:
  """Builds, compiles and initialises one method's train step on a one-device mesh.

  ``example`` is ``(indices, partners)`` on the device, used to lower the program.
  """
  from jaxkd import config as config_lib, models, objectives
  from jaxkd.train import loop, setup, step as step_lib
  hp = _hparams(method, dataset, batch_size, overrides or {})
  objective = objectives.get(method, **hp)
  mesh = setup.make_mesh(1)
  model = models.get(model_name, num_classes=dataset.num_classes, dtype=setup._DTYPES[dtype])
  config = config_lib.default()
  config.seed, config.model.name, config.model.dtype = seed, model_name, dtype
  config.model.kernel_grad = kernel_grad
  steps_per_epoch = dataset.num_examples // batch_size
  total_steps = 200 * steps_per_epoch
  optimizer = setup.make_optimizer(config.train.optimizer, steps_per_epoch=steps_per_epoch,
                                   total_steps=total_steps)
  run = setup.Run(config=config, train_data=dataset, eval_data=dataset, model=model,
                  objective=objective, steps_per_epoch=steps_per_epoch,
                  total_steps=total_steps, mesh=mesh)
  aug = step_lib.Augment(mean=dataset.mean, std=dataset.std, **AUGMENTS[augment])
  teacher_vars = None
  if objective.teacher == "model":
    # A frozen teacher of the same architecture from another seed's initialisation.
    teacher_state = loop.init_state(dataclasses.replace(
        run, config=_with_seed(config, seed + 1)), optimizer, aug)
    teacher_vars = {"params": teacher_state.params, "batch_stats": teacher_state.batch_stats}
  steps = step_lib.make_steps(model=model, objective=objective, optimizer=optimizer, aug=aug,
                              mesh=mesh, teacher_model=model if teacher_vars else None,
                              conv_kernel_grad=kernel_grad)
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
                     steps: int, warmup: int = 1) -> dict[str, list[tuple[int, float, float]]]:
  """``steps`` timed rounds after ``warmup`` untimed ones; one step of every case per round.

  Returns:
    label -> ``[(step_number, wall_seconds, cpu_seconds), ...]``; ``step_number`` is the
    state's step after the call (it tells MrKD refresh steps apart), ``cpu_seconds`` the CPU
    time of every thread of this process during the step.
  """
  times = {case.label: [] for case in cases}
  for round_ in range(warmup + steps):
    shift = round_ % len(cases)
    for case in cases[shift:] + cases[:shift]:
      i = case.steps_done % len(batches)
      pair = partners[i] if case.method == "cskd" else None
      start, start_cpu = time.perf_counter(), time.process_time()
      case.step(data, batches[i], pair)
      wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
      if round_ >= warmup:
        times[case.label].append((case.steps_done, wall, cpu))
  return times


def snapshot_cost(case: Case, reps: int = 20) -> dict:
  """Median time of MrKD's snapshot (`refresh_replay`) alone, taken and skipped, interleaved.

  The refresh step differs from a normal step only by this copy of the parameters into the
  replay ring; timing it alone measures that difference far below the noise of whole steps.
  """
  from jaxkd.train import state as state_lib
  refresh = jax.jit(state_lib.refresh_replay, donate_argnums=0)
  ring, params, stats = case.state.replay, case.state.params, case.state.batch_stats
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

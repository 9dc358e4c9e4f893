"""`build(config)`: one public way from a config to a run's compiled steps and initial state.

The training loop, ``jaxkd bench``, the seed-packing benchmark and the tests all assemble a run
the same way::

  trainer = jaxkd.train.build(config)
  state = trainer.init_state()
  batches = trainer.batches()
  for step in range(trainer.run.total_steps):
    state, metrics = trainer.steps.train(state, trainer.consts, batches.get(step))
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxkd import data as data_lib
from jaxkd import teachers
from jaxkd.train import run as run_lib
from jaxkd.train import state as state_lib
from jaxkd.train import step as step_lib

__all__ = ["Batches", "Trainer", "build", "example_rows", "init_state", "replicate",
           "shard_batch", "state_sharding"]


def replicate(mesh: jax.sharding.Mesh, array: np.ndarray) -> jax.Array:
  """A host array as one replicated global array (works across processes)."""
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def shard_batch(mesh: jax.sharding.Mesh, rows: np.ndarray, *, axis: int = 0) -> jax.Array:
  """The global batch ``rows`` sharded over ``data``; each process feeds only its own slice.

  ``axis``: the batch axis; the axes before it (K stacked steps, S packed seeds) are whole on
  every device.
  """
  sharding = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(*(None,) * axis, "data"))
  per_process = rows.shape[axis] // jax.process_count()
  start = jax.process_index() * per_process
  local = np.take(rows, np.arange(start, start + per_process), axis=axis)
  return jax.make_array_from_process_local_data(sharding, local, rows.shape)


def example_rows(run: run_lib.Run) -> int:
  """Rows of per-example method state: the training-set size, padded to a multiple of the
  ``data`` axis so the rows split evenly over the devices (the padding rows are never read)."""
  devices = run.mesh.shape["data"]
  return -(-run.train_data.num_examples // devices) * devices


def _initializer(run: run_lib.Run, optimizer: optax.GradientTransformation, seed: int):
  """``(init, sizes)``: the function building the initial state, and the sizes it passes."""
  init_key, state_key = jax.random.split(jax.random.PRNGKey(seed))
  sample = step_lib.preprocess(None, jnp.asarray(run.train_data.images[:1]), run.augment)
  feature_dim = jax.eval_shape(
      lambda: run.model.apply(run.model.init(init_key, sample), sample))["features"].shape[-1]
  sizes = dict(num_classes=run.train_data.num_classes, feature_dim=feature_dim)

  def init():
    variables = run.model.init(init_key, sample, train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    objective = run.objective.init(num_examples=example_rows(run), **sizes)
    teacher = None
    if run.teacher is not None:
      teacher = run.teacher.init({"params": params, "batch_stats": batch_stats}, **sizes)
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
        opt_state=optimizer.init(state_lib.trainable(params, teacher)), objective=objective,
        teacher=teacher, rng=state_key)

  return init, sizes


def state_sharding(run: run_lib.Run, optimizer: optax.GradientTransformation) -> Any:
  """Where every leaf of the train state lives: replicated, except per-example method state.

  Per-example state (PS-KD's table of past predictions: 5 GB in float32 for ImageNet) is the
  objective state whose leading axis grows with the training-set size; its rows are split over
  the ``data`` axis, and the jitted step gathers and scatters them by example id. Found by
  building the objective's state (abstractly) for two sizes, so no method has to declare it.
  """
  init, sizes = _initializer(run, optimizer, run.config.seed)
  shapes = jax.eval_shape(init)
  rows, devices = example_rows(run), run.mesh.shape["data"]
  bigger = jax.eval_shape(lambda: run.objective.init(num_examples=rows + devices, **sizes))
  replicated = jax.sharding.NamedSharding(run.mesh, jax.sharding.PartitionSpec())
  by_rows = jax.sharding.NamedSharding(run.mesh, jax.sharding.PartitionSpec("data"))
  objective = jax.tree_util.tree_map(
      lambda a, b: by_rows if a.ndim and a.shape[0] != b.shape[0] else replicated,
      shapes.objective, bigger)
  return jax.tree_util.tree_map(lambda _: replicated, shapes).replace(objective=objective)


def init_state(run: run_lib.Run, optimizer: optax.GradientTransformation, *,
               seed: Optional[int] = None, sharding: Any = None) -> state_lib.TrainState:
  """The initial `TrainState` of ``run`` (``seed``: the config's when None) on the mesh:
  replicated, per-example method state split by rows (``sharding``: `state_sharding`'s,
  computed here when None)."""
  init, _ = _initializer(run, optimizer, run.config.seed if seed is None else seed)
  if sharding is None:
    sharding = state_sharding(run, optimizer)
  return jax.jit(init, out_shardings=sharding)()


class Batches:
  """The batches of a run: a pure function of (seed, epoch), so a resumed run sees the same.

  ``host(step)`` gives the host rows (``indices`` and the teacher's ``host_batch`` rows);
  ``get(step)`` the same sharded over the mesh, ready for ``StepFns.train``;
  ``get_many(step, k)`` those of steps ``step .. step + k - 1`` stacked, ``[k, B, ...]``, ready
  for ``StepFns.train_many``.
  """

  def __init__(self, run: run_lib.Run, *, seed: Optional[int] = None):
    self.run = run
    self.seed = run.config.seed if seed is None else seed
    self.batch_size = run.config.train.batch_size
    self._epoch, self._rows = None, None

  def host(self, step: int) -> dict:
    epoch, i = divmod(step, self.run.steps_per_epoch)
    if epoch != self._epoch:
      order = data_lib.batch_indices(self.run.train_data.num_examples, self.batch_size,
                                     seed=self.seed, epoch=epoch)
      rows = {"indices": order}
      teacher = self.run.teacher
      if teacher is not None and teacher.host_batch is not None:
        rows.update(teacher.host_batch(self.run.train_data.labels, order, seed=self.seed,
                                       epoch=epoch))
      self._epoch, self._rows = epoch, rows
    return {k: v[i] for k, v in self._rows.items()}

  def get(self, step: int) -> dict:
    return {k: shard_batch(self.run.mesh, v) for k, v in self.host(step).items()}

  def get_many(self, step: int, k: int) -> dict:
    rows = [self.host(s) for s in range(step, step + k)]
    return {key: shard_batch(self.run.mesh, np.stack([r[key] for r in rows]), axis=1)
            for key in rows[0]}


@dataclasses.dataclass(frozen=True)
class Trainer:
  """A run assembled from a config: what the loop, the benchmarks and the tests share.

  Attributes:
    run: the resolved config (`jaxkd.train.Run`: data, model, objective, teacher, mesh).
    optimizer: the optax transformation over `jaxkd.train.trainable`.
    steps: the jitted train and eval steps (`StepFns`).
    consts: the training step's constants on the mesh: ``images``, ``labels`` and
      ``teacher`` (the teacher's constants, or None).
    eval_consts: the evaluation split's ``images`` and ``labels`` on the mesh.
    schedule: the optimizer's learning rate as a function of the step (`make_schedule`); the
      update that makes the step count ``t + 1`` runs at ``schedule(t)``. None when unknown.
    state_sharding: the train state's shardings (`state_sharding`), computed once here and
      shared by `init_state` and the jitted step.
  """
  run: run_lib.Run
  optimizer: optax.GradientTransformation
  steps: step_lib.StepFns
  consts: dict
  eval_consts: dict
  schedule: Optional[optax.Schedule] = None
  state_sharding: Any = None

  def init_state(self, seed: Optional[int] = None) -> state_lib.TrainState:
    """The initial train state (``seed``: the config's when None)."""
    return init_state(self.run, self.optimizer, seed=seed, sharding=self.state_sharding)

  def batches(self, seed: Optional[int] = None) -> Batches:
    """The run's batches (``seed``: the config's when None)."""
    return Batches(self.run, seed=seed)


def _on_mesh(mesh, dataset) -> dict:
  return {k: replicate(mesh, getattr(dataset, k)) for k in ("images", "labels")}


def build(config: ml_collections.ConfigDict, *, datasets: Any = None,
          teacher: Optional[teachers.Teacher] = None,
          share_data_with: Optional[Trainer] = None) -> Trainer:
  """Validates ``config`` and assembles its run: data, model, objective, teacher, steps.

  Everything that can be wrong in the config fails here with a `ConfigError` naming the key,
  before anything compiles.

  Args:
    config: a config (`configs/default.py` and the table configs).
    datasets: ``(train, eval)`` `jaxkd.data.ArrayDataset` to use instead of loading
      ``config.data.name`` (benchmarks on synthetic data).
    teacher: a bound `jaxkd.teachers.Teacher` replacing the objective's own (a frozen teacher
      held in memory).
    share_data_with: a `Trainer` of the same datasets whose arrays on the mesh this one
      reuses instead of placing a second copy (several methods benchmarked side by side).

  Returns:
    A `Trainer`.
  """
  run = run_lib.build_run(config, datasets=datasets, teacher=teacher)
  sizes = dict(steps_per_epoch=run.steps_per_epoch, total_steps=run.total_steps)
  schedule = run_lib.make_schedule(config.train.optimizer, **sizes)
  optimizer = run_lib.make_optimizer(config.train.optimizer, schedule=schedule, **sizes)
  sharding = state_sharding(run, optimizer)
  steps = step_lib.make_steps(model=run.model, objective=run.objective, optimizer=optimizer,
                              aug=run.augment, mesh=run.mesh, teacher=run.teacher,
                              skip_nonfinite=config.train.skip_nonfinite,
                              state_sharding=sharding)
  teacher_consts = None
  if run.teacher is not None and run.teacher.consts is not None:
    teacher_consts = jax.tree_util.tree_map(lambda x: replicate(run.mesh, x), run.teacher.consts)
  if share_data_with is not None:
    train = {k: share_data_with.consts[k] for k in ("images", "labels")}
    evaluation = share_data_with.eval_consts
  else:
    train = _on_mesh(run.mesh, run.train_data)
    evaluation = train if run.eval_data is run.train_data else _on_mesh(run.mesh, run.eval_data)
  return Trainer(run=run, optimizer=optimizer, steps=steps,
                 consts={**train, "teacher": teacher_consts}, eval_consts=evaluation,
                 schedule=schedule, state_sharding=sharding)

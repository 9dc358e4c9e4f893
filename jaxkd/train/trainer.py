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

import contextlib
import dataclasses
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxkd import data as data_lib
from jaxkd import tasks
from jaxkd import teachers
from jaxkd.train import run as run_lib
from jaxkd.train import state as state_lib
from jaxkd.train import step as step_lib

__all__ = ["Batches", "StreamBatches", "Trainer", "build", "example_rows", "finalize",
           "init_state", "replicate", "shard_batch", "state_key", "state_sharding"]


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


def _keys(seed: int) -> tuple[jax.Array, jax.Array]:
  """``(init, state)``: the key of the model's initialisation and the train state's ``rng``,
  from which every step draws its augmentation (`jaxkd.train.step_keys`)."""
  init_key, state_key = jax.random.split(jax.random.PRNGKey(seed))
  return init_key, state_key


def state_key(seed: int) -> jax.Array:
  """The train state's initial ``rng`` of a run with ``seed``."""
  return _keys(seed)[1]


def _initializer(run: run_lib.Run, optimizer: optax.GradientTransformation, seed: int):
  """``(init, sizes)``: the function building the initial state, and the sizes it passes."""
  init_key, state_key = _keys(seed)  # pylint: disable=redefined-outer-name
  zeros = jnp.zeros((1,) + run.train_data.input_shape, run.train_data.input_dtype)
  sample = run.task.model_input(None, zeros, zeros)
  feature_dim = jax.eval_shape(
      lambda: run.model.apply(run.model.init(init_key, sample), sample))["features"].shape[-1]
  sizes = dict(num_classes=run.train_data.num_classes, feature_dim=feature_dim)

  def init():
    variables = run.model.init(init_key, sample, train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    if run.init_variables is not None:
      params, batch_stats = _from_init_variables(run, params, batch_stats)
    objective = run.objective.init(num_examples=example_rows(run), **sizes)
    teacher = None
    if run.teacher is not None:
      teacher = run.teacher.init({"params": params, "batch_stats": batch_stats}, **sizes)
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
        opt_state=optimizer.init(state_lib.trainable(params, teacher)), objective=objective,
        teacher=teacher, rng=state_key)

  return init, sizes


def _from_init_variables(run: run_lib.Run, params: Any, batch_stats: Any) -> tuple[Any, Any]:
  """``model.init_from``'s params and batch_stats in place of the random ones, after checking
  that their trees, shapes and dtypes are the model's."""
  for name, fresh in (("params", params), ("batch_stats", batch_stats)):
    loaded = run.init_variables[name]
    want = jax.tree_util.tree_map(lambda a: (tuple(a.shape), str(a.dtype)), fresh)
    got = jax.tree_util.tree_map(lambda a: (tuple(np.shape(a)), str(a.dtype)), loaded)
    if want != got:
      mismatch = "trees differ" if (jax.tree_util.tree_structure(fresh)
                                    != jax.tree_util.tree_structure(loaded)) else "shapes differ"
      raise run_lib.ConfigError(
          f"config.model.init_from={run.config.model.init_from!r}: its {name} do not fit "
          f"model.name={run.config.model.name!r} ({mismatch}); allowed: a workdir of the same "
          "model with the same number of classes and input channels")
  return (jax.tree_util.tree_map(jnp.asarray, run.init_variables["params"]),
          jax.tree_util.tree_map(jnp.asarray, run.init_variables["batch_stats"]))


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


_STREAM_KEYS = {"image": "inputs", "label": "labels", "id": "indices", "mask": "mask"}


def _from_process_local(mesh: jax.sharding.Mesh, local: dict, *, axis: int = 0) -> dict:
  """This process's rows of a global batch (`StreamingSplit.batches`; ``axis``: the batch
  axis, after K stacked steps) as global arrays sharded over ``data``: ``inputs``, ``labels``,
  ``indices`` (example ids) and ``mask``, and the teacher's rows under their own names."""
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*(None,) * axis, "data"))

  def place(rows):
    shape = list(rows.shape)
    shape[axis] *= jax.process_count()
    return jax.make_array_from_process_local_data(sharding, rows, tuple(shape))

  return {_STREAM_KEYS.get(key, key): place(rows) for key, rows in local.items()}


class StreamBatches:
  """The batches of a streamed run (`jaxkd.data.StreamingSplit`), read on host threads.

  ``get(step)`` gives the global batch of ``step`` as arrays sharded over the mesh, each
  process reading only its rows: ``inputs`` (images decoded and cropped), ``labels`` and
  ``indices``
  (example ids, for per-example method state); ``get_many(step, k)`` K of them stacked. The
  order and the crops are a pure function of (seed, epoch, id), so a run resumed at any step
  reads the batches an uninterrupted run reads. Consecutive steps come from one prefetching
  reader per epoch; any other step restarts the reader there.
  """

  def __init__(self, run: run_lib.Run, *, seed: Optional[int] = None):
    self.run = run
    self.seed = run.config.seed if seed is None else seed
    self._next, self._reader = None, None
    self._epoch, self._rows = None, None

  def host(self, step: int) -> dict:
    """This process's rows of ``step``'s batch: ``image``, ``label``, ``id`` and the teacher's
    host rows (a teacher cache's outputs), as host arrays."""
    epoch, i = divmod(step, self.run.steps_per_epoch)
    if step != self._next:
      self._reader = self.run.train_data.batches(
          global_batch_size=self.run.config.train.batch_size, train=True, seed=self.seed,
          epoch=epoch, start_step=i)
    local = next(self._reader)
    self._next = step + 1
    if self._next % self.run.steps_per_epoch == 0:
      self._next = None  # the next epoch starts a new reader
    del local["mask"]  # every training row is real
    return {**local, **self._teacher_rows(epoch, i, len(local["id"]))}

  def _teacher_rows(self, epoch: int, i: int, local: int) -> dict:
    """This process's part of the teacher's ``host_batch`` rows of step ``i`` of ``epoch`` (a
    teacher cache's outputs), for the epoch's global order (`jaxkd.data.epoch_order`)."""
    teacher = self.run.teacher
    if teacher is None or teacher.host_batch is None:
      return {}
    if epoch != self._epoch:
      order, _ = data_lib.epoch_order(self.run.train_data.num_examples,
                                      self.run.config.train.batch_size, train=True,
                                      seed=self.seed, epoch=epoch)
      self._epoch, self._rows = epoch, teacher.host_batch(None, order, seed=self.seed,
                                                          epoch=epoch)
    start = jax.process_index() * local
    return {k: np.asarray(v[i][start:start + local]) for k, v in self._rows.items()}

  def get(self, step: int) -> dict:
    return _from_process_local(self.run.mesh, self.host(step))

  def get_many(self, step: int, k: int) -> dict:
    rows = [self.host(s) for s in range(step, step + k)]
    return _from_process_local(self.run.mesh, {key: np.stack([r[key] for r in rows])
                                               for key in rows[0]}, axis=1)


@dataclasses.dataclass(frozen=True)
class Trainer:
  """A run assembled from a config: what the loop, the benchmarks and the tests share.

  Attributes:
    run: the resolved config (`jaxkd.train.Run`: data, model, objective, teacher, mesh).
    optimizer: the optax transformation over `jaxkd.train.trainable`.
    steps: the jitted train steps (`StepFns`).
    consts: the training step's constants on the mesh: ``inputs``, ``labels`` (in-memory
      data only; streamed batches carry their inputs) and ``teacher`` (the teacher's
      constants, or None).
    eval_consts: the evaluation split's ``inputs`` and ``labels`` on the mesh (empty when
      streamed).
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
  # The compiled prediction programs, one per set of evaluators (`predict`).
  programs: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

  def init_state(self, seed: Optional[int] = None) -> state_lib.TrainState:
    """The initial train state (``seed``: the config's when None)."""
    return init_state(self.run, self.optimizer, seed=seed, sharding=self.state_sharding)

  def batches(self, seed: Optional[int] = None) -> Batches | StreamBatches:
    """The run's batches (``seed``: the config's when None)."""
    if run_lib.streams(self.run):
      return StreamBatches(self.run, seed=seed)
    return Batches(self.run, seed=seed)

  def eval_batches(self, batch_size: Optional[int] = None):
    """The evaluation split in order, as batch dicts for `predict`: every example once, the
    last batch padded and masked (``mask`` False on the padding). ``batch_size``: the
    config's ``train.eval_batch_size`` when None."""
    run = self.run
    batch_size = batch_size or run.config.train.eval_batch_size
    if run_lib.streams(run):
      for local in run.eval_data.batches(global_batch_size=batch_size, train=False):
        yield _from_process_local(run.mesh, local)
      return
    order, valid = data_lib.epoch_order(run.eval_data.num_examples, batch_size, train=False,
                                        seed=0, epoch=0)
    for rows, mask in zip(order, valid):
      yield {"indices": shard_batch(run.mesh, rows), "mask": shard_batch(run.mesh, mask)}

  def _program(self, evaluators: tuple):
    """The jitted prediction program of ``evaluators`` (compiled once per run and set)."""
    key = tuple(e.name for e in evaluators)
    if key in self.programs:
      return self.programs[key]
    run = self.run

    def predict(variables, consts, batch):
      raw, labels = step_lib.inputs(consts, batch)
      out, _ = teachers.apply_model(run.model, variables, run.task.model_input(None, raw, labels),
                                    train=False)
      logits, targets, _, mask = run.task.examples(out["logits"], labels, mask=batch["mask"])
      p = tasks.Predictions(logits=logits, labels=targets, mask=mask, outputs=out, inputs=raw,
                            row_mask=batch["mask"], ids=batch["indices"], model=run.model,
                            variables=variables)
      return ({e.name: e.sums(p) for e in evaluators if e.sums is not None},
              {e.name: e.rows(p) for e in evaluators if e.rows is not None})

    replicated = jax.sharding.NamedSharding(run.mesh, jax.sharding.PartitionSpec())
    by_rows = jax.sharding.NamedSharding(run.mesh, jax.sharding.PartitionSpec("data"))
    self.programs[key] = jax.jit(predict, out_shardings=(replicated, by_rows))
    return self.programs[key]

  def predict(self, variables: dict, evaluators: Sequence[tasks.Evaluator], *, batches=None,
              waiting=contextlib.nullcontext) -> dict:
    """The one prediction path: the model over a split, reduced by ``evaluators``.

    Every batch of ``batches`` (`eval_batches` when None: the evaluation split in order,
    streamed when the data is, the last batch padded and masked) goes through one jitted
    program sharded over the mesh; an evaluator's additive sums are added on the device (a
    replicated result: summed over the devices and the processes), its rows gathered to the
    host of every process batch by batch, the padding dropped (`jaxkd.tasks.Evaluator`).
    The training loop, ``jaxkd eval``, the report's collector and the benchmarks evaluate
    through here.

    Args:
      variables: the model's ``params`` and ``batch_stats``, on the mesh.
      evaluators: `jaxkd.tasks.Evaluator` (names unique; a name means one computation).
      batches: batch dicts as `eval_batches` gives them.
      waiting: a context manager around the wait for the device's sums (the watchdog's).

    Returns:
      ``{name: total}``: each evaluator's host sums, or its list of kept rows; pass it to
      `finalize`.
    """
    evaluators = tuple(evaluators)
    program = self._program(evaluators)
    keeps = {e.name: e for e in evaluators if e.rows is not None}
    sums, kept = None, {name: [] for name in keeps}
    for batch in self.eval_batches() if batches is None else batches:
      batch_sums, rows = program(variables, self.eval_consts, batch)
      sums = batch_sums if sums is None else jax.tree_util.tree_map(jnp.add, sums, batch_sums)
      if keeps:
        rows, mask = _gather((rows, batch["mask"]))
        for name, evaluator in keeps.items():
          found = {k: v[mask] for k, v in rows[name].items()}
          kept[name].append(evaluator.keep(found) if evaluator.keep else found)
    with waiting():
      sums = jax.device_get(sums) if sums is not None else {}
    return {e.name: sums[e.name] if e.sums is not None else kept[e.name] for e in evaluators}

  def evaluate(self, variables: dict, evaluators: Sequence[tasks.Evaluator], **kwargs
               ) -> tuple[dict, dict]:
    """`predict`, finalized: ``(numbers, totals)``, the evaluators' numbers merged into one
    dict (``top1``, ``nll``, ``stability``, ...) and `predict`'s totals."""
    totals = self.predict(variables, evaluators, **kwargs)
    return finalize(evaluators, totals), totals


def finalize(evaluators: Sequence[tasks.Evaluator], totals: dict) -> dict:
  """The numbers of ``evaluators`` from `Trainer.predict`'s ``totals``, merged into one dict."""
  numbers = {}
  for evaluator in evaluators:
    numbers.update(evaluator.finalize(totals[evaluator.name]))
  return numbers


def _gather(tree) -> Any:
  """Global arrays on the host of every process."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return multihost_utils.process_allgather(tree, tiled=True)


def _on_mesh(mesh, dataset) -> dict:
  return {k: replicate(mesh, getattr(dataset, k)) for k in ("inputs", "labels")}


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
                              task=run.task, mesh=run.mesh, teacher=run.teacher,
                              skip_nonfinite=config.train.skip_nonfinite,
                              state_sharding=sharding)
  teacher_consts = None
  if run.teacher is not None and run.teacher.consts is not None:
    teacher_consts = jax.tree_util.tree_map(lambda x: replicate(run.mesh, x), run.teacher.consts)
  if run_lib.streams(run):
    train, evaluation = {}, {}  # the batches carry their inputs
  elif share_data_with is not None:
    train = {k: share_data_with.consts[k] for k in ("inputs", "labels")}
    evaluation = share_data_with.eval_consts
  else:
    train = _on_mesh(run.mesh, run.train_data)
    evaluation = train if run.eval_data is run.train_data else _on_mesh(run.mesh, run.eval_data)
  return Trainer(run=run, optimizer=optimizer, steps=steps,
                 consts={**train, "teacher": teacher_consts}, eval_consts=evaluation,
                 schedule=schedule, state_sharding=sharding)

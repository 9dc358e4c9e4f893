"""Seed packing: S runs of one config advanced by one jitted program, `jax.vmap` over states.

Small networks leave most of a device idle, and every step pays a fixed dispatch cost. Packing
stacks the train states of S seeds (or of S hyperparameter settings) on a leading axis and
vmaps the unjitted step (`StepFns.train_fn`) over it, so one program advances all S runs.
Every run keeps its own initialisation, batch order, augmentation stream (the per-step key is
``fold_in(state.rng, state.step)``) and method state; the run's constants (the dataset, a
frozen teacher) are shared. Run ``s`` of a packed run computes what a separate run of seed
``s`` computes (up to float reassociation: a vmapped convolution is one grouped convolution).
``strategy="unroll"`` puts S copies of the step in the program instead of vmapping it (faster
for conv nets on CPU).

    trainer = jaxkd.train.build(config)
    states = packed.init_states(trainer, seeds=(0, 1, 2, 3))
    step = packed.pack_step(trainer.steps.train_fn, mesh=trainer.run.mesh)
    batches = packed.Batches(trainer, seeds=(0, 1, 2, 3))
    states, metrics = step(states, trainer.consts, batches.get(i))

Settings packing vmaps over hyperparameters as well: ``build(setting)`` returns the train step
of one setting (float hyperparameters arrive as tracers, which `jaxkd.objectives` accepts).

``train_and_evaluate(config, workdirs, seeds)`` is the training loop (`jaxkd.train.loop`) over
a packed program: every seed gets the workdir a separate run of it would write (``config.json``,
``run.json``, ``metrics.jsonl``, ``summary.json``, ``checkpoints/``, ``checkpoints_best/``),
evaluated through `Trainer.predict` on its own state. ``jaxkd report run --pack S`` trains a
table's rows this way.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxkd.train import loop
from jaxkd.train import run as run_lib
from jaxkd.train import state as state_lib
from jaxkd.train import trainer as trainer_lib

__all__ = ["Batches", "check", "init_states", "pack_settings_step", "pack_step", "program",
           "shard_rows", "stack", "train_and_evaluate", "unstack"]


def stack(trees: Sequence[Any]) -> Any:
  """Stacks same-structured pytrees on a new leading axis."""
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, index: int) -> Any:
  """Run ``index`` of a stacked pytree."""
  return jax.tree_util.tree_map(lambda x: x[index], tree)


def init_states(trainer: trainer_lib.Trainer, *, seeds: Sequence[int]) -> state_lib.TrainState:
  """The initial states of ``seeds``, each as `Trainer.init_state` makes it, stacked."""
  if not seeds:
    raise ValueError(f"seeds={seeds!r}: allowed: a non-empty sequence of ints")
  states = [trainer.init_state(seed=int(seed)) for seed in seeds]
  return jax.jit(stack, out_shardings=_replicated(trainer.run.mesh))(states)


class Batches:
  """The batches of S seeds of one run: every row of `jaxkd.train.Batches` gets an ``[S]`` axis.

  ``host(step)`` gives ``{name: int32 [S, B]}``; ``get(step)`` the same with the batch axis
  sharded over ``data``.
  """

  def __init__(self, trainer: trainer_lib.Trainer, *, seeds: Sequence[int]):
    self.mesh = trainer.run.mesh
    self._runs = [trainer.batches(seed=int(s)) for s in seeds]

  def host(self, step: int) -> dict:
    rows = [run.host(step) for run in self._runs]
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}

  def get(self, step: int) -> dict:
    return {k: shard_rows(self.mesh, v) for k, v in self.host(step).items()}


def shard_rows(mesh: jax.sharding.Mesh, rows: np.ndarray) -> jax.Array:
  """``[S, B]`` rows, the batch axis sharded over ``data`` (`jaxkd.train.shard_batch`)."""
  return trainer_lib.shard_batch(mesh, rows, axis=1)


def _replicated(mesh):
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def _unrolled(one: Callable) -> Callable:
  """``vmap`` of ``one`` over axis 0 of its batched arguments, as S calls in one program."""
  def packed(states, settings, consts, batch):
    size = jax.tree_util.tree_leaves(states)[0].shape[0]
    outs = [one(unstack(states, i), unstack(settings, i), consts, unstack(batch, i))
            for i in range(size)]
    return stack(outs)
  return packed


def pack_settings_step(build: Callable[[Mapping[str, jax.Array]], Callable], *,
                       mesh: jax.sharding.Mesh, strategy: str = "vmap") -> Callable:
  """One jitted step over S runs that differ in state and in hyperparameter settings.

  Args:
    build: ``setting -> train_fn``; ``setting`` maps names to scalars (tracers under the
      vmap) and ``train_fn(state, consts, batch)`` is the unjitted step of that setting, e.g.
      ``make_steps(objective=objectives.get(name, **setting), ...).train_fn``.
    mesh: the run's mesh; states are replicated, the batch axis of the indices sharded.
    strategy: ``"vmap"`` batches every operation over the S runs; ``"unroll"`` writes S
      copies of the step into the one program instead. Both compute the same thing. Under
      ``vmap`` a convolution whose weights differ per run becomes one grouped convolution,
      which XLA:CPU runs about 2.5x slower than the S plain ones (small_cnn, 2 cores), so
      ``"unroll"`` is the better choice for convolutional nets on CPU.

  Returns:
    ``step(states, settings, consts, batch) -> (states, metrics)``: ``settings`` maps names
    to ``[S]`` arrays, every row of ``batch`` is ``int32 [S, B]`` (`Batches`); every metric
    gets a leading ``[S]`` axis. ``states`` is donated.
  """
  def one(state, setting, consts, batch):
    return build(setting)(state, consts, batch)

  def vmapped(states, settings, consts, batch):
    # Every packed run is at the same step. Passed in unbatched, the step keeps each
    # `lax.cond` on it (MrKD's refresh) a conditional; a batched predicate would make it a
    # select that runs both branches for every run (6-10% of an MLP step at S=4).
    step = states.step[0]

    def at_step(state, setting, batch):
      return one(state.replace(step=step), setting, consts, batch)

    return jax.vmap(at_step)(states, settings, batch)

  strategies = {"vmap": vmapped, "unroll": _unrolled(one)}
  if strategy not in strategies:
    raise ValueError(f"strategy={strategy!r}: allowed: {', '.join(strategies)}")
  return jax.jit(strategies[strategy], donate_argnums=0, out_shardings=_replicated(mesh))


def pack_step(train_fn: Callable, *, mesh: jax.sharding.Mesh,
              strategy: str = "vmap") -> Callable:
  """One jitted step over S seeds of one config: ``train_fn`` vmapped over stacked states.

  Returns:
    ``step(states, consts, batch) -> (states, metrics)`` with the shapes of
    `pack_settings_step` (see there for ``strategy``).
  """
  packed = pack_settings_step(lambda setting: train_fn, mesh=mesh, strategy=strategy)

  def step(states, consts, batch):
    return packed(states, {}, consts, batch)

  return step


def check(trainer: trainer_lib.Trainer, seeds: Sequence[int]) -> None:
  """Refuses, naming the setting, what a packed program cannot train; traces (does not
  compile) the packed step, so a method whose step cannot be vmapped is refused here too.

  Raises:
    ConfigError: no seeds or repeated ones; a run of several processes; streamed data; more
      than one step per dispatch; a step that does not trace under `jax.vmap`.
  """
  config = trainer.run.config
  seeds = list(seeds)
  if not seeds or len(set(seeds)) != len(seeds) or not all(
      isinstance(s, int) and not isinstance(s, bool) for s in seeds):
    raise run_lib.ConfigError(f"seeds={seeds!r}: allowed: distinct int seeds, at least one")
  if jax.process_count() > 1:
    raise run_lib.ConfigError(
        f"seeds={seeds!r}: a run of {jax.process_count()} processes cannot be packed; "
        "allowed: packing on one process (train its seeds one by one instead)")
  if run_lib.streams(trainer.run):
    raise run_lib.ConfigError(
        f"config.data.in_memory={config.data.in_memory!r}: dataset {config.data.name!r} is "
        "streamed, and streamed batches cannot be packed; allowed: an in-memory dataset "
        "(data.in_memory=True where it fits), or the seeds one by one")
  if config.train.steps_per_dispatch != 1:
    raise run_lib.ConfigError(
        f"config.train.steps_per_dispatch={config.train.steps_per_dispatch!r}: packed seeds "
        "run one step per dispatch; allowed: 1")
  states = jax.eval_shape(lambda: init_states(trainer, seeds=seeds))
  batch = jax.eval_shape(lambda: Batches(trainer, seeds=seeds).get(0))
  try:
    jax.eval_shape(pack_step(trainer.steps.train_fn, mesh=trainer.run.mesh),
                   states, trainer.consts, batch)
  except Exception as err:  # a transform's error: any type  pylint: disable=broad-except
    raise run_lib.ConfigError(
        f"config.method.name={config.method.name!r}: its train step cannot be packed with "
        f"jax.vmap ({type(err).__name__}: {err}); allowed: its seeds one by one") from err


def program(seeds: Sequence[int], *, strategy: str = "vmap"
            ) -> Callable[[trainer_lib.Trainer], loop.Program]:
  """The loop's `jaxkd.train.loop.Program` of ``seeds`` packed in one step (`pack_step`)."""
  seeds = tuple(int(s) for s in seeds)

  def make(trainer: trainer_lib.Trainer) -> loop.Program:
    check(trainer, seeds)
    mesh = trainer.run.mesh
    return loop.Program(
        seeds=seeds, init=lambda: init_states(trainer, seeds=seeds),
        batches=Batches(trainer, seeds=seeds),
        train=pack_step(trainer.steps.train_fn, mesh=mesh, strategy=strategy), train_many=None,
        run_state=unstack, run_metrics=lambda metrics, i: {k: v[i] for k, v in metrics.items()},
        stack=jax.jit(stack, out_shardings=_replicated(mesh)))

  return make


def train_and_evaluate(config: ml_collections.ConfigDict, workdirs: Sequence[str],
                       seeds: Sequence[int], *, strategy: str = "vmap") -> list[dict]:
  """Trains ``config`` for each of ``seeds`` in one packed program, seed ``seeds[i]`` in
  ``workdirs[i]``, writing what `jaxkd.train.train_and_evaluate` writes for a separate run.

  ``config`` (its ``seed`` aside) is resolved in place as `jaxkd.train.train_and_evaluate`
  resolves it. Each run is evaluated through `Trainer.predict`, keeps its best epoch
  (``train.keep_best``) and checkpoints on its own. An interrupted packed run resumes from the
  newest checkpoint step all its workdirs hold; workdirs without a common step are refused,
  naming their steps. One seed is the plain loop.

  Returns:
    The summaries, in the order of ``seeds``.

  Raises:
    ConfigError: what cannot be packed (`check`), before anything compiles.
  """
  seeds = list(seeds)
  with run_lib.precision(config):
    loop.maybe_initialize_distributed(config)
    if len(seeds) == 1:
      config.seed = seeds[0]
      return loop.train_runs(config, workdirs, loop.single)
    return loop.train_runs(config, workdirs, program(seeds, strategy=strategy))

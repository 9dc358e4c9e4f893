"""Seed packing: S runs of one config advanced by one jitted program, `jax.vmap` over states.

Small networks leave most of a device idle, and every step pays a fixed dispatch cost. Packing
stacks the train states of S seeds (or of S hyperparameter settings) on a leading axis and
vmaps the unjitted step (`StepFns.train_fn`) over it, so one program advances all S runs.
Every run keeps its own initialisation, batch order, augmentation stream (the per-step key is
``fold_in(state.rng, state.step)``) and method state; the dataset and a frozen teacher are
shared. Run ``s`` of a packed run computes what a separate run of seed ``s`` computes (up to
float reassociation: a vmapped convolution is one grouped convolution). ``strategy="unroll"``
puts S copies of the step in the program instead of vmapping it (faster for conv nets on CPU).

    states = packed.init_states(run, optimizer, aug, seeds=(0, 1, 2, 3))
    step = packed.pack_step(steps.train_fn, mesh=run.mesh)
    rows = packed.batch_indices(run.train_data.num_examples, batch, seeds=(0, 1, 2, 3), epoch=0)
    states, metrics = step(states, data, packed.shard_rows(run.mesh, rows[i]), None, None)

Settings packing vmaps over hyperparameters as well: ``build(setting)`` returns the train step
of one setting (float hyperparameters arrive as tracers, which `jaxkd.objectives` accepts).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd import data as data_lib
from jaxkd.train import loop, state as state_lib

__all__ = ["batch_indices", "init_states", "pack_settings_step", "pack_step", "shard_rows",
           "stack", "unstack"]


def stack(trees: Sequence[Any]) -> Any:
  """Stacks same-structured pytrees on a new leading axis."""
  return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree: Any, index: int) -> Any:
  """Run ``index`` of a stacked pytree."""
  return jax.tree_util.tree_map(lambda x: x[index], tree)


def init_states(run, optimizer, aug, *, seeds: Sequence[int]) -> state_lib.TrainState:
  """The initial states of ``seeds``, each as `loop.init_state` makes it, stacked."""
  if not seeds:
    raise ValueError(f"seeds={seeds!r}: allowed: a non-empty sequence of ints")
  states = []
  for seed in seeds:
    config = run.config.copy_and_resolve_references()
    config.seed = int(seed)
    states.append(loop.init_state(dataclasses.replace(run, config=config), optimizer, aug))
  return jax.jit(stack, out_shardings=_replicated(run.mesh))(states)


def batch_indices(num_examples: int, batch_size: int, *, seeds: Sequence[int],
                  epoch: int) -> np.ndarray:
  """``int32 [steps, S, B]``: epoch ``epoch`` of every seed's own batch order."""
  return np.stack([data_lib.batch_indices(num_examples, batch_size, seed=s, epoch=epoch)
                   for s in seeds], axis=1)


def shard_rows(mesh: jax.sharding.Mesh, rows: np.ndarray) -> jax.Array:
  """``[S, B]`` example indices, the batch axis sharded over ``data`` (like `loop.shard_batch`)."""
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
  per_process = rows.shape[1] // jax.process_count()
  start = jax.process_index() * per_process
  return jax.make_array_from_process_local_data(
      sharding, rows[:, start:start + per_process], rows.shape)


def _replicated(mesh):
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def _unrolled(one: Callable) -> Callable:
  """``vmap`` of ``one`` over axis 0 of its first two arguments, as S calls in one program."""
  def packed(states, settings, data, indices, partners, teacher_vars):
    size = jax.tree_util.tree_leaves(states)[0].shape[0]
    outs = [one(unstack(states, i), unstack(settings, i), data, indices[i],
                None if partners is None else partners[i], teacher_vars) for i in range(size)]
    return stack(outs)
  return packed


def pack_settings_step(build: Callable[[Mapping[str, jax.Array]], Callable], *,
                       mesh: jax.sharding.Mesh, strategy: str = "vmap") -> Callable:
  """One jitted step over S runs that differ in state and in hyperparameter settings.

  Args:
    build: ``setting -> train_fn``; ``setting`` maps names to scalars (tracers under the
      vmap) and ``train_fn(state, data, indices, partners, teacher_vars)`` is the unjitted step
      of that setting, e.g. ``make_steps(objective=objectives.get(name, **setting), ...)
      .train_fn``.
    mesh: the run's mesh; states are replicated, the batch axis of the indices sharded.
    strategy: ``"vmap"`` batches every operation over the S runs; ``"unroll"`` writes S
      copies of the step into the one program instead. Both compute the same thing. Under
      ``vmap`` a convolution whose weights differ per run becomes one grouped convolution,
      which XLA:CPU runs about 2.5x slower than the S plain ones (small_cnn, 2 cores), so
      ``"unroll"`` is the better choice for convolutional nets on CPU.

  Returns:
    ``step(states, settings, data, indices, partners, teacher_vars) -> (states, metrics)``:
    ``settings`` maps names to ``[S]`` arrays, ``indices`` (and ``partners`` or None) are
    ``int32 [S, B]``; every metric gets a leading ``[S]`` axis. ``states`` is donated.
  """
  def one(state, setting, data, indices, partners, teacher_vars):
    return build(setting)(state, data, indices, partners, teacher_vars)

  def vmapped(states, settings, data, indices, partners, teacher_vars):
    # Every packed run is at the same step. Passed in unbatched, the step keeps each
    # `lax.cond` on it (MrKD's refresh) a conditional; a batched predicate would make it a
    # select that runs both branches for every run (6-10% of an MLP step at S=4).
    step = states.step[0]

    def at_step(state, setting, indices, partners):
      return one(state.replace(step=step), setting, data, indices, partners, teacher_vars)

    partner_axis = None if partners is None else 0
    return jax.vmap(at_step, in_axes=(0, 0, 0, partner_axis))(states, settings, indices, partners)

  strategies = {"vmap": vmapped, "unroll": _unrolled(one)}
  if strategy not in strategies:
    raise ValueError(f"strategy={strategy!r}: allowed: {', '.join(strategies)}")
  return jax.jit(strategies[strategy], donate_argnums=0, out_shardings=_replicated(mesh))


def pack_step(train_fn: Callable, *, mesh: jax.sharding.Mesh,
              strategy: str = "vmap") -> Callable:
  """One jitted step over S seeds of one config: ``train_fn`` vmapped over stacked states.

  Returns:
    ``step(states, data, indices, partners, teacher_vars) -> (states, metrics)`` with the
    shapes of `pack_settings_step` (see there for ``strategy``).
  """
  packed = pack_settings_step(lambda setting: train_fn, mesh=mesh, strategy=strategy)

  def step(states, data, indices, partners, teacher_vars):
    return packed(states, {}, data, indices, partners, teacher_vars)

  return step

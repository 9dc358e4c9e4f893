"""The train state: every piece of a run that lives on the device, in one pytree.

Besides the usual step, parameters, BatchNorm statistics and optimizer state, it holds the
objective's state (OLS/ALR class matrices, the PS-KD per-example table, RAS-KD's trainable
auxiliary head) and MrKD's replay ring, so all method state is sharded, donated, checkpointed
and updated inside the jitted step like the parameters themselves.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

__all__ = ["ReplayRing", "TrainState", "init_replay", "refresh_replay", "trainable", "with_trainable"]


@flax.struct.dataclass
class ReplayRing:
  """MrKD's memory: ``n`` frozen backups of the model, stacked on a leading axis.

  Attributes:
    params: the model parameters with a leading axis ``[n, ...]``.
    batch_stats: the BatchNorm statistics with a leading axis ``[n, ...]``.
    refreshes: how many snapshots were taken so far (int32 scalar); backup ``i`` is filled
      once ``refreshes > i`` and the next snapshot overwrites slot ``refreshes % n`` (the
      oldest), so the ring is FIFO.
  """
  params: Any
  batch_stats: Any
  refreshes: jax.Array

  @property
  def num_backups(self) -> int:
    return jax.tree_util.tree_leaves(self.params)[0].shape[0]

  def backup(self, index: int) -> tuple[Any, Any]:
    """``(params, batch_stats)`` of backup ``index``."""
    take = lambda tree: jax.tree_util.tree_map(lambda leaf: leaf[index], tree)
    return take(self.params), take(self.batch_stats)

  def filled(self) -> jax.Array:
    """Bool ``[n]``: which backups hold a snapshot (the teacher mask)."""
    return jnp.arange(self.num_backups) < self.refreshes


@flax.struct.dataclass
class TrainState:
  """Everything a training run keeps on the device (a pytree, checkpointed whole).

  Attributes:
    step: int32 scalar, the number of optimizer updates applied.
    params: the model's ``params`` collection.
    batch_stats: the model's ``batch_stats`` collection (``{}`` without BatchNorm).
    opt_state: optimizer state over ``trainable(state)``.
    objective: the objective's state (``obj.init``); a ``"params"`` entry is trainable.
    replay: MrKD's `ReplayRing`, or ``None`` for methods without one.
    rng: the run's base PRNG key; per-step keys are ``fold_in(rng, step)`` so a resumed
      run draws the same augmentations as an uninterrupted one.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: optax.OptState
  objective: Any
  replay: ReplayRing | None
  rng: jax.Array


def trainable(params: Any, objective_state: Any) -> dict:
  """The pytree the optimizer updates: the model and the objective's own parameters."""
  return {"model": params, "objective": _objective_params(objective_state)}


def with_trainable(objective_state: Any, objective_params: Any) -> Any:
  """Puts updated objective parameters back into the objective's state."""
  if isinstance(objective_state, dict) and "params" in objective_state:
    return {**objective_state, "params": objective_params}
  return objective_state


def _objective_params(objective_state: Any) -> Any:
  if isinstance(objective_state, dict) and "params" in objective_state:
    return objective_state["params"]
  return {}


def init_replay(params: Any, batch_stats: Any, *, num_backups: int,
                start_from_init: bool) -> ReplayRing:
  """A ring of ``num_backups`` backups; filled with the init weights if ``start_from_init``.

  Without ``start_from_init`` the slots hold zeros and are masked out, so the KD term is off
  until the first refresh (MrKD, arXiv 2009.05226; the option is ours).
  """
  def stack(tree):
    return jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(x, (num_backups,) + x.shape) *
        (1 if start_from_init else 0), tree)
  return ReplayRing(params=stack(params), batch_stats=stack(batch_stats),
                    refreshes=jnp.asarray(num_backups if start_from_init else 0, jnp.int32))


def refresh_replay(ring: ReplayRing, params: Any, batch_stats: Any,
                   do_refresh: jax.Array) -> ReplayRing:
  """Overwrites the oldest backup with ``params`` when ``do_refresh`` (traced bool).

  A ``lax.cond`` inside the jitted step: the snapshot is a device-side copy into one slot of
  the stacked ring, never a host round trip and never a retrace.
  """
  def take(ring):
    slot = ring.refreshes % ring.num_backups
    put = lambda stack, x: jax.lax.dynamic_update_index_in_dim(stack, x.astype(stack.dtype), slot, 0)
    return ReplayRing(params=jax.tree_util.tree_map(put, ring.params, params),
                      batch_stats=jax.tree_util.tree_map(put, ring.batch_stats, batch_stats),
                      refreshes=ring.refreshes + 1)
  return jax.lax.cond(do_refresh, take, lambda ring: ring, ring)

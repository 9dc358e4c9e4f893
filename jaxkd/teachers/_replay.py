"""MrKD's replay teacher: a ring of the model's own earlier copies, kept on the device.

Memory-replay KD (arXiv 2009.05226) distils the model from backups of itself taken every
``refresh_every`` steps. The ring holds ``num_backups`` backups stacked on a leading axis; the
refresh is a ``lax.cond`` inside the jitted step, so a snapshot is a device-side copy into one
slot, never a host round trip and never a retrace. The teacher's members are the backups,
masked until they hold a snapshot; the objective averages their tempered softmaxes.

RECONSTRUCTED option (the journal version, Sensors 2021, describes several backups whose
outputs "a small fully connected network" ensembles, trained jointly; the text is not public
to us): ``combine="learned"`` feeds the backups' logits, concatenated (empty slots as zeros),
to one linear layer ``[n K] -> [K]`` that starts as the average of a full ring's logits and is
trained with the student by the objective's terms on the teacher's logits (MrKD's
``ensemble_ce``, cross-entropy with the labels). The student distils from its output.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.struct
import jax
import jax.numpy as jnp

from jaxkd.teachers._base import Teacher, TeacherInputs, TeacherOutput, TeacherState, apply_model

__all__ = ["COMBINES", "ReplayRing", "init_ring", "refresh_ring", "replay", "ring_logits"]

COMBINES = ("mean", "learned")


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


def init_ring(params: Any, batch_stats: Any, *, num_backups: int,
              start_from_init: bool) -> ReplayRing:
  """A ring of ``num_backups`` backups; filled with the init weights if ``start_from_init``.

  Without ``start_from_init`` the slots hold zeros and are masked out, so the KD term is off
  until the first refresh (the option is ours).
  """
  def stack(tree):
    return jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(x, (num_backups,) + x.shape) *
        (1 if start_from_init else 0), tree)
  return ReplayRing(params=stack(params), batch_stats=stack(batch_stats),
                    refreshes=jnp.asarray(num_backups if start_from_init else 0, jnp.int32))


def refresh_ring(ring: ReplayRing, params: Any, batch_stats: Any,
                 do_refresh: jax.Array) -> ReplayRing:
  """Overwrites the oldest backup with ``params`` when ``do_refresh`` (traced bool)."""
  def take(ring):
    slot = ring.refreshes % ring.num_backups
    put = lambda stack, x: jax.lax.dynamic_update_index_in_dim(stack, x.astype(stack.dtype),
                                                              slot, 0)
    return ReplayRing(params=jax.tree_util.tree_map(put, ring.params, params),
                      batch_stats=jax.tree_util.tree_map(put, ring.batch_stats, batch_stats),
                      refreshes=ring.refreshes + 1)
  return jax.lax.cond(do_refresh, take, lambda ring: ring, ring)


def ring_logits(model, ring: ReplayRing, x: jax.Array, *, train_mode: bool) -> jax.Array:
  """Logits of every backup, ``[n, B, K]``, through one vmap; skipped while the ring is empty.

  On CPU the backups run one after another instead: XLA:CPU computes a vmapped convolution
  whose weights differ per backup as one grouped convolution, much slower than n plain ones.
  """
  one = lambda p, bs: apply_model(model, {"params": p, "batch_stats": bs}, x,
                                  train=train_mode)[0]["logits"]

  def vmapped(ring):
    return jax.vmap(one)(ring.params, ring.batch_stats)

  def unrolled(ring):
    return jnp.stack([one(*ring.backup(i)) for i in range(ring.num_backups)])

  def forward(ring):
    return jax.lax.platform_dependent(ring, cpu=unrolled, default=vmapped)

  shape = jax.eval_shape(forward, ring)
  return jax.lax.cond(ring.refreshes > 0, forward,
                      lambda ring: jnp.zeros(shape.shape, shape.dtype), ring)


def _combiner(num_backups: int, num_classes: int) -> dict:
  """The learned ensemble's linear layer, initialised to the average of ``n`` backups' logits
  (JAX's default float: float32; float64 under the x64 switch of a float64 run)."""
  eye = jnp.eye(num_classes) / num_backups
  return {"kernel": jnp.concatenate([eye] * num_backups, axis=0),
          "bias": jnp.zeros((num_classes,))}


def _combine(params: dict, members: jax.Array, mask: jax.Array) -> jax.Array:
  """``[n, B, K]`` backup logits (invalid ones zeroed) -> ``[B, K]`` through the linear layer."""
  n, batch, classes = members.shape
  x = jnp.where(mask[:, None, None], jax.lax.stop_gradient(members), 0.0)
  x = jnp.moveaxis(x, 0, 1).reshape(batch, n * classes)
  return x @ params["kernel"] + params["bias"]


def replay(*, num_backups: int = 1, refresh_every: Optional[int] = None,
           start_from_init: bool = False, train_mode: bool = False,
           combine: str = "mean") -> Teacher:
  """MrKD's teacher: the student's own backups, refreshed every ``refresh_every`` steps.

  Args:
    num_backups: backups in the ring (FIFO); the teacher averages the valid ones.
    refresh_every: steps between snapshots (the training engine sets one epoch when None).
    start_from_init: fill the ring with the initial weights, so the KD term is on from step 0;
      otherwise it starts at the first snapshot.
    train_mode: run the backups with batch statistics (no update of their running statistics).
    combine: ``"mean"``, the members are the backups (the objective averages their tempered
      softmaxes); ``"learned"``, one member, a trainable linear layer over the backups' logits
      (see the module doc).

  Returns:
    A `Teacher` whose state is a `ReplayRing` (and whose ``params`` are the learned
    combiner's); without ``start_from_init`` its ``inactive_steps`` is ``refresh_every`` (the
    ring is empty until the first snapshot).
  """
  if combine not in COMBINES:
    raise ValueError(f"combine={combine!r} is not allowed; allowed: {', '.join(COMBINES)}")

  def init(student, *, num_classes: Optional[int] = None, **_) -> TeacherState:
    ring = init_ring(student["params"], student.get("batch_stats", {}),
                     num_backups=num_backups, start_from_init=start_from_init)
    params = _combiner(num_backups, num_classes) if combine == "learned" else {}
    return TeacherState(params=params, state=ring)

  def logits(state: TeacherState, consts, inputs: TeacherInputs) -> TeacherOutput:
    del consts
    ring = state.state
    members = ring_logits(inputs.model, ring, inputs.inputs, train_mode=train_mode)
    if combine == "mean":
      return TeacherOutput(members, mask=ring.filled())
    return TeacherOutput(_combine(state.params, members, ring.filled()),
                         mask=jnp.any(ring.filled())[None])

  def update(state: TeacherState, student: dict, step) -> TeacherState:
    if refresh_every is None:
      raise ValueError("replay teacher: refresh_every is None; set it (steps between "
                       "snapshots; jaxkd.train sets one epoch)")
    ring = refresh_ring(state.state, student["params"], student.get("batch_stats", {}),
                        step % refresh_every == 0)
    return state.replace(state=ring)

  inactive = 0 if start_from_init or refresh_every is None else int(refresh_every)
  return Teacher(init=init, logits=logits, update=update, name="replay",
                 inactive_steps=inactive,
                 doc="the student's own earlier weights, a ring of backups (MrKD)")

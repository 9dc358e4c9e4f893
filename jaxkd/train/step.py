"""The jitted train and eval steps.

One `jax.jit` program per step over a `Mesh` with a ``data`` axis: the global batch of example
indices is sharded over ``data``, the dataset and the state are replicated, the state buffers
are donated. The step gathers and augments its images on the device, gets teacher logits
(frozen teacher, MrKD replay ring through one `vmap`, or CS-KD's same-class partner), applies
the objective and the optimizer, updates method state and refreshes the replay ring with a
`lax.cond`, so nothing crosses to the host and nothing retraces.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxkd import analysis
from jaxkd import data as data_lib
from jaxkd.train import state as state_lib

__all__ = ["Augment", "StepFns", "make_steps", "preprocess"]


@dataclasses.dataclass(frozen=True)
class Augment:
  """On-device augmentation and normalisation (static settings of the jitted step)."""
  mean: tuple[float, ...]
  std: tuple[float, ...]
  crop_padding: int = 0
  flip: bool = False
  rotation_degrees: float = 0.0


def preprocess(rng: jax.Array | None, images: jax.Array, aug: Augment) -> jax.Array:
  """uint8 ``[B,H,W,C]`` -> normalised float32; augmented when ``rng`` is given."""
  x = images.astype(jnp.float32) / 255.0
  if rng is not None and (aug.crop_padding or aug.flip or aug.rotation_degrees):
    x = data_lib.device_augment(rng, x, crop_padding=aug.crop_padding, flip=aug.flip,
                                rotation_degrees=aug.rotation_degrees)
  return (x - jnp.asarray(aug.mean, jnp.float32)) / jnp.asarray(aug.std, jnp.float32)


@dataclasses.dataclass(frozen=True)
class StepFns:
  """The two jitted programs of a run, and the plain train step they compile.

  ``train_fn`` is the same step before `jax.jit`, for composing it under other transforms
  (``jax.vmap`` over stacked states packs several seeds into one program).
  """
  train: Callable[..., tuple[state_lib.TrainState, dict]]
  eval: Callable[..., dict]
  train_fn: Callable[..., tuple[state_lib.TrainState, dict]]


def _apply(model, params, batch_stats, x, *, train, rng=None):
  """Forward pass; returns (outputs, new batch_stats). ``rng`` feeds dropout (GoogLeNet)."""
  variables = {"params": params, "batch_stats": batch_stats}
  if not train:
    return model.apply(variables, x, train=False), batch_stats
  out, mutated = model.apply(variables, x, train=True, mutable=["batch_stats"],
                             rngs={"dropout": rng} if rng is not None else {})
  return out, mutated.get("batch_stats", batch_stats)


def _replay_logits(model, ring: state_lib.ReplayRing, x, *, train_mode: bool):
  """Logits of every backup, ``[n, B, K]``, through one vmap; skipped while the ring is empty.

  On CPU the backups run one after another instead: XLA:CPU computes a vmapped convolution
  whose weights differ per backup as one grouped convolution, which made two backups of
  ``small_cnn`` cost 2.9 forward passes instead of 2.
  """
  one = lambda p, bs: _apply(model, p, bs, x, train=train_mode)[0]["logits"]

  def vmapped(ring):
    return jax.vmap(one)(ring.params, ring.batch_stats)

  def unrolled(ring):
    return jnp.stack([one(*ring.backup(i)) for i in range(ring.num_backups)])

  def forward(ring):
    return jax.lax.platform_dependent(ring, cpu=unrolled, default=vmapped)

  shape = jax.eval_shape(forward, ring)
  return jax.lax.cond(ring.refreshes > 0, forward,
                      lambda ring: jnp.zeros(shape.shape, shape.dtype), ring)


def make_steps(*, model: nn.Module, objective, optimizer: optax.GradientTransformation,
               aug: Augment, mesh: jax.sharding.Mesh, teacher_model: nn.Module | None = None,
               teacher_train_mode: bool = False, skip_nonfinite: bool = False) -> StepFns:
  """Builds the jitted train and eval steps of a run.

  Args:
    model: the student (a `jaxkd.models` module).
    objective: a `jaxkd.objectives` objective.
    optimizer: an optax transformation over ``state_lib.trainable(...)``.
    aug: on-device augmentation settings for training images.
    mesh: a mesh with a ``data`` axis; the batch is sharded over it, the state replicated.
    teacher_model: the frozen teacher's module for ``objective.teacher == "model"``.
    teacher_train_mode: run the frozen teacher with batch statistics (no grad, no update).
    skip_nonfinite: keep the previous state when the loss or a gradient is not finite.

  Returns:
    ``StepFns(train, eval)``: ``train(state, data, indices, partners, teacher_vars) ->
    (state, metrics)`` and ``eval(params, batch_stats, data, indices, mask) -> sums``.
  """
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  requires = objective.requires
  replay = objective.replay

  def train_step(state, data, indices, partners, teacher_vars):
    rng = jax.random.fold_in(state.rng, state.step)
    aug_rng, partner_rng, dropout_rng = jax.random.split(rng, 3)
    x = preprocess(aug_rng, data["images"][indices], aug)
    labels = data["labels"][indices]
    teacher_logits = teacher_mask = None
    if objective.teacher == "model":
      teacher_logits = _apply(teacher_model, teacher_vars["params"], teacher_vars["batch_stats"],
                              x, train=teacher_train_mode)[0]["logits"]
    elif objective.teacher == "replay":
      teacher_logits = _replay_logits(model, state.replay, x, train_mode=replay["train_mode"])
      teacher_mask = state.replay.filled()

    def loss_fn(tr):
      out, batch_stats = _apply(model, tr["model"], state.batch_stats, x, train=True,
                                rng=dropout_rng)
      t_logits = teacher_logits
      if objective.teacher == "partner":
        # CS-KD: the partner pass runs in train mode without grad after the main pass, so the
        # running statistics see both halves in the official code's order (alinlab/cs-kd).
        x_partner = preprocess(partner_rng, data["images"][partners], aug)
        p_out, batch_stats = _apply(model, jax.lax.stop_gradient(tr["model"]), batch_stats,
                                    x_partner, train=True, rng=partner_rng)
        t_logits = jax.lax.stop_gradient(p_out["logits"])
      loss, metrics, new_obj = objective.loss(
          out["logits"], labels, state_lib.with_trainable(state.objective, tr["objective"]),
          step=state.step, teacher_logits=t_logits, teacher_mask=teacher_mask,
          features=out["features"] if "features" in requires else None,
          dense_logits=out["dense_logits"] if "dense_logits" in requires else None,
          example_ids=indices if "example_ids" in requires else None)
      return loss, (metrics, batch_stats, new_obj)

    trainable = state_lib.trainable(state.params, state.objective)
    (loss, (metrics, batch_stats, new_obj)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(trainable)
    updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    grad_norm = optax.tree.norm(grads)
    # A finite gradient times a huge learning rate can still overflow the parameters.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(updates))
    new_state = state.replace(
        step=state.step + 1, params=trainable["model"], batch_stats=batch_stats,
        opt_state=opt_state,
        objective=state_lib.with_trainable(new_obj, trainable["objective"]))
    if replay is not None:
      do_refresh = (new_state.step % replay["refresh_every"]) == 0
      new_state = new_state.replace(replay=state_lib.refresh_replay(
          state.replay, new_state.params, new_state.batch_stats, do_refresh))
    if skip_nonfinite:
      keep = lambda new, old: jnp.where(finite, new, old)
      new_state = jax.tree_util.tree_map(keep, new_state, state.replace(step=state.step + 1))
    metrics = {**metrics, "grad_norm": grad_norm, "nonfinite": 1.0 - finite.astype(jnp.float32)}
    return new_state, metrics

  def eval_step(params, batch_stats, data, indices, mask):
    x = preprocess(None, data["images"][indices], aug)
    out, _ = _apply(model, params, batch_stats, x, train=False)
    return analysis.classification_metrics(out["logits"], data["labels"][indices], mask=mask)

  return StepFns(
      train=jax.jit(train_step, donate_argnums=0, out_shardings=replicated),
      eval=jax.jit(eval_step, out_shardings=replicated),
      train_fn=train_step)

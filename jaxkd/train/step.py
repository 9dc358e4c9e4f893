"""The jitted train steps.

One `jax.jit` program per step over a `Mesh` with a ``data`` axis: the batch dict (example
indices and whatever rows the teacher adds) is sharded over ``data``; the run's constants (the
dataset, a frozen teacher's variables) and the state are replicated; the state buffers are
donated. The step gathers its inputs, has the run's task (`jaxkd.tasks`) augment and feed them
on the device, runs the student, asks the teacher for its logits, applies the objective and the optimizer, and lets the teacher update
itself (a replay refresh is a `lax.cond`), so nothing crosses to the host and nothing retraces.
The step never asks which teacher or which task it holds.

``train_many`` runs K steps in one dispatch (`jax.lax.scan` over the step, batches stacked on a
leading axis), for runs whose step is so short that dispatching it from Python dominates
(``train.steps_per_dispatch``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from jaxkd import tasks
from jaxkd import teachers
from jaxkd.train import state as state_lib

__all__ = ["StepFns", "inputs", "make_steps", "step_keys"]


def step_keys(rng: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The PRNG keys of train step ``step`` from the state's ``rng``: ``(augmentation, teacher,
  dropout)``. A pure function of (seed, step), so the augmented batch of any step can be made
  again outside the step (`jaxkd.train.cache_teacher`)."""
  rng = jax.random.fold_in(rng, step)
  aug, teacher, dropout = jax.random.split(rng, 3)
  return aug, teacher, dropout


def inputs(consts: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
  """A batch's raw inputs (uint8 images, int32 token ids) and labels: carried by the batch
  (streamed data), or gathered from the split held on the device by the batch's example
  ``indices``."""
  if "inputs" in batch:
    return batch["inputs"], batch["labels"]
  return consts["inputs"][batch["indices"]], consts["labels"][batch["indices"]]


@dataclasses.dataclass(frozen=True)
class StepFns:
  """The jitted programs of a run, and the plain train step they compile.

  ``train(state, consts, batch) -> (state, metrics)``: ``consts`` holds ``inputs``,
  ``labels`` (the training split, when held in memory) and ``teacher`` (the teacher's
  constants, or None); ``batch`` holds ``indices`` (example ids), the rows the teacher's
  ``host_batch`` adds and, for streamed data, the batch's own ``inputs`` and ``labels``.
  (Evaluation is `Trainer.predict`'s.)
  ``train_many(state, consts, batches) -> (state, metrics)``: K train steps in one program,
  a `jax.lax.scan` over ``train_fn``; every row of ``batches`` has a leading ``[K]`` axis
  (`jaxkd.train.Batches.get_many`) and every metric comes back stacked, ``[K]``. It compiles
  once per K (on its first call) and computes what K calls of ``train`` compute (bit for bit
  without BatchNorm; with it, XLA may fuse the loop's body differently: the last float bit).
  ``train_fn`` is the train step before `jax.jit`, for composing it under other transforms
  (``jax.vmap`` over stacked states packs several seeds into one program).
  """
  train: Callable[..., tuple[state_lib.TrainState, dict]]
  train_fn: Callable[..., tuple[state_lib.TrainState, dict]]
  train_many: Callable[..., tuple[state_lib.TrainState, dict]]


def make_steps(*, model: nn.Module, objective, optimizer: optax.GradientTransformation,
               task: tasks.Bound, mesh: jax.sharding.Mesh, teacher: Any = None,
               skip_nonfinite: bool = False, state_sharding: Any = None) -> StepFns:
  """Builds the jitted train steps of a run.

  Args:
    model: the student (a `jaxkd.models` module).
    objective: a `jaxkd.objectives` objective.
    optimizer: an optax transformation over ``state_lib.trainable(...)``.
    task: the run's task with its settings (`jaxkd.tasks.Bound`): preprocessing, feeding and
      the objective's examples.
    mesh: a mesh with a ``data`` axis; the batch is sharded over it, the state replicated.
    teacher: a bound `jaxkd.teachers.Teacher` giving the objective's teacher logits, or None.
    skip_nonfinite: keep the previous state when the loss or a gradient is not finite.
    state_sharding: the train state's shardings (`jaxkd.train.state_sharding`: per-example
      method state split by rows over ``data``); None: everything replicated.

  Returns:
    `StepFns`.
  """
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  requires = objective.requires

  def train_step(state, consts, batch):
    aug_rng, teacher_rng, dropout_rng = step_keys(state.rng, state.step)
    indices = batch["indices"]
    raw, labels = inputs(consts, batch)
    x = task.model_input(aug_rng, raw, labels)
    load = None
    if "inputs" in consts:
      load = lambda rows, key: task.preprocess(key, consts["inputs"][rows])

    def loss_fn(tr):
      out, batch_stats = teachers.apply_model(
          model, {"params": tr["student"], "batch_stats": state.batch_stats}, x, train=True,
          rng=dropout_rng)
      t = teachers.TeacherOutput(None)
      if teacher is not None:
        student = {"params": jax.lax.stop_gradient(tr["student"]), "batch_stats": batch_stats}
        t = teacher.logits(state.teacher.replace(params=tr["teacher"]), consts["teacher"],
                           teachers.TeacherInputs(model=model, inputs=x, student=student,
                                                  outputs=out, batch=batch, load=load,
                                                  rng=teacher_rng))
        if t.batch_stats is not None:
          batch_stats = t.batch_stats
      logits, targets, teacher_logits, weights = task.examples(out["logits"], labels, t.logits)
      loss, metrics, new_obj = objective.loss(
          logits, targets, state.objective, step=state.step, teacher_logits=teacher_logits,
          teacher_mask=t.mask, class_embeddings=t.class_embeddings,
          teacher_temperature=t.temperature,
          features=out["features"] if "features" in requires else None,
          dense_logits=out["dense_logits"] if "dense_logits" in requires else None,
          example_ids=indices if "example_ids" in requires else None, weights=weights)
      return loss, (metrics, batch_stats, new_obj)

    trainable = state_lib.trainable(state.params, state.teacher)
    (loss, (metrics, batch_stats, new_obj)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(trainable)
    updates, opt_state = optimizer.update(grads, state.opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    grad_norm = optax.tree.norm(grads)
    # A finite gradient times a huge learning rate can still overflow the parameters.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(optax.tree.norm(updates))
    new_state = state.replace(step=state.step + 1, params=trainable["student"],
                              batch_stats=batch_stats, opt_state=opt_state, objective=new_obj)
    if teacher is not None:
      new_state = new_state.replace(teacher=teacher.update(
          state.teacher.replace(params=trainable["teacher"]),
          {"params": new_state.params, "batch_stats": new_state.batch_stats}, new_state.step))
    if skip_nonfinite:
      keep = lambda new, old: jnp.where(finite, new, old)
      new_state = jax.tree_util.tree_map(keep, new_state, state.replace(step=state.step + 1))
    metrics = {**metrics, "grad_norm": grad_norm, "nonfinite": 1.0 - finite.astype(jnp.float32)}
    return new_state, metrics

  def train_steps(state, consts, batches):
    # A loop of the step itself: XLA compiles it as one while loop, and each iteration runs the
    # step's own operations (with BatchNorm in the model, XLA may fuse them differently inside
    # the loop: the parameters then differ from single steps' in the last float bit or two).
    return jax.lax.scan(lambda carry, batch: train_step(carry, consts, batch), state, batches)

  out_shardings = (state_sharding or replicated, replicated)
  return StepFns(
      train=jax.jit(train_step, donate_argnums=0, out_shardings=out_shardings),
      train_fn=train_step,
      train_many=jax.jit(train_steps, donate_argnums=0, out_shardings=out_shardings))

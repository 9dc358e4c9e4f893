"""Progressive self-knowledge distillation (PS-KD): a per-example table of past predictions."""
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxkd.targets import _base
from jaxkd.targets import _online

__all__ = ["ProgressiveState", "TABLE_DTYPES", "progressive_self_knowledge"]

TABLE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class ProgressiveState(NamedTuple):
  """State of `progressive_self_knowledge`.

  Attributes:
    table: ``[num_examples, classes]``, the last softmax predicted for every training example.
  """
  table: chex.Array


def _check_total_epochs(total_epochs):
  if total_epochs is None:
    raise ValueError("progressive_self_knowledge needs total_epochs (an int, the length of the "
                     "run in epochs); the training engine or the config must set it.")
  if isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs < 1:
    raise ValueError(f"total_epochs={total_epochs!r} is not allowed; allowed: an int >= 1.")


def progressive_self_knowledge(*, alpha_final: _base.Hyperparam, total_epochs: int,
                               steps_per_epoch: int,
                               table_dtype: str = "float32") -> _base.TargetTransform:
  r"""PS-KD targets: the labels mixed with last epoch's prediction for the same example.

  .. math::
    q = (1 - \alpha_t)\, e_y + \alpha_t P[\mathrm{id}], \qquad
    \alpha_t = \alpha_T \frac{e + 1}{E}

  with ``e = step // steps_per_epoch`` the current epoch and ``E = total_epochs``. In epoch 0
  the table entry is first set to ``e_y`` (so the target is ``e_y``); every step then
  overwrites ``P[id]`` with the current softmax of the student, as in the official code.
  Needs ``ctx.example_ids``.

  Args:
    alpha_final: ``alpha_T`` (0.8 in the paper), or a schedule.
    total_epochs: ``E``.
    steps_per_epoch: optimizer steps per epoch.
    table_dtype: ``"float32"`` or ``"bfloat16"``, how the table is stored (bfloat16 halves
      it: 2.6 GB instead of 5.1 GB for ImageNet; the targets are computed in float32).

  Returns:
    A `TargetTransform` with `ProgressiveState`; ``init`` needs ``num_examples``. The training
    engine splits the table's rows over the devices of the ``data`` axis.

  References:
    Kim et al., `Self-Knowledge Distillation with Progressive Refinement of Targets
    <https://arxiv.org/abs/2006.12000>`_, ICCV 2021; lgcnsai/PS-KD-Pytorch, ``main.py::train``.
  """
  _online.check_steps_per_epoch(steps_per_epoch, "progressive_self_knowledge")
  _check_total_epochs(total_epochs)
  if table_dtype not in TABLE_DTYPES:
    raise ValueError(f"table_dtype={table_dtype!r} is not allowed; allowed: "
                     f"{', '.join(TABLE_DTYPES)}.")
  dtype = TABLE_DTYPES[table_dtype]

  def init(*, num_classes, num_examples=None, **_):
    if num_examples is None:
      raise ValueError("progressive_self_knowledge needs num_examples (the training set size, "
                       "for its per-example table) at init; got None.")
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
      raise ValueError(f"num_examples={num_examples!r} is not allowed; allowed: an int >= 1.")
    return ProgressiveState(table=jnp.zeros((num_examples, num_classes), dtype))

  def update(targets, state, ctx):
    del targets
    if ctx.example_ids is None:
      raise ValueError("progressive_self_knowledge needs example_ids (the training-set index "
                       "of every example in the batch) to read its table; got None.")
    one_hot = jax.nn.one_hot(ctx.labels, ctx.logits.shape[-1], dtype=jnp.float32)
    epoch = jnp.asarray(ctx.step) // steps_per_epoch
    alpha = _base.value_at(alpha_final, ctx.step) * (epoch + 1) / total_epochs
    alpha = jnp.maximum(alpha, 0.0)
    past = jnp.where(epoch == 0, one_hot, state.table[ctx.example_ids].astype(jnp.float32))
    new_targets = (1.0 - alpha) * one_hot + alpha * past
    table = state.table.at[ctx.example_ids].set(
        jax.nn.softmax(ctx.logits, axis=-1).astype(dtype))
    return new_targets, ProgressiveState(table=table)

  return _base.TargetTransform(init, update)

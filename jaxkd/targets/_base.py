"""Target transforms: the optax-style `init`/`update` pair, its context and `chain`.

A target transform turns the one-hot labels of a batch into the distribution a loss term is
trained towards (smoothed labels, a tempered teacher, an online class matrix, ...). Like an
`optax.GradientTransformation` it is a pair of pure functions, so recipes compose with
`chain`, jit-compile, vmap and shard.
"""
from typing import Any, Callable, NamedTuple, Optional, Union

import chex
import jax
import jax.numpy as jnp

from jaxkd import losses

__all__ = [
    "EmptyState",
    "Hyperparam",
    "LearnedTemperature",
    "TargetContext",
    "TargetTransform",
    "build_targets",
    "chain",
    "gradient_scale",
    "learned_temperature",
    "make_context",
    "stateless",
    "temperature_at",
    "value_at",
]

# A float hyperparameter: a number, or a schedule `step -> value` (optax schedules work as is).
Hyperparam = Union[float, Callable[[chex.Numeric], chex.Numeric]]


class EmptyState(NamedTuple):
  """The state of a stateless transform (an empty pytree)."""


class TargetContext(NamedTuple):
  """What a target transform may read besides the current targets.

  Attributes:
    labels: int labels, shape ``[batch]``.
    logits: the student's logits, float32, stop-gradient, shape ``[batch, classes]``.
    step: the training step (int scalar, may be traced).
    teacher_logits: float32, stop-gradient, ``[members, batch, classes]`` (an ensemble of
      teachers or the replay backups), or None.
    teacher_mask: bool ``[members]``: which members are valid, or None.
    features: penultimate features, float32, stop-gradient, ``[batch, dim]``, or None.
    dense_logits: per-position class scores ``[batch, height, width, classes]``, or None.
    example_ids: int ``[batch]`` indices of the examples in the training set, or None.
    class_embeddings: float32 stop-gradient ``[classes, dim]`` class representatives (RAS-KD:
      the rows of the auxiliary classifier), or None.
    weights: float32 ``[batch]`` example weights (0 on a sequence model's padding tokens), or
      None: every example counts once. Transforms that accumulate statistics over the batch
      weight them.
    teacher_temperature: a float32 scalar the teacher learns (CTKD), WITH its gradient (the
      one input that is not stop-gradient), or None; `temperature_at` reads it.
  """
  labels: chex.Array
  logits: chex.Array
  step: chex.Numeric
  teacher_logits: Optional[chex.Array] = None
  teacher_mask: Optional[chex.Array] = None
  features: Optional[chex.Array] = None
  dense_logits: Optional[chex.Array] = None
  example_ids: Optional[chex.Array] = None
  class_embeddings: Optional[chex.Array] = None
  weights: Optional[chex.Array] = None
  teacher_temperature: Optional[chex.Array] = None


class TargetTransform(NamedTuple):
  """A pure target transformation, modelled on `optax.GradientTransformation`.

  Attributes:
    init: ``init(*, num_classes, num_examples=None, feature_dim=None) -> state``, a pytree.
    update: ``update(targets, state, ctx) -> (targets, state)`` where ``targets`` is a float32
      ``[batch, classes]`` distribution (one-hot labels at the start of a chain) and ``ctx`` a
      `TargetContext`.
  """
  init: Callable[..., Any]
  update: Callable[[chex.Array, Any, TargetContext], tuple[chex.Array, Any]]


def value_at(value: Hyperparam, step: chex.Numeric) -> chex.Numeric:
  """Evaluates a hyperparameter that may be a schedule.

  Args:
    value: a number or a callable ``step -> value`` (e.g. any optax schedule).
    step: the current step; may be a tracer, so a schedule compiles into the step once.

  Returns:
    The value at ``step`` (a float32 array for schedules, the number itself otherwise).
  """
  if callable(value):
    return jnp.asarray(value(step), jnp.float32)
  return value


class LearnedTemperature(NamedTuple):
  """A temperature the teacher learns (``ctx.teacher_temperature``), see `learned_temperature`.

  Attributes:
    gradient: the factor its gradient is multiplied by (a number or a schedule ``step ->
      value``): negative reverses it (CTKD's gradient-reversal layer).
  """
  gradient: Hyperparam = 1.0


def learned_temperature(gradient: Hyperparam = 1.0) -> LearnedTemperature:
  """Marks a temperature as the teacher's learned one: pass it as the ``temperature`` of
  `teacher_softmax` and of a loss term; `temperature_at` resolves it.

  Args:
    gradient: the factor the temperature's gradient is multiplied by in this use (a number or a
      schedule): CTKD's reversal ``lambda`` (<= 0) turns the teacher's temperature against the
      student's loss.
  """
  return LearnedTemperature(gradient)


@jax.custom_vjp
def gradient_scale(x: chex.Array, scale: chex.Numeric) -> chex.Array:
  """The identity whose gradient is multiplied by ``scale`` (a gradient-reversal layer for
  ``scale < 0``; Ganin and Lempitsky 2015). ``scale`` gets no gradient."""
  del scale
  return x


def _scale_fwd(x, scale):
  return x, scale


def _scale_bwd(scale, g):
  return (g * scale, jnp.zeros_like(scale))


gradient_scale.defvjp(_scale_fwd, _scale_bwd)


def temperature_at(value: Union[Hyperparam, LearnedTemperature],
                   ctx: TargetContext) -> chex.Numeric:
  """A temperature at ``ctx.step``: `value_at`, or for a `LearnedTemperature` the teacher's
  ``ctx.teacher_temperature`` with its gradient scaled by the marker's factor."""
  if not isinstance(value, LearnedTemperature):
    return value_at(value, ctx.step)
  if ctx.teacher_temperature is None:
    raise ValueError("a learned temperature needs ctx.teacher_temperature (the teacher's "
                     "TeacherOutput.temperature); got None.")
  scale = jnp.asarray(value_at(value.gradient, ctx.step), jnp.float32)
  return gradient_scale(ctx.teacher_temperature, scale)


def stateless(fn: Callable[[chex.Array, TargetContext], chex.Array]) -> TargetTransform:
  """Wraps ``fn(targets, ctx) -> targets`` as a transform with `EmptyState`."""

  def init(**_):
    return EmptyState()

  def update(targets, state, ctx):
    return fn(targets, ctx), state

  return TargetTransform(init, update)


def chain(*transforms: TargetTransform) -> TargetTransform:
  """Applies transforms one after the other; the state is the tuple of their states.

  Args:
    *transforms: the transforms, applied left to right.

  Returns:
    A `TargetTransform`.
  """

  def init(**sizes):
    return tuple(t.init(**sizes) for t in transforms)

  def update(targets, state, ctx):
    new_state = []
    for transform, sub_state in zip(transforms, state):
      targets, sub_state = transform.update(targets, sub_state, ctx)
      new_state.append(sub_state)
    return targets, tuple(new_state)

  return TargetTransform(init, update)


def _f32_sg(x):
  # float32, or float64 in a float64 run (jaxkd.losses.float_dtype)
  return None if x is None else jax.lax.stop_gradient(jnp.asarray(x, losses.float_dtype(x)))


def make_context(labels: chex.Array, logits: chex.Array, *, step: chex.Numeric,
                 teacher_logits: Optional[chex.Array] = None,
                 teacher_mask: Optional[chex.Array] = None,
                 features: Optional[chex.Array] = None,
                 dense_logits: Optional[chex.Array] = None,
                 example_ids: Optional[chex.Array] = None,
                 class_embeddings: Optional[chex.Array] = None,
                 weights: Optional[chex.Array] = None,
                 teacher_temperature: Optional[chex.Array] = None) -> TargetContext:
  """Builds a `TargetContext`: float32 casts, stop-gradients, teacher ensemble axis.

  Args:
    labels: int ``[batch]``.
    logits: student logits ``[batch, classes]``, any float dtype.
    step: the training step.
    teacher_logits: ``[batch, classes]`` or ``[members, batch, classes]``.
    teacher_mask: bool ``[members]``; None means every member is valid.
    features: ``[batch, dim]``.
    dense_logits: ``[batch, height, width, classes]``.
    example_ids: int ``[batch]``.
    class_embeddings: ``[classes, dim]``.
    weights: ``[batch]`` example weights.
    teacher_temperature: a scalar the teacher learns; kept with its gradient.

  Returns:
    The context, with ``teacher_logits`` always ``[members, batch, classes]`` and
    ``teacher_mask`` always a bool ``[members]`` when teacher logits are given.
  """
  teacher = _f32_sg(teacher_logits)
  if teacher is not None:
    if teacher.ndim == 2:
      teacher = teacher[None]
    if teacher_mask is None:
      teacher_mask = jnp.ones(teacher.shape[:1], bool)
    teacher_mask = jnp.asarray(teacher_mask, bool)
  return TargetContext(
      labels=jnp.asarray(labels, jnp.int32), logits=_f32_sg(logits), step=step,
      teacher_logits=teacher, teacher_mask=teacher_mask, features=_f32_sg(features),
      dense_logits=_f32_sg(dense_logits),
      example_ids=None if example_ids is None else jnp.asarray(example_ids, jnp.int32),
      class_embeddings=_f32_sg(class_embeddings), weights=_f32_sg(weights),
      teacher_temperature=None if teacher_temperature is None else jnp.asarray(
          teacher_temperature, jnp.float32).reshape(()))


def build_targets(transform: TargetTransform, state: Any,
                  ctx: TargetContext) -> tuple[chex.Array, Any]:
  """Runs ``transform`` from the one-hot labels of ``ctx``.

  Args:
    transform: a `TargetTransform`.
    state: its state.
    ctx: a `TargetContext` (see `make_context`).

  Returns:
    ``(targets, new_state)``; targets is float32 ``[batch, classes]``.
  """
  one_hot = jax.nn.one_hot(ctx.labels, ctx.logits.shape[-1], dtype=ctx.logits.dtype)
  return transform.update(one_hot, state, ctx)

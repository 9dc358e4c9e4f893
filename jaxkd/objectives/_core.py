"""An objective is data: a weighted sum of loss terms, each a target transform and a loss."""
import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import chex
import jax
import jax.numpy as jnp

from jaxkd import losses
from jaxkd import targets as targets_lib

__all__ = ["INPUTS", "TEACHER_SOURCES", "Objective", "Term"]

TEACHER_SOURCES = (None, "model", "replay", "partner")
INPUTS = ("teacher_logits", "features", "dense_logits", "example_ids")
_WHY = {
    "teacher_logits": "the teacher's logits, [B, K] or [M, B, K]",
    "features": "the student's penultimate features [B, D]",
    "dense_logits": "per-position class scores [B, H, W, K] on the last feature map",
    "example_ids": "the training-set index of every example in the batch, int [B]",
}
_TEACHER_WHY = {
    "model": "the frozen teacher network's logits",
    "replay": "the logits of the model's replay backups, [num_backups, B, K], with teacher_mask",
    "partner": "the logits of each example's same-class partner",
}

Weight = Callable[[Mapping[str, Any], chex.Array], chex.Numeric]


@dataclasses.dataclass(frozen=True)
class Term:
  """One weighted loss term of an objective.

  Attributes:
    name: the metric key (``"ce"``, ``"kd"``, ``"soft_ce"``, ...), unique in an objective.
    targets: the `TargetTransform` building the term's target distribution from the labels.
    weight: ``weight(h, teacher_on) -> scalar``: ``h`` maps hparam names to their values at
      the current step (schedules evaluated); ``teacher_on`` is 1.0 when at least one teacher
      member is valid, else 0.0 (always 1.0 without teacher logits).
    from_teacher: the targets come from the teacher logits: with no valid member the term's
      weight and its metric are multiplied by ``teacher_on`` = 0.
    kind: ``"ce"`` (soft-target cross-entropy) or ``"kl"`` (`jaxkd.losses.kl_divergence`).
    temperature: the student temperature, a number or a schedule.
    temperature_squared: multiply a ``"kl"`` term by ``T^2``.
    kl_reduction: ``"batchmean"`` or ``"elementwise_mean"`` for a ``"kl"`` term.
    non_target: restrict the loss to the non-target classes (Zipf's KL).
    on_aux: apply the term to the auxiliary classifier's logits instead of the student's.
  """
  name: str
  targets: targets_lib.TargetTransform
  weight: Weight
  from_teacher: bool = False
  kind: str = "ce"
  temperature: targets_lib.Hyperparam = 1.0
  temperature_squared: bool = False
  kl_reduction: str = "batchmean"
  non_target: bool = False
  on_aux: bool = False

  def __post_init__(self):
    if self.kind not in ("ce", "kl"):
      raise ValueError(f"Term {self.name!r}: kind={self.kind!r}; allowed: 'ce', 'kl'.")
    losses.check_kl_reduction(self.kl_reduction)

  def value(self, logits, targets, step, labels):
    """The batch mean of the term's per-example loss (unweighted), float32."""
    temperature = targets_lib.resolve(self.temperature, step)
    where = None
    if self.non_target:
      where = jnp.arange(logits.shape[-1]) != labels[:, None]
    if self.kind == "ce":
      per_example = losses.softmax_cross_entropy(logits, targets, temperature=temperature,
                                                 where=where)
    else:
      per_example = losses.kl_divergence(
          logits, targets, temperature=temperature, where=where,
          temperature_squared=self.temperature_squared, kl_reduction=self.kl_reduction)
    return jnp.mean(per_example)


class Objective:
  """A named training objective: ``loss = sum_i weight_i * mean_batch(term_i)``.

  Attributes:
    name: the method name.
    hparams: every hyperparameter, defaults filled in (schedules stay callables).
    teacher: where teacher logits come from: None, ``"model"`` (a frozen network),
      ``"replay"`` (MrKD's ring of the model's own backups) or ``"partner"`` (CS-KD).
    requires: the optional `loss` inputs the method needs (a subset of `INPUTS`).
    replay: for MrKD, ``dict(num_backups, refresh_every, start_from_init, train_mode)``.
  """

  def __init__(self, name: str, terms: Union[Sequence[Term], Callable[[], Sequence[Term]]], *,
               hparams: Optional[Mapping[str, Any]] = None, teacher: Optional[str] = None,
               requires: Sequence[str] = (), replay: Optional[dict] = None,
               aux_classifier_seed: Optional[int] = None,
               required_at_init: Mapping[str, str] = None):
    """Builds an objective.

    Args:
      name: the method name.
      terms: the terms, or a function building them on first use (so that hparams the engine
        fills in late, such as ``steps_per_epoch``, are only required at ``init``).
      hparams: the resolved hyperparameters; the terms' weights read them by name.
      teacher: one of `TEACHER_SOURCES`.
      requires: the optional inputs `loss` needs (subset of `INPUTS`).
      replay: the replay-ring settings for ``teacher="replay"``.
      aux_classifier_seed: if set, the objective owns a linear classifier on the stop-gradient
        features (RAS-KD), initialised from this seed; its logits are the teacher logits and
        its rows the class embeddings of the targets; its parameters are ``state["params"]``.
      required_at_init: hparam name -> description, for hparams that must not be None.
    """
    if teacher not in TEACHER_SOURCES:
      raise ValueError(f"teacher={teacher!r} is not allowed; allowed: {TEACHER_SOURCES}.")
    unknown = sorted(set(requires) - set(INPUTS))
    if unknown:
      raise ValueError(f"requires={unknown[0]!r} is not allowed; allowed: {', '.join(INPUTS)}.")
    self.name = name
    self.hparams = dict(hparams or {})
    self.teacher = teacher
    self.requires = frozenset(requires)
    self.replay = None if replay is None else dict(replay)
    self._terms_source = terms
    self._terms = None
    self._aux_seed = aux_classifier_seed
    self._required = dict(required_at_init or {})

  def __repr__(self):
    return f"Objective({self.name!r}, hparams={self.hparams!r})"

  @property
  def terms(self) -> tuple[Term, ...]:
    """The loss terms (built on first use)."""
    if self._terms is None:
      for field, doc in self._required.items():
        if self.hparams.get(field) is None:
          raise ValueError(f"{self.name} needs hparam {field} ({doc}); got None: the training "
                           "engine or the config must set it.")
      terms = self._terms_source() if callable(self._terms_source) else self._terms_source
      names = [t.name for t in terms]
      if len(set(names)) != len(names):
        raise ValueError(f"{self.name}: term names must be unique, got {names}.")
      self._terms = tuple(terms)
    return self._terms

  def init(self, *, num_classes: int, num_examples: Optional[int] = None,
           feature_dim: Optional[int] = None) -> dict:
    """The objective's state: target-transform states and, for RAS-KD, ``"params"``.

    Args:
      num_classes: K >= 2.
      num_examples: training-set size (per-example methods such as pskd).
      feature_dim: the penultimate feature size D (ras_kd).

    Returns:
      A dict pytree. ``"targets"`` maps term names to the states of stateful transforms;
      ``"params"`` (if present) are trainable: the engine must differentiate and update them.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
      raise ValueError(f"num_classes={num_classes!r} is not allowed; allowed: an int >= 2.")
    if self._aux_seed is not None and (
        isinstance(feature_dim, bool) or not isinstance(feature_dim, int) or feature_dim < 1):
      raise ValueError(f"{self.name} needs feature_dim (the penultimate feature size, for its "
                       f"auxiliary classifier) at init; got {feature_dim!r}.")
    share = self.hparams.get("correct_prob")
    if isinstance(share, (int, float)) and not share > 1.0 / num_classes:
      raise ValueError(f"{self.name}.correct_prob={share!r} is not allowed for "
                       f"K={num_classes} classes; allowed: (1/K, 1) = "
                       f"({1.0 / num_classes:.4g}, 1).")
    sizes = dict(num_classes=num_classes, num_examples=num_examples, feature_dim=feature_dim)
    states = {}
    for term in self.terms:
      state = term.targets.init(**sizes)
      if jax.tree_util.tree_leaves(state):
        states[term.name] = state
    out = {"targets": states} if states else {}
    if self._aux_seed is not None:
      kernel = jax.nn.initializers.lecun_normal()(
          jax.random.PRNGKey(self._aux_seed), (feature_dim, num_classes), jnp.float32)
      out["params"] = {"kernel": kernel, "bias": jnp.zeros((num_classes,), jnp.float32)}
    return out

  def loss(self, logits: chex.Array, labels: chex.Array, state: dict, *, step: chex.Numeric,
           teacher_logits: Optional[chex.Array] = None,
           teacher_mask: Optional[chex.Array] = None, features: Optional[chex.Array] = None,
           dense_logits: Optional[chex.Array] = None,
           example_ids: Optional[chex.Array] = None) -> tuple[chex.Array, dict, dict]:
    """The batch-mean loss, its terms, and the updated state.

    Args:
      logits: ``[B, K]`` student logits, any float dtype (the math runs in float32).
      labels: int ``[B]``.
      state: from `init` (or the previous call).
      step: int scalar, may be traced; schedules and epoch boundaries read it.
      teacher_logits: ``[B, K]`` or ``[M, B, K]``; the teacher distribution is the mean of the
        tempered softmaxes over the members with ``teacher_mask`` True. With no valid member
        the distillation term is switched off and its weight moved back to the
        cross-entropy, so kd-style losses become plain ``CE(z, y)`` (MrKD before its first
        backup).
      teacher_mask: bool ``[M]``; None means all valid.
      features: ``[B, D]`` penultimate features (stop-gradient inside).
      dense_logits: ``[B, H, W, K]`` per-position classifier scores.
      example_ids: int ``[B]`` training-set indices.

    Returns:
      ``(loss, metrics, new_state)``: a float32 scalar; float32 scalars ``"loss"``, ``"ce"``
      (plain cross-entropy with the labels) and one per term (its unweighted batch mean); a
      state of the same structure (``"params"`` returned unchanged).
    """
    inputs = dict(teacher_logits=teacher_logits, teacher_mask=teacher_mask, features=features,
                  dense_logits=dense_logits, example_ids=example_ids)
    _check_inputs(self, logits, labels, inputs)
    if self._aux_seed is not None and "params" not in state:
      raise ValueError(f"{self.name}: state has no 'params' (the auxiliary classifier); "
                       "pass the state returned by init.")
    terms = self.terms
    logits = jnp.asarray(logits, jnp.float32)
    aux_logits = class_embeddings = None
    if self._aux_seed is not None:
      aux_logits, class_embeddings = _aux_head(state["params"], features)
      # The auxiliary classifier is RAS-KD's teacher; its logits enter stop-gradient.
      teacher_logits, teacher_mask = aux_logits, None
    ctx = targets_lib.make_context(
        labels, logits, step=step, teacher_logits=teacher_logits, teacher_mask=teacher_mask,
        features=features, dense_logits=dense_logits, example_ids=example_ids,
        class_embeddings=class_embeddings)
    h = {k: targets_lib.resolve(v, step) for k, v in self.hparams.items()}
    old_states = state.get("targets", {})
    total, metrics, new_states = _sum_terms(terms, logits, aux_logits, ctx, h, old_states)
    new_state = dict(state)
    if old_states:
      new_state["targets"] = new_states
    return total, metrics, new_state


def _aux_head(params, features):
  """Logits of the linear head on stop-gradient features, and its rows (stop-gradient)."""
  features = jax.lax.stop_gradient(jnp.asarray(features, jnp.float32))
  return features @ params["kernel"] + params["bias"], params["kernel"].T


def _sum_terms(terms, logits, aux_logits, ctx, h, old_states):
  """``sum_i w_i term_i``, the metrics, and the new states of the stateful transforms."""
  num_classes = logits.shape[-1]
  teacher_on = (targets_lib.has_teacher(ctx) if ctx.teacher_logits is not None
                else jnp.float32(1.0))
  new_states, metrics, total = {}, {}, jnp.float32(0.0)
  for term in terms:
    term_state = old_states.get(term.name)
    if term_state is None:  # stateless transforms keep no entry in the objective's state
      term_state = term.targets.init(num_classes=num_classes)
    q, term_state = targets_lib.build_targets(term.targets, term_state, ctx)
    if term.name in old_states:
      new_states[term.name] = term_state
    value = term.value(aux_logits if term.on_aux else logits, q, ctx.step, ctx.labels)
    weight = jnp.asarray(term.weight(h, teacher_on), jnp.float32)
    if term.from_teacher:
      value, weight = value * teacher_on, weight * teacher_on
    total = total + weight * value
    metrics[term.name] = value
  if "ce" not in metrics:
    metrics["ce"] = jnp.mean(losses.softmax_cross_entropy(
        logits, jax.nn.one_hot(ctx.labels, num_classes, dtype=jnp.float32)))
  metrics["loss"] = total
  return total, metrics, new_states


def _missing_input_message(obj, field):
  why = _WHY[field]
  if field == "teacher_logits":
    why = _TEACHER_WHY.get(obj.teacher, why)
  return f"{obj.name} needs {field}: {why}; got None."


def _check_inputs(obj, logits, labels, inputs):
  """Static checks of `Objective.loss` inputs (shapes only, at trace time)."""
  if jnp.ndim(logits) != 2 or jnp.shape(labels) != jnp.shape(logits)[:1]:
    raise ValueError(f"{obj.name}: logits must be [B, K] and labels [B]; got logits "
                     f"{jnp.shape(logits)} and labels {jnp.shape(labels)}.")
  batch, classes = jnp.shape(logits)
  for field in sorted(obj.requires):
    if inputs[field] is None:
      raise ValueError(_missing_input_message(obj, field))
  expected = {"features": (batch, None), "dense_logits": (batch, None, None, classes),
              "example_ids": (batch,)}
  for field, shape in expected.items():
    value = inputs[field]
    if value is not None and (jnp.ndim(value) != len(shape) or any(
        s is not None and s != v for s, v in zip(shape, jnp.shape(value)))):
      raise ValueError(f"{obj.name}: {field} must have shape {shape} (None: any); got "
                       f"{jnp.shape(value)}.")
  teacher = inputs["teacher_logits"]
  if teacher is None:
    return
  shape = jnp.shape(teacher)
  if shape[-2:] != (batch, classes) or len(shape) not in (2, 3):
    raise ValueError(f"{obj.name}: teacher_logits must be [B, K] or [M, B, K] with "
                     f"B, K = {batch}, {classes}; got {shape}.")
  members = 1 if len(shape) == 2 else shape[0]
  mask = inputs["teacher_mask"]
  if mask is not None and jnp.shape(mask) != (members,):
    raise ValueError(f"{obj.name}: teacher_mask must be bool [{members}]; got "
                     f"{jnp.shape(mask)}.")

"""An objective is data: a weighted sum of loss terms, each a target transform and a loss."""
import dataclasses
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import chex
import jax
import jax.numpy as jnp

from jaxkd import losses
from jaxkd import targets as targets_lib

__all__ = ["ENSEMBLES", "INPUTS", "KINDS", "Objective", "Term", "member_weights",
           "with_teacher_fallback"]

INPUTS = ("teacher_logits", "features", "dense_logits", "example_ids", "class_embeddings",
          "teacher_temperature")
_WHY = {
    "teacher_logits": "the teacher's logits, [B, K] or [M, B, K]",
    "features": "the student's penultimate features [B, D]",
    "dense_logits": "per-position class scores [B, H, W, K] on the last feature map",
    "example_ids": "the training-set index of every example in the batch, int [B]",
    "class_embeddings": "class representatives [K, D] (RAS-KD: the auxiliary head's rows)",
    "teacher_temperature": "the temperature the teacher learns, a scalar (CTKD)",
}
KINDS = ("ce", "kl", "tckd", "nckd", "dist_inter", "dist_intra")
ENSEMBLES = ("probs", "kl")


@dataclasses.dataclass(frozen=True)
class Term:
  """One weighted loss term of an objective.

  Attributes:
    name: the metric key (``"ce"``, ``"kd"``, ``"soft_ce"``, ...).
    targets: the `TargetTransform` building the term's target distribution from the labels.
    weight: a number or a schedule ``step -> value`` (any optax schedule).
    teacher: when the term counts. None: always. True: only while the teacher has a valid
      member (terms whose targets read the teacher logits; with no valid member the term and
      its metric are 0). False: only while it has none (a fallback, see
      `with_teacher_fallback`).
    kind: ``"ce"`` (soft-target cross-entropy), ``"kl"`` (`jaxkd.losses.kl_divergence`),
      ``"tckd"`` / ``"nckd"`` (DKD's target / non-target terms, `jaxkd.losses.target_binary_kl`,
      `jaxkd.losses.non_target_kl`), ``"dist_inter"`` / ``"dist_intra"`` (DIST's relation
      terms, `jaxkd.losses.dist_relation`; the intra one is a statistic of the whole batch).
    temperature: the student temperature, a number, a schedule or
      `jaxkd.targets.learned_temperature` (the teacher's, CTKD).
    temperature_squared: multiply a ``"kl"`` term by ``T^2``.
    kl_reduction: ``"batchmean"`` or ``"elementwise_mean"`` for a ``"kl"`` term.
    non_target: restrict the loss to the non-target classes (Zipf's KL).
    on_teacher: apply the term to the teacher's logits instead of the student's, with their
      gradient: it trains a trainable teacher (RAS-KD's auxiliary head).
    standardize: apply `jaxkd.targets.standardize_logits` to the student's logits in this term
      (logit standardization; the teacher's side is its target transform's).
    ensemble: how the term reads several teachers ``[M, B, K]``. None: its targets as they
      are (`jaxkd.targets.teacher_softmax` averages the members). ``"probs"``: the targets of
      each member alone, mixed with ``teacher_weights``. ``"kl"``: the term of each member
      alone, averaged with ``teacher_weights``.
    teacher_weights: one weight >= 0 per member (normalised over the valid ones); empty:
      uniform.
  """
  name: str
  targets: targets_lib.TargetTransform
  weight: targets_lib.Hyperparam = 1.0
  teacher: Optional[bool] = None
  kind: str = "ce"
  temperature: targets_lib.Hyperparam = 1.0
  temperature_squared: bool = False
  kl_reduction: str = "batchmean"
  non_target: bool = False
  on_teacher: bool = False
  standardize: bool = False
  ensemble: Optional[str] = None
  teacher_weights: tuple = ()

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"Term {self.name!r}: kind={self.kind!r}; allowed: "
                       f"{', '.join(repr(k) for k in KINDS)}.")
    if self.ensemble not in (None,) + ENSEMBLES:
      raise ValueError(f"Term {self.name!r}: ensemble={self.ensemble!r}; allowed: None, "
                       f"{', '.join(repr(e) for e in ENSEMBLES)}.")
    if self.teacher not in (None, True, False):
      raise ValueError(f"Term {self.name!r}: teacher={self.teacher!r}; allowed: None, True, "
                       "False.")
    losses.check_kl_reduction(self.kl_reduction)

  def value(self, logits, targets, step, labels, weights=None, temperature=None):
    """The batch mean of the term's per-example loss (unweighted by the term's weight),
    float32; with ``weights`` [B] the weighted mean ``sum(w l) / sum(w)`` (per-token losses of a
    sequence model: 1 on real tokens, 0 on padding). ``temperature``: the student temperature
    resolved by the caller (a learned one); None: ``self.temperature`` at ``step``."""
    if temperature is None:
      temperature = targets_lib.value_at(self.temperature, step)
    if self.standardize:
      logits = targets_lib.standardize_logits(logits)
    where = None
    if self.non_target:
      where = jnp.arange(logits.shape[-1]) != labels[:, None]
    squared = dict(temperature=temperature, temperature_squared=self.temperature_squared)
    if self.kind == "dist_intra":
      if weights is not None:
        raise ValueError(f"Term {self.name!r}: kind 'dist_intra' compares each class over the "
                         "whole batch; example weights (per-token losses) are not supported.")
      return jnp.mean(losses.dist_relation(logits, targets, intra=True, **squared))
    if self.kind == "dist_inter":
      per_example = losses.dist_relation(logits, targets, **squared)
    elif self.kind == "tckd":
      per_example = losses.target_binary_kl(logits, targets, labels, **squared)
    elif self.kind == "nckd":
      per_example = losses.non_target_kl(logits, targets, labels, **squared)
    elif self.kind == "ce":
      per_example = losses.softmax_cross_entropy(logits, targets, temperature=temperature,
                                                 where=where)
    else:
      per_example = losses.kl_divergence(
          logits, targets, temperature=temperature, where=where,
          temperature_squared=self.temperature_squared, kl_reduction=self.kl_reduction)
    return weighted_mean(per_example, weights)


def weighted_mean(values: chex.Array, weights: Optional[chex.Array]) -> chex.Array:
  """``mean(values)``, or ``sum(w v) / sum(w)`` (0 when every weight is 0) with ``weights``."""
  if weights is None:
    return jnp.mean(values)
  weights = jnp.asarray(weights, losses.float_dtype(values))
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1e-12)


def with_teacher_fallback(terms: Sequence[Term], fallback: Sequence[Term]) -> tuple[Term, ...]:
  """``terms`` while the teacher has a valid member, ``fallback`` while it has none.

  MrKD's replay ring is empty until its first snapshot; its loss is then plain cross-entropy,
  not the ``(1 - a) CE`` that the distillation recipe leaves without its KD term. A metric
  named in both lists reports whichever counts at the step.

  Example::

    terms = with_teacher_fallback(
        [Term("ce", targets.one_hot(), 0.1),
         Term("kd", targets.teacher_softmax(temperature=4.0), 0.9, kind="kl")],
        fallback=[Term("ce", targets.one_hot())])
  """
  return (tuple(dataclasses.replace(t, teacher=True) for t in terms) +
          tuple(dataclasses.replace(t, teacher=False) for t in fallback))


class Objective:
  """A named training objective: ``loss = sum_i weight_i * mean_batch(term_i)``.

  Attributes:
    name: the method name.
    hparams: every hyperparameter, defaults filled in (schedules stay callables).
    teacher: the method's `jaxkd.teachers.Teacher` (where the training engine gets the
      teacher logits from), or None. `loss` itself takes the teacher logits as an argument.
    requires: the optional `loss` inputs the method needs (a subset of `INPUTS`).
  """

  def __init__(self, name: str, terms: Union[Sequence[Term], Callable[[], Sequence[Term]]], *,
               hparams: Optional[Mapping[str, Any]] = None, teacher: Any = None,
               requires: Sequence[str] = (),
               check: Optional[Callable[[int], None]] = None):
    """Builds an objective.

    Args:
      name: the method name.
      terms: the terms, or a function building them on first use (so that hparams the engine
        fills in late, such as ``steps_per_epoch``, are only required at ``init``).
      hparams: the resolved hyperparameters (recorded; the terms hold their own values).
      teacher: a `jaxkd.teachers.Teacher`, or None.
      requires: the optional inputs `loss` needs (subset of `INPUTS`).
      check: ``check(num_classes)`` raising ValueError for settings that do not suit the
        number of classes; called by `init`.
    """
    unknown = sorted(set(requires) - set(INPUTS))
    if unknown:
      raise ValueError(f"requires={unknown[0]!r} is not allowed; allowed: {', '.join(INPUTS)}.")
    self.name = name
    self.hparams = dict(hparams or {})
    self.teacher = teacher
    self.requires = frozenset(requires)
    self._terms_source = terms
    self._terms = None
    self._check = check

  def __repr__(self):
    return f"Objective({self.name!r}, hparams={self.hparams!r})"

  @property
  def terms(self) -> tuple[Term, ...]:
    """The loss terms (built on first use)."""
    if self._terms is None:
      terms = self._terms_source() if callable(self._terms_source) else self._terms_source
      keys = [(t.name, t.teacher) for t in terms]
      if len(set(keys)) != len(keys):
        raise ValueError(f"{self.name}: term names must be unique (per teacher condition), "
                         f"got {[t.name for t in terms]}.")
      self._terms = tuple(terms)
    return self._terms

  def init(self, *, num_classes: int, num_examples: Optional[int] = None,
           feature_dim: Optional[int] = None) -> dict:
    """The objective's state: the states of its stateful target transforms.

    Args:
      num_classes: K >= 2.
      num_examples: training-set size (per-example methods such as pskd).
      feature_dim: the penultimate feature size D.

    Returns:
      A dict pytree: ``{"targets": {term name: state}}`` for the stateful transforms, ``{}``
      when there are none. Pass it to `loss` and feed back the state `loss` returns.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
      raise ValueError(f"num_classes={num_classes!r} is not allowed; allowed: an int >= 2.")
    if self._check is not None:
      self._check(num_classes)
    sizes = dict(num_classes=num_classes, num_examples=num_examples, feature_dim=feature_dim)
    states = {}
    for term in self.terms:
      state = term.targets.init(**sizes)
      if jax.tree_util.tree_leaves(state):
        states[_key(term)] = state
    return {"targets": states} if states else {}

  def loss(self, logits: chex.Array, labels: chex.Array, state: dict, *, step: chex.Numeric,
           teacher_logits: Optional[chex.Array] = None,
           teacher_mask: Optional[chex.Array] = None, features: Optional[chex.Array] = None,
           dense_logits: Optional[chex.Array] = None,
           example_ids: Optional[chex.Array] = None,
           class_embeddings: Optional[chex.Array] = None,
           weights: Optional[chex.Array] = None,
           teacher_temperature: Optional[chex.Array] = None) -> tuple[chex.Array, dict, dict]:
    """The batch-mean loss, its terms, and the updated state.

    Args:
      logits: ``[B, K]`` student logits, any float dtype (the math runs in float32).
      labels: int ``[B]``.
      state: from `init` (or the previous call).
      step: int scalar, may be traced; schedules and epoch boundaries read it.
      teacher_logits: ``[B, K]`` or ``[M, B, K]``; the teacher distribution is the mean of the
        tempered softmaxes over the members with ``teacher_mask`` True. With no valid member
        the terms marked ``teacher=True`` are off and the fallback terms on.
      teacher_mask: bool ``[M]``; None means all valid.
      features: ``[B, D]`` penultimate features (stop-gradient inside).
      dense_logits: ``[B, H, W, K]`` per-position classifier scores.
      example_ids: int ``[B]`` training-set indices.
      class_embeddings: ``[K, D]`` class representatives (stop-gradient inside).
      weights: float ``[B]`` example weights, or None (all 1). Every term and metric is then the
        weighted mean ``sum(w l) / sum(w)`` and the online class matrices (OLS, ALR) count each
        example with its weight: a sequence model's tokens flattened to ``[B*T, K]`` with
        weight 0 on the padding give fairseq's per-token losses, averaged over the real tokens.
      teacher_temperature: a scalar temperature the teacher learns (CTKD), differentiable;
        terms with `jaxkd.targets.learned_temperature` read it, and it is reported as the
        metric ``"temperature"``.

    Returns:
      ``(loss, metrics, new_state)``: a float32 scalar; float32 scalars ``"loss"``, ``"ce"``
      (plain cross-entropy with the labels), one per term name (its unweighted batch
      mean) and, whenever ``teacher_logits`` are given, ``"teacher_active"`` (1.0 when a
      teacher member is valid, 0.0 otherwise); a state of the same structure.
    """
    inputs = dict(teacher_logits=teacher_logits, teacher_mask=teacher_mask, features=features,
                  dense_logits=dense_logits, example_ids=example_ids,
                  class_embeddings=class_embeddings, weights=weights,
                  teacher_temperature=teacher_temperature)
    _check_inputs(self, logits, labels, inputs)
    logits = jnp.asarray(logits, losses.float_dtype(logits))  # float64 in float64 runs
    ctx = targets_lib.make_context(
        labels, logits, step=step, teacher_logits=teacher_logits, teacher_mask=teacher_mask,
        features=features, dense_logits=dense_logits, example_ids=example_ids,
        class_embeddings=class_embeddings, weights=weights,
        teacher_temperature=teacher_temperature)
    old_states = state.get("targets", {})
    total, metrics, new_states = _sum_terms(self, logits, teacher_logits, ctx, old_states)
    new_state = dict(state)
    if old_states:
      new_state["targets"] = new_states
    return total, metrics, new_state


def _key(term: Term) -> str:
  """A term's key in the objective's state (a fallback term's name gets a suffix)."""
  return term.name + ("/fallback" if term.teacher is False else "")


def _sum_terms(obj, logits, teacher_logits, ctx, old_states):
  """``sum_i w_i term_i``, the metrics, and the new states of the stateful transforms."""
  num_classes = logits.shape[-1]
  teacher_on = (targets_lib.has_teacher(ctx) if ctx.teacher_logits is not None
                else jnp.float32(1.0))
  gates = {None: None, True: teacher_on, False: 1.0 - teacher_on}
  new_states, metrics, total = {}, {}, jnp.float32(0.0)
  for term in obj.terms:
    key = _key(term)
    term_state = old_states.get(key)
    if term_state is None:  # stateless transforms keep no entry in the objective's state
      term_state = term.targets.init(num_classes=num_classes)
      if jax.tree_util.tree_leaves(term_state):
        raise ValueError(f"{obj.name}: state has no entry for term {term.name!r}, whose "
                         "targets keep a state; pass the state returned by init and feed back "
                         "the state loss returns.")
    on = jnp.asarray(teacher_logits, logits.dtype) if term.on_teacher else logits
    temperature = targets_lib.temperature_at(term.temperature, ctx)
    if term.ensemble is None:
      q, term_state = targets_lib.build_targets(term.targets, term_state, ctx)
      value = term.value(on, q, ctx.step, ctx.labels, ctx.weights, temperature=temperature)
    else:
      value = _ensemble_value(obj, term, term_state, on, ctx, temperature)
    if key in old_states:
      new_states[key] = term_state
    weight = jnp.asarray(targets_lib.value_at(term.weight, ctx.step), logits.dtype)
    gate = gates[term.teacher]
    if gate is not None:
      value, weight = value * gate, weight * gate
    total = total + weight * value
    metrics[term.name] = metrics[term.name] + value if term.name in metrics else value
  if "ce" not in metrics:
    metrics["ce"] = weighted_mean(losses.softmax_cross_entropy(
        logits, jax.nn.one_hot(ctx.labels, num_classes, dtype=logits.dtype)), ctx.weights)
  if ctx.teacher_logits is not None:  # a run reports how often its teacher counted
    metrics["teacher_active"] = teacher_on
  if ctx.teacher_temperature is not None:
    metrics["temperature"] = jax.lax.stop_gradient(ctx.teacher_temperature)
  metrics["loss"] = total
  return total, metrics, new_states


def member_weights(weights: Sequence[float], mask: chex.Array) -> chex.Array:
  """float32 ``[M]``: ``weights`` (empty: uniform) times the valid ``mask``, normalised to sum
  to 1 (all 0 when no member is valid)."""
  mask = jnp.asarray(mask, jnp.float32)
  w = mask if not len(weights) else jnp.asarray(weights, jnp.float32) * mask
  return w / jnp.maximum(jnp.sum(w), 1e-12)


def _ensemble_value(obj, term, state, logits, ctx, temperature):
  """A term over several teachers: the member targets mixed (``"probs"``) or the member
  terms averaged (``"kl"``), with the term's ``teacher_weights``."""
  if ctx.teacher_logits is None:
    raise ValueError(_missing_input_message(obj, "teacher_logits"))
  members = ctx.teacher_logits.shape[0]
  if term.teacher_weights and len(term.teacher_weights) != members:
    raise ValueError(f"{obj.name}: teacher_weights={tuple(term.teacher_weights)!r} has "
                     f"{len(term.teacher_weights)} weights for {members} teacher(s); allowed: "
                     "one weight per teacher, or () for uniform.")
  w = member_weights(term.teacher_weights, ctx.teacher_mask)
  per_member = []
  for m in range(members):
    one = ctx._replace(teacher_logits=ctx.teacher_logits[m:m + 1],
                       teacher_mask=ctx.teacher_mask[m:m + 1])
    q, _ = targets_lib.build_targets(term.targets, state, one)
    if term.ensemble == "probs":
      per_member.append(w[m] * q)
    else:
      per_member.append(w[m] * term.value(logits, q, ctx.step, ctx.labels, ctx.weights,
                                          temperature=temperature))
  if term.ensemble == "probs":
    return term.value(logits, sum(per_member), ctx.step, ctx.labels, ctx.weights,
                      temperature=temperature)
  return sum(per_member)


def _missing_input_message(obj, field):
  why = _WHY[field]
  if field == "teacher_logits" and obj.teacher is not None:
    why += f" (in jaxkd.train: from its {obj.teacher.name} teacher)"
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
              "example_ids": (batch,), "class_embeddings": (classes, None),
              "weights": (batch,), "teacher_temperature": ()}
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

"""Training objectives: each method of METHODS.md as a named, jit-able recipe.

Example::

  import jaxkd.objectives as objectives
  obj = objectives.get("kd", alpha=0.9, temperature=4.0)
  state = obj.init(num_classes=100)
  loss, metrics, state = obj.loss(logits, labels, state, step=step,
                                  teacher_logits=teacher_logits)

Every float hyperparameter may be a schedule ``step -> value`` (optax schedules work as is);
it is evaluated inside the loss at ``step``, so the step compiles once.

A recipe of your own is a list of `Term` (target transform, weight, loss kind)::

  from jaxkd import targets
  smooth_kd = objectives.Objective("smooth_kd", [
      objectives.Term("ce", targets.label_smoothing(smoothing=0.1), lambda h, on: 0.5),
      objectives.Term("kd", targets.teacher_softmax(temperature=4.0), lambda h, on: 0.5,
                      from_teacher=True, kind="kl", temperature=4.0, temperature_squared=True),
  ], teacher="model", requires=["teacher_logits"])
"""
from typing import Any

from jaxkd.objectives._core import INPUTS, TEACHER_SOURCES, Objective, Term
from jaxkd.objectives._hparams import validate as _validate
from jaxkd.objectives._methods import METHODS as _METHODS

__all__ = ["INPUTS", "TEACHER_SOURCES", "Objective", "Term", "defaults", "describe", "get",
           "names"]


def names() -> tuple[str, ...]:
  """The names of every built-in method."""
  return tuple(_METHODS)


def _method(name):
  if name not in _METHODS:
    raise ValueError(f"unknown method {name!r}; allowed: {', '.join(_METHODS)}.")
  return _METHODS[name]


def defaults(name: str) -> dict[str, Any]:
  """Hyperparameter name -> default value of method ``name``.

  A default of None marks a value the training engine or the config must supply
  (``steps_per_epoch``, ``total_epochs``; MrKD's ``refresh_every``, where None means one epoch).
  """
  return {field: spec.default for field, spec in _method(name).specs.items()}


def describe(name: str) -> str:
  """One line naming the paper, the formula and its provenance ([code] or [abs])."""
  return _method(name).doc


def get(name: str, **hparams: Any) -> Objective:
  """Builds the objective of method ``name``.

  Args:
    name: one of `names`.
    **hparams: hyperparameters (see `defaults`); float ones may be schedules.

  Returns:
    An `Objective`.

  Raises:
    ValueError: an unknown method or hparam, or a value out of range (the message names the
      field, the value and what is allowed).
  """
  method = _method(name)
  hp = _validate(name, method.specs, hparams)
  replay = None
  if method.replay:
    replay = {k: hp[k] for k in ("num_backups", "refresh_every", "start_from_init",
                                 "train_mode")}
  required = {field: spec.doc for field, spec in method.specs.items()
              if spec.default is None and spec.doc}
  return Objective(name, lambda: method.build(hp), hparams=hp, teacher=method.teacher,
                   requires=method.requires, replay=replay,
                   aux_classifier_seed=hp["seed"] if method.aux_classifier else None,
                   required_at_init=required)

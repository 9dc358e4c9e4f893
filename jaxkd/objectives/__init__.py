"""Training objectives: each seed method as a named, jit-able recipe, and your own.

Example::

  import jaxkd.objectives as objectives
  obj = objectives.get("kd", alpha=0.9, temperature=4.0)
  state = obj.init(num_classes=100)
  loss, metrics, state = obj.loss(logits, labels, state, step=step,
                                  teacher_logits=teacher_logits)

Every float hyperparameter may be a schedule ``step -> value`` (optax schedules work as is);
it is evaluated inside the loss at ``step``, so the step compiles once.

A recipe of your own is a `Method`: hyperparameter specs and a function building the terms
(target transform, weight, loss kind); a weight is a number or a schedule::

  from jaxkd import targets, teachers
  from jaxkd.objectives import Method, Spec, Term, real, with_teacher_fallback

  def build(hp):
    return with_teacher_fallback([
        Term("ce", targets.label_smoothing(smoothing=0.1), 1.0 - hp["alpha"]),
        Term("kd", targets.teacher_softmax(temperature=4.0), hp["alpha"], kind="kl",
             temperature=4.0, temperature_squared=True),
    ], fallback=[Term("ce", targets.one_hot())])

  smooth_kd = Method({"alpha": Spec(0.5, real(0.0, 1.0))}, build,
                     teacher=lambda hp: teachers.from_run(), requires=("teacher_logits",))
  objectives.register("smooth_kd", smooth_kd)   # or train it as --config.method.name=pkg.mod:smooth_kd

A method whose hyperparameters follow from the run (steps per epoch, the run's length) derives
them from the `RunInfo` the engine passes at build time, ``Method(..., derive=lambda run:
{"steps_per_epoch": run.steps_per_epoch})``; the engine itself knows no method's names.
"""
import importlib
import os
import sys
from typing import Any

from jaxkd.objectives._core import INPUTS, Objective, Term, with_teacher_fallback
from jaxkd.objectives._hparams import RunInfo, Spec, boolean, choice, integer, real
from jaxkd.objectives._hparams import validate as _validate
from jaxkd.objectives._methods import METHODS as _BUILT_IN
from jaxkd.objectives._methods import Method

__all__ = ["INPUTS", "Method", "Objective", "RunInfo", "Spec", "Term", "boolean", "choice",
           "defaults", "describe", "get", "integer", "names", "real", "register",
           "with_teacher_fallback"]

_REGISTRY: dict[str, Method] = dict(_BUILT_IN)


def names() -> tuple[str, ...]:
  """The names of every registered method (the built-in ones first)."""
  return tuple(_REGISTRY)


def register(name: str, method: Method, *, overwrite: bool = False) -> None:
  """Makes ``method`` available as ``get(name)`` (and ``--config.method.name=name``).

  Raises:
    ValueError: ``name`` is taken (unless ``overwrite``), not an identifier, or ``method`` is
      not a `Method`.
  """
  if not isinstance(name, str) or not name.isidentifier():
    raise ValueError(f"method name={name!r} is not allowed; allowed: a Python identifier.")
  if not isinstance(method, Method):
    raise ValueError(f"method {name!r}: {method!r} is not allowed; allowed: a "
                     "jaxkd.objectives.Method.")
  if name in _REGISTRY and not overwrite:
    raise ValueError(f"method name={name!r} is taken; allowed: a new name, or overwrite=True.")
  _REGISTRY[name] = method


def _method(name: str) -> Method:
  """A registered method, or ``package.module:attribute`` imported."""
  if name in _REGISTRY:
    return _REGISTRY[name]
  if not isinstance(name, str) or ":" not in name:
    raise ValueError(f"unknown method {name!r}; allowed: {', '.join(_REGISTRY)}, or "
                     "'package.module:attribute' naming a jaxkd.objectives.Method.")
  module_name, _, attribute = name.partition(":")
  # The current directory is importable, as `python -m` makes it (the `jaxkd` script does not);
  # appended, so a file there never shadows an installed module.
  here = os.getcwd()
  if not {"", here} & set(sys.path):
    sys.path.append(here)
  try:
    module = importlib.import_module(module_name)
  except ImportError as err:
    raise ValueError(f"method {name!r}: cannot import module {module_name!r} ({err}); allowed: "
                     f"a module in the current directory ({here}) or on the Python path "
                     "(PYTHONPATH).") from None
  method = getattr(module, attribute, None)
  if not isinstance(method, Method):
    found = "nothing" if method is None else type(method).__name__
    raise ValueError(f"method {name!r}: {module_name}.{attribute} is {found}; allowed: a "
                     "jaxkd.objectives.Method.")
  return method


def defaults(name: str) -> dict[str, Any]:
  """Hyperparameter name -> default value of method ``name``.

  A default of None marks a value the config must supply or the method derives from the run
  (`Method.derive`, given a `RunInfo`: ``steps_per_epoch``, ``total_epochs``; MrKD's
  ``refresh_every``, where None means one epoch).
  """
  return {field: spec.default for field, spec in _method(name).specs.items()}


def _derived(name: str, method: Method, run_info: RunInfo) -> dict[str, Any]:
  """``method.derive(run_info)``, each key one of the method's hyperparameters."""
  if not isinstance(run_info, RunInfo):
    raise ValueError(f"{name}: run_info={run_info!r} is not allowed; allowed: a "
                     "jaxkd.objectives.RunInfo or None.")
  derived = dict(method.derive(run_info))
  unknown = sorted(set(derived) - set(method.specs))
  if unknown:
    raise ValueError(f"{name}: its derive() gives hparam {unknown[0]!r}, which it does not "
                     f"have; allowed: {', '.join(sorted(method.specs)) or 'none'}.")
  return derived


def describe(name: str) -> str:
  """One line naming the paper, the formula and its provenance ([code] or [abs])."""
  return _method(name).doc


def get(name: str, *, run_info: RunInfo | None = None, **hparams: Any) -> Objective:
  """Builds the objective of method ``name``.

  Args:
    name: one of `names`, or ``"package.module:attribute"`` naming a `Method`.
    run_info: the run the objective trains in; the method's `Method.derive` fills the
      hyperparameters that follow from it (those left None). None: nothing is derived.
    **hparams: hyperparameters (see `defaults`); float ones may be schedules.

  Returns:
    An `Objective`; ``objective.teacher`` is the method's `jaxkd.teachers.Teacher` or None.

  Raises:
    ValueError: an unknown method or hparam, or a value out of range (the message names the
      field, the value and what is allowed).
  """
  method = _method(name)
  if run_info is not None and method.derive is not None:
    derived = _derived(name, method, run_info)
    hparams = {**hparams, **{k: v for k, v in derived.items() if hparams.get(k) is None}}
  hp = _validate(name, method.specs, hparams)
  required = {field: spec.doc for field, spec in method.specs.items()
              if spec.default is None and spec.doc}

  def build():
    for field, doc in required.items():
      if hp.get(field) is None:
        raise ValueError(f"{name} needs hparam {field} ({doc}); got None: the training "
                         "engine or the config must set it.")
    return method.build(hp)

  def check(num_classes):
    try:
      method.check(hp, num_classes)
    except ValueError as err:
      raise ValueError(f"{name}.{err}") from None

  return Objective(name, build, hparams=hp,
                   teacher=None if method.teacher is None else method.teacher(hp),
                   requires=method.requires, check=None if method.check is None else check)

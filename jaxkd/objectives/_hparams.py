"""Hyperparameter specifications: a default and a check that names field, value and range."""
import dataclasses
import numbers
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["RunInfo", "Spec", "boolean", "choice", "integer", "real", "validate", "weights"]


class Spec(NamedTuple):
  """One hyperparameter of a method.

  Attributes:
    default: the default value (None: must be set before ``init``, by the engine or config).
    check: ``check(field, value)`` raising ValueError for a value that is not allowed.
    doc: what the value means (used in error messages for missing values).
  """
  default: Any
  check: Callable[[str, Any], None]
  doc: str = ""


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """What a run knows before it builds its objective: the facts a method may derive its
  hyperparameters from (`Method.derive`), so that the training engine needs to know no method.

  Attributes:
    num_examples: the training split's examples.
    steps_per_epoch: optimizer steps per epoch.
    total_steps: the run's optimizer steps.
    num_classes: the number of classes K (None: not known).
  """
  num_examples: int
  steps_per_epoch: int
  total_steps: int
  num_classes: Optional[int] = None

  @property
  def total_epochs(self) -> int:
    """The run's length in epochs, a last partial epoch counted (at least 1)."""
    return max(1, -(-self.total_steps // self.steps_per_epoch))


def _fail(field, value, allowed):
  raise ValueError(f"{field}={value!r} is not allowed; allowed: {allowed}.")


def real(lo: Optional[float] = None, hi: Optional[float] = None, *,
         lo_open: bool = False, hi_open: bool = False) -> Callable[[str, Any], None]:
  """A float in ``[lo, hi]`` (ends open if ``lo_open``/``hi_open``), or a schedule.

  A scalar array is accepted too; a traced one (hyperparameters vmapped over) is not
  range-checked, since its value is unknown.
  """
  left = "(" if lo_open else "["
  right = ")" if hi_open else "]"
  span = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
  allowed = f"a float in {span}, a scalar array or a schedule step -> value"

  def check(field, value):
    if callable(value) or isinstance(value, jax.core.Tracer):
      return
    if isinstance(value, (np.ndarray, jax.Array)) and value.ndim == 0 and (
        jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)):
      value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
      _fail(field, value, allowed)
    too_low = lo is not None and (value <= lo if lo_open else value < lo)
    too_high = hi is not None and (value >= hi if hi_open else value > hi)
    if too_low or too_high:
      _fail(field, value, allowed)

  return check


def integer(lo: int = 1, *, optional: bool = False) -> Callable[[str, Any], None]:
  """An int >= ``lo`` (static: it shapes the computation), or None if ``optional``."""
  allowed = f"an int >= {lo}" + (" or None" if optional else "")

  def check(field, value):
    if value is None and optional:
      return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
      _fail(field, value, allowed)

  return check


def boolean() -> Callable[[str, Any], None]:
  """True or False."""

  def check(field, value):
    if not isinstance(value, bool):
      _fail(field, value, "True or False")

  return check


def choice(options: Sequence[str]) -> Callable[[str, Any], None]:
  """One of ``options``."""
  allowed = "one of " + ", ".join(repr(o) for o in options)

  def check(field, value):
    if value not in options:
      _fail(field, value, allowed)

  return check


def weights() -> Callable[[str, Any], None]:
  """A tuple (or list) of floats >= 0, not all 0; empty: uniform."""
  allowed = "a tuple of floats >= 0, not all 0 (one per teacher), or () for uniform"

  def check(field, value):
    if not isinstance(value, (tuple, list)):
      _fail(field, value, allowed)
    for w in value:
      if isinstance(w, bool) or not isinstance(w, numbers.Real) or not w >= 0 or \
          not np.isfinite(w):
        _fail(field, value, allowed)
    if value and not any(w > 0 for w in value):
      _fail(field, value, allowed)

  return check


def validate(method: str, specs: dict, hparams: dict) -> dict:
  """Checks ``hparams`` against ``specs`` and fills in the defaults.

  Args:
    method: the method name (for messages).
    specs: hparam name -> `Spec`.
    hparams: the given values.

  Returns:
    Every hparam of the method, defaults filled in, ints normalised to Python ints.

  Raises:
    ValueError: an unknown hparam, or a value that is not allowed.
  """
  unknown = sorted(set(hparams) - set(specs))
  if unknown:
    allowed = ", ".join(sorted(specs)) or "none"
    raise ValueError(f"{method}: unknown hparam {unknown[0]!r}; allowed: {allowed}.")
  resolved = {}
  for field, spec in specs.items():
    value = hparams.get(field, spec.default)
    spec.check(f"{method}.{field}", value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
      # A float field given as an int stays a number; int fields become plain Python ints.
      value = int(value)
    elif isinstance(value, list):  # a config's list: hashable and printable like a tuple
      value = tuple(value)
    resolved[field] = value
  return resolved

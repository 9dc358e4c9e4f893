"""Config files, command-line overrides and the key check, for ``jaxkd train``, ``jaxkd report``
and your code.

A config file defines ``get_config(arg=None)`` returning an `ml_collections.ConfigDict`;
``load("path.py:arg")`` passes the part after ``:`` as ``arg`` (big_vision style: rows of a
table, ``smoke``). A table config (``jaxkd report``) also defines ``table()``. Every config
extends `default` (`jaxkd.config.defaults.base_config`); without a file, ``jaxkd train`` runs
``configs/default.py`` (`jaxkd.config.defaults.get_config`).

Overrides are ``--config.KEY=VALUE`` or ``--config.KEY VALUE`` (absl's form, as typed for flax
and big_vision); a value is a Python literal or a plain string. An unknown key names the closest
valid one (`did_you_mean`). Importing this module is cheap (no jax).
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
import os
from types import ModuleType

import ml_collections

from jaxkd.config import defaults

__all__ = ["ConfigError", "UsageError", "check_keys", "default", "did_you_mean", "load",
           "load_module", "override", "split_overrides"]

_PREFIX = "--config."


class UsageError(ValueError):
  """Bad command-line input (exit status 2)."""


class ConfigError(ValueError):
  """A config value that cannot run; the message names the key, the value and what is allowed."""


def default() -> ml_collections.ConfigDict:
  """The base config every config file extends (`jaxkd.config.defaults.base_config`)."""
  return defaults.base_config()


def load_module(path: str, *, needs: str = "get_config", label: str = "--config") -> ModuleType:
  """Executes the config file ``path``; raises `UsageError` unless it defines ``needs``."""
  if not os.path.isfile(path):
    raise UsageError(f"{label}={path!r}: no such file (give a config file, e.g. one in configs/)")
  spec = importlib.util.spec_from_file_location("_jaxkd_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, needs):
    raise UsageError(f"{label}={path!r}: the file defines no {needs}()")
  return module


def load(spec: str | None) -> ml_collections.ConfigDict:
  """``get_config(arg)`` of ``path/to/config.py[:arg]``; None or "": the default run
  (``configs/default.py``)."""
  if not spec:
    return defaults.get_config()
  path, _, arg = spec.partition(":")
  return load_module(path).get_config(arg or None)


def _leaves(tree: dict, prefix: str = "") -> list[str]:
  paths = []
  for key, value in tree.items():
    paths += _leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [prefix + key]
  return paths


def did_you_mean(key: str, schema: dict) -> str:
  """`` (did you mean PATH?)`` for the field of ``schema`` closest to ``key``, or "".

  A field's dotted path is scored by the better of two similarities, of the full paths and of
  their last parts, so a field given at the wrong depth is found (``train.learning_rate`` ->
  ``train.optimizer.learning_rate``) as well as a misspelt one (``train.optimiser.name``). Ties
  go to the path holding more of ``key``'s parents (``train.name`` -> ``train.optimizer.name``).
  """
  def ratio(a, b):
    return difflib.SequenceMatcher(None, a, b).ratio()
  *parents, leaf = key.split(".")
  scored = [(max(ratio(key, p), ratio(leaf, p.rsplit(".", 1)[-1])),
             len(set(parents) & set(p.split(".")[:-1])), ratio(key, p), p)
            for p in _leaves(schema) if p != key]
  best = max(scored, default=(0.0, 0, 0.0, ""))
  return f" (did you mean {best[-1]}?)" if best[0] >= 0.75 else ""


def check_keys(config: dict, schema: dict | None = None, prefix: str = "",
               root: dict | None = None) -> None:
  """Raises `ConfigError` for a key of ``config`` (a dict) that ``schema`` (default: `default`'s
  keys) lacks, naming the closest valid one; ``method``'s keys are left to `jaxkd.objectives`."""
  schema = default().to_dict() if schema is None else schema
  root = schema if root is None else root
  for key, value in config.items():
    if prefix == "method.":  # method hyperparameters are checked by jaxkd.objectives
      continue
    if key not in schema:
      raise ConfigError(f"config.{prefix}{key}={value!r}: unknown key"
                        f"{did_you_mean(prefix + key, root)}; "
                        f"allowed here: {', '.join(sorted(schema))}")
    if isinstance(value, dict) and isinstance(schema[key], dict):
      check_keys(value, schema[key], f"{prefix}{key}.", root)


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
  """Sets ``config.<key>`` from command-line text; new keys are allowed only under ``method``.

  Method hyperparameters are open-ended (each method has its own), and `jaxkd.objectives`
  rejects unknown ones with a message naming them.
  """
  *parents, leaf = key.split(".")
  node = config
  for i, part in enumerate(parents):
    if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
      raise UsageError(f"{_PREFIX}{key}: unknown key {'.'.join(parents[:i + 1])!r}"
                       f"{did_you_mean(key, config.to_dict())}; "
                       f"allowed: {', '.join(sorted(node.keys()))}")
    node = node[part]
  value = _parse_value(text)
  if leaf not in node:
    if parents != ["method"]:
      raise UsageError(f"{_PREFIX}{key}={text!r}: unknown key {leaf!r}"
                       f"{did_you_mean(key, config.to_dict())}; "
                       f"allowed: {', '.join(sorted(node.keys()))}")
    with node.unlocked():
      node[leaf] = value
    return
  old = node[leaf]
  if isinstance(old, bool) and not isinstance(value, bool):
    raise UsageError(f"{_PREFIX}{key}={text!r}: must be True or False")
  if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(old, str) and not isinstance(value, str):
    value = text
  try:
    node[leaf] = value
  except TypeError:
    raise UsageError(f"{_PREFIX}{key}={text!r}: must be of type {type(old).__name__}") from None


def split_overrides(argv: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
  """``(other arguments, [(key, text), ...])`` from ``--config.KEY=VALUE`` / ``--config.KEY VALUE``.

  In the second form the next argument is the value unless it starts with ``--`` (a negative
  number such as ``-1`` is a value).
  """
  rest, pairs, i = [], [], 0
  while i < len(argv):
    item = argv[i]
    i += 1
    if not item.startswith(_PREFIX):
      rest.append(item)
      continue
    key, sep, text = item[len(_PREFIX):].partition("=")
    if not sep:
      if i == len(argv) or argv[i].startswith("--"):
        raise UsageError(f"{item!r}: no value; write {_PREFIX}KEY=VALUE or {_PREFIX}KEY VALUE")
      text, i = argv[i], i + 1
    pairs.append((key, text))
  return rest, pairs

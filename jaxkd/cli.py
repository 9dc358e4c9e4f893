"""The ``jaxkd`` command line.

    jaxkd train [--config configs/FILE.py[:ARG]] --workdir DIR [--config.KEY=VALUE ...]

A config file defines ``get_config(arg=None)`` returning an `ml_collections.ConfigDict`; the
part after ``:`` is passed as ``arg`` (big_vision style: rows of a table, ``smoke``).
``--config.KEY=VALUE`` overrides a field; values are Python literals or plain strings. Bad
input prints one line naming the key, the value and what is allowed, and exits with status 2.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import sys

import ml_collections

__all__ = ["load_config", "main", "override"]

class UsageError(ValueError):
  """Bad command-line input (exit status 2)."""


def load_config(spec: str | None) -> ml_collections.ConfigDict:
  """Loads ``path/to/config.py[:arg]`` by calling its ``get_config(arg)``; None: the default."""
  if not spec:
    from jaxkd.train import defaults  # pylint: disable=import-outside-toplevel
    return defaults.get_config()
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise UsageError(f"--config={spec!r}: no such file (give a path like configs/default.py)")
  module_spec = importlib.util.spec_from_file_location("_jaxkd_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise UsageError(f"--config={spec!r}: the file defines no get_config(arg)")
  return module.get_config(arg or None)


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
      raise UsageError(f"--config.{key}: unknown key {'.'.join(parents[:i + 1])!r}; "
                       f"allowed: {', '.join(sorted(node.keys()))}")
    node = node[part]
  value = _parse_value(text)
  if leaf not in node:
    if parents != ["method"]:
      raise UsageError(f"--config.{key}={text!r}: unknown key {leaf!r}; "
                       f"allowed: {', '.join(sorted(node.keys()))}")
    with node.unlocked():
      node[leaf] = value
    return
  old = node[leaf]
  if isinstance(old, bool) and not isinstance(value, bool):
    raise UsageError(f"--config.{key}={text!r}: must be True or False")
  if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(old, str) and not isinstance(value, str):
    value = text
  try:
    node[leaf] = value
  except TypeError:
    raise UsageError(f"--config.{key}={text!r}: must be of type {type(old).__name__}") from None


# Further commands live in their own modules, each with `add_arguments(parser)`, a `HELP`
# line and `main(args) -> int`; they are imported only when present.
_COMMANDS = {"report": "jaxkd.report", "bench": "jaxkd.bench"}


def _command_modules() -> dict:
  modules = {}
  for name, module_name in _COMMANDS.items():
    if importlib.util.find_spec(module_name) is not None:
      modules[name] = importlib.import_module(module_name)
  return modules


def _parser(modules: dict) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxkd", description=__doc__.split("\n\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  train = sub.add_parser("train", help="train and evaluate one config in a workdir (resumes)")
  train.add_argument("--config", default=None, help="config file[:arg] (default: configs/default.py)")
  train.add_argument("--workdir", required=True, help="output directory; resumed if it exists")
  for name, module in modules.items():
    module.add_arguments(sub.add_parser(name, help=module.HELP))
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  overrides = [a for a in argv if a.startswith("--config.")]
  modules = _command_modules()
  args = _parser(modules).parse_args([a for a in argv if not a.startswith("--config.")])
  if args.command != "train":
    return modules[args.command].main(args)
  from jaxkd.train import loop  # imported late: `jaxkd --help` stays instant
  try:
    config = load_config(args.config)
    for item in overrides:
      key, sep, text = item[len("--config."):].partition("=")
      if not sep:
        raise UsageError(f"{item!r}: write overrides as --config.KEY=VALUE")
      override(config, key, text)
    summary = loop.train_and_evaluate(config, args.workdir)
  except (ValueError, FileNotFoundError) as err:  # UsageError, ConfigError, data errors
    print(f"jaxkd: error: {err}", file=sys.stderr)
    return 2
  except loop.NonFiniteError as err:
    print(f"jaxkd: error: {err}", file=sys.stderr)
    return 3
  best, last = summary["best"], summary["last"]
  print(f"best top-1 {best['top1']:.4f} (epoch {best['epoch']:.0f}), last top-1 "
        f"{last['top1']:.4f}, NLL {last['nll']:.4f}, ECE {last['ece']:.4f}; {args.workdir}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""The ``jaxkd`` command line.

    jaxkd train [--config configs/FILE.py[:ARG]] --workdir DIR [--config.KEY=VALUE ...]

Config files and overrides are `jaxkd.config`'s: ``--config.KEY=VALUE`` or ``--config.KEY
VALUE`` sets a field. Bad input prints one line naming the key, the value and what is allowed,
and exits with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from jaxkd import config as config_lib

__all__ = ["main"]

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
  # The top-level parser has no options with values: its first positional is the command.
  command = next((a for a in argv if not a.startswith("-")), None)
  overrides = []
  if command == "train":
    try:
      argv, overrides = config_lib.split_overrides(argv)
    except config_lib.UsageError as err:
      print(f"jaxkd: error: {err}", file=sys.stderr)
      return 2
  modules = _command_modules()
  args = _parser(modules).parse_args(argv)
  if args.command != "train":
    return modules[args.command].main(args)
  from jaxkd.train import loop  # imported late: `jaxkd --help` stays instant
  try:
    config = config_lib.load(args.config)
    for key, text in overrides:
      config_lib.override(config, key, text)
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

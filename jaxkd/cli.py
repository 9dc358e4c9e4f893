"""The ``jaxkd`` command line.

    jaxkd train [--config configs/FILE.py[:ARG]] --workdir DIR [--config.KEY=VALUE ...]
    jaxkd eval --workdir DIR [--checkpoint last|best|STEP] [--split SPLIT] [--out DIR]
    jaxkd compare DIR1 DIR2 ... [--out DIR]
    jaxkd methods
    jaxkd prepare imagenet2012 --manual_dir DIR --data_dir DATA_DIR
    jaxkd cache-teacher --out DIR [--k K] [--config FILE] [--config.KEY=VALUE ...]

Config files and overrides are `jaxkd.config`'s: ``--config.KEY=VALUE`` or ``--config.KEY
VALUE`` sets a field. Bad input prints one line naming the key, the value and what is allowed,
and exits with status 2. ``jaxkd train --help`` lists the methods, models and datasets.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import os
import sys
import textwrap

from jaxkd import config as config_lib

__all__ = ["main", "methods_table"]

# Further commands live in their own modules, each with `add_arguments(parser)`, a `HELP`
# line and `main(args) -> int`; only the module of the command being run is imported.
_COMMANDS = {"eval": "jaxkd.train.evaluate", "compare": "jaxkd.reporting.compare",
             "report": "jaxkd.reporting.cli", "bench": "jaxkd.bench",
             "prepare": "jaxkd.data._prepare", "bench-pipeline": "jaxkd.bench._pipeline",
             "cache-teacher": "jaxkd.train.cache"}
# The commands that take a run's config and --config.KEY=VALUE overrides.
_TAKES_OVERRIDES = ("train", "cache-teacher")

_OVERRIDES = """\
overrides:
  --config.KEY=VALUE or --config.KEY VALUE sets a field of the config (configs/default.py lists
  them); VALUE is a Python literal (3, 0.1, True, (60, 120)) or a plain string. Method
  hyperparameters are --config.method.HPARAM (`jaxkd methods` lists them with their defaults).
  An unknown key names the closest valid one."""

_EXAMPLES = """\
examples:
  jaxkd train --workdir /tmp/mrkd      # configs/default.py: MrKD, a small CNN, digits
  jaxkd train --workdir /tmp/ce --config.method.name ce --config.train.num_epochs 5
  jaxkd train --workdir /tmp/kd --config.method.name=kd --config.teacher.workdir=/tmp/ce
  jaxkd train --workdir /tmp/try --config.train.num_steps=3    # 3 steps, no warm-up left
  jaxkd train --workdir DIR --config configs/tfkd_cifar100.py:model=resnet18,method=tfkd_reg"""


def _source(module_name: str) -> str | None:
  """The source file of a ``jaxkd.*`` command module, or None; found without importing.

  `importlib.util.find_spec` would import the module's parent packages, and jaxkd.train
  imports jax.
  """
  base = os.path.join(os.path.dirname(os.path.abspath(__file__)), *module_name.split(".")[1:])
  return next((path for path in (base + ".py", os.path.join(base, "__init__.py"))
               if os.path.isfile(path)), None)


def _constant(module_name: str, name: str, default=None):
  """A module's top-level ``name = <literal>``, read from its source without importing it.

  Importing jaxkd.bench (or jaxkd) imports jax (2.5 s here), too slow for ``jaxkd --help``.
  """
  with open(_source(module_name), encoding="utf-8") as f:
    tree = ast.parse(f.read())
  return next((ast.literal_eval(node.value) for node in tree.body
               if isinstance(node, ast.Assign)
               and [getattr(t, "id", None) for t in node.targets] == [name]), default)


def _help_line(module_name: str) -> str:
  """A command module's ``HELP`` line."""
  return _constant(module_name, "HELP", "")


class _Parser(argparse.ArgumentParser):
  """An `argparse.ArgumentParser` whose epilog may be a function, called only to print help."""

  def format_help(self) -> str:
    if callable(self.epilog):
      self.epilog = self.epilog()
    return super().format_help()


def _listing(title: str, names) -> str:
  return "\n".join([f"{title}:"] + textwrap.wrap(", ".join(names), 92, initial_indent="  ",
                                                 subsequent_indent="  "))


def _train_epilog() -> str:
  """Overrides, methods, models, datasets and examples; imports jax (the registries)."""
  from jaxkd import data, models, objectives  # pylint: disable=import-outside-toplevel
  width = max(map(len, objectives.names()))
  methods = [f"  {name:<{width}}  {objectives.describe(name)}" for name in objectives.names()]
  return "\n\n".join([
      _OVERRIDES,
      "\n".join(["methods (--config.method.name; `jaxkd methods` adds teachers and "
                 "hyperparameters):", *methods]),
      _listing("models (--config.model.name)", models.names()),
      _listing("datasets (--config.data.name; digits and mock need no download)", data.names()),
      _EXAMPLES])


def _default(value) -> str:
  return "<run>" if value is None else repr(value)


def methods_table() -> str:
  """What ``jaxkd methods`` prints, all of it from `jaxkd.objectives`.

  Every method with its one-line description (provenance in brackets), its teacher and its
  hyperparameter defaults.
  """
  from jaxkd import objectives  # pylint: disable=import-outside-toplevel
  width = max(map(len, objectives.names()))
  teachers = {}  # name -> doc, of the teachers the methods use, in order of first use
  for name in objectives.names():
    teacher = objectives.get(name).teacher
    if teacher is not None:
      teachers.setdefault(teacher.name, teacher.doc)
  column = max(map(len, ["teacher", *teachers]))
  indent = " " * (width + column + 4)
  lines = [f"{'method':<{width}}  {'teacher':<{column}}  description / hyperparameters "
           "(defaults)"]
  for name in objectives.names():
    teacher = objectives.get(name).teacher
    teacher = "-" if teacher is None else teacher.name
    lines.append(f"{name:<{width}}  {teacher:<{column}}  {objectives.describe(name)}")
    hparams = " ".join(f"{k}={_default(v)}" for k, v in objectives.defaults(name).items())
    lines += textwrap.wrap(hparams or "(none)", 100, initial_indent=indent,
                           subsequent_indent=indent)
  legend = [line for name, doc in teachers.items() for line in textwrap.wrap(
      doc or "(undocumented)", 100, initial_indent=f"  {name:<{column}}  ",
      subsequent_indent=" " * (column + 4))]
  return "\n".join(lines + [
      "",
      "[code]: matches the authors' official code; [abs]: only the abstract is public, so the",
      "  method is reconstructed.",
      "teacher: where the teacher logits come from (- = none):", *legend,
      "<run>: filled in from the data and the schedule of the run.",
      "Choose with --config.method.name=NAME, set with --config.method.HPARAM=VALUE."])


def _plain(parser: argparse.ArgumentParser) -> None:
  """Help texts taken from docstrings, without their reStructuredText ````code```` marks."""
  strip = lambda text: text.replace("``", "") if isinstance(text, str) else text
  parser.description = strip(parser.description)
  for action in parser._actions:  # pylint: disable=protected-access
    action.help = strip(action.help)
    for sub in getattr(action, "choices", None) or {}:
      if isinstance(action.choices, dict):
        _plain(action.choices[sub])


def _parser(command: str | None) -> argparse.ArgumentParser:
  parser = _Parser(prog="jaxkd", description=__doc__.split("\n\n")[0])
  parser.add_argument("--version", action="version", version=f"jaxkd {_constant('jaxkd.__init__', '__version__')}")
  sub = parser.add_subparsers(dest="command", required=True)
  train = sub.add_parser(
      "train", help="train and evaluate one config in a workdir (resumes)",
      description="Trains and evaluates one config in a workdir; the same command on the same "
                  "workdir resumes.", epilog=_train_epilog,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  train.add_argument("--config", default=None,
                     help="config file[:arg] (default: configs/default.py)")
  train.add_argument("--workdir", required=True, help="output directory; resumed if it exists")
  sub.add_parser("methods", help="list the methods: description, teacher, hyperparameters")
  for name, module_name in _COMMANDS.items():
    if _source(module_name) is not None:
      command_parser = sub.add_parser(name, help=_help_line(module_name))
      if name == command:
        importlib.import_module(module_name).add_arguments(command_parser)
        _plain(command_parser)
  return parser


def _train(args: argparse.Namespace, overrides: list[tuple[str, str]]) -> int:
  from jaxkd.train import loop, signals  # imported late: `jaxkd --help` stays instant
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
  except signals.Interrupted as err:
    print(f"jaxkd: {err}", file=sys.stderr)
    return err.exit_status
  except KeyboardInterrupt:  # before training started, or a second Ctrl-C
    print(f"jaxkd: interrupted; the newest complete checkpoint in {args.workdir}, if any, is "
          "kept; run the same command to resume", file=sys.stderr)
    return 130
  print(_result_line(summary, args.workdir, config.data.eval_split))
  return 0


def _result_line(summary: dict, workdir: str, split: str) -> str:
  """The last line of ``jaxkd train``: best and last top-1 on the evaluation ``split`` (and
  whether the best one's checkpoint was kept), calibration, the teacher's share."""
  best, last = summary["best"], summary["last"]
  share = summary.get("teacher_active_share")
  teacher = "" if share is None else f"; teacher active in {share:.1%} of steps"
  kept = summary.get("best_checkpoint_step") is not None
  where = (f"on the validation split {split}, its checkpoint kept (jaxkd eval --checkpoint best); "
           if kept else f"on {split}, ")
  return (f"best top-1 {best['top1']:.4f} (epoch {round(best['epoch'], 2):g}) {where}last top-1 "
          f"{last['top1']:.4f}, NLL {last['nll']:.4f}, ECE {last['ece']:.4f}"
          + (f", BLEU {last['bleu']:.2f}" if "bleu" in last else "") + f"{teacher}; {workdir}")


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  # The top-level parser has no options with values: its first positional is the command.
  command = next((a for a in argv if not a.startswith("-")), None)
  overrides = []
  if command in _TAKES_OVERRIDES:
    try:
      argv, overrides = config_lib.split_overrides(argv)
    except config_lib.UsageError as err:
      print(f"jaxkd: error: {err}", file=sys.stderr)
      return 2
  args = _parser(command).parse_args(argv)
  if args.command == "train":
    return _train(args, overrides)
  if args.command == "methods":
    print(methods_table())
    return 0
  args.overrides = overrides
  return importlib.import_module(_COMMANDS[args.command]).main(args)


if __name__ == "__main__":
  sys.exit(main())

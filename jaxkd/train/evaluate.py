"""``jaxkd eval``: a run's checkpoint evaluated on a split, from its workdir alone.

    jaxkd eval --workdir W [--checkpoint last|best|STEP] [--split SPLIT] [--data-dir D] [--out DIR]

The run is rebuilt from ``W/config.json`` (`jaxkd.train.build`, with ``data.eval_split`` set to
``--split`` when given), the checkpoint's model variables restored, and the split evaluated
as the training loop evaluates it (same batches, same float32 sums): top-1, top-5, NLL, ECE,
and Shen et al.'s stability S and ``1 - S`` (Eq. 2, on softmax probabilities); a translation run
gives them per target token and the BLEU of its beam search instead of the stability. Writes
``eval_<split>_<step>.json`` and ``reliability_<split>_<step>.png`` into ``--out``
(default ``W/eval/``). Bad input prints one line naming the flag, the value and what is
allowed, exits with status 2 and writes nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

import jax
import ml_collections

from jaxkd import analysis
from jaxkd import data as data_lib
from jaxkd import rundir
from jaxkd import tasks
from jaxkd.config import UsageError
from jaxkd.train import run as run_lib
from jaxkd.train import trainer as trainer_lib

__all__ = ["HELP", "add_arguments", "evaluate_checkpoint", "format_table", "main",
           "resolve_checkpoint", "write_outputs"]

HELP = ("evaluate a run's checkpoint on a split: top-1, top-5, NLL, ECE, stability "
        "(translation: per target token, and BLEU)")



def resolve_checkpoint(workdir: str, checkpoint: str = "last") -> int:
  """The step of ``checkpoint`` (``last``, ``best`` or a step number) among the workdir's.

  ``best`` is the checkpoint at the step of ``summary.json``'s best evaluation: the one
  ``train.keep_best`` keeps in ``checkpoints_best/``, or one still among the latest
  ``train.keep_checkpoints``.

  Raises:
    jaxkd.config.UsageError: no checkpoint there, or none that matches.
  """
  run_dir = rundir.RunDir(workdir)
  if not os.path.isfile(run_dir.config):
    raise UsageError(f"--workdir={workdir!r}: no {rundir.CONFIG} there; allowed: the workdir of "
                     "a `jaxkd train` run")
  steps = run_dir.checkpoint_steps()
  if not steps:
    raise UsageError(f"--workdir={workdir!r}: holds no checkpoint under "
                     f"{os.path.join(workdir, rundir.CHECKPOINTS)}; allowed: a workdir that "
                     "`jaxkd train` has checkpointed")
  best = _best_step(workdir)
  kept_best = best is not None and (best in steps or _in_best_store(workdir, best))
  allowed = f"last, best or one of the kept steps {steps}" if kept_best else (
      f"last or one of the kept steps {steps}")
  if checkpoint == "last":
    return steps[-1]
  if checkpoint == "best":
    if best is None:
      raise UsageError(f"--checkpoint=best: {workdir!r} has no {rundir.SUMMARY} (the run has not "
                       f"finished), so no best step is known; allowed: {allowed}")
    if not kept_best:
      top1 = run_dir.read(rundir.SUMMARY)["best"]["top1"]
      raise UsageError(f"--checkpoint=best: the best evaluation (step {best}, top-1 {top1:.4f}) "
                       "was not kept: the run had train.keep_best=False, so only its latest "
                       f"train.keep_checkpoints remain; allowed: {allowed} (train with "
                       "--config.train.keep_best=True on a validation split to keep it)")
    return best
  if checkpoint.isdigit() and (int(checkpoint) in steps or int(checkpoint) == best and kept_best):
    return int(checkpoint)
  raise UsageError(f"--checkpoint={checkpoint!r}: not a kept checkpoint; allowed: {allowed}")


def _best_step(workdir: str) -> int | None:
  summary = rundir.RunDir(workdir).read(rundir.SUMMARY)
  return None if summary is None else summary["best"]["step"]


def _in_best_store(workdir: str, step: int) -> bool:
  return step in rundir.checkpoint_steps(workdir, rundir.BEST)


def _config(workdir: str, split: str | None, data_dir: str | None):
  config = ml_collections.ConfigDict(rundir.RunDir(workdir).read(rundir.CONFIG))
  if split is not None:
    try:
      data_lib.parse_split(split)
    except ValueError as err:
      raise UsageError(f"--{err}") from None
    config.data.eval_split = split
    config.train.keep_best = False  # evaluating keeps nothing: any split, the test set too
  if data_dir is not None:
    config.data.data_dir = data_dir
  return config


def _build(config, split: str | None):
  try:
    return trainer_lib.build(config)
  except ValueError as err:  # a slice out of range is only known once the data is loaded
    if split is not None and str(err).startswith("split="):
      raise UsageError(f"--{err}") from None
    raise


def evaluate_checkpoint(workdir: str, *, checkpoint: str = "last", split: str | None = None,
                        data_dir: str | None = None) -> dict:
  """Evaluates one checkpoint of a run on a split, as the training loop evaluates.

  Batches of ``train.eval_batch_size`` in order, the last one padded and masked, float32 sums
  added on the device: the same numbers the loop logs as ``eval/*`` for the same split.

  Args:
    workdir: a `jaxkd train` workdir (``config.json`` and ``checkpoints/``).
    checkpoint: ``"last"``, ``"best"`` (the summary's best step, if kept: ``train.keep_best``)
      or a step number.
    split: the split to evaluate (``"test"``, ``"train[90%:]"``); None: the run's eval split.
    data_dir: replaces the run's ``data.data_dir`` (the data moved).

  Returns:
    A dict: ``workdir``, ``checkpoint``, ``step``, ``epoch``, ``split``, ``num_examples``,
    ``method``, ``model``, ``metrics`` (``top1``, ``top5``, ``nll``, ``ece``, ``stability``
    S and ``intra_class_variance`` 1 - S, python floats: the numbers of the task's
    ``checkpoint`` evaluators, `jaxkd.tasks`; translation: per target token, and BLEU instead
    of the stability), ``task`` (its name) and ``sums`` (the additive
    `jaxkd.analysis.classification_metrics` sums, host arrays: ECE bins included).

  Raises:
    jaxkd.config.UsageError: no such workdir, checkpoint or split.
    jaxkd.config.ConfigError: the saved config no longer builds.
  """
  workdir = os.path.abspath(workdir)
  if not os.path.isdir(workdir):
    raise UsageError(f"--workdir={workdir!r}: no such directory; allowed: the workdir of a "
                     "`jaxkd train` run")
  step = resolve_checkpoint(workdir, checkpoint)
  config = _config(workdir, split, data_dir)
  with run_lib.precision(config):  # a float64 run is read back in float64
    trainer = _build(config, split)
    run = trainer.run
    run_dir = rundir.RunDir(workdir)
    name = rundir.CHECKPOINTS if step in run_dir.checkpoint_steps() else rundir.BEST
    variables, _ = run_dir.load_variables(step=step, name=name)
    variables = jax.tree_util.tree_map(lambda x: trainer_lib.replicate(run.mesh, x), variables)
    evaluators = run.task.task.evaluators(run, "checkpoint")
    metrics, totals = trainer.evaluate(variables, evaluators)
    return dict(workdir=workdir, checkpoint=str(checkpoint), step=step,
                epoch=step / run.steps_per_epoch, split=config.data.eval_split,
                num_examples=run.eval_data.num_examples, method=config.method.name,
                model=config.model.name, task=run.task.task.name, metrics=metrics,
                sums=totals["metrics"])


def _slug(split: str) -> str:
  """A split as a file name part: ``train[90%:]`` -> ``train_90pct-``."""
  return re.sub(r"[^\w.-]", "", split.replace("[", "_").replace(":", "-").replace("%", "pct"))


def write_outputs(result: dict, out: str) -> tuple[str, str]:
  """Writes ``eval_<split>_<step>.json`` and ``reliability_<split>_<step>.png`` into ``out``.

  Returns:
    The two paths.
  """
  stem = f"{_slug(result['split'])}_{result['step']}"
  os.makedirs(out, exist_ok=True)
  json_path = os.path.join(out, f"eval_{stem}.json")
  record = dict(result, sums={k: v.tolist() for k, v in result["sums"].items()})
  with open(json_path, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2)
    f.write("\n")
  png_path = analysis.reliability_diagram(
      result["sums"], os.path.join(out, f"reliability_{stem}.png"),
      title=f"{result['method']} {result['split']} step {result['step']}")
  return json_path, png_path


def format_table(result: dict) -> str:
  """The metrics of one evaluation as a markdown table of one row."""
  columns = tasks.get(result.get("task", "image_classification")).eval_columns
  head = "| " + " | ".join(label for _, label in columns) + " |"
  rule = "|" + "|".join("---:" for _ in columns) + "|"
  row = "| " + " | ".join(f"{result['metrics'][key]:.4f}" for key, _ in columns) + " |"
  return "\n".join([
      f"{result['workdir']}: {result['method']}, checkpoint step {result['step']} "
      f"(epoch {round(result['epoch'], 2):g}), split {result['split']} "
      f"({result['num_examples']} examples)", head, rule, row])


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.description = __doc__.split("\n\n", 1)[0]
  parser.add_argument("--workdir", required=True, help="a `jaxkd train` workdir")
  parser.add_argument("--checkpoint", default="last",
                      help="last (default), best (if kept) or a checkpoint's step")
  parser.add_argument("--split", default=None,
                      help="split to evaluate, e.g. test or 'train[90%%:]' (default: the "
                           "run's data.eval_split)")
  parser.add_argument("--data-dir", default=None, help="replaces the run's data.data_dir")
  parser.add_argument("--out", default=None, help="output directory (default: WORKDIR/eval)")


def main(args: argparse.Namespace) -> int:
  try:
    result = evaluate_checkpoint(args.workdir, checkpoint=args.checkpoint, split=args.split,
                                 data_dir=args.data_dir)
  except (ValueError, FileNotFoundError) as err:  # UsageError, ConfigError, data errors
    print(f"jaxkd: error: {err}", file=sys.stderr)
    return 2
  json_path, png_path = write_outputs(result, args.out or os.path.join(result["workdir"],
                                                                        "eval"))
  print(format_table(result))
  print(f"wrote {json_path} and {png_path}")
  return 0

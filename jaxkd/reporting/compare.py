"""``jaxkd compare``: several runs side by side, from their workdirs alone.

    jaxkd compare W1 W2 ... [--out DIR]

Prints one markdown table (workdir, method, the method's resolved hyperparameters, the steps
and epochs trained, best and last top-1 / NLL / ECE, wall time), writes it to
``<out>/compare.md`` and draws their evaluation top-1 and training loss against the epoch into
``<out>/compare.png``. Each run is read from what its workdir holds:
``summary.json`` and ``run.json`` when present, else ``config.json`` and ``metrics.jsonl``
(an unfinished or older run). Bad input prints one line and exits with status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from jaxkd import rundir
from jaxkd.config import UsageError

# jaxkd.analysis imports jax: imported where a run is read, so `import jaxkd.reporting` stays
# cheap (table configs import it).

__all__ = ["HELP", "add_arguments", "compare_runs", "main", "plot_curves"]

HELP = "compare runs: one markdown table (compare.md) and their curves in one PNG"

_CURVE_KEYS = ("eval/top1", "train/loss")


def _from_history(workdir: str) -> dict:
  """Best and last evaluation from ``metrics.jsonl`` (a run without ``summary.json``)."""
  from jaxkd import analysis  # pylint: disable=import-outside-toplevel
  history = [r for r in analysis.load_metrics(workdir) if "eval/top1" in r]
  if not history:
    return {"best": None, "last": None}
  pick = lambda r: {k.split("/", 1)[1]: v for k, v in r.items() if k.startswith("eval/")} | {
      "epoch": r["epoch"], "step": r["step"]}
  return {"best": pick(max(history, key=lambda r: r["eval/top1"])), "last": pick(history[-1])}


def _record(workdir: str) -> dict:
  run_dir = rundir.RunDir(workdir)
  config = run_dir.read(rundir.CONFIG)
  if not os.path.isdir(workdir) or config is None:
    raise UsageError(f"workdir={workdir!r}: no {rundir.CONFIG} there; allowed: workdirs of "
                     "`jaxkd train` runs")
  summary = run_dir.read(rundir.SUMMARY)
  provenance = summary or run_dir.read(rundir.RUN) or {}
  results = summary if summary is not None else _from_history(workdir)
  return dict(workdir=workdir, method=provenance.get("method", config["method"]["name"]),
              hparams=provenance.get("hparams") or {k: v for k, v in config["method"].items()
                                                    if k != "name"},
              model=config["model"]["name"], data=config["data"]["name"],
              best=results["best"], last=results["last"],
              wall_time_s=None if summary is None else summary.get("wall_time_s"),
              finished=summary is not None)


def _number(result: Optional[dict], key: str) -> str:
  return "-" if result is None or result.get(key) is None else f"{result[key]:.4f}"


def _hparams(hparams: dict) -> str:
  return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in sorted(hparams.items())) or "-"


def _markdown(records: Sequence[dict]) -> str:
  lines = ["| workdir | method | hyperparameters | steps | epochs | best top-1 | best NLL | "
           "best ECE | last top-1 | last NLL | last ECE | wall time |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in records:
    wall = "-" if r["wall_time_s"] is None else f"{r['wall_time_s']:.0f} s"
    name = r["workdir"] if r["finished"] else f"{r['workdir']} (unfinished)"
    last = r["last"] or {}
    lines.append("| " + " | ".join(
        [name, r["method"], _hparams(r["hparams"]).replace("|", "\\|"),
         str(last.get("step", "-")), f"{last['epoch']:.3g}" if "epoch" in last else "-",
         *(_number(r[which], key) for which in ("best", "last")
           for key in ("top1", "nll", "ece")), wall]) + " |")
  return "\n".join(lines)


def compare_runs(workdirs: Sequence[str]) -> tuple[str, list[dict]]:
  """One markdown table of several runs, and the records it shows.

  Args:
    workdirs: `jaxkd train` workdirs (finished or not).

  Returns:
    ``(markdown, records)``; the table's steps and epochs are those of the last evaluation
    (the end of a finished run). A record holds ``workdir``, ``method``, ``hparams`` (resolved,
    from ``summary.json`` or ``run.json``; the config's own for older runs), ``model``,
    ``data``, ``best`` and ``last`` (the summary's evaluations: ``top1``, ``top5``, ``nll``,
    ``ece``, ``epoch``, ``step``; None before the first evaluation), ``wall_time_s`` (None
    when unfinished) and ``finished``.

  Raises:
    jaxkd.config.UsageError: a path that is not a run's workdir.
  """
  if not workdirs:
    raise UsageError("workdirs: none given; allowed: one or more `jaxkd train` workdirs")
  records = [_record(os.path.abspath(w)) for w in workdirs]
  return _markdown(records), records


def plot_curves(workdirs: Sequence[str], path: str) -> str:
  """Evaluation top-1 and training loss against the epoch, one line per run, as PNG."""
  from jaxkd import analysis  # pylint: disable=import-outside-toplevel
  paths = [os.path.abspath(w) for w in workdirs]
  names = [os.path.basename(p) for p in paths]
  labels = names if len(set(names)) == len(names) else paths
  return analysis.plot_training_curves(dict(zip(labels, paths)), path, keys=_CURVE_KEYS,
                                       x="epoch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.description = __doc__.split("\n\n", 1)[0]
  parser.add_argument("workdirs", nargs="+", metavar="WORKDIR", help="`jaxkd train` workdirs")
  parser.add_argument("--out", default=".",
                      help="where compare.md and compare.png go (default: the current "
                      "directory)")


def main(args: argparse.Namespace) -> int:
  from jaxkd import analysis  # pylint: disable=import-outside-toplevel
  try:
    markdown, _ = compare_runs(args.workdirs)
    for workdir in args.workdirs:  # before anything is written
      analysis.load_metrics(workdir)
  except (ValueError, FileNotFoundError) as err:
    print(f"jaxkd: error: {err}", file=sys.stderr)
    return 2
  print(markdown)
  png = plot_curves(args.workdirs, os.path.join(args.out, "compare.png"))
  table = os.path.join(args.out, "compare.md")
  with open(table, "w", encoding="utf-8") as f:
    f.write(markdown + "\n")
  print(f"wrote {table} and {png}")
  return 0

"""``jaxkd report``: run a paper table for several seeds and write its markdown report.

    jaxkd report run configs/TABLE.py --seeds 0,1,2 [--workers 2] [--rows a,b] [--smoke]
    jaxkd report render configs/TABLE.py
    jaxkd report one configs/TABLE.py ROW --seed S      (one run; what `run` starts)

``run`` trains the teacher stages, then every row for every seed (workdirs under
``--workroot``, results JSON under ``--results-dir/<table>/runs/``), then renders.
``render`` rebuilds ``<results-dir>/<table>/REPORT.md`` and its figures from the JSON alone,
byte for byte the same each time.
"""
from __future__ import annotations

import argparse
import os
import sys

__all__ = ["HELP", "add_arguments", "main"]

HELP = "run a paper table's rows for several seeds and render its markdown report"

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DEFAULT_RESULTS = os.path.join(_ROOT, "experiments", "results")
_DEFAULT_WORKROOT = os.path.join(_ROOT, "workdirs", "tables")  # git-ignored


def _seeds(text: str) -> list[int]:
  try:
    seeds = [int(s) for s in text.split(",") if s.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(f"--seeds={text!r}: write integers separated by commas, "
                                     "e.g. 0,1,2") from None
  if not seeds or min(seeds) < 0:
    raise argparse.ArgumentTypeError(f"--seeds={text!r}: give at least one seed >= 0")
  return seeds


def add_arguments(parser: argparse.ArgumentParser) -> None:
  """The ``run``, ``render`` and ``one`` subcommands."""
  sub = parser.add_subparsers(dest="report_command", required=True)
  run = sub.add_parser("run", help="train a table's teacher stages and rows, then render")
  one = sub.add_parser("one", help="train and collect one row for one seed")
  render = sub.add_parser("render", help="write REPORT.md and figures from the results JSON")
  for p in (run, one, render):
    p.add_argument("config", help="a table config, e.g. configs/fashion_mnist.py")
    p.add_argument("--results-dir", default=_DEFAULT_RESULTS,
                   help="results root (default: experiments/results)")
  for p in (run, one):
    p.add_argument("--workroot", default=_DEFAULT_WORKROOT,
                   help="where run workdirs go (default: workdirs/tables, git-ignored)")
    p.add_argument("--smoke", action="store_true", help="the rows' smoke variants")
  run.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="e.g. 0,1,2 (default)")
  run.add_argument("--workers", type=int, default=1, help="runs at once (default 1)")
  run.add_argument("--rows", default="", help="only these rows (comma-separated names)")
  one.add_argument("row", help="the row (or teacher stage) name")
  one.add_argument("--seed", type=int, required=True)


def main(args: argparse.Namespace) -> int:
  """Runs the chosen subcommand; returns the exit status."""
  from jaxkd.reporting import runner  # pylint: disable=import-outside-toplevel
  try:
    if getattr(args, "smoke", False) and args.results_dir == _DEFAULT_RESULTS:
      # Smoke records (a few steps on mock data) never land beside the real results.
      args.results_dir = os.path.join(args.workroot, "smoke_results")
    if args.report_command == "one":
      runner.run_one(args.config, args.row, args.seed, workroot=args.workroot,
                     results_dir=args.results_dir, smoke=args.smoke)
      return 0
    if args.report_command == "run":
      if args.workers < 1:
        raise ValueError(f"--workers={args.workers}: must be >= 1")
      rows = [r for r in args.rows.split(",") if r] or None
      failed = runner.run_table(args.config, seeds=args.seeds, workroot=args.workroot,
                                results_dir=args.results_dir, workers=args.workers, rows=rows,
                                smoke=args.smoke, log=lambda m: print(m, flush=True))
      if failed:
        print(f"jaxkd report: {len(failed)} runs failed or were skipped: {', '.join(failed)}",
              file=sys.stderr)
    from jaxkd.reporting import render  # pylint: disable=import-outside-toplevel
    path = render.render(args.config, results_dir=args.results_dir)
    print(f"wrote {path}")
    return 1 if args.report_command == "run" and failed else 0
  except (FileNotFoundError, KeyError, ValueError) as err:
    print(f"jaxkd report: error: {err}", file=sys.stderr)
    return 2

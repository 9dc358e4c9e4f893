"""``jaxkd report``: run a paper table for several seeds and write its markdown report.

    jaxkd report run configs/TABLE.py --seeds 0,1,2 [--workers 2] [--pack 3] [--rows a,b]
        [--rerun] [--smoke]
    jaxkd report render configs/TABLE.py [--smoke]
    jaxkd report one configs/TABLE.py ROW --seed S      (one run; what `run` starts)
    jaxkd report one configs/TABLE.py ROW --seed 0,1,2  (three seeds packed in one program)

``run`` trains the teacher stages, then every row for every seed (workdirs under
``--workroot``, results JSON under ``--results-dir/<table>/runs/``), then renders; a run whose
record exists counts as done unless ``--rerun``. ``render`` rebuilds
``<results-dir>/<table>/REPORT.md`` and its figures from the JSON alone, byte for byte the same
each time. The default directories are relative to the current directory, never inside the
installed package; ``--smoke`` runs (a few steps on mock data) have their own, so they never
mix with real results. ``--pack S`` trains up to S seeds of a row in one vmapped program
(`jaxkd.train.packed`), writing the same workdirs and records as separate runs.
"""
from __future__ import annotations

import argparse
import os
import sys

__all__ = ["HELP", "RESULTS_DIR", "SMOKE_RESULTS_DIR", "SMOKE_WORKROOT", "WORKROOT",
           "add_arguments", "main", "resolve_paths"]

HELP = "run a paper table's rows for several seeds and render its markdown report"

# Relative to the current directory when a command runs: a pip-installed jaxkd must not
# write into site-packages, and a checkout's committed results are in ./experiments/results.
RESULTS_DIR = os.path.join("experiments", "results")
WORKROOT = os.path.join("workdirs", "tables")  # git-ignored in a checkout
SMOKE_RESULTS_DIR = os.path.join("workdirs", "smoke", "results")
SMOKE_WORKROOT = os.path.join("workdirs", "smoke", "tables")

_PATHS = ("Relative paths, the defaults included, are relative to the current directory, not "
          "to the installed package.")


def resolve_paths(*, smoke: bool, results_dir: str | None = None,
                  workroot: str | None = None) -> tuple[str, str]:
  """``(results_dir, workroot)`` as absolute paths: the given ones, else the defaults.

  The defaults are ``./experiments/results`` and ``./workdirs/tables`` under the current
  directory, or, for smoke runs, ``./workdirs/smoke/results`` and ``./workdirs/smoke/tables``.
  """
  default_results, default_workroot = ((SMOKE_RESULTS_DIR, SMOKE_WORKROOT) if smoke
                                       else (RESULTS_DIR, WORKROOT))
  return (os.path.abspath(results_dir or default_results),
          os.path.abspath(workroot or default_workroot))


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
  run = sub.add_parser(
      "run", help="train a table's teacher stages and rows, then render",
      description="Trains a table's teacher stages, then every row for every seed, then "
      "renders its report. A run whose record already exists in --results-dir counts as "
      "done (a checkout's committed records included): --rerun trains the chosen rows and "
      "seeds again, and a new --results-dir starts from nothing. " + _PATHS)
  one = sub.add_parser("one", help="train and collect one row for one seed",
                       description="Trains one row for one seed, resuming its workdir. " + _PATHS)
  render = sub.add_parser("render", help="write REPORT.md and figures from the results JSON",
                          description="Writes <results-dir>/<table>/REPORT.md and its figures "
                          "from the result records alone. " + _PATHS)
  for p in (run, one, render):
    p.add_argument("config", help="a table config, e.g. configs/fashion_mnist.py")
    p.add_argument("--results-dir", default=None,
                   help=f"results root: records go to DIR/<table>/runs/<row>/s<seed>.json, the "
                   f"report to DIR/<table>/REPORT.md (default: ./{RESULTS_DIR} under the "
                   f"current directory; with --smoke ./{SMOKE_RESULTS_DIR})")
  for p in (run, one):
    p.add_argument("--smoke", action="store_true",
                   help="the rows' smoke variants (a few steps of a tiny model on mock data), "
                   "with their own workdirs and results, apart from real ones")
    p.add_argument("--workroot", default=None,
                   help=f"where run workdirs go (default: ./{WORKROOT} under the current "
                   f"directory; with --smoke ./{SMOKE_WORKROOT})")
  render.add_argument("--smoke", action="store_true",
                      help=f"render the smoke results (./{SMOKE_RESULTS_DIR} unless "
                      "--results-dir)")
  run.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="e.g. 0,1,2 (default)")
  run.add_argument("--workers", type=int, default=1,
                   help="subprocesses at once, a packed group of seeds counting as one "
                   "(default 1)")
  run.add_argument("--pack", type=int, default=1, metavar="S",
                   help="train up to S seeds of a row in one subprocess and one vmapped "
                   "program (jaxkd.train.packed), each seed with the workdir and record its "
                   "separate run would write (equal to it: 4.4e-16 in float64 in the tests); "
                   "teacher stages and rows with init_from run one seed a job; refused by "
                   "name for what cannot be packed (streamed data, several processes, "
                   "steps_per_dispatch > 1). Default 1: every seed its own run")
  run.add_argument("--rows", default="", help="only these rows (comma-separated names)")
  run.add_argument("--rerun", action="store_true",
                   help="train the chosen rows (all without --rows) and seeds again even where "
                   "records exist: their workdirs are deleted and their records overwritten")
  one.add_argument("row", help="the row (or teacher stage) name")
  one.add_argument("--seed", type=_seeds, required=True,
                   help="the seed; several separated by commas train packed in one program")


def _check_records(config: str, results_dir: str, smoke: bool) -> None:
  """Raises FileNotFoundError, saying where records are and how to get them, when none are."""
  from jaxkd.reporting import render, runner  # pylint: disable=import-outside-toplevel
  _, table = runner.load_table(config)
  if render.load_records(results_dir, table):
    return
  where = os.path.join(results_dir, table.name, "runs")
  if smoke:
    raise FileNotFoundError(f"no smoke result records under {where}; run `jaxkd report run "
                            f"{config} --smoke` first")
  smoke_dir, _ = resolve_paths(smoke=True)
  if render.load_records(smoke_dir, table):
    raise FileNotFoundError(
        f"no result records under {where}. This table's smoke results are under "
        f"{os.path.join(smoke_dir, table.name, 'runs')}: render them with `jaxkd report "
        f"render {config} --smoke`")
  raise FileNotFoundError(f"no result records under {where}; run `jaxkd report run {config}` "
                          "first (or with --smoke for a few steps on mock data), or point "
                          "--results-dir at the results root that holds them")


def main(args: argparse.Namespace) -> int:
  """Runs the chosen subcommand; returns the exit status."""
  from jaxkd.reporting import runner  # pylint: disable=import-outside-toplevel
  try:
    results_dir, workroot = resolve_paths(smoke=args.smoke, results_dir=args.results_dir,
                                          workroot=getattr(args, "workroot", None))
    failed = []
    if args.report_command == "one":
      runner.run_seeds(args.config, args.row, args.seed, workroot=workroot,
                       results_dir=results_dir, smoke=args.smoke)
      return 0
    if args.report_command == "run":
      if args.workers < 1:
        raise ValueError(f"--workers={args.workers}: must be >= 1")
      if args.pack < 1:
        raise ValueError(f"--pack={args.pack}: must be >= 1 (1: every seed its own run)")
      rows = [r for r in args.rows.split(",") if r] or None
      failed = runner.run_table(args.config, seeds=args.seeds, workroot=workroot,
                                results_dir=results_dir, workers=args.workers, rows=rows,
                                smoke=args.smoke, rerun=args.rerun, pack=args.pack,
                                log=lambda m: print(m, flush=True))
      if failed:
        print(f"jaxkd report: {len(failed)} runs failed or were skipped: {', '.join(failed)}",
              file=sys.stderr)
    _check_records(args.config, results_dir, args.smoke)
    from jaxkd.reporting import render  # pylint: disable=import-outside-toplevel
    path = render.render(args.config, results_dir=results_dir)
    print(f"wrote {path}")
    return 1 if failed else 0
  except (FileNotFoundError, KeyError, ValueError) as err:
    print(f"jaxkd report: error: {err}", file=sys.stderr)
    return 2

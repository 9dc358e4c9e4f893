"""Runs a table: teacher stages first, then every row for several seeds, each in a subprocess.

A run's workdir is ``<workroot>/<table>/<row>/s<seed>``; its result record is
``<results>/<table>/runs/<row>/s<seed>.json``. A run whose record exists is not run again, so
an interrupted table resumes where it stopped (and each run resumes from its checkpoints);
``rerun`` trains chosen runs again from scratch. Beside each workdir, ``s<seed>.record`` names
the record the workdir was trained for: a finished workdir trained for another results
directory is trained again, so a fresh results directory reproduces a table rather than
copying old checkpoints' numbers.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

from jaxkd import config as config_lib
from jaxkd import rundir
from jaxkd.reporting._table import Row, Table

__all__ = ["Job", "job_config", "load_table", "pack_jobs", "plan", "result_path", "run_one",
           "run_seeds", "run_table", "workdir"]


def load_table(config_path: str):
  """``(module, table)`` of a table config file (it defines ``get_config`` and ``table``)."""
  module = config_lib.load_module(config_path, needs="table", label="config")
  return module, module.table()


def workdir(workroot: str, table: Table, row: str, seed: int) -> str:
  return os.path.join(workroot, table.name, row, f"s{seed}")


def result_path(results_dir: str, table: Table, row: str, seed: int) -> str:
  return os.path.join(results_dir, table.name, "runs", row, f"s{seed}.json")


def _claim_path(run_dir: str) -> str:
  """The file beside a workdir naming the record it is trained for."""
  return run_dir + ".record"


def _trained_for_elsewhere(run_dir: str, record: str) -> bool:
  """Whether ``run_dir`` holds a finished run whose record belongs to another results dir."""
  if not os.path.isfile(rundir.RunDir(run_dir).summary):
    return False  # nothing there, or an interrupted run: resuming it is the same training
  try:
    with open(_claim_path(run_dir)) as f:
      return f.read().strip() != os.path.abspath(record)
  except FileNotFoundError:
    return True


@dataclasses.dataclass(frozen=True)
class Job:
  """One run: a row (or teacher stage) and a seed, after the jobs named in ``needs``; or,
  with ``packed``, the runs of that row for the seeds ``packed`` in one program (`pack_jobs`).
  """
  row: Row
  seed: int
  needs: tuple[str, ...] = ()
  packed: tuple[int, ...] = ()

  @property
  def seeds(self) -> tuple[int, ...]:
    return self.packed or (self.seed,)

  @property
  def key(self) -> str:
    """``row/s0`` (``row/s0+s1`` for packed seeds)."""
    return f"{self.row.name}/" + "+".join(f"s{s}" for s in self.seeds)

  @property
  def keys(self) -> tuple[str, ...]:
    """The keys of the runs it trains (`plan`'s ``row/s<seed>``)."""
    return tuple(f"{self.row.name}/s{s}" for s in self.seeds)


def plan(table: Table, seeds: Sequence[int], rows: Optional[Sequence[str]] = None) -> list[Job]:
  """The jobs of a table in order: the teacher stages the chosen rows need, then the rows."""
  chosen = [table.row(name) for name in rows] if rows else list(table.rows)
  # Rows whose runs initialise chosen rows (``Row.init_from``) run first, with the same seeds.
  starts = {r.init_from for r in chosen if r.init_from}
  while starts - {r.name for r in chosen}:
    chosen = [table.row(n) for n in sorted(starts - {r.name for r in chosen})] + chosen
    starts = {r.init_from for r in chosen if r.init_from}
  needed = {t for r in chosen for t in r.teacher_stages}
  needed |= {t for n in needed for t in table.row(n).teacher_stages}
  jobs = [Job(t, table.teacher_seed, _teacher_needs(t, table))
          for t in table.teachers if t.name in needed or t in chosen]
  # Seed-major order: a partial table already has every row once.
  students = [row for row in chosen if row not in table.teachers]
  for seed in sorted({s for row in students for s in (row.seeds or seeds)}):
    for row in students:
      if seed in (row.seeds or seeds):
        needs = _teacher_needs(row, table)
        needs += (f"{row.init_from}/s{seed}",) if row.init_from else ()
        jobs.append(Job(row, seed, needs))
  return jobs


def _teacher_needs(row: Row, table: Table) -> tuple[str, ...]:
  return tuple(f"{t}/s{table.teacher_seed}" for t in row.teacher_stages)


def job_config(module, table: Table, row: Row, seed: int, *, workroot: str, smoke: bool = False):
  """The config of one run of ``row``: its argument's config with ``seed``, the teacher
  stages' workdirs (several: an ensemble, ``teacher.workdir`` a comma-separated list) and the
  ``init_from`` row's workdir."""
  config = module.get_config(row.arg + (",smoke" if smoke else ""))
  config.seed = seed
  if row.teacher:
    config.teacher.workdir = ",".join(workdir(workroot, table, t, table.teacher_seed)
                                      for t in row.teacher_stages)
  if row.init_from:
    config.model.init_from = workdir(workroot, table, row.init_from, seed)
  return config


def pack_jobs(jobs: Sequence[Job], pack: int, table: Table) -> list[Job]:
  """``jobs`` with the runs of each row grouped by up to ``pack`` seeds, one packed job each,
  in the order of each group's first run; teacher stages and rows that start from another
  row's runs (``init_from``) stay one run a job."""
  if pack == 1:
    return list(jobs)
  groups, out = {}, []
  for job in jobs:
    if job.row in table.teachers or job.row.init_from:
      out.append([job])
      continue
    group = groups.get(job.row.name)
    if group is None or len(group) == pack:
      group = groups[job.row.name] = []
      out.append(group)
    group.append(job)
  return [group[0] if len(group) == 1 else dataclasses.replace(
      group[0], needs=tuple(dict.fromkeys(n for j in group for n in j.needs)),
      packed=tuple(j.seed for j in group)) for group in out]


def run_one(config_path: str, row_name: str, seed: int, *, workroot: str, results_dir: str,
            smoke: bool = False) -> dict:
  """Trains one row for one seed (resuming its workdir) and writes its result record."""
  return run_seeds(config_path, row_name, [seed], workroot=workroot, results_dir=results_dir,
                   smoke=smoke)[0]


def run_seeds(config_path: str, row_name: str, seeds: Sequence[int], *, workroot: str,
              results_dir: str, smoke: bool = False) -> list[dict]:
  """Trains one row for ``seeds`` and writes their result records: one seed as `run_one`,
  several packed in one program (`jaxkd.train.packed.train_and_evaluate`), each in the
  workdir and with the record its own run would have."""
  from jaxkd.reporting import _collect  # pylint: disable=import-outside-toplevel
  from jaxkd.train import loop, packed  # pylint: disable=import-outside-toplevel
  from jaxkd.train import run as run_lib  # pylint: disable=import-outside-toplevel
  module, table = load_table(config_path)
  row = table.row(row_name)
  if len(seeds) > 1 and row.init_from:
    raise run_lib.ConfigError(
        f"row {row.name!r} starts each seed from its own run of row {row.init_from!r} "
        "(model.init_from), which packed seeds cannot; allowed: its seeds one by one (--pack 1)")
  config = job_config(module, table, row, seeds[0], workroot=workroot, smoke=smoke)
  run_dirs = [workdir(workroot, table, row.name, seed) for seed in seeds]
  paths = [result_path(results_dir, table, row.name, seed) for seed in seeds]
  for run_dir, path in zip(run_dirs, paths):
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)
    with open(_claim_path(run_dir), "w") as f:
      f.write(os.path.abspath(path) + "\n")
  if len(seeds) == 1:
    summaries = [loop.train_and_evaluate(config, run_dirs[0])]
  else:  # `config` comes back resolved, as the loop's (its data defaults filled in)
    summaries = packed.train_and_evaluate(config, run_dirs, seeds)
  configs = [config] if len(seeds) == 1 else [copy.deepcopy(config) for _ in seeds]
  for seed, seeded in zip(seeds, configs):
    seeded.seed = seed
  is_teacher = row in table.teachers
  classes = table.projection_classes if (is_teacher or row.name in table.projection_rows) \
      else None
  records = []
  for seed, config, run_dir, path, summary in zip(seeds, configs, run_dirs, paths, summaries):
    with run_lib.precision(config):  # a float64 run is read back in float64
      collected = _collect.collect(config, run_dir, summary, projection_classes=classes,
                                   # A smoke run (mock data, a few steps) has no validation
                                   # split to select on.
                                   report_split=None if smoke else table.report_split)
    record = {"table": table.name, "row": row.name, "seed": seed, "arg": row.arg,
              "teacher": row.teacher, "smoke": smoke,
              "config": json.loads(config.to_json()), **collected}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(record, f, indent=1, sort_keys=True)
      f.write("\n")
    os.replace(path + ".tmp", path)
    records.append(record)
  return records


def _command(config_path, job, *, workroot, results_dir, smoke):
  command = [sys.executable, "-m", "jaxkd.cli", "report", "one", config_path, job.row.name,
             "--seed", ",".join(str(s) for s in job.seeds), "--workroot", workroot,
             "--results-dir", results_dir]
  return command + (["--smoke"] if smoke else [])


def _duration(seconds: float) -> str:
  if seconds < 90:
    return f"{seconds:.0f} s"
  if seconds < 90 * 60:
    return f"{seconds / 60:.0f} min"
  return f"{seconds / 3600:.1f} h"


class _Progress:
  """``n/N runs done`` and an ETA from the wall time of the runs finished so far."""

  def __init__(self, total: int):
    self.total, self.finished, self.ran, self.start = total, 0, 0, time.time()

  def step(self, ran: bool) -> str:
    self.finished += 1
    self.ran += ran
    left = self.total - self.finished
    if not left:
      return f"{self.finished}/{self.total} runs done in {_duration(time.time() - self.start)}"
    if not self.ran:
      return f"{self.finished}/{self.total} runs done"
    eta = (time.time() - self.start) / self.ran * left
    return f"{self.finished}/{self.total} runs done, ETA {_duration(eta)}"


def _fresh_starts(jobs, table, *, workroot, results_dir, rerun, rows, log) -> dict[str, str]:
  """Job key -> why it must start from an empty workdir (``rerun`` or a stale workdir)."""
  fresh = {}
  for job in jobs:
    run_dir = workdir(workroot, table, job.row.name, job.seed)
    record = result_path(results_dir, table, job.row.name, job.seed)
    if rerun and (not rows or job.row.name in rows):
      if os.path.isfile(record) or os.path.isdir(run_dir):
        fresh[job.key] = (f"--rerun: its workdir {run_dir} is deleted and it trains again; "
                          f"its record {record} is overwritten when it finishes")
    elif not os.path.isfile(record) and _trained_for_elsewhere(run_dir, record):
      fresh[job.key] = (f"its workdir {run_dir} holds a finished run made for another "
                        f"results directory; it is deleted and the run trains again")
  for key, why in fresh.items():
    log(f"{key}: {why}")
  return fresh


def run_table(config_path: str, *, seeds: Sequence[int], workroot: str, results_dir: str,
              workers: int = 1, rows: Optional[Sequence[str]] = None, smoke: bool = False,
              rerun: bool = False, pack: int = 1, log: Callable[[str], None] = print
              ) -> list[str]:
  """Runs the jobs of `plan` with up to ``workers`` subprocesses at once.

  A job starts when the jobs it needs have finished; a failed job's dependants are skipped.
  Each job's output goes to ``<workdir>.log``. A job whose record exists counts as done,
  unless ``rerun``: then the chosen ``rows`` (every job without ``rows``) train again from an
  empty workdir and overwrite their records. ``pack`` > 1 trains up to ``pack`` seeds of a
  row in one subprocess and one packed program (`pack_jobs`; its output goes to
  ``<row workdirs>/s0+s1.log``), writing the records and workdirs the separate runs would.
  Progress is logged as ``n/N runs done`` with an ETA from the runs finished so far.

  Returns:
    The keys of the runs that failed or were skipped (empty when all succeeded).
  """
  _, table = load_table(config_path)
  jobs = plan(table, seeds, rows)
  fresh = _fresh_starts(jobs, table, workroot=workroot, results_dir=results_dir, rerun=rerun,
                        rows=rows, log=log)
  done = {j.key for j in jobs if j.key not in fresh
          and os.path.isfile(result_path(results_dir, table, j.row.name, j.seed))}
  pending = [j for j in jobs if j.key not in done]
  running, failed = {}, []
  log(f"{table.name}: {len(jobs)} runs, {len(done)} already done (their records are in "
      f"{os.path.join(results_dir, table.name, 'runs')}"
      + ("; --rerun trains them again, a new --results-dir starts from nothing" if done else "")
      + f"), {len(pending)} to run")
  progress = _Progress(len(pending))
  pending = pack_jobs(pending, pack, table)
  steps = lambda job, ran: [progress.step(ran=ran) for _ in job.keys][-1]
  while pending or running:
    for job in list(pending):
      if len(running) >= workers:
        break
      if any(n in failed for n in job.needs):
        pending.remove(job)
        failed.extend(job.keys)
        log(f"skip {job.key}: its teacher failed; {steps(job, False)}"
            if set(_teacher_needs(job.row, table)) & set(failed) else
            f"skip {job.key}: its init_from run failed; {steps(job, False)}")
      elif all(n in done for n in job.needs):
        pending.remove(job)
        for key, seed in zip(job.keys, job.seeds):
          if key in fresh:
            shutil.rmtree(workdir(workroot, table, job.row.name, seed), ignore_errors=True)
        out_path = _log_path(workroot, table, job)
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        out = open(out_path, "a")  # pylint: disable=consider-using-with
        process = subprocess.Popen(_command(config_path, job, workroot=workroot,
                                            results_dir=results_dir, smoke=smoke),
                                   stdout=out, stderr=subprocess.STDOUT)
        running[job.key] = (job, process, out, time.time())
        log(f"start {job.key}")
    if not running and pending and not any(all(n in done for n in j.needs) for j in pending):
      raise RuntimeError(f"jobs {[j.key for j in pending]} wait on jobs outside the plan")
    time.sleep(0.5)
    for key, (job, process, out, start) in list(running.items()):
      if process.poll() is None:
        continue
      out.close()
      del running[key]
      ok = process.returncode == 0
      (done.update if ok else failed.extend)(job.keys)
      log(f"{'done' if ok else 'FAILED'} {key} in {time.time() - start:.0f} s"
          + ("" if ok else f" (see {_log_path(workroot, table, job)})")
          + f"; {steps(job, True)}")
  return failed


def _log_path(workroot: str, table: Table, job: Job) -> str:
  """Where a job's output goes: ``<workdir>.log``, for packed seeds ``<row>/s0+s1.log``."""
  return os.path.join(workroot, table.name, job.row.name,
                      job.key.split("/", 1)[1] + ".log")

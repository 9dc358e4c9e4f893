"""What a run writes for people: ``metrics.jsonl``, TensorBoard events, provenance, the console.

Only process 0 writes or prints. ``metrics.jsonl`` holds one JSON object per log step and per
evaluation; the same scalars go to TensorBoard event files in ``<workdir>/tensorboard/``
through tensorboardX, which needs no TensorFlow (``tensorboard --logdir WORKDIR/tensorboard``).
`provenance` records what produced a run (versions, git commit, devices, the method's resolved
hyperparameters) for ``run.json`` and ``summary.json``. `Console` is what a run prints on stderr.
"""
from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from typing import Any

import jax
import numpy as np
import tensorboardX
import tqdm

import jaxkd
from jaxkd import rundir

__all__ = ["Console", "MetricsLog", "format_epoch", "provenance", "write_json"]

# The distributions whose versions decide a run's numbers.
_VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint")


def write_json(path: str, obj: Any) -> None:
  """Writes ``obj`` to ``path`` atomically (process 0 only)."""
  if jax.process_index() == 0:
    with open(path + ".tmp", "w") as f:
      json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def _step_of(line: str) -> int | None:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


class MetricsLog:
  """Appends records to ``metrics.jsonl`` and their scalars to TensorBoard (process 0 only).

  A resumed run first drops what the interrupted one logged after the restored checkpoint:
  the lines of ``metrics.jsonl`` past ``resume_step`` (and a line torn by a kill mid-write),
  and in TensorBoard the events from ``resume_step + 1`` on (its new event file starts with a
  purge, which TensorBoard applies to the older files), so both show each step once.
  """

  def __init__(self, workdir: str, resume_step: int):
    self.path = rundir.RunDir(workdir).metrics
    self.active = jax.process_index() == 0
    self._events = None
    if not self.active:
      return
    if os.path.exists(self.path):
      with open(self.path) as f:
        kept = [line for line in f if _step_of(line) is not None and _step_of(line) <= resume_step]
      with open(self.path + ".tmp", "w") as f:
        f.writelines(kept)
      os.replace(self.path + ".tmp", self.path)
    # The suffix keeps two starts within one second (file names hold seconds) apart and in
    # order.
    self._events = tensorboardX.SummaryWriter(
        rundir.RunDir(workdir).tensorboard, purge_step=resume_step + 1,
        filename_suffix=f".start{resume_step:010d}")

  def write(self, record: dict) -> None:
    """Logs ``record`` (``step``, ``epoch`` and scalars such as ``train/loss``) at its step."""
    if not self.active:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for key, value in record.items():
      if key not in ("step", "epoch"):  # TensorBoard's step axis; an eval repeats the epoch
        self._events.add_scalar(key, value, record["step"])

  def flush(self) -> None:
    """Writes the pending TensorBoard events (at each checkpoint)."""
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    if self._events is not None:
      self._events.close()
      self._events = None


def _git(*args: str) -> str | None:
  """The output of a git command in the package's directory, or None; never raises."""
  try:
    out = subprocess.run(["git", *args], cwd=os.path.dirname(os.path.abspath(jaxkd.__file__)),
                         capture_output=True, text=True, timeout=10, check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  return out.stdout.strip() if out.returncode == 0 else None


@functools.lru_cache(maxsize=None)
def _source() -> tuple[str | None, bool | None]:
  """``(commit, dirty)`` of the git checkout holding this jaxkd, or ``(None, None)``.

  An installed copy that merely sits inside some other git repository (a virtualenv in a
  project) is not tracked by it, and gets None.
  """
  if _git("ls-files", "--error-unmatch", "__init__.py") is None:
    return None, None
  commit = _git("rev-parse", "HEAD")
  status = _git("status", "--porcelain", "--untracked-files=no")
  return commit or None, None if status is None else bool(status)


def _version(distribution: str) -> str | None:
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return None


def _plain(value: Any) -> Any:
  """``value`` as JSON: numbers, strings, lists, dicts; a schedule or object as its repr."""
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (np.ndarray, np.generic, jax.Array)) and np.ndim(value) == 0:
    return np.asarray(value).item()
  return repr(value)


def provenance(run) -> dict:
  """What produced a run: jaxkd version and git commit, library versions, devices, hparams.

  Args:
    run: the `jaxkd.train.Run`.

  Returns:
    ``jaxkd_version``; ``git_commit`` and ``git_dirty`` of the source tree (None when jaxkd
    is not a git checkout); ``versions`` of jax, jaxlib, flax, optax and orbax-checkpoint;
    ``python``; ``devices``, ``device_kind`` and ``num_processes``; ``method`` and its
    resolved ``hparams`` (derived values filled in, schedules as their repr).
  """
  commit, dirty = _source()
  devices = list(run.mesh.devices.flat)
  return {"jaxkd_version": jaxkd.__version__, "git_commit": commit, "git_dirty": dirty,
          "versions": {name: _version(name) for name in _VERSIONED},
          "python": platform.python_version(), "devices": [str(d) for d in devices],
          "device_kind": devices[0].device_kind, "num_processes": jax.process_count(),
          "method": run.objective.name, "hparams": _plain(run.objective.hparams)}


def format_epoch(epoch: float) -> str:
  """An epoch count for people: ``3``, ``0.32``, ``4.55``."""
  return f"{round(epoch, 2):g}"


def _number(value: float) -> str:
  return f"{value:.4g}"


class Console:
  """What a run prints on stderr (process 0 only).

  On a terminal a tqdm bar shows the progress and the other lines are written above it;
  otherwise (a log file, a batch job) there is no bar and every log step prints one plain
  line, so a log holds no carriage-return updates.
  """

  def __init__(self, total_steps: int):
    self.total_steps = total_steps
    self.active = jax.process_index() == 0
    self.tty = sys.stderr.isatty()
    self._bar = None
    # The task's words (`header`): what a second's throughput counts, and its own numbers.
    self.unit, self.result_words = "examples", {}

  def line(self, text: str) -> None:
    if not self.active:
      return
    if self._bar is not None:
      self._bar.write(text, file=sys.stderr)
    else:
      print(text, file=sys.stderr, flush=True)

  def header(self, run, *, num_params: int, workdir: str) -> None:
    """The run in three lines: method and model; data; steps, devices, workdir."""
    data, devices = run.train_data, list(run.mesh.devices.flat)
    what, batch = run.task.task.describe(run)  # the task's words
    self.unit, self.result_words = run.task.task.unit, run.task.task.result_words
    plural = lambda n, word: f"{n} {word}{'' if n == 1 else 's'}"
    self.line(f"jaxkd train: method {run.objective.name}, model {run.config.model.name} "
              f"({num_params:,} parameters)")
    self.line(f"  data {run.config.data.name}: {data.num_examples} train / "
              f"{run.eval_data.num_examples} eval {what}")
    self.line(f"  {plural(run.total_steps, 'step')} "
              f"({format_epoch(run.total_steps / run.steps_per_epoch)} epochs of "
              f"{run.steps_per_epoch} steps, {batch}) on "
              f"{plural(len(devices), 'device')} ({devices[0].device_kind}), "
              f"{plural(jax.process_count(), 'process')}; workdir {workdir}")

  def start(self, step: int) -> None:
    """Starts the progress bar at ``step`` (on a terminal)."""
    if self.active and self.tty:
      self._bar = tqdm.tqdm(total=self.total_steps, initial=step, unit="step",
                            dynamic_ncols=True, file=sys.stderr)

  def step(self) -> None:
    if self._bar is not None:
      self._bar.update(1)

  def train(self, record: dict, *, prefix: str = "") -> None:
    """A log step: the bar's postfix on a terminal, one plain line otherwise (``prefix``:
    which of several packed runs it is)."""
    if self._bar is not None:
      self._bar.set_postfix(loss=_number(record["train/loss"]), lr=_number(record["train/lr"]),
                            **{f"{self.unit}_s": f"{record['images_per_sec']:.0f}"})
      return
    keys = ["train/loss"] + [k for k in record if k.startswith("train/") and k != "train/loss"
                             and (k != "train/nonfinite" or record[k])]
    terms = [f"{key.split('/', 1)[1]} {_number(record[key])}" for key in keys]
    self.line(f"{prefix}step {record['step']}/{self.total_steps} (epoch "
              f"{format_epoch(record['epoch'])}): {', '.join(terms)}, "
              f"{record['images_per_sec']:.0f} {self.unit}/s")

  def evaluation(self, record: dict, lr: float, *, prefix: str = "") -> None:
    self.line(f"{prefix}epoch {format_epoch(record['epoch'])} (step {record['step']}): top-1 "
              f"{record['eval/top1']:.4f}, NLL {record['eval/nll']:.4f}, ECE "
              f"{record['eval/ece']:.4f}, lr {_number(lr)}"
              + "".join(", " + words.format(record[f"eval/{key}"])
                        for key, words in self.result_words.items() if f"eval/{key}" in record))

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None

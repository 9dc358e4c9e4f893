"""Which config may start in a workdir that already holds a run: the same one, or a few changes.

A workdir's ``config.json`` is the config its checkpoints were trained with. A start with
another config is refused, except for the keys that cannot change the numbers (`OPERATIONAL`:
logging, checkpoint frequency and retention, the evaluation batch, ``train.extend``, steps per
dispatch), and,
with ``train.extend=True``, a longer ``train.num_steps`` or ``train.num_epochs`` for a run
that finished. Accepted changes take effect from the resumed step on; the loop appends them to
``config_changes`` in ``run.json`` (``{"step", "changes": {key: [old, new]}}``), so the
workdir keeps the history of its config.
"""
from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from jaxkd import rundir
from jaxkd.config import ConfigError, defaults

__all__ = ["OPERATIONAL", "check_config", "diff_keys"]

# The training steps never read these: the parameters after any step are the same bit for bit.
# (A different eval_batch_size sums the evaluation in another order: NLL and ECE may move in
# the last float bits, top-1 not. steps_per_dispatch runs the same steps in an XLA loop: bit
# for bit without BatchNorm; with it, XLA may fuse the loop's body differently, the last bit.)
OPERATIONAL = ("train.checkpoint_every_steps", "train.eval_batch_size", "train.extend",
               "train.keep_checkpoints", "train.log_every_steps", "train.steps_per_dispatch",
               "data.num_workers", "data.data_dir", "distributed_timeout_s")
_LENGTH = ("train.num_epochs", "train.num_steps")


def diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
  """The dotted keys whose values differ between two nested dicts."""
  if isinstance(old, dict) and isinstance(new, dict):
    return [k for key in sorted(set(old) | set(new))
            for k in diff_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
  return [] if old == new else [prefix.rstrip(".")]


def _get(tree: dict, key: str) -> Any:
  for part in key.split("."):
    tree = tree.get(part) if isinstance(tree, dict) else None
  return tree


def _with_defaults(base: Any, saved: Any) -> Any:
  """``saved`` with the keys it lacks (added to jaxkd after it was written) at their defaults."""
  if not (isinstance(base, dict) and isinstance(saved, dict)):
    return saved
  return {k: _with_defaults(base.get(k), saved[k]) if k in saved else base[k]
          for k in set(base) | set(saved)}


def _total_steps(train: dict, steps_per_epoch: int) -> int:
  return train["num_steps"] if train["num_steps"] > 0 else train["num_epochs"] * steps_per_epoch


def check_config(config: ml_collections.ConfigDict, workdir: str, *, steps_per_epoch: int,
                 latest_step: int | None) -> dict:
  """The changes of ``config`` against the run in ``workdir``, if they are allowed.

  Args:
    config: the config starting in ``workdir``.
    workdir: the run's directory (its ``config.json``, when there is one).
    steps_per_epoch: the run's steps per epoch (the same for both configs when allowed).
    latest_step: the newest checkpoint's step in ``workdir``, or None.

  Returns:
    ``{key: [old, new]}`` for each changed key; empty for a new workdir or the same config.

  Raises:
    ConfigError: a change of a key outside `OPERATIONAL`, or a change of the run's length
      that is not the extension of a finished run with ``train.extend=True``.
  """
  path = rundir.RunDir(workdir).config
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    old = _with_defaults(json.loads(defaults.base_config().to_json()), json.load(f))
  new = json.loads(config.to_json())
  changed = diff_keys(old, new)
  refused = [k for k in changed if k not in OPERATIONAL + _LENGTH]
  if refused:
    raise ConfigError(
        f"workdir={workdir!r} holds a run of another config (differs in {', '.join(refused)}); "
        "use a new workdir, or the same config to resume (a resume may change only "
        f"{', '.join(OPERATIONAL)}, and extend a finished run's length)")
  if any(k in _LENGTH for k in changed):
    _check_extension(old, new, workdir, steps_per_epoch=steps_per_epoch,
                     latest_step=latest_step)
  return {k: [_get(old, k), _get(new, k)] for k in changed}


def _check_extension(old: dict, new: dict, workdir: str, *, steps_per_epoch: int,
                     latest_step: int | None) -> None:
  before = _total_steps(old["train"], steps_per_epoch)
  after = _total_steps(new["train"], steps_per_epoch)
  if after == before:  # e.g. num_epochs changed while num_steps wins
    return
  asked = ", ".join(f"config.{k}={_get(new, k)!r}" for k in _LENGTH
                    if _get(old, k) != _get(new, k))
  where = f"the {before}-step run in workdir={workdir!r}"
  if after < before:
    raise ConfigError(
        f"{asked}: {after} steps, fewer than {where}; a run cannot be shortened: use a new "
        "workdir (a finished run's earlier checkpoints are teacher.step's to choose)")
  if latest_step is None or latest_step < before:
    raise ConfigError(
        f"{asked}: {after} steps, more than {where}, which stopped at step {latest_step or 0}; "
        "only a finished run can be extended: finish it with its own config first, then "
        "rerun with train.extend=True, or use a new workdir")
  if not new["train"]["extend"]:
    raise ConfigError(
        f"{asked}: {after} steps, more than {where}, which finished; set train.extend=True "
        f"to continue it from step {before} to {after} (the learning-rate schedule is rebuilt "
        "for the new length), or use a new workdir")

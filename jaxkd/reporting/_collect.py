"""From a finished run's workdir to the JSON record the report is built from.

The run's checkpoints are evaluated through the engine's one prediction path
(`jaxkd.train.Trainer.predict`: sharded over the devices, streamed when the run's data is) by
its task's ``report`` evaluators (`jaxkd.tasks`).

The record holds what the report and its figures need and nothing machine-specific beyond
what the summary states: best/last metrics, per-epoch test curves, the training-loss curve,
the final model's reliability statistics, its stability (Shen et al.'s S of their Eq. 2, and
our feature variant) and, for chosen rows, the three-class projection of its penultimate
features.
"""
from __future__ import annotations

import copy
import json
import os
import platform
from typing import Optional, Sequence

import jax
import numpy as np

from jaxkd import analysis
from jaxkd import tasks
from jaxkd.train import checkpoint as ckpt_lib
from jaxkd.train import trainer as trainer_lib

__all__ = ["collect", "machine"]

_DIGITS = 6  # decimals kept in the JSON: far below seed noise, keeps files small and stable


def _round(value):
  if isinstance(value, dict):
    return {k: _round(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_round(v) for v in value]
  if isinstance(value, (float, np.floating)):
    return round(float(value), _DIGITS)
  if isinstance(value, np.integer):
    return int(value)
  return value


def machine() -> str:
  """The device kind and host this process computes on, in words."""
  device = jax.devices()[0]
  kind = getattr(device, "device_kind", device.platform)
  return (f"{device.platform}: {kind} x{jax.device_count()}, "
          f"host {platform.machine()} with {os.cpu_count()} cores")


def _head_templates(params, feature_dim: int, num_classes: int) -> np.ndarray:
  """The final linear layer's weight rows ``[K, C]`` (the classifier kernel, transposed)."""
  found = []

  def visit(path, leaf):
    if path and getattr(path[-1], "key", None) == "kernel" and leaf.shape == (feature_dim,
                                                                             num_classes):
      found.append(np.asarray(leaf))

  jax.tree_util.tree_map_with_path(visit, params)
  if len(found) != 1:
    raise ValueError(f"expected one classifier kernel of shape ({feature_dim}, {num_classes}), "
                     f"found {len(found)}")
  return found[0].T


def _evaluate(trainer, variables, evaluators) -> tuple[dict, dict]:
  """The one prediction path (`Trainer.predict`) over the trainer's evaluation split."""
  on_mesh = jax.tree_util.tree_map(lambda x: trainer_lib.replicate(trainer.run.mesh, x),
                                   variables)
  return trainer.evaluate(on_mesh, evaluators)


def _curves(workdir: str) -> dict:
  records = analysis.load_metrics(workdir)
  curves = {}
  for key in ("eval/top1", "eval/nll", "eval/ece", "train/loss"):
    xs, ys = analysis.metric_series(records, key, x="epoch")
    curves[key] = {"epoch": xs.tolist(), "value": ys.tolist()}
  return curves


def collect(config, workdir: str, summary: dict, *,
            projection_classes: Optional[Sequence[int]] = None,
            report_split: Optional[str] = None) -> dict:
  """The result record of a finished run.

  Args:
    config: the run's config.
    workdir: its workdir (``summary.json``, ``metrics.jsonl``, ``checkpoints/``).
    summary: its summary (as returned by ``train_and_evaluate``).
    projection_classes: three class ids to project the final features of, or None.
    report_split: None, or the split (``"test"``) on which a run that selected its best epoch
      on a validation split (``train.keep_best``) is reported (`Table.report_split`).

  Returns:
    A JSON-ready dict: ``summary``, ``curves``, ``final`` (sums of ``classification_metrics``
    of the last checkpoint over the run's evaluation split, ``data.eval_split``, the test split
    unless set; rates included), ``stability`` and ``projection``. ``stability.probabilities``
    is Shen et al.'s S (ICLR 2021, Eq. 2) of ``softmax(z)`` at T = 1 over that split (the
    report prints ``1 - S``, the number of their Table 1); ``stability.features`` is ``analysis.feature_stability`` of the
    L2-normalised penultimate features, our variant, not the paper's. With ``report_split``,
    ``final`` and ``stability`` are of that split, and ``reported`` holds its ``best`` (at the
    checkpoint the validation split selected, ``checkpoints_best/``) and ``last`` metrics,
    with their epochs, in the layout of the summary's. A translation run's record holds the
    per-token ``final`` metrics, ``"task": "translation"`` and no stability or projection
    (they are defined for classifiers).
  """
  variables, step = ckpt_lib.load_variables(workdir)
  if report_split is not None and not config.train.get("keep_best", False):
    raise ValueError(f"report_split={report_split!r} reports the checkpoint a validation split "
                     "selected; the row's config must set train.keep_best=True")
  # The run's own evaluation split unless the table reports another: a sweep on a validation
  # split never touches the test split. Read through the engine's prediction path, streamed
  # when the run's data is.
  config = copy.deepcopy(config)
  if report_split is not None:  # the test split: not one to select a checkpoint on
    config.data.eval_split, config.train.keep_best = report_split, False
  trainer = trainer_lib.build(config)
  run = trainer.run
  evaluators = run.task.task.evaluators(run, "report")
  if projection_classes is not None and "feature_stability" in [e.name for e in evaluators]:
    evaluators += (tasks.class_rows(projection_classes),)
  numbers, totals = _evaluate(trainer, variables, evaluators)
  sums = totals["metrics"]
  final = {"step": int(step), **{k: np.asarray(v).tolist() for k, v in sums.items()},
           **analysis.finalize_metrics(sums)}
  if "stability" not in numbers:  # no classifier (translation): per-token metrics alone
    record = {"task": run.task.task.name, "summary": summary, "curves": _curves(workdir),
              "final": final, "stability": None, "machine": machine()}
    return _round(json.loads(json.dumps(record, default=float)))
  reported = None
  if report_split is not None:
    best_variables, best_step = ckpt_lib.load_variables(workdir, name=ckpt_lib.BEST)
    _, best = _evaluate(trainer, best_variables, (tasks.metrics(),))
    per_epoch = summary["last"]["step"] / summary["last"]["epoch"]
    at = lambda s, n: {**analysis.finalize_metrics(s), "step": int(n), "epoch": n / per_epoch}
    reported = {"split": report_split, "best": at(best["metrics"], best_step),
                "last": at(sums, step)}
  record = {
      "summary": summary,
      **({"reported": reported} if reported else {}),
      "curves": _curves(workdir),
      "final": final,
      "stability": {"features": numbers["features"], "probabilities": numbers["stability"]},
      "machine": machine(),
  }
  if projection_classes is not None:
    rows = numbers["class_rows"]
    features = rows["features"]
    templates = _head_templates(variables["params"], features.shape[1],
                                run.train_data.num_classes)
    projection = analysis.project_three_classes(features, rows["labels"], templates,
                                                projection_classes)
    record["projection"] = {"classes": list(projection.classes),
                            "points": np.round(projection.points, 4).tolist(),
                            "labels": projection.labels.tolist(),
                            "vertices": np.round(projection.vertices, 4).tolist()}
  return _round(json.loads(json.dumps(record, default=float)))

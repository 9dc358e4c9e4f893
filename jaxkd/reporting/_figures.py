"""The report's figures, drawn by `jaxkd.analysis` from the result records alone.

Reliability diagrams pool the seeds (their ECE statistics are additive sums); training
curves are the mean over seeds; projections are of the first seed's final features.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Sequence

import numpy as np

from jaxkd import analysis
from jaxkd import rundir
from jaxkd.reporting import _stats

__all__ = ["curves", "projections", "reliability", "stability_bars"]

_SUM_KEYS = ("correct_top1", "correct_top5", "count", "nll_sum", "ece_bin_count",
             "ece_bin_correct", "ece_bin_confidence")


def reliability(records_by_row: dict, rows: Sequence[str], path: str, *, title: str) -> str:
  """One reliability panel per row, from its final checkpoints' sums pooled over seeds."""
  sums = {}
  for row in rows:
    pooled = {k: sum(np.asarray(r["final"][k]) for r in records_by_row[row]) for k in _SUM_KEYS}
    sums[row] = pooled
  return analysis.reliability_diagram(sums, path, title=title)


def curves(records_by_row: dict, rows: Sequence[str], path: str, *, title: str) -> str:
  """Test top-1, test ECE and training loss against the epoch, mean over seeds per row."""
  keys = ("eval/top1", "eval/ece", "train/loss")
  with tempfile.TemporaryDirectory() as tmp:
    runs = {}
    for row in rows:
      lines = []
      for key in keys:
        series = [r["curves"][key] for r in records_by_row[row]]
        epochs = series[0]["epoch"]
        mean = np.mean([s["value"] for s in series if s["epoch"] == epochs], axis=0)
        lines += [{"step": i, "epoch": e, key: float(v)}
                  for i, (e, v) in enumerate(zip(epochs, mean))]
      runs[row] = os.path.join(tmp, row)
      os.makedirs(runs[row])
      with open(rundir.RunDir(runs[row]).metrics, "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
    return analysis.plot_training_curves(runs, path, keys=keys, x="epoch", title=title)


def projections(records_by_row: dict, rows: Sequence[str], path: str, *,
                class_names: Sequence[str], title: str) -> str:
  """Three-class projections of the penultimate features, one panel per row (first seed)."""
  panels = {}
  for row in rows:
    p = records_by_row[row][0]["projection"]
    panels[row] = analysis.ThreeClassProjection(
        points=np.asarray(p["points"]), labels=np.asarray(p["labels"]),
        vertices=np.asarray(p["vertices"]), classes=tuple(p["classes"]))
  return analysis.plot_projection(panels, path, class_names=class_names, title=title)


def stability_bars(records_by_row: dict, rows: Sequence[str], path: str, *, title: str) -> str:
  """Mean +- std (over seeds) of Shen et al.'s 1 - S of the final model, one bar per row."""
  # pylint: disable=import-outside-toplevel
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  summaries = [_stats.summarize(_stats.metric_values(records_by_row[row],
                                                    "intra_class_variance"))
               for row in rows]
  figure = Figure(figsize=(max(4.0, 0.45 * len(rows) + 1.5), 3.8), layout="constrained")
  FigureCanvasAgg(figure)
  ax = figure.subplots()
  ax.bar(np.arange(len(rows)), [s.mean for s in summaries],
         yerr=[s.std or 0.0 for s in summaries], capsize=3, color="tab:blue")
  ax.set_xticks(np.arange(len(rows)), rows, rotation=60, ha="right")
  ax.set(ylabel="1 - S (Shen Eq. 2)", title=title)
  ax.set_ylim(0.0, None)
  ax.grid(axis="y", alpha=0.3)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, format="png", dpi=120)
  return path

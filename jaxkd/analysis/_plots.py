"""Figures saved as PNG: reliability diagrams, three-class feature projections, curves.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never through
pyplot: no global backend switch (a user's notebook keeps its backend), no figure registry
to leak, and matplotlib is imported only when a figure is drawn, so evaluation code that
imports ``jaxkd.analysis`` does not pay for it.
"""
import os
from typing import Mapping, Optional, Sequence

import numpy as np

from jaxkd.analysis import _classification
from jaxkd.analysis import _curves
from jaxkd.analysis import _projection

__all__ = ["plot_projection", "plot_training_curves", "reliability_diagram"]


def _figure(num_panels, panel_size=(4.0, 4.0)):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  figure = Figure(figsize=(panel_size[0] * num_panels, panel_size[1]), layout="constrained")
  FigureCanvasAgg(figure)
  axes = figure.subplots(1, num_panels, squeeze=False)[0]
  return figure, axes


def _save(figure, path, title):
  if title:
    figure.suptitle(title)
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  figure.savefig(path, format="png", dpi=120)
  return path


def _named(items, is_single, default_name):
  if is_single(items):
    return {default_name: items}
  if not isinstance(items, Mapping) or not items:
    raise ValueError(f"expected one item or a non-empty mapping name -> item, got "
                     f"{type(items).__name__}.")
  return dict(items)


def reliability_diagram(sums, path, *, title: Optional[str] = None) -> str:
  """Saves a reliability diagram (Guo et al., 2017) as PNG.

  Per confidence bin: a bar at the bin's accuracy, a hatched bar from the accuracy to the
  bin's mean confidence (the gap ECE averages), the diagonal of perfect calibration, and
  the ECE, top-1 and NLL in the legend. Empty bins are left blank.

  Args:
    sums: the (accumulated) output of ``classification_metrics``, or a mapping
      ``name -> sums`` to draw one panel per model (e.g. teacher with and without LS).
    path: the PNG file to write.
    title: optional figure title.

  Returns:
    ``path`` as a string.

  References:
    Guo, Pleiss, Sun and Weinberger, "On Calibration of Modern Neural Networks", ICML 2017.
  """
  named = _named(sums, lambda s: isinstance(s, Mapping) and "ece_bin_count" in s, "")
  figure, axes = _figure(len(named))
  for ax, (name, stats) in zip(axes, named.items()):
    rates = _classification.finalize_metrics(stats)
    count = np.asarray(stats["ece_bin_count"], np.float64)
    filled = count > 0
    denominator = np.where(filled, count, 1.0)
    accuracy = np.where(filled, np.asarray(stats["ece_bin_correct"]) / denominator, 0.0)
    confidence = np.where(filled, np.asarray(stats["ece_bin_confidence"]) / denominator, 0.0)
    width = 1.0 / len(count)
    centres = (np.arange(len(count)) + 0.5) * width
    ax.bar(centres[filled], accuracy[filled], width=width, edgecolor="black",
           color="tab:blue", label="accuracy")
    ax.bar(centres[filled], (confidence - accuracy)[filled], bottom=accuracy[filled],
           width=width, edgecolor="tab:red", color="tab:red", alpha=0.3, hatch="//",
           label="gap to confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=name)
    ax.legend(loc="upper left", title=(f"ECE {100 * rates['ece']:.2f}%  "
                                       f"top-1 {100 * rates['top1']:.2f}%\n"
                                       f"NLL {rates['nll']:.3f}"))
  return _save(figure, path, title)


def plot_projection(projections, path, *, class_names: Optional[Sequence[str]] = None,
                    title: Optional[str] = None) -> str:
  """Saves scatter plots of three-class feature projections (Mueller et al., 2019) as PNG.

  Args:
    projections: a ``ThreeClassProjection`` or a mapping ``name -> ThreeClassProjection``
      (one panel each, e.g. teacher trained with and without label smoothing).
    path: the PNG file to write.
    class_names: optional names indexed by class id, for the legend.
    title: optional figure title.

  Returns:
    ``path`` as a string.

  References:
    Mueller, Kornblith and Hinton, "When Does Label Smoothing Help?", NeurIPS 2019.
  """
  named = _named(projections,
                 lambda p: isinstance(p, _projection.ThreeClassProjection), "")
  figure, axes = _figure(len(named))
  colours = ("tab:blue", "tab:orange", "tab:green")
  for ax, (name, projection) in zip(axes, named.items()):
    for colour, class_id, vertex in zip(colours, projection.classes, projection.vertices):
      label = class_names[class_id] if class_names is not None else f"class {class_id}"
      points = projection.points[projection.labels == class_id]
      ax.scatter(points[:, 0], points[:, 1], s=4, alpha=0.5, color=colour, label=label)
      ax.scatter(*vertex, s=200, marker="*", c=[colour], edgecolors="black", zorder=3)
    ax.set(title=name, aspect="equal")
    ax.legend(loc="best", markerscale=3)
  return _save(figure, path, title)


def plot_training_curves(runs, path, *, keys: Sequence[str] = ("train/loss", "eval/top1"),
                         x: str = "step", title: Optional[str] = None) -> str:
  """Saves training curves read from runs' ``metrics.jsonl`` as PNG, one panel per key.

  Args:
    runs: a workdir (or its ``metrics.jsonl``), or a mapping ``label -> workdir`` to
      overlay several runs.
    path: the PNG file to write.
    keys: the metrics to draw, e.g. ``"train/loss"``, ``"eval/top1"``, ``"eval/ece"``.
    x: the abscissa key, ``"step"`` or ``"epoch"``.
    title: optional figure title.

  Returns:
    ``path`` as a string.
  """
  named = _named(runs, lambda r: isinstance(r, (str, os.PathLike)),
                 os.path.basename(os.path.normpath(os.fspath(runs)))
                 if isinstance(runs, (str, os.PathLike)) else "")
  if isinstance(keys, str) or not keys:
    raise ValueError(f"keys must be a non-empty sequence of metric names, got {keys!r}.")
  records = {label: _curves.load_metrics(run) for label, run in named.items()}
  available = sorted({k for run in records.values() for r in run for k in r})
  absent = [key for key in keys if key not in available]
  if absent:
    raise ValueError(f"keys {absent} appear in no record of {list(named.values())}; "
                     f"available: {available}.")
  figure, axes = _figure(len(keys), panel_size=(5.0, 3.5))
  for ax, key in zip(axes, keys):
    for label, run_records in records.items():
      xs, ys = _curves.metric_series(run_records, key, x=x)
      ax.plot(xs, ys, marker="." if len(xs) < 50 else None, label=label)
    ax.set(xlabel=x, title=key)
    ax.grid(alpha=0.3)
    if len(records) > 1:
      ax.legend(loc="best")
  return _save(figure, path, title)

"""Evaluators: reducers over the outputs of the one prediction path (`Trainer.predict`).

`jaxkd.train.Trainer.predict` runs the model over a split in its batches (sharded over the
mesh, streamed when the data is, the last batch padded and masked) and hands each batch's
`Predictions` to every evaluator. An evaluator either

* sums: ``sums(predictions) -> pytree`` of additive statistics, computed on the device inside
  the prediction program and added over the batches there (a replicated result, so summed over
  the devices and the processes); or
* keeps rows: ``rows(predictions) -> {name: [B, ...]}``, per-example arrays gathered to the
  host of every process, the padding rows dropped, reduced by ``keep(rows) -> rows`` as the
  batches arrive (so a split never has to fit in memory);

and ``finalize(total) -> dict`` turns what it gathered into its numbers. The built-in ones:
`metrics` (top-1, top-5, NLL, ECE: `jaxkd.analysis.classification_metrics`), `stability`
(Shen et al.'s S of Eq. 2 from `jaxkd.analysis.stability_statistics`), `feature_stability`
(our variant on penultimate features) and `class_rows` (the features of chosen classes, for
`jaxkd.analysis.project_three_classes`); BLEU through beam search is the translation task's
(`jaxkd.tasks.bleu`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np

from jaxkd import analysis

__all__ = ["Evaluator", "Predictions", "class_rows", "feature_stability", "metrics",
           "stability"]


class Predictions(NamedTuple):
  """What `Trainer.predict` hands to the evaluators for one batch (device arrays).

  Attributes:
    logits: the objective's examples' logits ``[N, K]`` (`Task.examples`: per target token
      for translation).
    labels: their labels ``[N]``.
    mask: ``[N]`` bool, False on padding (padded rows of the last batch, padding tokens).
    outputs: the model's outputs on the batch (``logits``, ``features``, ...), per row.
    inputs: the batch's raw inputs (images, token ids; translation: source ids).
    row_mask: ``[B]`` bool, False on the padded rows of the batch.
    ids: ``[B]`` example ids of the rows.
    model: the model (a Flax module).
    variables: its ``params`` and ``batch_stats``.
  """
  logits: Any
  labels: Any
  mask: Any
  outputs: Any
  inputs: Any
  row_mask: Any
  ids: Any
  model: Any
  variables: Any


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """A reducer over `Predictions` (see the module docstring).

  ``name`` keys its result in `Trainer.predict`'s answer and, with the names of the others,
  the compiled prediction program, so one name means one computation within a run.
  """
  name: str
  finalize: Callable[[Any], dict]
  sums: Optional[Callable[[Predictions], Any]] = None
  rows: Optional[Callable[[Predictions], dict]] = None
  keep: Optional[Callable[[dict], dict]] = None


def _concat(parts: list) -> dict:
  if not parts:
    return {}
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def metrics(num_bins: int = 15) -> Evaluator:
  """Top-1, top-5, NLL and ECE (`analysis.classification_metrics`'s sums; `finalize_metrics`)."""
  return Evaluator(
      "metrics", sums=lambda p: analysis.classification_metrics(p.logits, p.labels,
                                                                num_bins=num_bins, mask=p.mask),
      finalize=analysis.finalize_metrics)


def _spread(stats) -> dict:
  spread = float(analysis.finalize_intra_class_variance(stats))
  return {"stability": 1.0 - spread, "intra_class_variance": spread}


def stability(num_classes: int) -> Evaluator:
  """Shen et al.'s S (ICLR 2021, Eq. 2) of ``softmax(z)`` and ``1 - S``
  (``intra_class_variance``), from `analysis.stability_statistics`'s additive sums."""
  return Evaluator(
      "stability", sums=lambda p: analysis.stability_statistics(
          p.logits, p.labels, num_classes=num_classes, mask=p.mask),
      finalize=_spread)


def feature_stability(num_classes: int) -> Evaluator:
  """Our variant of S on L2-normalised penultimate features (`analysis.feature_stability`):
  ``{"features": S}``."""
  return Evaluator(
      "feature_stability", sums=lambda p: analysis.feature_stability_statistics(
          p.outputs["features"], p.labels, num_classes=num_classes, mask=p.mask),
      finalize=lambda s: {"features": 1.0 - float(analysis.finalize_intra_class_variance(s))})


def class_rows(classes: Sequence[int], name: str = "class_rows") -> Evaluator:
  """The penultimate features and labels of the examples of ``classes`` (a feature
  projection's points): ``{name: {"features": [n, C] float32, "labels": [n]}}``."""
  wanted = np.asarray(list(classes))

  def keep(rows):
    chosen = np.isin(rows["labels"], wanted)
    return {k: v[chosen] for k, v in rows.items()}

  return Evaluator(
      name, rows=lambda p: {"features": p.outputs["features"].astype(np.float32),
                            "labels": p.labels},
      keep=keep, finalize=lambda parts: {name: _concat(parts)})

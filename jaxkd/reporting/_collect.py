"""From a finished run's workdir to the JSON record the report is built from.

The record holds what the report and its figures need and nothing machine-specific beyond
what the summary states: best/last metrics, per-epoch test curves, the training-loss curve,
the final model's reliability statistics, its stability (Shen et al.'s S of their Eq. 2, and
our feature variant) and, for chosen rows, the three-class projection of its penultimate
features.
"""
from __future__ import annotations

import json
import os
import platform
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd import analysis
from jaxkd import data as data_lib
from jaxkd import models
from jaxkd.train import checkpoint as ckpt_lib

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


def _forward(config, variables, dataset, batch_size: int):
  text = isinstance(dataset, data_lib.TokenDataset)
  model = models.get(config.model.name, num_classes=dataset.num_classes,
                     dtype=config.model.dtype, cpu_conv=config.model.get("cpu_conv", "xla"),
                     vocab_size=dataset.vocab_size if text else None)

  @jax.jit
  def apply(images):
    # Token ids (text) go to the model as they are; images are normalised.
    x = images if text else data_lib.normalize(images, dataset.mean, dataset.std)
    out = model.apply(variables, x, train=False)
    return out["logits"], out["features"]

  logits, features = [], []
  for start in range(0, dataset.num_examples, batch_size):
    z, h = apply(jnp.asarray(dataset.images[start:start + batch_size]))
    logits.append(np.asarray(z))
    features.append(np.asarray(h, np.float32))
  return np.concatenate(logits), np.concatenate(features)


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
    is Shen et al.'s S (ICLR 2021, Eq. 2) of ``softmax(z)`` at T = 1 over that split (the report prints ``1 - S``, the number of
    their Table 1); ``stability.features`` is ``analysis.feature_stability`` of the
    L2-normalised penultimate features, our variant, not the paper's. With ``report_split``,
    ``final`` and ``stability`` are of that split, and ``reported`` holds its ``best`` (at the
    checkpoint the validation split selected, ``checkpoints_best/``) and ``last`` metrics,
    with their epochs, in the layout of the summary's.
  """
  variables, step = ckpt_lib.load_variables(workdir)
  if data_lib.spec(config.data.name).kind == "translation":
    return _collect_translation(config, workdir, summary, variables, step)
  if report_split is not None and not config.train.get("keep_best", False):
    raise ValueError(f"report_split={report_split!r} reports the checkpoint a validation split "
                     "selected; the row's config must set train.keep_best=True")
  # The run's own evaluation split unless the table reports another: a sweep on a validation
  # split never touches the test split.
  text = {key: config.data[key] for key in ("vocab_size", "max_length") if key in config.data}
  dataset = data_lib.load(config.data.name,
                          split=report_split or config.data.get("eval_split", "test"),
                          data_dir=config.data.data_dir or None, **text)
  batch_size = int(config.train.eval_batch_size)
  logits, features = _forward(config, variables, dataset, batch_size)
  labels = dataset.labels
  sums = jax.device_get(analysis.classification_metrics(logits, labels))
  num_classes = dataset.num_classes
  reported = None
  if report_split is not None:
    best_variables, best_step = ckpt_lib.load_variables(workdir, name=ckpt_lib.BEST)
    best_sums = jax.device_get(analysis.classification_metrics(
        _forward(config, best_variables, dataset, batch_size)[0], labels))
    per_epoch = summary["last"]["step"] / summary["last"]["epoch"]
    at = lambda s, n: {**analysis.finalize_metrics(s), "step": int(n), "epoch": n / per_epoch}
    reported = {"split": report_split, "best": at(best_sums, best_step), "last": at(sums, step)}
  record = {
      "summary": summary,
      **({"reported": reported} if reported else {}),
      "curves": _curves(workdir),
      "final": {"step": int(step), **{k: np.asarray(v).tolist() for k, v in sums.items()},
                **analysis.finalize_metrics(sums)},
      "stability": {
          "features": float(analysis.feature_stability(features, labels,
                                                       num_classes=num_classes)),
          "probabilities": float(analysis.stability(logits, labels, num_classes=num_classes)),
      },
      "machine": machine(),
  }
  if projection_classes is not None:
    templates = _head_templates(variables["params"], features.shape[1], num_classes)
    projection = analysis.project_three_classes(features, labels, templates, projection_classes)
    record["projection"] = {"classes": list(projection.classes),
                            "points": np.round(projection.points, 4).tolist(),
                            "labels": projection.labels.tolist(),
                            "vertices": np.round(projection.vertices, 4).tolist()}
  return _round(json.loads(json.dumps(record, default=float)))


def _collect_translation(config, workdir: str, summary: dict, variables, step) -> dict:
  """A translation run's record: per-target-token metrics of the last checkpoint (the
  engine's evaluation step over ``data.eval_split``) and the summary's BLEU; no stability or
  projection (they are defined for classifiers)."""
  from jaxkd.train import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  trainer = trainer_lib.build(config)
  sums = jax.device_get(trainer.eval_sums(variables["params"], variables.get("batch_stats", {})))
  record = {
      "task": "translation",
      "summary": summary,
      "curves": _curves(workdir),
      "final": {"step": int(step), **{k: np.asarray(v).tolist() for k, v in sums.items()},
                **analysis.finalize_metrics(sums)},
      "stability": None,
      "machine": machine(),
  }
  return _round(json.loads(json.dumps(record, default=float)))

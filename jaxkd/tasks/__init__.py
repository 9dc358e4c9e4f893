"""Tasks: everything modality-specific, so that the engine knows no modality.

A `Task` is a value of pure functions (see `jaxkd.tasks._base`): how a batch becomes the
model's input (augmentation and normalisation, source and target), how logits and labels
become the objective's examples and weights (per target token for translation), its config
defaults and checks, its evaluators (reducers over `jaxkd.train.Trainer.predict`'s outputs)
and the console's words. A dataset names the task it serves (its ``task`` attribute), a model
the input kind it reads (`jaxkd.models.input_kind`). A new modality is a new module here, its
datasets and its models; no engine file changes. Built in:

* `image_classification`: uint8 images, augmented and normalised on the device;
* `text_classification`: int32 token ids, fed as they are;
* `translation`: sentence pairs, teacher forcing, per-token objectives, BLEU of a beam search.

Evaluators (`jaxkd.tasks.Evaluator`): `metrics` (top-1, top-5, NLL, ECE), `stability`
(Shen et al.'s S), `feature_stability`, `class_rows` (feature projections) and `bleu`.
"""
from jaxkd.tasks._base import Bound, Task, check
from jaxkd.tasks._classification import (IMAGE_AUGMENTATION, AugmentConfig,
                                         image_classification, preprocess_images,
                                         text_classification)
from jaxkd.tasks._evaluators import (Evaluator, Predictions, class_rows, feature_stability,
                                     metrics, stability)
from jaxkd.tasks._translation import bleu, per_token, per_token_refusal, translation

_TASKS = {t.name: t for t in (image_classification, text_classification, translation)}


def names() -> tuple[str, ...]:
  """The task names, sorted."""
  return tuple(sorted(_TASKS))


def get(name: str) -> Task:
  """The task called ``name`` (`names`)."""
  if name not in _TASKS:
    raise ValueError(f"task {name!r} is not known; allowed: {', '.join(names())}")
  return _TASKS[name]


def of(dataset) -> Task:
  """The task ``dataset`` serves (its ``task`` attribute)."""
  return get(dataset.task)


def for_input_kind(kind: str) -> Task:
  """The task whose models read ``kind`` (`jaxkd.models.input_kind`)."""
  for task in _TASKS.values():
    if task.input_kind == kind:
      return task
  raise ValueError(f"no task reads {kind!r}")


__all__ = [
    "AugmentConfig", "Bound", "Evaluator", "IMAGE_AUGMENTATION", "Predictions", "Task", "bleu",
    "check", "class_rows", "feature_stability", "for_input_kind", "get", "image_classification",
    "metrics", "names", "of", "per_token", "per_token_refusal", "preprocess_images", "stability",
    "text_classification", "translation",
]

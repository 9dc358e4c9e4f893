"""A task: everything about a modality that the engine must not know.

Like a `jaxkd.teachers.Teacher`, a task is a value of pure functions; the train step, the
prediction path, the config checks and the console call them without asking which task they
hold:

* ``setup(config, dataset) -> settings``: the task's config checks (a `ConfigError` naming the
  key) and the static settings of the jitted programs (an image task's augmentation and
  normalisation constants), before anything compiles;
* ``preprocess(settings, rng, inputs) -> x``: a batch's raw inputs (uint8 images, int32 token
  ids) as the model's, augmented when ``rng`` is given;
* ``feed(x, labels) -> model input``: what the model reads (translation: source and target,
  teacher forcing);
* ``examples(logits, labels, teacher_logits, mask) -> (logits, labels, teacher_logits,
  weights)``: the objective's examples (translation: one per target token, padding weighed 0);
* ``evaluators(run, purpose) -> tuple[Evaluator, ...]``: the reducers over
  `jaxkd.train.Trainer.predict`'s outputs that evaluate a run (``"loop"``, ``"final"``,
  ``"checkpoint"``, ``"report"``);
* ``describe(run) -> (data words, batch words)``, ``unit`` and ``result_words``: the
  console's words.

A dataset names the task it serves (its ``task`` attribute), and a model the input kind it
reads (`jaxkd.models.input_kind`), which must be the task's ``input_kind``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Optional

__all__ = ["Task", "check"]


def check(ok: bool, key: str, value: Any, allowed: str) -> None:
  """Raises ``ValueError("config.<key>=<value>: <allowed>")`` unless ``ok`` (the engine
  passes it on as a `jaxkd.config.ConfigError`, as a teacher's ``setup`` errors)."""
  if not ok:
    raise ValueError(f"config.{key}={value!r}: {allowed}")


def _no_check(config, objective) -> None:
  del config, objective


@dataclasses.dataclass(frozen=True)
class Task:
  """One modality's functions (see the module docstring).

  Attributes:
    name: the registry name (``image_classification``, ``text_classification``,
      ``translation``).
    input_kind: what the task's models read: ``"images"``, ``"token ids"`` or
      ``"sentence pairs"`` (`jaxkd.models.input_kind`).
    unit: what one example is, for the console's throughput (``images``, ``sentences``).
    defaults: ``data.*`` keys the task fills when the config leaves them None (an image task's
      augmentation; the other tasks take none).
    setup, preprocess, feed, examples, evaluators, describe: as the module docstring.
    check_objective: ``(config, objective) -> None``: refuses methods the task cannot train.
    by_token_count: batches hold a number of tokens rather than of examples (their rows and
      length follow a length bucket), so ``train.batch_size`` is not read.
    result_words: the task's own evaluation numbers on the console's result line, as
      ``{key: format}`` (translation: ``{"bleu": "BLEU {:.2f}"}``).
    eval_columns: ``jaxkd eval``'s table, ``((key, label), ...)`` of its ``checkpoint``
      evaluators' numbers.
  """
  name: str
  input_kind: str
  unit: str
  defaults: Mapping[str, Any]
  setup: Callable[..., Any]
  preprocess: Callable[..., Any]
  feed: Callable[..., Any]
  examples: Callable[..., tuple]
  evaluators: Callable[..., tuple]
  describe: Callable[..., tuple[str, str]]
  check_objective: Callable[..., None] = _no_check
  by_token_count: bool = False
  result_words: Mapping[str, str] = dataclasses.field(default_factory=dict)
  eval_columns: tuple = ()

  def fill_defaults(self, data) -> None:
    """Sets the ``data`` section's keys that are None to the task's defaults (in place)."""
    for key, value in self.defaults.items():
      if data.get(key) is None:
        data[key] = value


@dataclasses.dataclass(frozen=True)
class Bound:
  """A task with a run's settings: what the jitted programs call.

  ``model_input(rng, inputs, labels)``: what the model reads from a batch's raw inputs
  (augmented when ``rng`` is given); ``preprocess(rng, inputs)``: the inputs alone (other
  examples a teacher loads); ``examples(...)``: `Task.examples`.
  """
  task: Task
  settings: Any = None

  def preprocess(self, rng, inputs):
    return self.task.preprocess(self.settings, rng, inputs)

  def model_input(self, rng, inputs, labels):
    return self.task.feed(self.preprocess(rng, inputs), labels)

  def examples(self, logits, labels, teacher_logits=None, mask: Optional[Any] = None):
    return self.task.examples(logits, labels, teacher_logits, mask)

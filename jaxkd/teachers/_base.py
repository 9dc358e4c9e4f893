"""A teacher: where the teacher logits of a distillation method come from.

Like a `jaxkd.targets.TargetTransform`, a teacher is a NamedTuple of pure functions. The
training step calls them without knowing which teacher it holds:

* ``init(student, *, num_classes, feature_dim) -> TeacherState``, once, from the student's
  initial variables;
* ``logits(state, consts, inputs) -> TeacherOutput``, inside the differentiated loss, after the
  student's forward pass;
* ``update(state, student, step) -> TeacherState``, after the optimizer step (a replay refresh,
  an exponential moving average).

The `TeacherState` is one field of the train state, so it is sharded, donated, checkpointed and
updated on the device like the parameters; its ``params`` are trained with the student (RAS-KD's
auxiliary head). ``consts`` are device arrays that never change and are never checkpointed with
the student (a frozen teacher's variables). Two optional host-side hooks prepare a run:
``setup(env) -> Teacher`` binds the teacher to the run (a frozen teacher loads its checkpoint),
and ``host_batch(labels, order, *, seed, epoch)`` adds per-example index rows to every batch
(CS-KD's same-class partners).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import chex
import flax.linen as nn
import flax.struct

__all__ = ["Teacher", "TeacherEnv", "TeacherInputs", "TeacherOutput", "TeacherState",
           "apply_model", "keep_state", "no_state"]


@flax.struct.dataclass
class TeacherState:
  """A teacher's part of the train state.

  Attributes:
    params: trainable parameters, updated by the student's optimizer (``{}`` for most).
    state: everything else the teacher keeps on the device (a replay ring, EMA weights).
  """
  params: Any = flax.struct.field(default_factory=dict)
  state: Any = flax.struct.field(default_factory=dict)


class TeacherInputs(NamedTuple):
  """What the training step hands to ``Teacher.logits``.

  Attributes:
    model: the student's Flax module.
    inputs: the student's preprocessed (augmented, normalised) batch.
    student: the student's variables: ``params`` (stop-gradient) and ``batch_stats`` after the
      student's forward pass.
    outputs: the student's outputs (``logits``, ``features``, ...).
    batch: the batch dict: ``indices`` and the rows the teacher's ``host_batch`` added.
    load: ``load(indices, rng) -> inputs``: other training examples, preprocessed and
      augmented like the batch (with ``rng``); None when the data is streamed (only the
      batch's own images are on the device).
    rng: a PRNG key of the teacher's own for this step.
  """
  model: nn.Module
  inputs: chex.Array
  student: dict
  outputs: dict
  batch: dict
  load: Optional[Callable[[chex.Array, chex.Array], chex.Array]]
  rng: chex.Array


class TeacherOutput(NamedTuple):
  """What ``Teacher.logits`` returns.

  Attributes:
    logits: ``[B, K]``, or ``[M, B, K]`` for M members (replay backups, an ensemble). The
      objective takes them stop-gradient, except in terms that train the teacher itself.
    mask: bool ``[M]``, which members are valid; None: all of them.
    batch_stats: the student's BatchNorm statistics, when the teacher ran the student in
      training mode (CS-KD's partner pass); None leaves them as the student's pass left them.
    class_embeddings: ``[K, D]`` class representatives for relation targets (RAS-KD), or None.
    temperature: a scalar temperature the teacher learns (CTKD), with its gradient to the
      teacher's params, or None.
  """
  logits: chex.Array
  mask: Optional[chex.Array] = None
  batch_stats: Any = None
  class_embeddings: Optional[chex.Array] = None
  temperature: Optional[chex.Array] = None


class TeacherEnv(NamedTuple):
  """What ``Teacher.setup`` learns about the run it is bound to.

  Attributes:
    settings: the run's ``teacher`` config section (``workdir``, ``step``, ``train_mode``,
      ``torchvision_checkpoint``, ``torchvision_model``).
    data_name: the name of the student's dataset.
    num_classes: the student's number of classes.
    cpu_conv: the student's convolution choice on CPU (`jaxkd.models.get`).
    mean: the per-channel mean the student's inputs are normalised with ([0, 1] units);
      empty: unknown.
    std: the per-channel standard deviation of that normalisation.
    vocab_size: the token vocabulary of text data (`jaxkd.data.TokenDataset`); None for
      images.
    data: the run's ``data`` config section (a text teacher run's ``data.vocab_size`` and
      ``data.max_length`` must be these); None: unknown.
    config: the run's whole config, the data's task defaults filled in (a teacher cache must
      have been made for its seed, batch size and augmentation); None: unknown.
    steps_per_epoch: the run's steps per epoch (0: unknown).
    total_steps: the run's number of steps (0: unknown).
  """
  settings: Any
  data_name: str
  num_classes: int
  cpu_conv: str = "xla"
  mean: tuple = ()
  std: tuple = ()
  vocab_size: Optional[int] = None
  data: Any = None
  config: Any = None
  steps_per_epoch: int = 0
  total_steps: int = 0


def no_state(student: dict, **sizes) -> TeacherState:
  """The ``init`` of a teacher that keeps nothing on the device."""
  del student, sizes
  return TeacherState()


def keep_state(state: TeacherState, student: dict, step: chex.Numeric) -> TeacherState:
  """The ``update`` of a teacher that does not change after the optimizer step."""
  del student, step
  return state


class Teacher(NamedTuple):
  """Where teacher logits come from: a NamedTuple of pure functions (see the module doc).

  Attributes:
    init: ``init(student, *, num_classes, feature_dim) -> TeacherState``; ``student`` holds
      the student's initial ``params`` and ``batch_stats``.
    logits: ``logits(state, consts, inputs) -> TeacherOutput`` (``inputs``: `TeacherInputs`).
    update: ``update(state, student, step) -> TeacherState`` after the optimizer step;
      ``student`` holds the updated variables, ``step`` the new step count.
    consts: host arrays the engine places on the devices once and passes to ``logits``;
      never checkpointed with the student.
    setup: ``setup(env) -> Teacher`` binds the teacher to a run before anything compiles
      (`TeacherEnv`); raises ValueError naming the setting when it cannot. None: ready.
    host_batch: ``host_batch(labels, order, *, seed, epoch) -> {name: [steps, B, ...]}`` adds
      per-example rows to every batch of an epoch (partner indices, a cache's outputs);
      ``order``: the epoch's example ids ``[steps, B]``, ``labels`` the split's (None when
      streamed); None: nothing.
    name: a short name for messages and logs.
    inactive_steps: how many steps from the start of a run the teacher has no valid member
      (its ``mask`` all False), so that the objective's teacher terms are off; the training
      loop warns when that is a large share of the run. 0: valid from the first step.
    doc: what the teacher is, in one line for ``jaxkd methods``' legend.
    loads_examples: ``logits`` reads other training examples through ``TeacherInputs.load``
      (CS-KD's partners), which streamed data does not offer (refused there).
  """
  init: Callable[..., TeacherState]
  logits: Callable[[TeacherState, Any, TeacherInputs], TeacherOutput]
  update: Callable[[TeacherState, dict, chex.Numeric], TeacherState] = keep_state
  consts: Any = None
  setup: Optional[Callable[[TeacherEnv], "Teacher"]] = None
  host_batch: Optional[Callable[..., dict]] = None
  name: str = "teacher"
  inactive_steps: int = 0
  doc: str = ""
  loads_examples: bool = False


def apply_model(model: nn.Module, variables: dict, x: chex.Array, *, train: bool,
                rng: Optional[chex.Array] = None) -> tuple[dict, Any]:
  """A zoo model's forward pass: ``(outputs, batch_stats)``.

  In training mode the BatchNorm statistics are updated and returned (the old ones otherwise);
  ``rng`` feeds dropout.
  """
  batch_stats = variables.get("batch_stats", {})
  variables = {"params": variables["params"], "batch_stats": batch_stats}
  if not train:
    return model.apply(variables, x, train=False), batch_stats
  out, mutated = model.apply(variables, x, train=True, mutable=["batch_stats"],
                             rngs={"dropout": rng} if rng is not None else {})
  return out, mutated.get("batch_stats", batch_stats)

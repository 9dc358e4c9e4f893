"""A frozen teacher: a network whose variables never change (Hinton KD, Tf-KD_self, Re-/De-KD).

`frozen(model, variables)` distils from variables you hold; `from_run()` loads them from a
finished jaxkd run's workdir when the run is set up (``teacher.workdir``, ``teacher.step``,
``teacher.train_mode`` of the config), or from a torchvision checkpoint of an ImageNet network
(``teacher.torchvision_checkpoint`` and ``teacher.torchvision_model``, `from_torchvision`).
Several runs (``teacher.workdir`` a comma-separated list, a torchvision checkpoint besides them)
make an `ensemble`, whose logits are stacked ``[M, B, K]``. The variables are constants of the
training step: they are placed on the devices once and never saved into the student's
checkpoints.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# A finished run's checkpoints are read by `jaxkd.rundir`; re-exported as teachers' own names.
from jaxkd.rundir import CONFIG, RunDir, checkpoint_steps, load_variables
from jaxkd.teachers._cached import bind_cache
from jaxkd.teachers._base import (Teacher, TeacherEnv, TeacherInputs, TeacherOutput,
                                  TeacherState, apply_model, no_state)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "checkpoint_steps", "ensemble", "frozen",
           "from_run", "from_torchvision", "load_variables", "renormalize", "workdirs"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# The normalisation torchvision's published ImageNet weights expect ([0, 1] units).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


FROZEN_DOC = ("a fixed network: a finished run (--config.teacher.workdir) or torchvision's "
              "weights (--config.teacher.torchvision_checkpoint=FILE "
              "--config.teacher.torchvision_model=NAME); its outputs may be stored once by "
              "`jaxkd cache-teacher` and read with --config.teacher.cache=DIR")


def frozen(model, variables: dict, *, train_mode: bool = False,
           preprocess: Optional[Callable[[jax.Array], jax.Array]] = None) -> Teacher:
  """Distils from ``model`` with fixed ``variables`` (``params`` and ``batch_stats``).

  Args:
    model: the teacher's Flax module (any `jaxkd.models` network).
    variables: its variables (host or device arrays).
    train_mode: run the teacher with batch statistics (no gradient, no update of its running
      statistics), as a teacher left in ``model.train()`` in PyTorch code would.
    preprocess: maps the student's preprocessed batch to the teacher's input (another
      normalisation, `renormalize`); None: the teacher sees the student's batch.
  """
  variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats") or {}}

  def logits(state: TeacherState, consts: Any, inputs: TeacherInputs) -> TeacherOutput:
    del state
    x = inputs.inputs if preprocess is None else preprocess(inputs.inputs)
    out, _ = apply_model(model, consts, x, train=train_mode)
    return TeacherOutput(jax.lax.stop_gradient(out["logits"]))

  return Teacher(init=no_state, logits=logits, consts=variables, name="frozen", doc=FROZEN_DOC)


def ensemble(members: Sequence[Teacher]) -> Teacher:
  """Frozen teachers side by side: their logits stacked ``[M, B, K]`` (float32), every member
  valid. Each member keeps its own network, variables and input normalisation."""
  members = tuple(members)

  def logits(state: TeacherState, consts: Any, inputs: TeacherInputs) -> TeacherOutput:
    outs = [m.logits(state, c, inputs).logits for m, c in zip(members, consts)]
    return TeacherOutput(jnp.stack([jnp.asarray(o, jnp.float32) for o in outs]))

  return Teacher(init=no_state, logits=logits, consts=tuple(m.consts for m in members),
                 name=f"ensemble of {len(members)} frozen")


def workdirs(setting: Any) -> list[str]:
  """The teacher runs a ``teacher.workdir`` setting names: one path, a comma-separated list of
  paths, or a list of them ([] when empty)."""
  if isinstance(setting, (list, tuple)):
    return [str(p).strip() for p in setting if str(p).strip()]
  return [p.strip() for p in str(setting or "").split(",") if p.strip()]


def from_run(workdir: Optional[str] = None, step: Optional[int] = None,
             train_mode: Optional[bool] = None, members: Optional[int] = None) -> Teacher:
  """A frozen teacher loaded from finished runs' checkpoints when the run is set up.

  Arguments left None are read from the run's ``teacher`` config section: ``workdir`` (the
  teacher run; several, comma-separated, give an `ensemble`), ``step`` (its checkpoint; -1 the
  latest; an early one gives De-KD), ``train_mode``. A teacher must have been trained on the
  student's dataset (text: with its ``data.vocab_size``, ``data.max_length`` and tokenizer; see
  `_check_run`). A ``torchvision_checkpoint`` in the section is a teacher too
  (`from_torchvision`): alone, or one more member beside the runs. ``members``: the number of
  teachers the method's ``teacher_weights`` give weights for (None: any number). With
  ``teacher.cache=DIR`` the teacher's outputs are read from a cache made for this run by
  ``jaxkd cache-teacher`` (`bind_cache`) and its forward pass is not run.
  """

  def setup(env: TeacherEnv) -> Teacher:
    cache = (env.settings.get("cache") or "") if workdir is None else ""
    if cache:  # the teacher's outputs were stored: its forward pass leaves the step
      return bind_cache(cache, env, load=lambda: load(env), members=members)
    return load(env)

  def load(env: TeacherEnv) -> Teacher:
    settings = env.settings
    checkpoint = (settings.get("torchvision_checkpoint") or "") if workdir is None else ""
    paths = workdirs(settings.workdir if workdir is None else workdir)
    at = settings.step if step is None else step
    mode = bool(settings.train_mode if train_mode is None else train_mode)
    if not paths and not checkpoint:
      _check_run("", at, env)  # fails naming teacher.workdir
    found = []
    for path in paths:
      model = _check_run(path, at, env)
      variables, _ = load_variables(path, step=None if at < 0 else at)
      found.append(frozen(model, variables, train_mode=mode))
    if checkpoint:
      found.append(from_torchvision(settings.get("torchvision_model") or "", checkpoint,
                                    num_classes=env.num_classes, mean=env.mean, std=env.std,
                                    train_mode=mode, cpu_conv=env.cpu_conv))
    if members is not None and members != len(found):
      _fail("method.teacher_weights", f"<{members} weights>", f"{members} teacher weights for "
            f"{len(found)} teacher(s) (teacher.workdir={settings.workdir!r}"
            f"{', and teacher.torchvision_checkpoint' if checkpoint else ''}); allowed: one "
            "weight per teacher, or () for uniform")
    return found[0] if len(found) == 1 else ensemble(found)

  def unbound(state, consts, inputs):
    raise ValueError("teachers.from_run(): the teacher is not loaded yet; call its setup(env) "
                     "first (jaxkd.train does), or use teachers.frozen(model, variables)")

  return Teacher(init=no_state, logits=unbound, setup=setup, name="frozen", doc=FROZEN_DOC)


def renormalize(mean: Sequence[float], std: Sequence[float], to_mean: Sequence[float],
                to_std: Sequence[float]) -> Optional[Callable[[jax.Array], jax.Array]]:
  """Maps images normalised with ``(mean, std)`` to ``(to_mean, to_std)``; None when equal.

  ``x' = (x * std + mean - to_mean) / to_std`` per channel (all in [0, 1] pixel units).
  """
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  to_mean, to_std = np.asarray(to_mean, np.float32), np.asarray(to_std, np.float32)
  if mean.shape == to_mean.shape and np.allclose(mean, to_mean, rtol=0, atol=1e-6) and \
      np.allclose(std, to_std, rtol=0, atol=1e-6):
    return None
  scale, shift = std / to_std, (mean - to_mean) / to_std

  def apply(x: jax.Array) -> jax.Array:
    return (x * scale + shift).astype(x.dtype)

  return apply


def from_torchvision(name: str, checkpoint: str, *, num_classes: int,
                     mean: Sequence[float] = (), std: Sequence[float] = (),
                     train_mode: bool = False, cpu_conv: str = "xla") -> Teacher:
  """A frozen teacher with torchvision's weights of an ImageNet network (float32).

  Args:
    name: a ``*_imagenet`` model (`jaxkd.models.torchvision_names`), e.g.
      ``"resnet50_imagenet"`` for torchvision's published ``resnet50`` weights.
    checkpoint: a ``.pth``/``.pt`` or ``.safetensors`` file of its ``state_dict``
      (`jaxkd.models.from_torchvision`).
    num_classes: the student's classes; the checkpoint's classifier must have as many (1000
      for torchvision's ImageNet weights, so the student's labels must be ImageNet's).
    mean: the per-channel mean the student's inputs are normalised with; with ``std``, the
      teacher re-normalises them to torchvision's ImageNet constants (`IMAGENET_MEAN`,
      `IMAGENET_STD`). Empty: the inputs already are (``imagenet2012``).
    std: the per-channel standard deviation of the student's normalisation.
    train_mode: run the teacher with batch statistics (see `frozen`).
    cpu_conv: how the teacher's convolutions run on CPU (`jaxkd.models.get`).

  Raises:
    ValueError: naming the ``teacher.*`` key, its value and what is allowed.
  """
  from jaxkd import models  # pylint: disable=import-outside-toplevel
  allowed = models.torchvision_names()
  if name not in allowed:
    _fail("teacher.torchvision_model", name, f"the network of teacher.torchvision_checkpoint="
          f"{checkpoint!r}; allowed: {', '.join(allowed)}")
  if mean and len(mean) != len(IMAGENET_MEAN):
    _fail("teacher.torchvision_checkpoint", checkpoint, f"torchvision's networks take RGB "
          f"images; the student's data has {len(mean)} channel(s)")
  try:
    variables = models.from_torchvision(name, checkpoint)
  except (ValueError, ImportError) as err:
    _fail("teacher.torchvision_checkpoint", checkpoint, str(err))
  classes = _classes(variables, name)
  if classes != num_classes:
    _fail("teacher.torchvision_checkpoint", checkpoint, f"its {name} classifier has {classes} "
          f"classes, the student's data {num_classes}; the teacher's classes must be the "
          "student's")
  model = models.get(name, num_classes=num_classes, cpu_conv=cpu_conv)
  preprocess = renormalize(mean, std, IMAGENET_MEAN, IMAGENET_STD) if mean else None
  return frozen(model, variables, train_mode=train_mode, preprocess=preprocess)


def _classes(variables: dict, name: str) -> int:
  """The classifier width of converted torchvision variables."""
  params = variables["params"]
  head = params.get("fc") or params.get("classifier") or params.get("classifier_1")
  if head is None:
    raise ValueError(f"{name}: no classifier among the converted variables")
  return int(np.shape(head["bias"])[0])


def _fail(key: str, value: Any, allowed: str) -> None:
  raise ValueError(f"config.{key}={value!r}: {allowed}")


def _check_run(workdir: str, step: int, env: TeacherEnv):
  """The teacher run exists, was trained on the same data and has a checkpoint; its module.

  A text teacher must read the student's token ids: the same ``data.vocab_size`` and
  ``data.max_length`` (`jaxkd.data.token_settings`) and, in its checkpoint's metadata (no
  array is read), an embedding table of the student's vocabulary, the tokenizer's pieces
  (fewer than ``data.vocab_size`` on a small corpus; another tokenizer cache may have others).
  """
  from jaxkd import data as data_lib  # pylint: disable=import-outside-toplevel
  from jaxkd import models  # pylint: disable=import-outside-toplevel
  if not workdir:
    _fail("teacher.workdir", workdir, "this method needs a teacher: the workdir of a finished "
          "run (or teacher.torchvision_checkpoint with teacher.torchvision_model, torchvision's "
          "weights of an ImageNet network)")
  teacher = RunDir(workdir).read(CONFIG)
  if teacher is None:
    _fail("teacher.workdir", workdir, f"must be the workdir of a jaxkd run (no {CONFIG} "
          "there)")
  if teacher["data"]["name"] != env.data_name:
    _fail("teacher.workdir", workdir, f"the teacher was trained on {teacher['data']['name']!r} "
          f"(its classes), the student on {env.data_name!r}")
  name = teacher["model"]["name"]
  if name not in models.names():
    _fail("teacher.workdir", workdir, f"its model {name!r} is not one of jaxkd.models.names()")
  text = env.vocab_size is not None
  tokens = models.is_text(name) or models.is_translation(name)
  if tokens != text:
    _fail("teacher.workdir", workdir, f"the teacher's model {name!r} reads "
          f"{'token ids' if tokens else 'images'}, the student's data "
          f"{env.data_name!r} holds {'token ids' if text else 'images'}")
  if text and env.data is not None:
    for key in data_lib.token_settings(env.data_name):
      theirs, ours = teacher["data"].get(key), env.data[key]
      if theirs != ours:
        _fail("teacher.workdir", workdir, f"the teacher was trained with data.{key}={theirs!r}, "
              f"the student with data.{key}={ours!r}; a text teacher reads the student's token "
              "ids, so its data.vocab_size and data.max_length must be the student's")
  steps = checkpoint_steps(workdir)
  if not steps:
    _fail("teacher.workdir", workdir, "holds no checkpoint; train the teacher first")
  if not (step < 0 or step in steps):
    _fail("teacher.step", step, f"allowed: -1 (latest) or one of the teacher's checkpoints "
          f"{steps}")
  if text:
    rows = _embedding_rows(workdir, steps[-1] if step < 0 else step)
    if rows is not None and rows != env.vocab_size:
      _fail("teacher.workdir", workdir, f"the teacher's embedding table has {rows} rows (its "
            f"tokenizer's vocabulary), the student's data {env.vocab_size} pieces; the teacher "
            "must have been trained on the student's tokenizer (the same "
            "<data.data_dir>/jaxkd_text cache, or a copy of it)")
  # The same dataset as the student's (checked above), so the same classes.
  return models.get(teacher["model"]["name"], num_classes=env.num_classes,
                    dtype=_DTYPES[teacher["model"]["dtype"]], cpu_conv=env.cpu_conv,
                    vocab_size=env.vocab_size if tokens else None)


def _embedding_rows(workdir: str, step: int) -> Optional[int]:
  """The rows of a text model's ``params/embed/embedding`` in checkpoint ``step``'s metadata
  (shapes only, no array is read); None when it has no such table."""
  tree = RunDir(workdir).state_metadata(step)
  try:
    return int(tree["params"]["embed"]["embedding"].shape[0])
  except (KeyError, TypeError, AttributeError):
    return None

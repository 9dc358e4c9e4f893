"""From a config to the pieces of a run: data, model, objective, optimizer, mesh.

Everything here runs before anything compiles, so a bad config fails in a second with one
line naming the key, the value and what is allowed (`ConfigError`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxkd import data as data_lib
from jaxkd import models
from jaxkd import objectives
from jaxkd.train import defaults

__all__ = ["ConfigError", "Run", "make_mesh", "make_optimizer", "resolve", "teacher_model"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Hyperparameters whose value follows from the data and the schedule of the run.
_DERIVED = ("steps_per_epoch", "total_epochs", "num_examples", "refresh_every")


class ConfigError(ValueError):
  """A config value that cannot run; the message names the key, the value and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Run:
  """A resolved config: everything the loop needs, built before anything compiles."""
  config: ml_collections.ConfigDict
  train_data: Any
  eval_data: Any
  model: Any
  objective: Any
  steps_per_epoch: int
  total_steps: int
  mesh: jax.sharding.Mesh


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
  if not ok:
    raise ConfigError(f"config.{key}={value!r}: {allowed}")


def make_mesh(num_devices: int) -> jax.sharding.Mesh:
  """A one-axis ``data`` mesh over the first ``num_devices`` devices (-1: all of them)."""
  devices = jax.devices()
  n = len(devices) if num_devices in (-1, 0, None) else num_devices
  _require(1 <= n <= len(devices), "mesh.data", num_devices,
           f"must be -1 (all) or between 1 and the {len(devices)} available devices")
  return jax.sharding.Mesh(np.asarray(devices[:n]), ("data",))


def make_optimizer(opt: ml_collections.ConfigDict, *, steps_per_epoch: int,
                   total_steps: int) -> optax.GradientTransformation:
  """SGD (torch-style coupled weight decay) or AdamW with warm-up and a decay schedule."""
  lr, name = opt.learning_rate, opt.schedule
  warmup = int(round(opt.warmup_epochs * steps_per_epoch))
  _require(lr > 0, "train.optimizer.learning_rate", lr, "must be > 0")
  _require(name in ("constant", "cosine", "multistep"), "train.optimizer.schedule", name,
           "allowed: constant, cosine, multistep")
  _require(0 <= warmup < max(total_steps, 1), "train.optimizer.warmup_epochs", opt.warmup_epochs,
           "must be >= 0 and shorter than the run")
  if name == "constant":
    main = optax.constant_schedule(lr)
  elif name == "cosine":
    main = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
  else:
    main = optax.piecewise_constant_schedule(
        lr, {int(m * steps_per_epoch) - warmup: opt.gamma for m in opt.milestones})
  schedule = (optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
              if warmup else main)
  if opt.name == "sgd":
    return optax.chain(optax.add_decayed_weights(opt.weight_decay),
                       optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
  _require(opt.name == "adamw", "train.optimizer.name", opt.name, "allowed: sgd, adamw")
  return optax.adamw(schedule, weight_decay=opt.weight_decay)


def _objective(config, *, num_examples: int, steps_per_epoch: int, total_steps: int):
  method = config.method.to_dict()
  name = method.pop("name", None)
  _require(name in objectives.names(), "method.name", name,
           f"allowed: {', '.join(objectives.names())}")
  defaults = objectives.defaults(name)
  derived = {"steps_per_epoch": steps_per_epoch, "num_examples": num_examples,
             "total_epochs": max(1, -(-total_steps // steps_per_epoch)),
             "refresh_every": steps_per_epoch}
  for key in _DERIVED:
    if key in defaults and method.get(key) is None:
      method[key] = derived[key]
  try:
    return objectives.get(name, **method)
  except ValueError as err:
    raise ConfigError(f"method: {err}") from None


def _schema() -> dict:
  """The keys of the default config, which every config file extends."""
  return defaults.get_config().to_dict()


def _check_keys(config: dict, schema: dict, prefix: str = "") -> None:
  for key, value in config.items():
    if prefix == "method.":  # method hyperparameters are checked by jaxkd.objectives
      continue
    _require(key in schema, f"{prefix}{key}", value,
             f"unknown key; allowed here: {', '.join(sorted(schema))}")
    if isinstance(value, dict) and isinstance(schema[key], dict):
      _check_keys(value, schema[key], f"{prefix}{key}.")


def _check_train(config, mesh) -> None:
  train = config.train
  positive = ("num_epochs", "checkpoint_every_steps", "keep_checkpoints", "log_every_steps")
  for key in positive:
    value = train[key]
    _require(isinstance(value, int) and value >= 1, f"train.{key}", value, "must be an int >= 1")
  _require(isinstance(train.eval_batch_size, int) and train.eval_batch_size > 0 and
           train.eval_batch_size % mesh.size == 0, "train.eval_batch_size", train.eval_batch_size,
           f"must be a positive multiple of the {mesh.size} devices of the mesh")
  _require(isinstance(config.seed, int) and config.seed >= 0, "seed", config.seed,
           "must be an int >= 0")
  _require(isinstance(config.data.crop_padding, int) and config.data.crop_padding >= 0,
           "data.crop_padding", config.data.crop_padding, "must be an int >= 0")
  _require(0 <= config.data.rotation_degrees <= 180, "data.rotation_degrees",
           config.data.rotation_degrees, "must be in [0, 180]")


def resolve(config: ml_collections.ConfigDict) -> Run:
  """Validates ``config`` and loads data, model, objective and mesh (no compilation)."""
  _check_keys(config.to_dict(), _schema())
  train_cfg = config.train
  _require(config.data.name in data_lib.names(), "data.name", config.data.name,
           f"allowed: {', '.join(data_lib.names())}")
  _require(config.model.name in models.names(), "model.name", config.model.name,
           f"allowed: {', '.join(models.names())}")
  _require(config.model.dtype in _DTYPES, "model.dtype", config.model.dtype,
           f"allowed: {', '.join(_DTYPES)}")
  _require(config.model.cpu_conv in models.CPU_CONVS, "model.cpu_conv",
           config.model.cpu_conv, f"allowed: {', '.join(models.CPU_CONVS)}")
  mesh = make_mesh(config.mesh.data)
  _check_train(config, mesh)
  batch = train_cfg.batch_size
  _require(isinstance(batch, int) and batch > 0 and batch % mesh.size == 0, "train.batch_size",
           batch, f"must be a positive multiple of the {mesh.size} devices of the mesh")
  data_dir = config.data.data_dir or None
  train_data = data_lib.load(config.data.name, split="train", data_dir=data_dir)
  eval_data = data_lib.load(config.data.name, split="test", data_dir=data_dir)
  _require(eval_data.image_shape == train_data.image_shape, "data.name", config.data.name,
           f"test images {eval_data.image_shape} differ from train images "
           f"{train_data.image_shape}")
  _require(batch <= train_data.num_examples, "train.batch_size", batch,
           f"must be at most the {train_data.num_examples} training examples")
  steps_per_epoch = train_data.num_examples // batch
  total_steps = (train_cfg.num_steps if train_cfg.num_steps > 0
                 else train_cfg.num_epochs * steps_per_epoch)
  _require(total_steps > 0, "train.num_epochs", train_cfg.num_epochs,
           "must be > 0 (or set train.num_steps > 0)")
  model = models.get(config.model.name, num_classes=train_data.num_classes,
                     dtype=_DTYPES[config.model.dtype], cpu_conv=config.model.cpu_conv)
  objective = _objective(config, num_examples=train_data.num_examples,
                         steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  if objective.teacher == "model":
    _check_teacher(config)
  return Run(config=config, train_data=train_data, eval_data=eval_data, model=model,
             objective=objective, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
             mesh=mesh)


def _check_teacher(config) -> None:
  """The teacher run exists, was trained on the same data, and has a checkpoint."""
  workdir = config.teacher.workdir
  _require(bool(workdir), "teacher.workdir", workdir,
           f"method {config.method.name!r} needs a teacher: the workdir of a finished run")
  path = os.path.join(workdir, "config.json")
  _require(os.path.isfile(path), "teacher.workdir", workdir,
           "must be the workdir of a jaxkd run (no config.json there)")
  with open(path) as f:
    teacher = json.load(f)
  _require(teacher["data"]["name"] == config.data.name, "teacher.workdir", workdir,
           f"the teacher was trained on {teacher['data']['name']!r} (its classes), "
           f"the student on {config.data.name!r}")
  _require(teacher["model"]["name"] in models.names(), "teacher.workdir", workdir,
           f"its model {teacher['model']['name']!r} is not one of jaxkd.models.names()")
  checkpoints = os.path.join(workdir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit()) \
      if os.path.isdir(checkpoints) else []
  _require(bool(steps), "teacher.workdir", workdir, "holds no checkpoint; train the teacher first")
  step = config.teacher.step
  _require(step < 0 or step in steps, "teacher.step", step,
           f"allowed: -1 (latest) or one of the teacher's checkpoints {steps}")


def teacher_model(config) -> Any:
  """The frozen teacher's module, rebuilt from its run's saved config."""
  with open(os.path.join(config.teacher.workdir, "config.json")) as f:
    teacher = json.load(f)
  num_classes = data_lib.load(teacher["data"]["name"], split="test",
                              data_dir=teacher["data"]["data_dir"] or None).num_classes
  return models.get(teacher["model"]["name"], num_classes=num_classes,
                    dtype=_DTYPES[teacher["model"]["dtype"]], cpu_conv=config.model.cpu_conv)

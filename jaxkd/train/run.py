"""From a config to the pieces of a run: data, model, objective, teacher, optimizer, mesh.

Everything here runs before anything compiles, so a bad config fails in a second with one
line naming the key, the value and what is allowed (`ConfigError`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxkd import config as config_lib
from jaxkd import data as data_lib
from jaxkd import models
from jaxkd import objectives
from jaxkd import tasks
from jaxkd import teachers
from jaxkd.config import ConfigError

__all__ = ["ConfigError", "DTYPES", "SCHEDULES", "Run", "bind_teacher", "build_run",
           "make_mesh", "make_optimizer", "make_schedule", "precision", "streams",
           "warmup_note"]

# float64: the verification mode, under JAX's x64 switch (`precision`).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}
SCHEDULES = ("constant", "cosine", "multistep", "linear", "inverse_sqrt")
# The longest warm-up, as a fraction of the run's steps (`make_schedule`).
_MAX_WARMUP_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class Run:
  """A resolved config: everything the loop needs, built before anything compiles.

  ``teacher`` is the objective's teacher bound to this run (a frozen teacher's checkpoint
  loaded), or None; ``task`` the `jaxkd.tasks` task the data serves, bound to the run's
  settings (an image task's augmentation); ``config`` has the task's defaults filled in.
  """
  config: ml_collections.ConfigDict
  train_data: Any
  eval_data: Any
  model: Any
  objective: Any
  teacher: Any
  task: tasks.Bound
  steps_per_epoch: int
  total_steps: int
  mesh: jax.sharding.Mesh
  # ``model.init_from``'s variables (``params``, ``batch_stats``, host arrays), or None.
  init_variables: Any = None


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
  if not ok:
    raise ConfigError(f"config.{key}={value!r}: {allowed}")


def precision(config: ml_collections.ConfigDict) -> contextlib.AbstractContextManager:
  """The context a run of ``config`` is built and trained in: JAX's x64 switch on for
  ``model.dtype="float64"`` (so float64 arrays stay float64; it must be on before the first
  array is made), nothing otherwise. A context, not the global flag, so that other runs in the
  same process keep JAX's 32-bit defaults."""
  if config.model.dtype == "float64":
    return jax.enable_x64(True)
  return contextlib.nullcontext()


def make_mesh(num_devices: int) -> jax.sharding.Mesh:
  """A one-axis ``data`` mesh over the first ``num_devices`` devices (-1: all of them)."""
  devices = jax.devices()
  n = len(devices) if num_devices in (-1, 0, None) else num_devices
  _require(1 <= n <= len(devices), "mesh.data", num_devices,
           f"must be -1 (all) or between 1 and the {len(devices)} available devices")
  return jax.sharding.Mesh(np.asarray(devices[:n]), ("data",))


def make_schedule(opt: ml_collections.ConfigDict, *, steps_per_epoch: int,
                  total_steps: int) -> optax.Schedule:
  """The learning rate as a function of the step: warm-up, then constant, cosine, multistep or
  linear (to 0 at the last step; ReActNet's schedule, which the original steps per epoch), or
  fairseq's ``inverse_sqrt``: ``lr * step / w`` during the ``warmup_steps = w`` updates, then
  ``lr * sqrt(w / step)`` (warm-up from 0, fairseq's ``--warmup-init-lr`` default).

  The linear warm-up lasts ``warmup_epochs``, but at most 10% of the run's steps (clipped with
  a warning), so a short run (``num_steps=3``, one epoch) trains mostly at its schedule's rates.
  """
  lr, name = opt.learning_rate, opt.schedule
  _require(lr > 0, "train.optimizer.learning_rate", lr, "must be > 0")
  _require(name in SCHEDULES, "train.optimizer.schedule", name,
           f"allowed: {', '.join(SCHEDULES)}")
  _require(opt.warmup_epochs >= 0, "train.optimizer.warmup_epochs", opt.warmup_epochs,
           "must be >= 0")
  warmup_steps = opt.get("warmup_steps", 0)
  _require(isinstance(warmup_steps, int) and warmup_steps >= 0, "train.optimizer.warmup_steps",
           warmup_steps, "must be an int >= 0 (0: warmup_epochs sets the warm-up)")
  warmup = int(round(opt.warmup_epochs * steps_per_epoch))
  limit = int(_MAX_WARMUP_FRACTION * total_steps)
  if name == "inverse_sqrt":
    _require(warmup_steps > 0, "train.optimizer.warmup_steps", warmup_steps,
             "schedule inverse_sqrt decays as lr * sqrt(warmup / step) after its warm-up: set "
             "warmup_steps > 0 (fairseq's IWSLT recipe: 4000)")
    return lambda step: lr * jnp.minimum(
        jnp.asarray(step, jnp.float32) / warmup_steps,
        jnp.sqrt(warmup_steps / jnp.maximum(jnp.asarray(step, jnp.float32), 1.0)))
  if warmup_steps:  # given in steps: taken as it is
    warmup, limit = warmup_steps, warmup_steps
  warmup = min(warmup, limit)  # said by `warmup_note`, once the run starts
  if name == "constant":
    main = optax.constant_schedule(lr)
  elif name == "cosine":
    main = optax.cosine_decay_schedule(lr, max(total_steps - warmup, 1))
  elif name == "linear":
    main = optax.linear_schedule(lr, 0.0, max(total_steps - warmup, 1))
  else:
    main = optax.piecewise_constant_schedule(
        lr, {int(m * steps_per_epoch) - warmup: opt.gamma for m in opt.milestones})
  return (optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
          if warmup else main)


def warmup_note(opt: ml_collections.ConfigDict, *, steps_per_epoch: int,
                total_steps: int) -> str | None:
  """The warning that `make_schedule` clipped the warm-up to 10% of the run, or None.

  `jaxkd.train.train_and_evaluate` logs it once the run is accepted (not for `jaxkd eval`, nor
  before a refusal).
  """
  warmup = int(round(opt.warmup_epochs * steps_per_epoch))
  limit = int(_MAX_WARMUP_FRACTION * total_steps)
  if opt.schedule == "inverse_sqrt" or opt.get("warmup_steps", 0) or warmup <= limit:
    return None
  return (f"train.optimizer.warmup_epochs={opt.warmup_epochs!r} ({warmup} steps) clipped to "
          f"{limit} step{'' if limit == 1 else 's'}, {round(100 * _MAX_WARMUP_FRACTION)}% of "
          f"this {total_steps}-step run")


def make_optimizer(opt: ml_collections.ConfigDict, *, steps_per_epoch: int, total_steps: int,
                   schedule: optax.Schedule | None = None) -> optax.GradientTransformation:
  """SGD or Adam (both with torch-style coupled weight decay, added to the gradient) or AdamW
  (decoupled) at the rates of `make_schedule`; ``decay_params="conv_kernels"`` decays the 4-D
  convolution kernels only.

  ``schedule``: the run's `make_schedule` when the caller keeps it too (`Trainer.schedule`,
  the rate the loop logs); built here when None.
  """
  if schedule is None:
    schedule = make_schedule(opt, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  decay_params = opt.get("decay_params", "all")
  _require(decay_params in ("all", "conv_kernels"), "train.optimizer.decay_params",
           decay_params, "allowed: all, conv_kernels")
  mask = None
  if decay_params == "conv_kernels":
    mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim == 4, params)
  if opt.name == "sgd":
    return optax.chain(optax.add_decayed_weights(opt.weight_decay, mask),
                       optax.sgd(schedule, momentum=opt.momentum or None, nesterov=opt.nesterov))
  betas = tuple(opt.get("betas", (0.9, 0.999)))
  _require(len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas), "train.optimizer.betas",
           betas, "must be two numbers in [0, 1), Adam's (b1, b2)")
  if opt.name == "adam":  # torch.optim.Adam(weight_decay=...): L2 folded into the gradient
    return optax.chain(optax.add_decayed_weights(opt.weight_decay, mask),
                       optax.adam(schedule, b1=betas[0], b2=betas[1]))
  _require(opt.name == "adamw", "train.optimizer.name", opt.name, "allowed: sgd, adamw, adam")
  return optax.adamw(schedule, b1=betas[0], b2=betas[1], weight_decay=opt.weight_decay,
                     mask=mask)


def _objective(config, run_info: objectives.RunInfo):
  """The config's objective, its run-derived hyperparameters (`jaxkd.objectives.Method.derive`)
  filled from ``run_info``."""
  method = config.method.to_dict()
  name = method.pop("name", None)
  try:
    objectives.describe(name)  # a registered method or an importable `module:attr`
  except ValueError as err:
    raise ConfigError(f"config.method.name={name!r}: {err}") from None
  try:
    return objectives.get(name, run_info=run_info, **method)
  except ValueError as err:
    raise ConfigError(f"method: {err}") from None


def bind_teacher(teacher, config, dataset, *, steps_per_epoch: int, total_steps: int):
  """``teacher`` bound to the run of ``config`` on ``dataset`` (``Teacher.setup``; a frozen
  teacher loads its checkpoint, or reads ``teacher.cache``), or None; its refusals as
  `ConfigError`."""
  cache = config.teacher.get("cache") or ""
  _require(isinstance(cache, str), "teacher.cache", cache,
           "allowed: a directory written by `jaxkd cache-teacher`, or \"\" (run the teacher)")
  _require(not cache or (teacher is not None and teacher.setup is not None), "teacher.cache",
           cache, f"method {config.method.name!r} has "
           + ("no teacher" if teacher is None else f"a {teacher.name} teacher, made from the "
              "student during the run") + "; allowed: a method with a frozen teacher (kd, "
           "dkd, dist, ctkd, ...), or \"\"")
  if teacher is None or teacher.setup is None:
    return teacher
  env = teachers.TeacherEnv(settings=config.teacher, data_name=config.data.name,
                            num_classes=dataset.num_classes, cpu_conv=config.model.cpu_conv,
                            mean=tuple(getattr(dataset, "mean", ())),
                            std=tuple(getattr(dataset, "std", ())),
                            vocab_size=getattr(dataset, "vocab_size", None), data=config.data,
                            config=config, steps_per_epoch=steps_per_epoch,
                            total_steps=total_steps)
  try:
    return teacher.setup(env)
  except ValueError as err:
    raise ConfigError(str(err)) from None


def _check_train(config, mesh) -> None:
  train = config.train
  positive = ("num_epochs", "checkpoint_every_steps", "keep_checkpoints", "log_every_steps",
              "steps_per_dispatch")
  for key in positive:
    value = train[key]
    _require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
             f"train.{key}", value, "must be an int >= 1")
  _require(isinstance(train.eval_batch_size, int) and train.eval_batch_size > 0 and
           train.eval_batch_size % mesh.size == 0, "train.eval_batch_size", train.eval_batch_size,
           f"must be a positive multiple of the {mesh.size} devices of the mesh")
  for key in ("extend", "keep_best", "skip_nonfinite"):
    _require(isinstance(train[key], bool), f"train.{key}", train[key], "must be True or False")
  _require(isinstance(config.seed, int) and config.seed >= 0, "seed", config.seed,
           "must be an int >= 0")


def _check_teacher(config) -> None:
  """``teacher.torchvision_*``: a readable state_dict file of a torchvision network, or unset.

  Only the file's name and presence are checked here; its keys and shapes when the teacher is
  bound (`jaxkd.models.from_torchvision`), still before anything compiles.
  """
  teacher = config.teacher
  checkpoint = teacher.get("torchvision_checkpoint") or ""
  name = teacher.get("torchvision_model") or ""
  _require(isinstance(checkpoint, str), "teacher.torchvision_checkpoint", checkpoint,
           "must be a path (a string)")
  if not checkpoint:
    _require(not name, "teacher.torchvision_model", name,
             "needs teacher.torchvision_checkpoint, the file of its weights")
    return
  _require(checkpoint.lower().endswith(models.TORCHVISION_SUFFIXES),
           "teacher.torchvision_checkpoint", checkpoint,
           "allowed: a torchvision state_dict file ending in "
           f"{', '.join(models.TORCHVISION_SUFFIXES)}")
  _require(os.path.isfile(checkpoint), "teacher.torchvision_checkpoint", checkpoint,
           "no such file")
  allowed = models.torchvision_names()
  _require(name in allowed, "teacher.torchvision_model", name,
           f"the network of teacher.torchvision_checkpoint; allowed: {', '.join(allowed)}")


def _init_variables(config) -> Any:
  """``model.init_from``'s latest checkpointed ``params`` and ``batch_stats``, or None when
  unset."""
  init_from = config.model.get("init_from", "")
  _require(isinstance(init_from, str), "model.init_from", init_from,
           "allowed: a jaxkd workdir (a string) or \"\" (random initialisation)")
  if not init_from:
    return None
  _require(bool(teachers.checkpoint_steps(init_from)), "model.init_from", init_from,
           "allowed: a jaxkd workdir holding a checkpoint under checkpoints/ (train it "
           "first), or \"\" (random initialisation)")
  variables, _ = teachers.load_variables(init_from)
  return variables


def _check_best_split(config) -> None:
  """``train.keep_best`` selects a checkpoint on the evaluation split: never the test set."""
  base, start, stop = data_lib.parse_split(config.data.eval_split)
  _require(not config.train.keep_best or (base == "train" and (start, stop) != (None, None)),
           "data.eval_split", config.data.eval_split,
           "train.keep_best=True selects the kept checkpoint on this split, so it must be a "
           "validation split carved from the training set: set data.eval_split='train[90%:]' "
           "and data.train_split='train[:90%]' (or train.keep_best=False)")


def _check_model_kind(config, task: tasks.Task) -> None:
  """The model reads what the task's data holds (`jaxkd.models.input_kind`)."""
  _require(models.input_kind(config.model.name) == task.input_kind, "model.name",
           config.model.name, f"dataset {config.data.name!r} holds {task.input_kind}; allowed: "
           + ", ".join(n for n in models.names() if models.input_kind(n) == task.input_kind))


def _task_call(fn, *args):
  """A task's config check, its `ValueError` as a `ConfigError`."""
  try:
    return fn(*args)
  except ValueError as err:
    raise ConfigError(str(err)) from None


def streams(run: "Run") -> bool:
  """Whether ``run``'s batches carry their inputs (streamed data read record by record, or
  batches by token count) rather than example ids into a split held on the device: a split
  with no ``inputs`` array in memory."""
  return not hasattr(run.train_data, "inputs")


def _datasets(data: ml_collections.ConfigDict, devices: int) -> tuple[Any, Any]:
  """The train and eval splits: in memory, or streamed (`data.in_memory`); ``devices``: the
  mesh's (a translation batch's rows are a multiple of it)."""
  spec = data_lib.spec(data.name)
  in_memory = spec.in_memory if data.in_memory is None else data.in_memory
  _require(isinstance(in_memory, bool), "data.in_memory", data.in_memory,
           "allowed: True, False or None (the dataset's own choice)")
  _require(in_memory or spec.kind != "text", "data.in_memory", data.in_memory,
           f"dataset {data.name!r} is text, held in memory as token ids; allowed: True or None")
  _require(in_memory or spec.tfds_name is not None, "data.in_memory", data.in_memory,
           f"dataset {data.name!r} has no tensorflow-datasets source to stream from; "
           "allowed: True or None")
  _require(not in_memory or spec.in_memory, "data.in_memory", data.in_memory,
           f"dataset {data.name!r} is too large to hold in memory; allowed: False or None")
  data_dir = data.data_dir or None
  if spec.kind == "translation":
    for key, low in (("max_tokens", 1), ("max_length", 1)):
      value = data[key]
      _require(isinstance(value, int) and not isinstance(value, bool) and value >= low,
               f"data.{key}", value, f"must be an int >= {low}")
    load = lambda split: dataclasses.replace(
        data_lib.load(data.name, split=split, data_dir=data_dir, max_tokens=data.max_tokens,
                      max_length=data.max_length), rows_multiple=devices)
    return load(data.train_split), load(data.eval_split)
  if spec.kind == "text":
    for key, low in (("vocab_size", 16), ("max_length", 1)):
      value = data[key]
      _require(isinstance(value, int) and not isinstance(value, bool) and value >= low,
               f"data.{key}", value, f"must be an int >= {low}")
    load = lambda split: data_lib.load(data.name, split=split, data_dir=data_dir,
                                       vocab_size=data.vocab_size, max_length=data.max_length)
    return load(data.train_split), load(data.eval_split)
  if in_memory:
    _require(data.image_size == 224, "data.image_size", data.image_size,
             "applies to streamed data only (data.in_memory=False); in-memory datasets keep "
             "their own image size, so leave it at 224")
    return (data_lib.load(data.name, split=data.train_split, data_dir=data_dir),
            data_lib.load(data.name, split=data.eval_split, data_dir=data_dir))
  _require(isinstance(data.image_size, int) and data.image_size >= 8, "data.image_size",
           data.image_size, "must be an int >= 8")
  _require(isinstance(data.num_workers, int) and data.num_workers >= 0, "data.num_workers",
           data.num_workers, "must be an int >= 0 (0: min(16, CPU cores))")
  _require(isinstance(data.skip_corrupt, bool), "data.skip_corrupt", data.skip_corrupt,
           "must be True or False")
  threads = data.num_workers or min(16, os.cpu_count() or 1)
  open_split = lambda split: data_lib.open_stream(
      data.name, split, data_dir=data_dir, image_size=data.image_size, num_threads=threads,
      skip_corrupt=data.skip_corrupt)
  return open_split(data.train_split), open_split(data.eval_split)


def build_run(config: ml_collections.ConfigDict, *, datasets: Any = None,
              teacher: Any = None) -> Run:
  """Validates ``config`` and loads data, model, objective, teacher and mesh (no compilation).

  The ``data`` keys the config leaves None take the defaults of the data's task
  (`jaxkd.tasks.Task.defaults`: an image task's augmentation), in ``config`` itself, so the
  run's ``config.json`` holds the values it ran with.

  Args:
    config: the run's config.
    datasets: ``(train, eval)`` `jaxkd.data.ArrayDataset` replacing ``config.data.name``.
    teacher: a bound `jaxkd.teachers.Teacher` replacing the objective's own.
  """
  config_lib.check_keys(config.to_dict())
  train_cfg = config.train
  _require(config.data.name in data_lib.names(), "data.name", config.data.name,
           f"allowed: {', '.join(data_lib.names())}")
  _require(config.model.name in models.names(), "model.name", config.model.name,
           f"allowed: {', '.join(models.names())}")
  _require(config.model.dtype in DTYPES, "model.dtype", config.model.dtype,
           f"allowed: {', '.join(DTYPES)}")
  _require(config.model.dtype != "float64" or jax.config.jax_enable_x64, "model.dtype",
           config.model.dtype, "needs JAX's x64 switch on before any array is made: "
           "`jaxkd train` and `jaxkd.train.train_and_evaluate` turn it on themselves; "
           "elsewhere build and train inside `with jaxkd.train.precision(config):`")
  _require(config.model.dtype != "float64" or models.takes_float64(config.model.name),
           "model.dtype", config.model.dtype, f"model {config.model.name!r} has float32 "
           "parameters by construction; allowed: float32, bfloat16")
  _require(config.model.cpu_conv in models.CPU_CONVS, "model.cpu_conv",
           config.model.cpu_conv, f"allowed: {', '.join(models.CPU_CONVS)}")
  _check_teacher(config)
  init_variables = _init_variables(config)
  mesh = make_mesh(config.mesh.data)
  _check_train(config, mesh)
  batch = train_cfg.batch_size
  _require(isinstance(batch, int) and batch > 0 and batch % mesh.size == 0, "train.batch_size",
           batch, f"must be a positive multiple of the {mesh.size} devices of the mesh")
  if datasets is None:
    for key in ("train_split", "eval_split"):
      try:
        data_lib.parse_split(config.data[key], config.data.name)
      except ValueError as err:
        raise ConfigError(f"config.data.{key}: {err}") from None
    _check_best_split(config)
    _check_model_kind(config, tasks.get(data_lib.spec(config.data.name).task))  # before loading
    train_data, eval_data = _datasets(config.data, mesh.size)
  else:
    _require(config.data.in_memory is not False, "data.in_memory", config.data.in_memory,
             "must not be False when the datasets are given in memory")
    train_data, eval_data = datasets
  task = tasks.of(train_data)
  _require(eval_data.task == task.name, "data.name", config.data.name,
           f"the train split serves {task.name}, the eval split {eval_data.task}; they must "
           "serve one task")
  _check_model_kind(config, task)
  task.fill_defaults(config.data)
  settings = _task_call(task.setup, config, train_data)
  vocab_size = getattr(train_data, "vocab_size", None)
  _require(getattr(eval_data, "vocab_size", None) == vocab_size, "data.name", config.data.name,
           f"the eval split's vocabulary ({getattr(eval_data, 'vocab_size', None)}) differs "
           f"from the train split's ({vocab_size})")
  _require(eval_data.input_shape == train_data.input_shape, "data.name", config.data.name,
           f"test inputs {eval_data.input_shape} differ from train inputs "
           f"{train_data.input_shape}")
  if task.by_token_count:  # batches by token count (data.max_tokens); train.batch_size unread
    steps_per_epoch = train_data.num_steps(train=True)
  else:
    _require(batch <= train_data.num_examples, "train.batch_size", batch,
             f"must be at most the {train_data.num_examples} training examples")
    steps_per_epoch = train_data.num_examples // batch
  total_steps = (train_cfg.num_steps if train_cfg.num_steps > 0
                 else train_cfg.num_epochs * steps_per_epoch)
  _require(total_steps > 0, "train.num_epochs", train_cfg.num_epochs,
           "must be > 0 (or set train.num_steps > 0)")
  model = models.get(config.model.name, num_classes=train_data.num_classes,
                     dtype=DTYPES[config.model.dtype], cpu_conv=config.model.cpu_conv,
                     vocab_size=vocab_size)
  objective = _objective(config, objectives.RunInfo(
      num_examples=train_data.num_examples, steps_per_epoch=steps_per_epoch,
      total_steps=total_steps, num_classes=train_data.num_classes))
  _task_call(task.check_objective, config, objective)
  if teacher is None:
    teacher = bind_teacher(objective.teacher, config, train_data,
                           steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  _require(not isinstance(train_data, data_lib.StreamingSplit) or teacher is None
           or not teacher.loads_examples, "method.name", config.method.name,
           f"its {getattr(teacher, 'name', '')} teacher reads other examples' images (partner "
           "rows), which streamed data (data.in_memory=False) does not hold on the device; "
           "allowed with streaming: every method without partner rows")
  return Run(config=config, train_data=train_data, eval_data=eval_data, model=model,
             objective=objective, teacher=teacher, task=tasks.Bound(task, settings),
             steps_per_epoch=steps_per_epoch, total_steps=total_steps, mesh=mesh,
             init_variables=init_variables)

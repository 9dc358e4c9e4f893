"""``jaxkd cache-teacher``: a frozen teacher's outputs for every step of a run, stored once.

    jaxkd cache-teacher --out DIR [--k K] [--rest renormalize|uniform] \\
        [--config FILE] [--config.KEY=VALUE ...]

The config is the run's own (the one ``jaxkd train`` will get, ``teacher.workdir`` naming the
teacher: one run, several comma-separated, or ``teacher.torchvision_checkpoint``). The teacher
sees exactly the augmented batches the run's steps will see (the order is a function of (seed,
epoch), each step's augmentation a function of (seed, step): `step_keys`), and the top k of its
logits per example, with each row's log-sum-exp, are stored under DIR with a manifest of what
the cache was made for (`jaxkd.teachers.bind_cache`). Then ``jaxkd train ...
--config.teacher.cache=DIR`` reads them instead of running the teacher; a run that differs in
its data, split, seed, augmentation, batch size, dtype, length or teacher is refused, naming
the field. Streamed data (ImageNet) is cached through the run's own reader: the teacher sees
the crops the host makes for the run. Written from one process.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections

from jaxkd import config as config_lib
from jaxkd import teachers
from jaxkd import data as data_lib
from jaxkd.train import run as run_lib
from jaxkd.train import step as step_lib
from jaxkd.train import trainer as trainer_lib

__all__ = ["HELP", "add_arguments", "cache_teacher", "main"]

HELP = "store a frozen teacher's top-k logits for every step of a run (--config.teacher.cache)"


def _data_run(config: ml_collections.ConfigDict, datasets: Any) -> run_lib.Run:
  """The run's data, task and schedule, built without its method (which does not change what
  the teacher sees) so that nothing loads its teacher twice."""
  plain = ml_collections.ConfigDict(config.to_dict())
  plain.method = ml_collections.ConfigDict({"name": "ce"})
  run = run_lib.build_run(plain, datasets=datasets)
  run_lib._require(jax.process_count() == 1, "distributed",  # pylint: disable=protected-access
                   config.distributed, "jaxkd cache-teacher writes from one process; allowed: "
                   "one process (its devices all used)")
  run_lib._require(not run.task.task.by_token_count,  # pylint: disable=protected-access
                   "data.name", config.data.name, "batched by token count, so a step's rows "
                   "are not a fixed batch; allowed: classification data")
  return run


def _outputs_fn(run: run_lib.Run, teacher: teachers.Teacher, k: int) -> Callable:
  """The jitted ``(consts, teacher_consts, batch, step) -> (values, classes, lse)`` of one step:
  the step's own augmented inputs (`step_keys`, the task's ``model_input``) through the
  teacher, its logits ``[B, (M,) K]`` (bfloat16 widened to float32) cut to their top k."""
  rng = trainer_lib.state_key(run.config.seed)
  num_classes = run.train_data.num_classes

  def outputs(consts, teacher_consts, batch, step):
    aug_rng, teacher_rng, _ = step_lib.step_keys(rng, step)
    raw, labels = step_lib.inputs(consts, batch)
    x = run.task.model_input(aug_rng, raw, labels)
    z = teacher.logits(teachers.TeacherState(), teacher_consts, teachers.TeacherInputs(
        model=run.model, inputs=x, student={}, outputs={}, batch=batch, load=None,
        rng=teacher_rng)).logits
    if z.ndim == 3:  # an ensemble's [M, B, K]: per example, like the labels
      z = jnp.moveaxis(z, 0, 1)
    if jnp.finfo(z.dtype).bits < 32:
      z = z.astype(jnp.float32)
    lse = jax.nn.logsumexp(z, axis=-1)
    if k == num_classes:
      return z, None, lse
    values, classes = jax.lax.top_k(z, k)
    return values, classes.astype(jnp.int32), lse

  return jax.jit(outputs)


def cache_teacher(config: ml_collections.ConfigDict, directory: str, *, k: int = 0,
                  rest: str = "renormalize", datasets: Any = None,
                  teacher: Optional[teachers.Teacher] = None,
                  progress: Optional[Callable[[int, int], None]] = None) -> dict:
  """Runs the run's frozen teacher over every step's batch and stores its top-k logits.

  Args:
    config: the config of the run that will read the cache (``teacher.cache`` empty).
    directory: where the cache goes (created; must not hold one yet).
    k: the classes kept per example, 1..K; 0: all K (the run's KD then equals the online one).
    rest: how the classes beyond the top k share the probability (`jaxkd.teachers.expand`):
      ``"renormalize"`` (none) or ``"uniform"``.
    datasets: ``(train, eval)`` in memory instead of ``config.data.name`` (as `build`).
    teacher: a bound teacher instead of ``config.teacher``'s (as `build`); the cache then
      names no teacher run and is read by runs naming none.
    progress: called as ``progress(steps_done, total_steps)`` now and then.

  Returns:
    The manifest written to ``<directory>/manifest.json``.

  Raises:
    ConfigError: naming the field, before anything compiles.
  """
  with run_lib.precision(config):
    return _cache_teacher(config, directory, k=k, rest=rest, datasets=datasets,
                          teacher=teacher, progress=progress)


def _option(ok: bool, name: str, value: Any, allowed: str) -> None:
  """A refusal of an argument of `cache_teacher` (``--NAME`` of the command)."""
  if not ok:
    raise run_lib.ConfigError(f"{name}={value!r} (jaxkd cache-teacher --{name}): {allowed}")


def _cache_teacher(config, directory, *, k, rest, datasets, teacher, progress) -> dict:
  run_lib._require(  # pylint: disable=protected-access
      not config.teacher.get("cache"), "teacher.cache", config.teacher.get("cache"),
      "the run a cache is made for runs its teacher; allowed: \"\"")
  _option(rest in teachers.RESTS, "rest", rest, f"allowed: {', '.join(teachers.RESTS)}")
  _option(not os.path.exists(os.path.join(directory, data_lib.CACHE_MANIFEST)), "out",
          directory, "holds a cache already; allowed: a new or empty directory")
  run = _data_run(config, datasets)
  num_classes, total = run.train_data.num_classes, run.total_steps
  _option(isinstance(k, int) and 0 <= k <= num_classes, "k", k,
          f"allowed: 1..{num_classes} classes kept per example, or 0 for all of them")
  k = k or num_classes
  sizes = dict(steps_per_epoch=run.steps_per_epoch, total_steps=total)
  if teacher is None:
    teacher = run_lib.bind_teacher(teachers.from_run(), run.config, run.train_data, **sizes)
  mesh, streamed = run.mesh, run_lib.streams(run)
  consts = {} if streamed else {name: trainer_lib.replicate(mesh, getattr(run.train_data, name))
                                for name in ("inputs", "labels")}
  teacher_consts = jax.tree_util.tree_map(lambda x: trainer_lib.replicate(mesh, x),
                                          teacher.consts)
  outputs = _outputs_fn(run, teacher, k)
  # Streamed batches carry the images the host decoded and cropped, as the run's will.
  batches = (trainer_lib.StreamBatches if streamed else trainer_lib.Batches)(run)
  batch_size = run.config.train.batch_size
  # The ids of each step, as the run orders them: one permutation per epoch.
  epoch_ids = functools.lru_cache(maxsize=1)(lambda epoch: data_lib.batch_indices(
      run.train_data.num_examples, batch_size, seed=run.config.seed, epoch=epoch))
  step_ids = lambda step: epoch_ids(step // run.steps_per_epoch)[step % run.steps_per_epoch]
  pending = (0, outputs(consts, teacher_consts, batches.get(0), jnp.int32(0)))
  first = pending[1][0]
  members = first.shape[1] if first.ndim == 3 else 0
  arrays = data_lib.create_cache(directory, steps=total, batch_size=batch_size,
                                 members=members, k=k, num_classes=num_classes,
                                 dtype=first.dtype)

  def store(step, out):
    values, classes, lse = jax.device_get(out)
    arrays["ids"][step] = step_ids(step)
    arrays["values"][step], arrays["lse"][step] = values, lse
    if classes is not None:
      arrays["classes"][step] = classes
    if progress is not None and ((step + 1) % 100 == 0 or step + 1 == total):
      progress(step + 1, total)

  # One step in flight: step t + 1 is dispatched before step t is stored.
  for step in range(1, total):
    out = outputs(consts, teacher_consts, batches.get(step), jnp.int32(step))
    store(*pending)
    pending = (step, out)
  store(*pending)
  return data_lib.finish_cache(directory, arrays, dict(
      run=data_lib.cache_run_key(run.config, **sizes), data_dir=run.config.data.data_dir,
      teacher=teachers.teacher_key(run.config.teacher),
      fingerprint=teachers.fingerprint(teacher.consts), k=k, num_classes=num_classes,
      rest=rest, members=members, dtype=str(first.dtype),
      created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.description = __doc__.split("\n\n", 1)[0] + "\n\n" + "\n\n".join(
      __doc__.split("\n\n")[2:])
  parser.formatter_class = argparse.RawDescriptionHelpFormatter
  parser.add_argument("--config", default=None,
                      help="the run's config file[:arg] (default: configs/default.py); "
                           "--config.KEY=VALUE overrides follow, as for jaxkd train")
  parser.add_argument("--out", required=True, help="the cache directory to write")
  parser.add_argument("--k", type=int, default=0,
                      help="classes kept per example (their logits and classes); 0: all K, so "
                           "the run's KD equals the online teacher's (default: 0)")
  parser.add_argument("--rest", default="renormalize", choices=teachers.RESTS,
                      help="with k < K, the other classes: renormalize (no probability: a "
                           "softmax over the kept logits) or uniform (the mass the top k "
                           "leave, spread evenly) (default: renormalize)")
  parser.epilog = ("example:\n  jaxkd train --workdir /tmp/ce --config.method.name=ce\n"
                   "  jaxkd cache-teacher --out /tmp/ce_cache --config.method.name=kd "
                   "--config.teacher.workdir=/tmp/ce\n"
                   "  jaxkd train --workdir /tmp/kd --config.method.name=kd "
                   "--config.teacher.workdir=/tmp/ce --config.teacher.cache=/tmp/ce_cache")


def main(args: argparse.Namespace) -> int:
  try:
    config = config_lib.load(args.config)
    for key, text in getattr(args, "overrides", []):
      config_lib.override(config, key, text)
    started = time.time()
    manifest = cache_teacher(config, args.out, k=args.k, rest=args.rest, progress=lambda done,
                             total: print(f"step {done}/{total}", file=sys.stderr, flush=True))
  except (ValueError, FileNotFoundError) as err:  # UsageError, ConfigError, data errors
    print(f"jaxkd: error: {err}", file=sys.stderr)
    return 2
  steps, batch = manifest["shapes"]["ids"]
  size = manifest["bytes_per_example"] * steps * batch
  print(f"cached {steps} steps x {batch} examples, top {manifest['k']} of "
        f"{manifest['num_classes']} classes ({manifest['dtype']}): "
        f"{manifest['bytes_per_example']:.0f} bytes per example and step, {size / 1e6:.3g} MB, "
        f"in {time.time() - started:.1f} s; train with --config.teacher.cache={args.out}")
  return 0

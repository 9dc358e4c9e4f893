"""A cached teacher: a frozen teacher's logits read from the batch instead of computed.

``jaxkd cache-teacher`` (`jaxkd.train.cache_teacher`) runs a frozen teacher (one run, several,
or torchvision's weights) once over exactly the augmented batches a run will see and stores
the top k of its logits per (step, example) (`jaxkd.data.open_cache`: ``values``,
``classes``, and each row's log-sum-exp ``lse``). A run with ``teacher.cache=DIR`` binds its
frozen teacher (`from_run`) to `bind_cache` instead: the teacher's ``host_batch`` adds each
step's rows to the batch, like labels, and ``logits`` turns them back into ``[B, K]`` logits
(``[M, B, K]`` for an ensemble), so the teacher's forward pass is gone from the train step.

What is stored: the teacher's raw logits (temperature-free, in the dtype the teacher returns,
bfloat16 widened to float32) at its k highest classes, with their classes, and the row's
``lse = log sum_j exp(z_j)``, so the top-k probabilities are ``exp(values - lse)`` at
temperature 1 and any temperature is applied by the method as before. With k = K the row is
the teacher's logits themselves, so a run from the cache computes what the online run computes.
With k < K, the classes outside the top k (`expand`, ``rest``):

* ``"renormalize"`` (default): get no probability; a softmax over the kept logits renormalises
  them, at every temperature: what a softmax over stored top-k logits gives, as in Tan et al.'s
  word-level KD code and ``kd``'s ``teacher_top_k``. MaxText's offline distillation stores the
  same top-k logits and their indices (``save_top_k_teacher_logits.py``, ``jax.lax.top_k``).
* ``"uniform"``: share the probability the top k leave at temperature 1, ``1 - sum_i
  exp(values_i - lse)``, evenly (the "other bucket" spread over its classes); the temperature
  then applies to these logits like to the others.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxkd.teachers._base import Teacher, TeacherEnv, TeacherInputs, TeacherOutput, no_state

__all__ = ["CACHE_KEYS", "RESTS", "bind_cache", "expand", "fingerprint", "teacher_key"]

RESTS = ("renormalize", "uniform")
# The batch rows a cached teacher adds, by the cache's array names.
CACHE_KEYS = {"values": "teacher_values", "classes": "teacher_classes", "lse": "teacher_lse"}
# How far below the smallest kept logit the others sit under "renormalize": a finite gap
# (an infinite one makes 0 * log 0 in the KL terms), whose probability exp(-1e4 / T) is 0 in
# float32 at every temperature up to 100.
_RENORMALIZE_GAP = 1e4

CACHED_DOC = ("a frozen teacher's top-k logits per step, read from --config.teacher.cache=DIR "
              "(written by `jaxkd cache-teacher`) instead of running it")


def expand(values: jax.Array, classes: Optional[jax.Array], lse: jax.Array, *,
           num_classes: int, rest: str = "renormalize") -> jax.Array:
  """Logits ``[..., K]`` from a cache's top-k ``values`` and ``classes`` ``[..., k]`` and the
  rows' log-sum-exp ``lse`` ``[...]``.

  With ``classes`` None (k = K) the values are the logits, returned as they are. Otherwise the
  kept logits sit at their classes and every other class gets one logit: the smallest kept
  one minus 1e4 (``rest="renormalize"``: the kept classes share all the probability), or
  ``lse + log((1 - S) / (K - k))`` with ``S = sum exp(values - lse)`` (``"uniform"``: the
  probability the top k leave, spread evenly over the other classes, at temperature 1).
  """
  if classes is None:
    return values
  if rest not in RESTS:
    raise ValueError(f"rest={rest!r}: allowed: {', '.join(RESTS)}")
  k = values.shape[-1]
  if rest == "renormalize":
    other = jnp.min(values, axis=-1) - _RENORMALIZE_GAP
  else:
    kept = jnp.sum(jnp.exp(values - lse[..., None]), axis=-1)
    left = jnp.maximum(1.0 - kept, jnp.finfo(values.dtype).tiny)
    other = lse + jnp.log(left / (num_classes - k))
  rows = values.reshape(-1, k)
  full = jnp.broadcast_to(other.reshape(-1, 1).astype(values.dtype), (rows.shape[0], num_classes))
  full = full.at[jnp.arange(rows.shape[0])[:, None], classes.reshape(-1, k)].set(rows)
  return full.reshape(values.shape[:-1] + (num_classes,))


def fingerprint(variables: Any) -> str:
  """A SHA-256 of a teacher's variables (every leaf's path, dtype, shape and bytes)."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
    leaf = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape};".encode())
    digest.update(leaf.tobytes())
  return digest.hexdigest()


def teacher_key(settings: Any) -> dict:
  """Which teacher a ``teacher`` config section names, as a cache records it: the runs'
  absolute paths, their checkpoint step, ``train_mode`` and a torchvision checkpoint."""
  from jaxkd.teachers._frozen import workdirs  # pylint: disable=import-outside-toplevel
  checkpoint = settings.get("torchvision_checkpoint") or ""
  return {"teacher.workdir": [os.path.abspath(p) for p in workdirs(settings.get("workdir"))],
          "teacher.step": int(settings.get("step", -1)),
          "teacher.train_mode": bool(settings.get("train_mode", False)),
          "teacher.torchvision_checkpoint": os.path.abspath(checkpoint) if checkpoint else "",
          "teacher.torchvision_model": settings.get("torchvision_model") or ""}


def _refuse(field: str, ours: Any, theirs: Any, directory: str, why: str = "") -> None:
  raise ValueError(f"config.{field}={ours!r}: teacher.cache={directory!r} was made for "
                   f"{field}={theirs!r}{why}; allowed: a run with the cache's setting, or a "
                   "cache made for this run (jaxkd cache-teacher with this run's config)")


def _check_run(manifest: dict, env: TeacherEnv, directory: str) -> None:
  """The run sees the inputs the cache was made for (`jaxkd.data.cache_run_key`), else a
  ValueError naming the first field that differs."""
  from jaxkd import data  # pylint: disable=import-outside-toplevel
  run = data.cache_run_key(env.config, steps_per_epoch=env.steps_per_epoch,
                           total_steps=env.total_steps)
  for field, theirs, ours in data.cache_run_mismatches(manifest["run"], run):
    if field == "total_steps":
      length = "num_steps" if env.config.train.num_steps > 0 else "num_epochs"
      raise ValueError(f"config.train.{length}={env.config.train[length]!r}: this run takes "
                       f"{ours} steps, teacher.cache={directory!r} was made for {theirs}; "
                       "allowed: a run of at most the cache's steps (it reads their first "
                       "ones), or a cache made for this run (jaxkd cache-teacher with this "
                       "run's config)")
    if field == "steps_per_epoch":
      _refuse("data.train_split", env.config.data.train_split, env.config.data.train_split,
              directory, f" with {theirs} steps per epoch (this run: {ours}): other data")
    _refuse(field, ours, theirs, directory)
  if manifest["num_classes"] != env.num_classes:
    _refuse("data.name", env.config.data.name, manifest["run"]["data.name"], directory,
            f" with {manifest['num_classes']} classes (this run: {env.num_classes})")


def _check_teacher(manifest: dict, env: TeacherEnv, directory: str,
                   load: Callable[[], Teacher]) -> None:
  """A run naming a teacher names the cache's: the same runs, step, mode and torchvision
  checkpoint, and variables of the same fingerprint (a run retrained in place is refused)."""
  ours, theirs = teacher_key(env.settings), manifest["teacher"]
  if not ours["teacher.workdir"] and not ours["teacher.torchvision_checkpoint"]:
    return  # the run names no teacher: the cache's is its teacher
  for field, value in ours.items():
    if value != theirs[field]:
      _refuse(field, value, theirs[field], directory)
  found = fingerprint(load().consts)
  if found != manifest["fingerprint"]:
    _refuse("teacher.workdir", env.settings.get("workdir"), theirs["teacher.workdir"], directory,
            f" with variables of fingerprint {manifest['fingerprint'][:12]}..., the teacher's "
            f"are now {found[:12]}... (retrained or another checkpoint)")


def bind_cache(directory: str, env: TeacherEnv, *, load: Callable[[], Teacher],
               members: Optional[int] = None) -> Teacher:
  """The teacher of a run with ``teacher.cache=directory`` (`from_run`'s setup calls it).

  The cache must have been made for this run (`_check_run`) and, when the run names a
  teacher, for that teacher (``load()`` gives the bound frozen teacher, loaded only to compare
  its variables' fingerprint); ``members``: the number of teachers the method's
  ``teacher_weights`` weigh (None: any). Raises ValueError naming the field, the run's and the
  cache's values, before anything compiles.
  """
  from jaxkd import data  # pylint: disable=import-outside-toplevel
  manifest, arrays = data.open_cache(directory)
  _check_run(manifest, env, directory)
  _check_teacher(manifest, env, directory, load)
  count = manifest["members"] or 1
  if members is not None and members != count:
    raise ValueError(f"config.method.teacher_weights=<{members} weights>: teacher.cache="
                     f"{directory!r} holds {count} teacher(s); allowed: one weight per teacher, "
                     "or () for uniform")
  num_classes, rest, stacked = manifest["num_classes"], manifest["rest"], bool(manifest["members"])
  total = manifest["run"]["total_steps"]

  def host_batch(labels, order, *, seed, epoch) -> dict:
    del labels, seed
    start = epoch * order.shape[0]
    stop = min(start + order.shape[0], total)
    if not np.array_equal(arrays["ids"][start:stop], order[:stop - start]):
      raise ValueError(f"config.teacher.cache={directory!r}: the example ids of epoch {epoch} "
                       "differ from this run's order; the cache was made for other data")
    return {CACHE_KEYS[name]: arrays[name][start:stop] for name in CACHE_KEYS if name in arrays}

  def logits(state, consts, inputs: TeacherInputs) -> TeacherOutput:
    del state, consts
    batch = inputs.batch
    out = expand(batch[CACHE_KEYS["values"]], batch.get(CACHE_KEYS["classes"]),
                 batch[CACHE_KEYS["lse"]], num_classes=num_classes, rest=rest)
    return TeacherOutput(jax.lax.stop_gradient(jnp.moveaxis(out, 1, 0) if stacked else out))

  return Teacher(init=no_state, logits=logits, host_batch=host_batch,
                 name=f"cached ({manifest['k']} of {num_classes})", doc=CACHED_DOC)

"""A teacher's outputs on disk: for every step of a run, the top-k of its logits per example.

What a frozen teacher says about a training example depends on the augmented image it sees,
and the augmentation of step t is a pure function of (seed, t) and the batch's example ids
(`jaxkd.train.step_keys`, `batch_indices`). A cache therefore holds one row per (step,
position in the batch), written once by ``jaxkd cache-teacher`` (`jaxkd.train.cache_teacher`)
and read back by the teacher `jaxkd.teachers.cached` one step at a time. A directory holds:

* ``manifest.json``: what the cache was made for (`cache_run_key`: the data, split, seed,
  augmentation, batch size, dtype and steps of the run; the teacher and the fingerprint of its
  variables), ``k``, the convention for the classes beyond the top k (``rest``), the stored
  dtype and the array shapes. Written last: a directory without it is not a cache.
* ``ids.npy``: int32 ``[steps, B]``, the example ids of every step's batch, in batch order
  (checked against the run's own order when it reads an epoch).
* ``values.npy``: ``[steps, B, (M,) k]``, the teacher's logits at its k highest classes,
  descending (with k = K: all K logits in class order); M teachers of an ensemble on the
  third axis.
* ``classes.npy``: int32, the classes of ``values`` (absent when k = K).
* ``lse.npy``: ``[steps, B, (M,)]``, the log-sum-exp of each row's K logits, so that the
  stored top-k probabilities are ``exp(values - lse)`` exactly, at temperature 1.

The arrays are ``.npy`` files opened as memory maps: a run reads one step's rows at a time.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

__all__ = ["CACHE_MANIFEST", "CACHE_RUN_FIELDS", "cache_run_key", "cache_run_mismatches",
           "create_cache", "finish_cache", "open_cache"]

CACHE_MANIFEST = "manifest.json"
_VERSION = 1
# The config fields that decide what the teacher sees at every step. The data directory is
# recorded but not compared (the same data may be moved); the example ids are, per epoch.
CACHE_RUN_FIELDS = ("data.name", "data.train_split", "seed", "train.batch_size", "model.dtype",
              "data.crop_padding", "data.flip", "data.rotation_degrees", "data.vocab_size",
              "data.max_length")


def _field(config: Any, dotted: str) -> Any:
  """``config``'s value at a dotted path, JSON-normalised (tuples become lists); None when
  absent."""
  value = config
  for part in dotted.split("."):
    if value is None or part not in value:
      return None
    value = value[part]
  return json.loads(json.dumps(value))


def cache_run_key(config: Any, *, steps_per_epoch: int, total_steps: int) -> dict:
  """What a cache for the run of ``config`` must have been made for: the `CACHE_RUN_FIELDS`, the
  steps per epoch and the run's number of steps."""
  key = {name: _field(config, name) for name in CACHE_RUN_FIELDS}
  key.update(steps_per_epoch=int(steps_per_epoch), total_steps=int(total_steps))
  return key


def cache_run_mismatches(cached: dict, run: dict) -> list[tuple[str, Any, Any]]:
  """``(field, cache's value, run's value)`` for each field where a run may not read a cache
  (`cache_run_key`s): any difference, but a run shorter than the cache reads its first steps."""
  found = []
  for name in CACHE_RUN_FIELDS + ("steps_per_epoch",):
    if cached.get(name) != run.get(name):
      found.append((name, cached.get(name), run.get(name)))
  if run["total_steps"] > cached["total_steps"]:
    found.append(("total_steps", cached["total_steps"], run["total_steps"]))
  return found


def create_cache(directory: str, *, steps: int, batch_size: int, members: int, k: int,
                 num_classes: int, dtype: Any) -> dict:
  """Empty arrays of a cache under ``directory`` (created), as writable memory maps.

  ``members``: 0 for one teacher (rows ``[k]``), M for an ensemble (rows ``[M, k]``).
  """
  os.makedirs(directory, exist_ok=True)
  lead = (steps, batch_size) + ((members,) if members else ())
  shapes = {"ids": ((steps, batch_size), np.int32), "values": (lead + (k,), dtype),
            "lse": (lead, dtype)}
  if k < num_classes:
    shapes["classes"] = (lead + (k,), np.int32)
  return {name: np.lib.format.open_memmap(os.path.join(directory, f"{name}.npy"), mode="w+",
                                          dtype=dt, shape=shape)
          for name, (shape, dt) in shapes.items()}


def finish_cache(directory: str, arrays: dict, manifest: dict) -> dict:
  """Flushes ``arrays`` and writes the manifest (with the version, the arrays' shapes and the
  bytes stored per example and step); returns the manifest."""
  for array in arrays.values():
    array.flush()
  rows = int(np.prod(arrays["ids"].shape))
  manifest = dict(manifest, version=_VERSION,
                  shapes={name: list(a.shape) for name, a in arrays.items()},
                  dtypes={name: str(a.dtype) for name, a in arrays.items()},
                  bytes_per_example=sum(a.nbytes for a in arrays.values()) / rows)
  path = os.path.join(directory, CACHE_MANIFEST)
  with open(path + ".tmp", "w") as f:
    json.dump(manifest, f, indent=1)
  os.replace(path + ".tmp", path)
  return manifest


def open_cache(directory: str) -> tuple[dict, dict]:
  """``(manifest, arrays)`` of a finished cache, the arrays read-only memory maps.

  Raises:
    ValueError: ``directory`` holds no finished cache (no manifest), or one of another version.
  """
  path = os.path.join(directory, CACHE_MANIFEST)
  if not os.path.isfile(path):
    raise ValueError(f"config.teacher.cache={directory!r}: no {CACHE_MANIFEST} there; allowed: a "
                     "directory written by `jaxkd cache-teacher --out DIR` (it writes the "
                     "manifest last, once every step is stored)")
  with open(path) as f:
    manifest = json.load(f)
  if manifest.get("version") != _VERSION:
    raise ValueError(f"config.teacher.cache={directory!r}: a cache of version "
                     f"{manifest.get('version')!r}; this jaxkd reads version {_VERSION}: make it "
                     "again with `jaxkd cache-teacher`")
  arrays = {name: np.load(os.path.join(directory, f"{name}.npy"), mmap_mode="r")
            for name in manifest["shapes"]}
  return manifest, arrays

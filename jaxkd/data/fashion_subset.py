"""A fixed, stratified, downsampled Fashion-MNIST subset, written as IDX files.

The Fashion-MNIST study runs on 2 shared CPU cores, where 28x28 images train at about 200
images/s; 14x14 images (2x2 mean pooling) train about ten times faster. The subset keeps the
same number of examples of every class, picked by a fixed seed, so every run of the study and
every re-run sees the same images. The files are IDX, so ``jaxkd.data.load("fashion_mnist",
data_dir=...)`` reads them like the original ones.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

__all__ = ["default_directory", "prepare", "stratified_indices", "write_idx"]

_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
          "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_MANIFEST = "subset.json"


def default_directory(*, per_class_train: int, per_class_test: int, pool: int) -> str:
  """``$JAXKD_CACHE`` (default ``~/.cache/jaxkd``) / a name that spells out the subset."""
  root = os.environ.get("JAXKD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "jaxkd")
  size = 28 // pool
  return os.path.join(root, f"fashion_mnist_{size}px_{per_class_train}_{per_class_test}")


def stratified_indices(labels: np.ndarray, per_class: int, *, seed: int) -> np.ndarray:
  """``per_class`` positions of every class, drawn without replacement, sorted.

  Raises:
    ValueError: a class has fewer than ``per_class`` examples.
  """
  rng = np.random.default_rng(seed)
  picked = []
  for c in np.unique(labels):
    where = np.flatnonzero(labels == c)
    if len(where) < per_class:
      raise ValueError(f"per_class={per_class}: class {c} has only {len(where)} examples")
    picked.append(rng.permutation(where)[:per_class])
  return np.sort(np.concatenate(picked))


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes a uint8 array as an IDX file (labels ``[N]``, images ``[N, rows, cols]``)."""
  array = np.ascontiguousarray(array, np.uint8)
  magic = {1: 2049, 3: 2051}.get(array.ndim)
  if magic is None:
    raise ValueError(f"array must have 1 (labels) or 3 (images) dimensions, got {array.shape}")
  with open(path, "wb") as f:
    f.write(magic.to_bytes(4, "big"))
    for size in array.shape:
      f.write(int(size).to_bytes(4, "big"))
    f.write(array.tobytes())


def _pool(images: np.ndarray, pool: int) -> np.ndarray:
  if pool == 1:
    return images
  n, rows, cols = images.shape
  if rows % pool or cols % pool:
    raise ValueError(f"pool={pool} must divide the image size {rows}x{cols}")
  blocks = images.reshape(n, rows // pool, pool, cols // pool, pool).astype(np.float64)
  return np.round(blocks.mean(axis=(2, 4))).astype(np.uint8)


def prepare(directory: str | None = None, *, per_class_train: int, per_class_test: int,
            pool: int = 2, seed: int = 0, source_dir: str | None = None) -> str:
  """Writes the subset into ``directory`` (once; a directory already holding it is kept).

  Args:
    directory: where to write; None: `default_directory`.
    per_class_train: training examples per class.
    per_class_test: test examples per class.
    pool: mean-pooling factor (2: 28x28 -> 14x14; 1: full size).
    seed: the seed of the stratified draw.
    source_dir: where the original IDX files are (None: Debian's directory).

  Returns:
    The directory, to be passed as ``data.data_dir``.
  """
  from jaxkd.data import _offline  # pylint: disable=import-outside-toplevel
  directory = directory or default_directory(per_class_train=per_class_train,
                                             per_class_test=per_class_test, pool=pool)
  manifest = {"per_class_train": per_class_train, "per_class_test": per_class_test,
              "pool": pool, "seed": seed}
  manifest_path = os.path.join(directory, _MANIFEST)
  if os.path.isfile(manifest_path):
    with open(manifest_path) as f:
      found = json.load(f)
    if found != manifest:
      raise ValueError(f"directory={directory!r} holds another subset ({found}); expected "
                       f"{manifest}: remove it or choose another directory")
    return directory
  os.makedirs(os.path.dirname(os.path.abspath(directory)), exist_ok=True)
  staging = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(directory)))
  for split, per_class in (("train", per_class_train), ("test", per_class_test)):
    dataset = _offline.load_fashion_mnist(source_dir, split)
    keep = stratified_indices(dataset.labels, per_class, seed=seed)
    images, labels = _pool(dataset.images[keep, ..., 0], pool), dataset.labels[keep]
    write_idx(os.path.join(staging, _STEMS[split][0]), images)
    write_idx(os.path.join(staging, _STEMS[split][1]), labels)
  with open(os.path.join(staging, _MANIFEST), "w") as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
  try:
    os.rename(staging, directory)
  except OSError:  # another process wrote it first; theirs is identical
    shutil.rmtree(staging, ignore_errors=True)
  return directory

"""Real datasets that need no download: scikit-learn's digits and Debian's Fashion-MNIST."""
import gzip
import os
from typing import Optional

import numpy as np

from jaxkd.data._dataset import ArrayDataset, DatasetNotFoundError, channel_stats

__all__ = ["load_digits", "find_fashion_mnist", "load_fashion_mnist",
           "DEBIAN_FASHION_MNIST_DIR", "DIGITS_TEST_EVERY"]

# Where Debian's `dataset-fashion-mnist` package installs the IDX files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# Digits split: within each class, in file order, every fifth example is a test example.
DIGITS_TEST_EVERY = 5
_FASHION_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_MAGIC = {2049: 1, 2051: 3}  # labels: [N]; images: [N, rows, cols]


def _digits_test_mask(labels: np.ndarray) -> np.ndarray:
  """Stratified 80/20 split with no random numbers: position k of a class is
  a test example when ``k % 5 == 4``, so the split never changes with library versions."""
  mask = np.zeros(labels.shape, bool)
  for c in np.unique(labels):
    where = np.flatnonzero(labels == c)
    mask[where[DIGITS_TEST_EVERY - 1::DIGITS_TEST_EVERY]] = True
  return mask


def load_digits(split: str) -> ArrayDataset:
  """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), as uint8.

  The 0..16 intensities are scaled to 0..255 (``round(v * 255 / 16)``). The
  split is stratified and deterministic: within each class, in file order, every
  fifth example is held out (1442 train / 355 test). mean/std are measured on
  the training split and used for both splits.
  """
  from sklearn import datasets as sk_datasets  # pylint: disable=import-outside-toplevel
  digits = sk_datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  test = _digits_test_mask(labels)
  mean, std = channel_stats(images[~test])
  keep = test if split == "test" else ~test
  return ArrayDataset("digits", split, images[keep], labels[keep], 10, mean, std)


def _read_idx(path: str) -> np.ndarray:
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  magic = int.from_bytes(data[:4], "big")
  if magic not in _IDX_MAGIC:
    raise ValueError(f"{path} is not an IDX file of uint8 data (magic {magic}).")
  ndim = _IDX_MAGIC[magic]
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if body.size != np.prod(shape):
    raise ValueError(f"{path} holds {body.size} bytes of data; its header says {shape}.")
  return body.reshape(shape)


def _find_file(directory: str, stem: str) -> Optional[str]:
  for sub in ("", "fashion-mnist", "fashion_mnist"):
    for suffix in (".gz", ""):
      path = os.path.join(directory, sub, stem + suffix)
      if os.path.isfile(path):
        return path
  return None


def find_fashion_mnist(data_dir: Optional[str], split: str) -> Optional[tuple[str, str]]:
  """Paths of the (images, labels) IDX files of ``split``, or None when absent.

  Looked for in ``data_dir`` (or Debian's directory when None), directly or in a
  ``fashion-mnist`` / ``fashion_mnist`` subdirectory, gzipped or not.
  """
  directory = DEBIAN_FASHION_MNIST_DIR if data_dir is None else os.fspath(data_dir)
  paths = tuple(_find_file(directory, stem) for stem in _FASHION_FILES[split])
  return None if None in paths else paths


def load_fashion_mnist(data_dir: Optional[str], split: str) -> ArrayDataset:
  """Fashion-MNIST (28x28x1, 10 classes) read directly from its IDX files.

  tfds' own builder rejects Debian's files (different checksums), so they are
  parsed here. mean/std are the usual training-split values (0.2860, 0.3530).
  """
  paths = find_fashion_mnist(data_dir, split)
  if paths is None:
    where = DEBIAN_FASHION_MNIST_DIR if data_dir is None else data_dir
    raise DatasetNotFoundError(
        f"Fashion-MNIST ({split}) IDX files {_FASHION_FILES[split]} (.gz or not) "
        f"were not found in {where}. Install them with `apt-get install "
        f"dataset-fashion-mnist` (Debian/Ubuntu, goes to {DEBIAN_FASHION_MNIST_DIR}), "
        "or put the four files from https://github.com/zalandoresearch/fashion-mnist "
        "in a directory and pass it as data_dir.")
  images, labels = (_read_idx(p) for p in paths)
  if images.ndim != 3 or labels.shape != images.shape[:1]:
    raise ValueError(f"Fashion-MNIST files {paths} disagree: images {images.shape}, "
                     f"labels {labels.shape}.")
  return ArrayDataset("fashion_mnist", split, images[..., None],
                      labels.astype(np.int32), 10, (0.2860,), (0.3530,))

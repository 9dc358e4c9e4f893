"""In-memory image datasets, the missing-dataset error, and the mock dataset for tests."""
import dataclasses
from typing import Sequence

import numpy as np

__all__ = ["ArrayDataset", "DatasetNotFoundError", "channel_stats", "from_arrays", "mock"]


class DatasetNotFoundError(FileNotFoundError):
  """A dataset is not on this machine; the message says how to prepare it.

  Nothing is ever downloaded implicitly: preparing a dataset is a deliberate,
  separate step by the user.
  """


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
  """One split of an image classification dataset, held in host memory.

  Attributes:
    name: registry name of the dataset (see ``jaxkd.data.names()``).
    split: ``"train"`` or ``"test"``.
    images: ``uint8 [N, H, W, C]``.
    labels: ``int32 [N]`` in ``[0, num_classes)``.
    num_classes: number of classes.
    mean: per-channel mean in ``[0, 1]`` units (of the training split).
    std: per-channel standard deviation in ``[0, 1]`` units.

  The example id of ``images[i]`` is ``i`` (``ids``): a stable position in the
  split, so per-example state (PS-KD's table) can be indexed by it.
  """
  name: str
  split: str
  images: np.ndarray
  labels: np.ndarray
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]

  def __post_init__(self):
    images, labels = self.images, self.labels
    where = f"dataset {self.name!r} ({self.split})"
    if images.dtype != np.uint8 or images.ndim != 4:
      raise ValueError(f"{where}: images must be uint8 [N, H, W, C]; got {images.dtype} "
                       f"with shape {images.shape} (use jaxkd.data.from_arrays for floats)")
    if images.shape[0] == 0:
      raise ValueError(f"{where}: is empty (0 examples); allowed: at least 1 example")
    if labels.dtype != np.int32 or labels.shape != images.shape[:1]:
      raise ValueError(f"{where}: labels must be int32 [{images.shape[0]}]; got "
                       f"{labels.dtype} with shape {labels.shape}")
    if self.num_classes < 1:
      raise ValueError(f"{where}: num_classes={self.num_classes}; allowed: >= 1")
    bad = np.flatnonzero((labels < 0) | (labels >= self.num_classes))
    if bad.size:
      raise ValueError(f"{where}: example {bad[0]} has label {labels[bad[0]]}; allowed: "
                       f"[0, {self.num_classes}) ({bad.size} bad labels in all)")
    channels = images.shape[-1]
    for field in ("mean", "std"):
      value = getattr(self, field)
      if len(value) != channels:
        raise ValueError(f"{where}: {field}={value} must have one entry per channel "
                         f"({channels})")
    if min(self.std) <= 0:
      raise ValueError(f"{where}: std={self.std}; allowed: positive values")

  @property
  def ids(self) -> np.ndarray:
    """``int32 [N]`` example ids: the position of each example in the split."""
    return np.arange(self.num_examples, dtype=np.int32)

  @property
  def num_examples(self) -> int:
    return self.images.shape[0]

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.images.shape[1:])

  # What the engine reads of every dataset: the task it serves and its inputs.
  task = "image_classification"
  input_dtype = np.uint8

  @property
  def inputs(self) -> np.ndarray:
    """The engine's name for a split's inputs (`jaxkd.tasks`): the images."""
    return self.images

  @property
  def input_shape(self) -> tuple[int, int, int]:
    return self.image_shape


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and standard deviation of ``uint8 [N, H, W, C]`` in [0, 1] units."""
  pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  return (tuple(float(m) for m in pixels.mean(0)),
          tuple(float(s) for s in pixels.std(0)))


def mock(num_examples: int = 256,
         image_shape: Sequence[int] = (8, 8, 3),
         num_classes: int = 10,
         seed: int = 0,
         *,
         split: str = "train") -> ArrayDataset:
  """A deterministic random dataset whose labels can be learned, for tests.

  Each class has a fixed random template (drawn from ``seed``); an image is the
  average of its class template and uniform noise, so a network can fit both
  splits. Labels cycle through the classes, then are shuffled, so every class
  appears when ``num_examples >= num_classes``. ``split`` picks the noise and
  label stream; the templates are shared across splits.

  Args:
    num_examples: number of examples N.
    image_shape: ``(H, W, C)``.
    num_classes: number of classes K.
    seed: non-negative integer seed.
    split: ``"train"`` or ``"test"``.

  Returns:
    An ``ArrayDataset`` named ``"mock"``. Its mean/std are those of the
    generating distribution (the mean of two uniform bytes: 0.5 and about 0.2),
    the same for both splits, as a real test split uses the training statistics.
  """
  image_shape = tuple(int(d) for d in image_shape)
  if num_examples < 1 or num_classes < 1 or seed < 0:
    raise ValueError(f"mock needs num_examples >= 1, num_classes >= 1, seed >= 0; "
                     f"got {num_examples}, {num_classes}, {seed}.")
  if len(image_shape) != 3 or min(image_shape) < 1:
    raise ValueError(f"image_shape must be (H, W, C) positive; got {image_shape}.")
  if split not in ("train", "test"):
    raise ValueError(f"split must be 'train' or 'test'; got {split!r}.")
  templates = np.random.default_rng(seed).integers(
      0, 256, (num_classes,) + image_shape)
  rng = np.random.default_rng((seed, 0 if split == "train" else 1))
  labels = rng.permutation(np.arange(num_examples) % num_classes).astype(np.int32)
  noise = rng.integers(0, 256, (num_examples,) + image_shape)
  images = ((templates[labels] + noise) // 2).astype(np.uint8)
  channels = image_shape[-1]
  return ArrayDataset("mock", split, images, labels, num_classes,
                      (0.5,) * channels, (0.2,) * channels)


def from_arrays(name: str, split: str, images: np.ndarray, labels: np.ndarray, *,
                num_classes: int, image_shape: Sequence[int] | None = None,
                mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None) -> ArrayDataset:
  """Your own arrays as an `ArrayDataset`, checked before anything compiles.

  Args:
    name: a name for messages and results.
    split: ``"train"`` or ``"test"``.
    images: ``[N, H, W, C]`` uint8 pixels, or floats in ``[0, 1]``.
    labels: integer ``[N]`` in ``[0, num_classes)``.
    num_classes: K.
    image_shape: the expected ``(H, W, C)``; a mismatch is an error.
    mean: per-channel mean in [0, 1] units; default: computed from ``images``.
    std: per-channel standard deviation; default: computed from ``images``.

  Returns:
    The dataset. Errors name the dataset and the first bad example: NaN/Inf or
    out-of-range pixels, labels outside ``[0, num_classes)``, an empty or wrongly
    shaped array.
  """
  where = f"dataset {name!r} ({split})"
  images, labels = np.asarray(images), np.asarray(labels)
  if images.ndim != 4 or (image_shape is not None and images.shape[1:] != tuple(image_shape)):
    expected = "[N, H, W, C]" if image_shape is None else f"[N, {', '.join(map(str, image_shape))}]"
    raise ValueError(f"{where}: images have shape {images.shape}; allowed: {expected}")
  if images.dtype != np.uint8:
    flat = images.reshape(images.shape[0], -1).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(flat).all(1) | (np.nan_to_num(flat, nan=-1.0) < 0).any(1)
                         | (np.nan_to_num(flat) > 1).any(1))
    if bad.size:
      raise ValueError(f"{where}: example {bad[0]} has NaN, Inf or pixels outside [0, 1] "
                       f"({bad.size} bad examples in all); allowed: finite values in [0, 1]")
    images = np.round(flat.reshape(images.shape) * 255).astype(np.uint8)
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f"{where}: labels have dtype {labels.dtype}; allowed: integers")
  default_mean, default_std = channel_stats(images) if images.size else ((), ())
  return ArrayDataset(name, split, images, labels.astype(np.int32), num_classes,
                      tuple(mean or default_mean), tuple(std or default_std))

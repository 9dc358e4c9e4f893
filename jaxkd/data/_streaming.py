"""Streaming input for datasets too large for memory (ImageNet): grain over tfds.data_source.

The order is the in-memory order (``batch_indices(seed, epoch)`` over the whole
split), so a resumed run sees the same batches; each process reads its slice of
every global batch. Decoding, resizing and cropping run on the host; flips,
padding crops and rotations can follow on the device with ``device_augment``.
"""
import dataclasses
import math
from typing import Any, Iterator, Optional

import numpy as np
from PIL import Image

from jaxkd.data import _order
from jaxkd.data import _registry
from jaxkd.data import _tfds

__all__ = ["StreamingDataset", "streaming", "random_resized_box", "center_crop_resize"]

# torchvision's RandomResizedCrop defaults (the ImageNet recipe).
_SCALE = (0.08, 1.0)
_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))
# Evaluation resizes the shorter side to image_size / 0.875 (256 for 224), then centre-crops.
_EVAL_CROP_FRACTION = 0.875
_CROP_STREAM = 2  # random stream of the host-side crops, apart from order and partners


@dataclasses.dataclass(frozen=True)
class StreamingDataset:
  """One epoch of batches for this process; iterate it, ``len`` counts its steps.

  Each batch is ``dict(image=uint8 [b, S, S, C], label=int32 [b], id=int32 [b],
  mask=bool [b])`` with ``b = global_batch_size // process_count``; ``mask`` is
  False only on the padding of the last evaluation batch.
  """
  batches: Any  # grain.IterDataset
  num_steps: int
  num_examples: int
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]

  def __iter__(self) -> Iterator[dict]:
    return iter(self.batches)

  def __len__(self) -> int:
    return self.num_steps


def random_resized_box(rng: np.random.Generator, height: int,
                       width: int) -> tuple[int, int, int, int]:
  """torchvision ``RandomResizedCrop.get_params``: a box (top, left, h, w).

  Area a uniform fraction of [0.08, 1] of the image, aspect ratio log-uniform in
  [3/4, 4/3]; after 10 misses, the largest centred box of clamped aspect ratio.
  """
  area = height * width
  for _ in range(10):
    target = area * rng.uniform(*_SCALE)
    ratio = math.exp(rng.uniform(*_LOG_RATIO))
    w = int(round(math.sqrt(target * ratio)))
    h = int(round(math.sqrt(target / ratio)))
    if 0 < w <= width and 0 < h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  ratio = min(max(width / height, 3 / 4), 4 / 3)
  if width / height > ratio:
    h, w = height, int(round(height * ratio))
  else:
    w, h = width, int(round(width / ratio))
  return (height - h) // 2, (width - w) // 2, h, w


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
  if image.shape[:2] == (height, width):
    return image
  channels = image.shape[-1]
  pil = Image.fromarray(image[..., 0] if channels == 1 else image)
  out = np.asarray(pil.resize((width, height), Image.BILINEAR))
  return out[..., None] if channels == 1 else out


def center_crop_resize(image: np.ndarray, size: int) -> np.ndarray:
  """Evaluation view: shorter side to ``round(size / 0.875)``, then the central ``size`` square."""
  h, w = image.shape[:2]
  short = int(round(size / _EVAL_CROP_FRACTION))
  scale = short / min(h, w)
  new_h, new_w = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
  image = _resize(image, new_h, new_w)
  top, left = (new_h - size) // 2, (new_w - size) // 2
  return image[top:top + size, left:left + size]


def _train_view(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  top, left, h, w = random_resized_box(rng, *image.shape[:2])
  image = _resize(image[top:top + h, left:left + w], size, size)
  return image[:, ::-1] if rng.random() < 0.5 else image


def _epoch_order(num_examples, global_batch_size, train, seed, epoch):
  """``[steps, global_batch]`` indices and validity: shuffled, or in order and padded."""
  if train:
    order = _order.batch_indices(num_examples, global_batch_size, seed=seed, epoch=epoch)
    return order, np.ones(order.shape, bool)
  steps = -(-num_examples // global_batch_size)
  flat = np.arange(steps * global_batch_size)
  valid = flat < num_examples
  order = np.where(valid, flat, 0).astype(np.int32)
  return order.reshape(steps, -1), valid.reshape(steps, -1)


def _process(process_index: Optional[int], process_count: Optional[int]):
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index must be in [0, process_count={process_count}); "
                     f"got {process_index}.")
  return process_index, process_count


def streaming(name: str, split: str = "train", *, global_batch_size: int, seed: int,
              epoch: int, data_dir: Optional[str] = None, image_size: int = 224,
              train: Optional[bool] = None, num_threads: int = 16,
              prefetch: int = 2, process_index: Optional[int] = None,
              process_count: Optional[int] = None) -> StreamingDataset:
  """One epoch of a tfds dataset, read, decoded and cropped on the host by grain.

  Training (``train``, default: ``split == "train"``): the order of
  ``batch_indices(N, global_batch_size, seed=seed, epoch=epoch)`` (remainder
  dropped) and torchvision's ``RandomResizedCrop(image_size)`` plus a random
  horizontal flip, drawn per example from ``(seed, epoch, id)``. Evaluation:
  every example once, in order, shorter side resized to ``image_size / 0.875``
  and centre-cropped; the last batch is padded with ``mask`` False.

  Args:
    name: a tfds-backed name of ``names()`` (e.g. ``"imagenet2012"``).
    split: ``"train"`` or ``"test"`` (ImageNet's "test" is its validation set).
    global_batch_size: examples per step over all processes.
    seed: non-negative run seed.
    epoch: non-negative epoch number.
    data_dir: tfds data directory (default ``$TFDS_DATA_DIR`` / ``~/tensorflow_datasets``).
    image_size: side S of the square output images.
    train: random crops and shuffled order, or the evaluation view.
    num_threads: host threads reading and decoding.
    prefetch: batches read ahead.
    process_index: this process (default ``jax.process_index()``).
    process_count: number of processes (default ``jax.process_count()``).

  Returns:
    A ``StreamingDataset`` of this process's batches.

  Raises:
    ValueError: bad arguments, or a dataset without a tfds source.
    DatasetNotFoundError: the dataset is not prepared under ``data_dir``.
  """
  import grain  # pylint: disable=import-outside-toplevel
  spec = _registry.spec(name)
  if spec.tfds_name is None:
    raise ValueError(f"{name!r} has no tensorflow-datasets source; use jaxkd.data.load.")
  if split not in _registry.SPLITS:
    raise ValueError(f"split must be one of {_registry.SPLITS}; got {split!r}.")
  if image_size < 1:
    raise ValueError(f"image_size must be >= 1; got {image_size}.")
  index, count = _process(process_index, process_count)
  if global_batch_size < 1 or global_batch_size % count:
    raise ValueError(f"global_batch_size must be a positive multiple of process_count="
                     f"{count}; got {global_batch_size}.")
  train = split == "train" if train is None else train
  tfds_split = spec.test_split if split == "test" else "train"
  source = _tfds.open_source(spec.tfds_name, tfds_split, data_dir)
  order, valid = _epoch_order(len(source), global_batch_size, train, seed, epoch)
  local = global_batch_size // count
  ids = order[:, index * local:(index + 1) * local].reshape(-1)
  mask = valid[:, index * local:(index + 1) * local].reshape(-1)

  def read(position: int) -> dict:
    example_id = int(ids[position])
    example = source[example_id]
    image = np.asarray(example["image"])
    image = image[..., None] if image.ndim == 2 else image
    if train:
      rng = np.random.default_rng((seed, epoch, _CROP_STREAM, example_id))
      image = _train_view(image, image_size, rng)
    else:
      image = center_crop_resize(image, image_size)
    return dict(image=np.ascontiguousarray(image), label=np.int32(example["label"]),
                id=np.int32(example_id), mask=bool(mask[position]))

  batches = (grain.MapDataset.source(range(len(ids))).map(read)
             .batch(local, drop_remainder=True)
             .to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                prefetch_buffer_size=prefetch * local)))
  num_classes = int(source.dataset_info.features["label"].num_classes)
  return StreamingDataset(batches, order.shape[0], len(source), num_classes,
                          spec.mean, spec.std)

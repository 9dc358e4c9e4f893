"""Streaming input for datasets too large for memory (ImageNet): grain over tfds.data_source.

`open_stream(name, split)` opens a tfds split (array_record, no TensorFlow) as a
`StreamingSplit`; ``StreamingSplit.batches(...)`` reads one epoch of this process's batches.
The order is the in-memory order (``batch_indices(seed, epoch)`` over the whole split), and
every random crop is drawn from ``(seed, epoch, example id)``, so a run resumed mid-epoch sees
the same batches, bit for bit, with any number of threads. Each process reads only its slice
of every global batch. Decoding, resizing and cropping run on host threads (PIL releases the
GIL); flips and padding crops may follow on the device (`device_augment`).
"""
from __future__ import annotations

import dataclasses
import io
import logging
import math
from typing import Any, Iterator, Optional

import numpy as np
from PIL import Image

from jaxkd.data import _order
from jaxkd.data import _registry
from jaxkd.data import _tfds

__all__ = ["RecordError", "StreamingSplit", "open_stream", "random_resized_box",
           "center_crop_resize"]

# torchvision's RandomResizedCrop defaults (the ImageNet recipe).
_SCALE = (0.08, 1.0)
_LOG_RATIO = (math.log(3 / 4), math.log(4 / 3))
# Evaluation resizes the shorter side to image_size / 0.875 (256 for 224), then centre-crops.
_EVAL_CROP_FRACTION = 0.875
_CROP_STREAM = 2  # random stream of the host-side crops, apart from order and partners

_log = logging.getLogger(__name__)


class RecordError(ValueError):
  """A record of a streamed split that cannot be read or decoded; names split and record."""


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


def _decode(encoded: bytes, channels: int) -> np.ndarray:
  with Image.open(io.BytesIO(encoded)) as pil:
    image = np.asarray(pil.convert("L" if channels == 1 else "RGB"))
  return image[..., None] if channels == 1 else image


def epoch_order(num_examples: int, global_batch_size: int, *, train: bool, seed: int,
                epoch: int) -> tuple[np.ndarray, np.ndarray]:
  """``[steps, global_batch]`` example ids and validity: shuffled (`batch_indices`, the
  remainder dropped) for training; every example once, in order, the last batch padded (valid
  False) for evaluation."""
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


@dataclasses.dataclass(frozen=True)
class StreamingSplit:
  """One split of a tfds dataset, read record by record (see `open_stream`).

  Attributes:
    name: registry name (``jaxkd.data.names()``).
    split: the split as given (``"train"``, ``"train[:90%]"``, ``"test"``).
    source: the random-access tfds source (images left encoded).
    num_classes: number of classes.
    mean: per-channel mean in ``[0, 1]`` units (of the whole training split).
    std: per-channel standard deviation in ``[0, 1]`` units.
    image_size: side S of the square images every batch holds.
    num_threads: host threads reading and decoding.
    prefetch: batches read ahead.
    skip_corrupt: replace records that cannot be decoded instead of failing (`read`).
    skipped: the ids of the records skipped so far (grows while batches are read).
  """
  name: str
  split: str
  source: Any
  num_classes: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  image_size: int
  num_threads: int = 8
  prefetch: int = 2
  skip_corrupt: bool = False
  skipped: set = dataclasses.field(default_factory=set, compare=False, repr=False)

  @property
  def num_examples(self) -> int:
    return len(self.source)

  @property
  def channels(self) -> int:
    return int(self.source.dataset_info.features["image"].shape[-1] or 3)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return (self.image_size, self.image_size, self.channels)

  def _decoded(self, example_id: int) -> tuple[np.ndarray, int]:
    try:
      example = self.source[example_id]
      return _decode(example["image"], self.channels), example["label"]
    except Exception as err:  # pylint: disable=broad-except
      raise RecordError(
          f"dataset {self.name!r} split {self.split!r}: record {example_id} cannot be read or "
          f"decoded ({type(err).__name__}: {err}); re-prepare the dataset, or pass "
          "skip_corrupt=True (config: data.skip_corrupt=True) to skip such records, counted"
      ) from err

  def read(self, example_id: int, *, train: bool, seed: int, epoch: int) -> tuple:
    """``(image, label)`` of one record: the training view (torchvision's
    ``RandomResizedCrop(S)`` and a random horizontal flip, drawn from ``(seed, epoch, id)``)
    or the evaluation view (shorter side to ``S / 0.875``, central ``S`` square).

    A record that cannot be decoded raises `RecordError`; with ``skip_corrupt`` the next
    record that decodes (``id + 1``, ``id + 2``, ...) takes its place, the same every epoch,
    and its id is added to ``skipped``.
    """
    for offset in range(self.num_examples):
      try:
        image, label = self._decoded((example_id + offset) % self.num_examples)
        break
      except RecordError as err:
        if not self.skip_corrupt:
          raise
        if example_id + offset not in self.skipped:
          self.skipped.add(example_id + offset)
          _log.warning("skipping %s", err)
    else:
      raise RecordError(f"dataset {self.name!r} split {self.split!r}: no record decodes")
    if train:
      rng = np.random.default_rng((seed, epoch, _CROP_STREAM, example_id))
      image = _train_view(image, self.image_size, rng)
    else:
      image = center_crop_resize(image, self.image_size)
    return np.ascontiguousarray(image), np.int32(label)

  def num_steps(self, global_batch_size: int, *, train: bool) -> int:
    """Steps of one epoch: full batches for training, all examples (padded) for evaluation."""
    n = self.num_examples
    return n // global_batch_size if train else -(-n // global_batch_size)

  def batches(self, *, global_batch_size: int, train: bool, seed: int = 0, epoch: int = 0,
              start_step: int = 0, process_index: Optional[int] = None,
              process_count: Optional[int] = None) -> Iterator[dict]:
    """This process's batches of one epoch, from ``start_step`` on.

    Each is ``dict(image=uint8 [b, S, S, C], label=int32 [b], id=int32 [b], mask=bool [b])``
    with ``b = global_batch_size // process_count``: rows ``[p*b, (p+1)*b)`` of the global
    batch of process ``p``. ``mask`` is False only on the padding of the last evaluation
    batch.

    Raises:
      ValueError: ``global_batch_size`` not a positive multiple of the process count.
      RecordError: (while iterating) a record that cannot be decoded.
    """
    import grain  # pylint: disable=import-outside-toplevel
    index, count = _process(process_index, process_count)
    if global_batch_size < 1 or global_batch_size % count:
      raise ValueError(f"global_batch_size must be a positive multiple of process_count="
                       f"{count}; got {global_batch_size}.")
    order, valid = epoch_order(self.num_examples, global_batch_size, train=train, seed=seed,
                               epoch=epoch)
    local = global_batch_size // count
    ids = order[start_step:, index * local:(index + 1) * local].reshape(-1)
    mask = valid[start_step:, index * local:(index + 1) * local].reshape(-1)

    def read(position: int) -> dict:
      example_id = int(ids[position])
      image, label = self.read(example_id, train=train, seed=seed, epoch=epoch)
      return dict(image=image, label=label, id=np.int32(example_id),
                  mask=bool(mask[position]))

    options = grain.ReadOptions(num_threads=self.num_threads,
                                prefetch_buffer_size=self.prefetch * local)
    return iter(grain.MapDataset.source(range(len(ids))).map(read)
                .batch(local, drop_remainder=True).to_iter_dataset(options))


def open_stream(name: str, split: str = "train", *, data_dir: Optional[str] = None,
                image_size: int = 224, num_threads: int = 8, prefetch: int = 2,
                skip_corrupt: bool = False) -> StreamingSplit:
  """Opens a split of a tfds-backed dataset for streaming; never downloads.

  Args:
    name: a tfds-backed name of ``names()`` (e.g. ``"imagenet2012"``).
    split: ``"train"`` or ``"test"`` (ImageNet's "test" is its validation set), sliceable as
      in `jaxkd.data.load` (``"train[:99%]"``); ids are positions in the sliced split.
    data_dir: tfds data directory (default ``$TFDS_DATA_DIR`` / ``~/tensorflow_datasets``).
    image_size: side S of the square images.
    num_threads: host threads reading and decoding (per process).
    prefetch: batches read ahead.
    skip_corrupt: skip records that cannot be decoded, counted (see `StreamingSplit.read`);
      False: fail with a `RecordError` naming the split and the record.

  Raises:
    ValueError: bad arguments, or a dataset without a tfds source.
    DatasetNotFoundError: the dataset is not prepared under ``data_dir``.
  """
  spec = _registry.spec(name)
  if spec.tfds_name is None:
    raise ValueError(f"dataset {name!r} has no tensorflow-datasets source, so it cannot be "
                     "streamed; use jaxkd.data.load.")
  base, start, stop = _registry.parse_split(split)
  for key, value in (("image_size", image_size), ("num_threads", num_threads),
                     ("prefetch", prefetch)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f"{key}={value!r}: must be an int >= 1.")
  tfds_split = spec.test_split if base == "test" else "train"
  if (start, stop) != (None, None):
    tfds_split += f"[{start or ''}:{stop or ''}]"
  source = _tfds.open_source(spec.tfds_name, tfds_split, data_dir, decode_images=False)
  num_classes = int(source.dataset_info.features["label"].num_classes)
  return StreamingSplit(name, split, source, num_classes, tuple(spec.mean), tuple(spec.std),
                        image_size, num_threads, prefetch, skip_corrupt)

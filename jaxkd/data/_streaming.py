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
import logging
from typing import Any, Iterator, Optional

import numpy as np

from jaxkd.data import _decode
from jaxkd.data import _order
from jaxkd.data import _registry
from jaxkd.data import _tfds

__all__ = ["RecordError", "StreamingSplit", "epoch_order", "open_stream"]

_CROP_STREAM = 2  # random stream of the host-side crops, apart from order and partners

_log = logging.getLogger(__name__)


class RecordError(ValueError):
  """A record of a streamed split that cannot be read or decoded; names split and record."""


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

  # What the engine reads of every dataset: the task it serves (`jaxkd.tasks`).
  task = "image_classification"
  input_dtype = np.uint8

  @property
  def input_shape(self) -> tuple[int, int, int]:
    return self.image_shape

  def _view(self, example_id: int, train: bool, seed: int, epoch: int) -> tuple:
    try:
      example = self.source[example_id]
      if train:
        rng = np.random.default_rng((seed, epoch, _CROP_STREAM, example_id))
        image = _decode.train_view(example["image"], self.image_size, rng,
                                   channels=self.channels)
      else:
        image = _decode.eval_view(example["image"], self.image_size, channels=self.channels)
      return image, example["label"]
    except Exception as err:  # pylint: disable=broad-except
      raise RecordError(
          f"dataset {self.name!r} split {self.split!r}: record {example_id} cannot be read or "
          f"decoded ({type(err).__name__}: {err}); re-prepare the dataset, or pass "
          "skip_corrupt=True (config: data.skip_corrupt=True) to skip such records, counted"
      ) from err

  def read(self, example_id: int, *, train: bool, seed: int, epoch: int) -> tuple:
    """``(image, label)`` of one record: the training view (torchvision's
    ``RandomResizedCrop(S)`` and a random horizontal flip, drawn from ``(seed, epoch, id)``)
    or the evaluation view (shorter side to ``S / 0.875``, central ``S`` square); see
    `jaxkd.data._decode`.

    A record that cannot be decoded raises `RecordError`; with ``skip_corrupt`` the next
    record that decodes (``id + 1``, ``id + 2``, ...) takes its place, the same every epoch,
    and its id is added to ``skipped``.
    """
    for offset in range(self.num_examples):
      candidate = (example_id + offset) % self.num_examples
      try:
        image, label = self._view(candidate, train, seed, epoch)
        break
      except RecordError as err:
        if not self.skip_corrupt:
          raise
        if candidate not in self.skipped:
          self.skipped.add(candidate)
          _log.warning("skipping %s", err)
    else:
      raise RecordError(f"dataset {self.name!r} split {self.split!r}: no record decodes")
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
  base, start, stop = _registry.parse_split(split, name)
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

"""tensorflow-datasets input through ``tfds.data_source`` (array_record, no TensorFlow)."""
import os
from typing import Any, Optional, Sequence

import numpy as np

from jaxkd import _quiet
from jaxkd.data._dataset import ArrayDataset, DatasetNotFoundError

__all__ = ["open_source", "load_in_memory", "prepare_hint"]


def prepare_hint(name: str, data_dir: Optional[str]) -> str:
  """How to prepare ``name`` for ``tfds.data_source`` (the text of the missing-data error)."""
  where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
  if name == "imagenet2012":
    return (f"tensorflow-datasets 'imagenet2012' is not prepared in array_record format under "
            f"{where}. Download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from "
            "image-net.org into a folder M, then run `jaxkd prepare imagenet2012 --manual_dir M "
            "--data_dir DATA_DIR` (no TensorFlow needed) and pass data_dir=DATA_DIR. Nothing is "
            "downloaded automatically.")
  return (f"tensorflow-datasets '{name}' is not prepared in array_record format under "
          f"{where}. Prepare it once, on a machine with internet and TensorFlow (tfds needs it "
          f"to prepare, not to read), with `tfds build "
          f"{name} --data_dir=DATA_DIR --file_format=array_record` (or in Python: "
          f"tfds.builder('{name}', data_dir=DATA_DIR, file_format='array_record')"
          f".download_and_prepare()), then pass data_dir=DATA_DIR. "
          "Nothing is downloaded automatically.")


def open_source(name: str, split: str, data_dir: Optional[str], *,
                decode_images: bool = True) -> Sequence[Any]:
  """Opens a random-access tfds data source; never downloads.

  ``decode_images=False`` leaves every image feature as its encoded bytes: the streaming
  reader decodes and crops ``image`` itself, and the other image features some datasets carry
  beside it (``caltech_birds2011``'s ``segmentation_mask``) are never decoded, since only
  ``image`` and ``label`` are read.

  Raises:
    DatasetNotFoundError: when the dataset is not prepared under ``data_dir``.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    # tfds's "Variant folder ... has no dataset_info.json" is said below, in our words.
    with _quiet.without_absl_lines(_quiet.TFDS_NO_VARIANT_INFO):
      if decode_images:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                                builder_kwargs={"file_format": "array_record"})
      builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
      decoders = {key: tfds.decode.SkipDecoding() for key, feature in
                  builder.info.features.items() if isinstance(feature, tfds.features.Image)}
      return builder.as_data_source(split=split, decoders=decoders)
  # A missing dataset surfaces from tfds as one of these, depending on what is
  # absent (no version folder: empty splits -> KeyError; other formats ->
  # NotImplementedError); all mean "not prepared here".
  except (KeyError, NotImplementedError, FileNotFoundError, AssertionError) as e:
    raise DatasetNotFoundError(prepare_hint(name, data_dir)) from e


def load_in_memory(name: str, split: str, tfds_name: str, tfds_split: str,
                   data_dir: Optional[str], mean: Sequence[float],
                   std: Sequence[float]) -> ArrayDataset:
  """Reads a whole tfds split into uint8/int32 arrays (CIFAR-sized datasets).

  Example i of the returned dataset is record i of the tfds split, so the id is
  the record's position. All images must share one shape.
  """
  source = open_source(tfds_name, tfds_split, data_dir)
  num_classes = int(source.dataset_info.features["label"].num_classes)
  count = len(source)
  if count == 0:
    raise DatasetNotFoundError(f"'{tfds_name}' split '{tfds_split}' is empty. "
                               + prepare_hint(tfds_name, data_dir))
  first = np.asarray(source[0]["image"])
  images = np.empty((count,) + first.shape, np.uint8)
  labels = np.empty((count,), np.int32)
  # Record by record: the mocked sources of tfds.testing break `__getitems__`.
  for i in range(count):
    example = source[i]
    image = np.asarray(example["image"])
    if image.shape != first.shape:
      raise ValueError(f"'{tfds_name}' images differ in shape ({first.shape} and "
                       f"{image.shape} at record {i}); use jaxkd.data.open_stream, "
                       "which resizes on the host.")
    images[i] = image
    labels[i] = example["label"]
  return ArrayDataset(name, split, images, labels, num_classes, tuple(mean), tuple(std))

"""`prepare_imagenet2012`: ImageNet in tfds's array_record layout, without TensorFlow.

    jaxkd prepare imagenet2012 --manual_dir DIR_WITH_TARS --data_dir DATA_DIR

tensorflow-datasets' own ``imagenet2012`` builder needs TensorFlow only to check the manual
files' presence, read the validation labels and re-encode 23 odd images (22 CMYK JPEGs, one PNG
named .JPEG). This runs that builder with those three steps done in plain Python and PIL, so
its writer produces exactly the files ``tfds build imagenet2012 --file_format=array_record``
writes (``dataset_info.json``, ``features.json``, the label names and the array_record shards),
which ``tfds.data_source`` and `jaxkd.data.open_stream` read.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
from typing import Optional

from PIL import Image

__all__ = ["DEMO_TRAIN", "HELP", "MANUAL_FILES", "add_arguments", "main", "prepare_imagenet2012"]

HELP = "write ImageNet's tars as a tfds array_record dataset (no TensorFlow needed)"

MANUAL_FILES = {"train": "ILSVRC2012_img_train.tar", "validation": "ILSVRC2012_img_val.tar"}


def _builder_class():
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  official = tfds.builder_cls("imagenet2012")
  module = __import__(official.__module__, fromlist=["CMYK_IMAGES", "PNG_IMAGES"])
  odd = set(module.CMYK_IMAGES) | set(module.PNG_IMAGES)

  class Builder(official, skip_registration=True):  # pylint: disable=abstract-method
    """The official builder; TensorFlow-free split discovery, labels and re-encoding."""
    name = "imagenet2012"

    def _split_generators(self, dl_manager):
      splits = []
      for split, file_name in MANUAL_FILES.items():
        path = os.path.join(dl_manager.manual_dir, file_name)
        if not os.path.exists(path):
          continue
        kwargs = {}
        if split == "validation":
          kwargs["validation_labels"] = _validation_labels(path)
        splits.append(tfds.core.SplitGenerator(
            name=split, gen_kwargs={"archive": _iter_tar(path), **kwargs}))
      return splits

    def _fix_image(self, image_fname, image):
      if image_fname not in odd:
        return image
      out = io.BytesIO()
      with Image.open(image) as pil:
        pil.convert("RGB").save(out, "JPEG", quality=100)
      out.seek(0)
      return out

  return Builder


def _iter_tar(path: str):
  """``(member name, file object)`` of a tar, as ``dl_manager.iter_archive`` yields them (which
  would open the path with TensorFlow's file system)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  with open(path, "rb") as f:
    yield from tfds.download.iter_archive(f, tfds.download.ExtractMethod.TAR_STREAM)


def _validation_labels(val_path: str) -> dict:
  """Image name -> label, as tfds pairs them: its label file lists the labels in the
  alphabetical order of the validation images' names."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  path = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")
  labels = path.read_text().strip().splitlines()
  with tarfile.open(val_path) as tar:
    names = sorted(tar.getnames())
  return dict(zip(names, labels))


def prepare_imagenet2012(manual_dir: str, data_dir: Optional[str] = None) -> dict:
  """Writes ImageNet-1k (ILSVRC 2012) in tfds's array_record layout under ``data_dir``.

  Args:
    manual_dir: the folder holding ``ILSVRC2012_img_train.tar`` (the tar of 1,000 per-class
      tars) and/or ``ILSVRC2012_img_val.tar`` (50,000 JPEGs), as image-net.org distributes
      them. A split whose tar is absent is skipped.
    data_dir: the tfds data directory to write (default ``$TFDS_DATA_DIR`` or
      ``~/tensorflow_datasets``); `jaxkd.data.open_stream` and ``jaxkd train
      --config.data.data_dir`` read it.

  Returns:
    ``{split: number of examples}`` written.

  Raises:
    FileNotFoundError: neither tar is in ``manual_dir``.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  present = [f for f in MANUAL_FILES.values() if os.path.exists(os.path.join(manual_dir, f))]
  if not present:
    raise FileNotFoundError(f"manual_dir={manual_dir!r} holds neither "
                            f"{' nor '.join(MANUAL_FILES.values())}; download them from "
                            "image-net.org (they cannot be downloaded automatically)")
  if data_dir is None:
    data_dir = os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))
  builder = _builder_class()(data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return {name: split.num_examples for name, split in builder.info.splits.items()}


# What `jaxkd prepare imagenet2012 --demo DIR` suggests: a few streamed steps of a small CNN on
# 32-pixel crops (the host crops and flips; no on-device augmentation).
DEMO_TRAIN = ("jaxkd train --workdir {workdir} --config.data.name=imagenet2012 "
              "--config.data.data_dir={data_dir} --config.data.image_size=32 "
              "--config.data.crop_padding=0 --config.data.rotation_degrees=0 "
              "--config.train.batch_size=8 --config.train.eval_batch_size=8 "
              "--config.train.num_steps=6 --config.method.name=ce")


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.description = (HELP[0].upper() + HELP[1:] + ". Or, with --demo DIR, a tiny ImageNet "
                        "(4 classes, 34 JPEGs in image-net.org's tars) to try streaming.")
  parser.add_argument("dataset", choices=["imagenet2012"], help="the dataset to prepare")
  parser.add_argument("--manual_dir", default=None,
                      help="folder with ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar")
  parser.add_argument("--data_dir", default=None,
                      help="tfds data directory to write (default: $TFDS_DATA_DIR or "
                           "~/tensorflow_datasets); train with --config.data.data_dir=DATA_DIR")
  parser.add_argument("--demo", default=None, metavar="DIR",
                      help="instead: write a tiny ImageNet's tars into DIR/manual and prepare "
                           "them into DIR/data (seconds), then print a train command for it")


def main(args: argparse.Namespace) -> int:
  if (args.manual_dir is None) == (args.demo is None):
    print("jaxkd: error: --manual_dir / --demo: give exactly one; allowed: --manual_dir DIR "
          "(image-net.org's two tars) or --demo DIR (a tiny ImageNet written there)",
          file=sys.stderr)
    return 2
  if args.demo is not None and args.data_dir is not None:
    print("jaxkd: error: --data_dir: not with --demo, which prepares into DIR/data; allowed: "
          "one of them", file=sys.stderr)
    return 2
  manual_dir, data_dir = args.manual_dir, args.data_dir
  if args.demo is not None:
    from jaxkd.data import _demo  # pylint: disable=import-outside-toplevel
    manual_dir, data_dir = (os.path.join(args.demo, "manual"), os.path.join(args.demo, "data"))
    _demo.write_imagenet_tars(manual_dir)
  try:
    written = prepare_imagenet2012(manual_dir, data_dir)
  except FileNotFoundError as err:
    print(f"jaxkd: error: --{err}", file=sys.stderr)
    return 2
  print("prepared imagenet2012: " + ", ".join(f"{k} {v:,} examples" for k, v in
                                              sorted(written.items())))
  if args.demo is not None:
    print("try streaming it: " + DEMO_TRAIN.format(
        workdir=os.path.join(args.demo, "run"), data_dir=data_dir))
  return 0

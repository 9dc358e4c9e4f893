"""A tiny ImageNet in image-net.org's own tar layout, to try streaming without the real one.

    jaxkd prepare imagenet2012 --demo DIR

writes ``DIR/manual/ILSVRC2012_img_train.tar`` (a tar of per-class tars) and
``ILSVRC2012_img_val.tar`` as image-net.org ships them, holding real JPEGs of mixed sizes (a
few grayscale, as ImageNet has), then prepares them with `prepare_imagenet2012` into
``DIR/data``, which ``--config.data.data_dir`` then names. The tests' tiny ImageNet is this.
"""
from __future__ import annotations

import io
import os
import tarfile

import numpy as np

__all__ = ["TINY_IMAGENET", "jpeg_bytes", "write_imagenet_tars"]

# Classes (the first wnids of tfds's label list), images per class in train, validation images.
TINY_IMAGENET = {"classes": 4, "per_class": 6, "validation": 10}


def jpeg_bytes(rng: np.random.Generator, height: int, width: int, gray: bool) -> bytes:
  """Real JPEG bytes of the given size: smooth class-free content plus noise."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  y, x = np.mgrid[:height, :width]
  base = (np.sin(x / rng.uniform(3, 9)) + np.cos(y / rng.uniform(3, 9))) * 60 + 128
  pixels = np.clip(base[..., None] + rng.normal(0, 20, (height, width, 3)), 0, 255)
  image = Image.fromarray(pixels.astype(np.uint8))
  out = io.BytesIO()
  (image.convert("L") if gray else image).save(out, "JPEG", quality=85)
  return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(payload)
  tar.addfile(info, io.BytesIO(payload))


def write_imagenet_tars(manual_dir: str, seed: int = 0, **sizes: int) -> list[str]:
  """Writes ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar into ``manual_dir``.

  Args:
    manual_dir: the folder to write (created).
    seed: the images' random content and sizes.
    **sizes: ``classes``, ``per_class``, ``validation`` replacing `TINY_IMAGENET`'s.

  Returns:
    The train classes' wnids.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  counts = {**TINY_IMAGENET, **sizes}
  rng = np.random.default_rng(seed)
  wnids = tfds.core.tfds_path("datasets/imagenet2012/labels.txt").read_text().split()
  wnids = wnids[:counts["classes"]]
  size = lambda: (int(rng.integers(20, 48)), int(rng.integers(20, 48)))
  os.makedirs(manual_dir, exist_ok=True)
  with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_train.tar"), "w") as outer:
    for wnid in wnids:
      inner_bytes = io.BytesIO()
      with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
        for i in range(counts["per_class"]):
          _add(inner, f"{wnid}_{i}.JPEG", jpeg_bytes(rng, *size(), gray=i == 0))
      _add(outer, f"{wnid}.tar", inner_bytes.getvalue())
  with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_val.tar"), "w") as tar:
    for i in range(1, counts["validation"] + 1):
      _add(tar, f"ILSVRC2012_val_{i:08d}.JPEG", jpeg_bytes(rng, *size(), gray=i == 3))
  return wnids

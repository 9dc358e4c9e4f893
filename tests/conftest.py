"""Test session setup, done before jax is imported anywhere.

- 8 simulated CPU devices, so sharding tests run in one process. Single-device tests are
  unaffected (jit places work on device 0); mesh tests pick `jax.devices()[:n]`.
- A persistent compilation cache shared by the tests and the `jaxkd train` subprocesses they
  start: many tests compile the same small programs (the default config's steps), and a cache
  hit turns seconds of XLA compilation into a file read. The cache key covers the program,
  the devices and the jax version, so results are unchanged.
"""
import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "jaxkd-tests-jax-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import io  # pylint: disable=wrong-import-position
import tarfile  # pylint: disable=wrong-import-position

import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

# The tiny ImageNet of `imagenet_dir`: classes (wnids, the first of tfds's label list) and
# images per class in train, and validation images.
TINY_IMAGENET = {"classes": 4, "per_class": 6, "validation": 10}


def _jpeg(rng: np.random.Generator, height: int, width: int, gray: bool) -> bytes:
  from PIL import Image  # pylint: disable=import-outside-toplevel
  # Smooth class-free content plus noise: real JPEG bytes of the given size.
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


def write_imagenet_tars(manual_dir: str, seed: int = 0) -> list[str]:
  """ILSVRC2012_img_train.tar (a tar of per-class tars) and ILSVRC2012_img_val.tar as
  image-net.org ships them, with `TINY_IMAGENET` real JPEGs of mixed sizes (a few grayscale);
  returns the train classes' wnids."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  wnids = tfds.core.tfds_path("datasets/imagenet2012/labels.txt").read_text().split()
  wnids = wnids[:TINY_IMAGENET["classes"]]
  size = lambda: (int(rng.integers(20, 48)), int(rng.integers(20, 48)))
  os.makedirs(manual_dir, exist_ok=True)
  with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_train.tar"), "w") as outer:
    for wnid in wnids:
      inner_bytes = io.BytesIO()
      with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
        for i in range(TINY_IMAGENET["per_class"]):
          _add(inner, f"{wnid}_{i}.JPEG", _jpeg(rng, *size(), gray=i == 0))
      _add(outer, f"{wnid}.tar", inner_bytes.getvalue())
  with tarfile.open(os.path.join(manual_dir, "ILSVRC2012_img_val.tar"), "w") as tar:
    for i in range(1, TINY_IMAGENET["validation"] + 1):
      _add(tar, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(rng, *size(), gray=i == 3))
  return wnids


@pytest.fixture(scope="session")
def imagenet_dir(tmp_path_factory):
  """A tfds data_dir holding a tiny ``imagenet2012`` in tfds's real array_record layout,
  written by tfds's own builder (`jaxkd.data.prepare_imagenet2012`) from image-net.org-style
  tars."""
  from jaxkd import data  # pylint: disable=import-outside-toplevel
  root = tmp_path_factory.mktemp("imagenet")
  write_imagenet_tars(str(root / "manual"))
  data.prepare_imagenet2012(str(root / "manual"), str(root / "data"))
  return str(root / "data")

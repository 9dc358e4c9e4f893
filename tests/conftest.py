"""Test session setup, done before jax is imported anywhere.

- The ``slow`` marker (`pytest_configure`): ``pytest -m "not slow" tests`` is the fast lane.

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

import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position


def pytest_configure(config):
  """The ``slow`` marker: ``pytest -m "not slow" tests`` is the fast lane (every module still
  covered), ``pytest tests`` runs everything."""
  config.addinivalue_line(
      "markers", "slow: trains or compiles for long (conv nets on 8 devices, subprocess runs); "
      'left out of the fast lane, pytest -m "not slow"')


def pytest_sessionfinish(session):  # pylint: disable=unused-argument
  """In a pytest-xdist worker, free JAX's compiled programs and collect garbage before the
  worker reports that it finished. After the report, execnet gives the worker 5 s to exit and
  then sends it SIGINT; pytest's exit collects garbage several times, each one slow with the
  session's programs alive (5-6 s measured), and the SIGINT then landed in jax's gc callback,
  printed as an unraisable KeyboardInterrupt at the end of a passing run."""
  if os.environ.get("PYTEST_XDIST_WORKER"):
    import gc  # pylint: disable=import-outside-toplevel
    import jax  # pylint: disable=import-outside-toplevel
    jax.clear_caches()
    gc.collect()


from jaxkd.data import _offline  # pylint: disable=wrong-import-position
# The tiny ImageNet of `imagenet_dir`, in image-net.org's tars: what `jaxkd prepare imagenet2012
# --demo` writes (TINY_IMAGENET: its classes, images per class, validation images).
from jaxkd.data._demo import (  # pylint: disable=wrong-import-position,unused-import
    TINY_IMAGENET, jpeg_bytes as _jpeg, write_imagenet_tars)

# Fashion-MNIST (Debian's `dataset-fashion-mnist`) is optional: every test that reads it skips
# by this one guard. JAXKD_TEST_FASHION_MNIST_DIR moves the directory the library looks in (a
# missing one simulates a machine without the package; see tests/test_configs.py).
if os.environ.get("JAXKD_TEST_FASHION_MNIST_DIR"):
  _offline.DEBIAN_FASHION_MNIST_DIR = os.environ["JAXKD_TEST_FASHION_MNIST_DIR"]
needs_fashion_mnist = pytest.mark.skipif(
    _offline.find_fashion_mnist(None, "train") is None,
    reason=f"Fashion-MNIST is not installed ({_offline.DEBIAN_FASHION_MNIST_DIR} has no IDX "
    "files): apt-get install dataset-fashion-mnist")


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


# The tiny CUB-200-2011 of `cub_dir`: images in train and test, their labels cycling over the
# first classes.
TINY_CUB = {"train": 12, "test": 6, "classes": 3}


def write_tiny_cub(data_dir: str, seed: int = 0) -> dict:
  """Writes a tiny ``caltech_birds2011`` under ``data_dir`` with tfds's own builder and its real
  features (image, label, bbox, segmentation mask, names); returns ``{split: examples}``.

  The official builder downloads 1.1 GB from caltech.edu; this subclass yields synthetic
  examples instead, so the files are what ``tfds build caltech_birds2011
  --file_format=array_record`` writes, only smaller.
  """
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  official = tfds.builder_cls("caltech_birds2011")
  rng = np.random.default_rng(seed)

  def examples(split):
    for i in range(TINY_CUB[split]):
      height, width = int(rng.integers(20, 40)), int(rng.integers(20, 40))
      # Encoded bytes, as the official builder passes files (encoding arrays needs TensorFlow).
      mask = io.BytesIO()
      Image.fromarray((rng.random((height, width)) > 0.5).astype(np.uint8) * 255).save(
          mask, "PNG")
      mask.seek(0)
      label = i % TINY_CUB["classes"]
      name = f"{split}_{i}.jpg"
      yield name, {
          "image": io.BytesIO(_jpeg(rng, height, width, gray=False)), "image/filename": name,
          "label": label,
          "label_name": f"class_{label}",
          "bbox": tfds.features.BBox(ymin=0.1, xmin=0.2, ymax=0.9, xmax=0.8),
          "segmentation_mask": mask,
      }

  class Builder(official, skip_registration=True):  # pylint: disable=abstract-method
    name = "caltech_birds2011"

    def _split_generators(self, dl_manager):
      return [tfds.core.SplitGenerator(name=split, gen_kwargs={"split": split})
              for split in ("train", "test")]

    def _generate_examples(self, split):  # pylint: disable=arguments-differ
      yield from examples(split)

  builder = Builder(data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare()
  return {name: split.num_examples for name, split in builder.info.splits.items()}


@pytest.fixture(scope="session")
def cub_dir(tmp_path_factory):
  """A tfds data_dir holding a tiny ``caltech_birds2011`` (`write_tiny_cub`)."""
  root = tmp_path_factory.mktemp("cub")
  write_tiny_cub(str(root))
  return str(root)

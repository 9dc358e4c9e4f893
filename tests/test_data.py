"""Tests of jaxkd.data: loaders, order, partners, augmentation, normalisation, streaming."""
import functools
import gzip
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
from PIL import Image

import jaxkd.data as data
from jaxkd.data import _augment

from conftest import needs_fashion_mnist



# ---------------------------------------------------------------- registry


def test_names_cover_the_contract():
  for name in ("digits", "fashion_mnist", "cifar10", "cifar100", "imagenet2012", "mock"):
    assert name in data.names()


def test_unknown_name_and_split_are_rejected():
  with pytest.raises(ValueError, match="cifar100.*mock"):
    data.load("cifar1000")
  with pytest.raises(ValueError, match="split.*'valid'"):
    data.load("digits", "valid")
  with pytest.raises(ValueError, match=r"open_stream.*data.in_memory=False"):
    data.load("imagenet2012")


def test_missing_tfds_dataset_says_how_to_prepare_it(tmp_path):
  with pytest.raises(data.DatasetNotFoundError) as info:
    data.load("cifar10", data_dir=str(tmp_path))
  assert isinstance(info.value, FileNotFoundError)
  message = str(info.value)
  assert "tfds build cifar10" in message and "array_record" in message
  assert str(tmp_path) in message
  assert not os.listdir(tmp_path), "nothing may be downloaded or written"


@pytest.mark.slow
def test_a_missing_tfds_dataset_is_one_line_on_the_console(tmp_path):
  """What `jaxkd train` prints: our line only, not tfds's "Variant folder ... has no
  dataset_info.json" before it (a version folder without its files, as a failed prepare leaves)."""
  (tmp_path / "cifar10" / "3.0.2").mkdir(parents=True)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run(
      [sys.executable, "-m", "jaxkd.cli", "train", "--workdir", str(tmp_path / "w"),
       "--config.data.name=cifar10", f"--config.data.data_dir={tmp_path}"],
      env=dict(os.environ, PYTHONPATH=root), capture_output=True, text=True, timeout=300,
      check=False)
  assert proc.returncode == 2
  assert proc.stderr.startswith("jaxkd: error: tensorflow-datasets 'cifar10' is not prepared")
  assert proc.stderr.count("\n") == 1, proc.stderr


def test_missing_fashion_mnist_names_both_ways(tmp_path):
  with pytest.raises(data.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"
                     ".*tfds build fashion_mnist"):
    data.load("fashion_mnist", data_dir=str(tmp_path))


# ---------------------------------------------------------------- mock


def test_mock_is_deterministic_and_balanced():
  a = data.mock(40, (4, 6, 2), 5, seed=3)
  b = data.mock(40, (4, 6, 2), 5, seed=3)
  np.testing.assert_array_equal(a.images, b.images)
  np.testing.assert_array_equal(a.labels, b.labels)
  assert a.images.shape == (40, 4, 6, 2) and a.images.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(a.labels), [8] * 5)
  assert not np.array_equal(a.images, data.mock(40, (4, 6, 2), 5, seed=4).images)
  test = data.mock(40, (4, 6, 2), 5, seed=3, split="test")
  assert not np.array_equal(a.images, test.images)
  np.testing.assert_array_equal(a.ids, np.arange(40, dtype=np.int32))
  default = data.load("mock", "test")
  assert (default.num_examples, default.image_shape) == (64, (8, 8, 3))


def test_array_dataset_validates():
  with pytest.raises(ValueError, match=r"dataset 'x' \(train\): example 1 has label 3; allowed: \[0, 3\)"):
    data.ArrayDataset("x", "train", np.zeros((2, 1, 1, 1), np.uint8),
                      np.array([0, 3], np.int32), 3, (0.5,), (0.2,))
  with pytest.raises(ValueError, match=r"mean=\(0.5,\) must have one entry per channel"):
    data.ArrayDataset("x", "train", np.zeros((2, 1, 1, 3), np.uint8),
                      np.array([0, 1], np.int32), 3, (0.5,), (0.2,) * 3)


# ---------------------------------------------------------------- digits


def test_digits_split_is_stratified_and_scaled():
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  reference = load_digits()
  train, test = data.load("digits", "train"), data.load("digits", "test")
  assert train.num_examples + test.num_examples == 1797
  assert (train.num_examples, test.num_examples) == (1442, 355)
  per_class = np.bincount(reference.target)
  np.testing.assert_array_equal(np.bincount(test.labels), per_class // 5)
  np.testing.assert_array_equal(np.bincount(train.labels), per_class - per_class // 5)
  assert train.image_shape == (8, 8, 1) and train.images.dtype == np.uint8
  assert train.images.min() == 0 and train.images.max() == 255
  # Within each class, in file order, every fifth example is a test example.
  scaled = np.round(reference.images * 255 / 16)
  held_out = np.isin(np.arange(1797), _test_positions(reference.target))
  np.testing.assert_array_equal(test.images[..., 0], scaled[held_out])
  np.testing.assert_array_equal(train.images[..., 0], scaled[~held_out])
  np.testing.assert_array_equal(test.labels, reference.target[held_out])
  assert test.mean == train.mean
  np.testing.assert_allclose(train.mean[0], scaled[~held_out].mean() / 255, rtol=1e-12)
  np.testing.assert_allclose(train.std[0], scaled[~held_out].std() / 255, rtol=1e-12)


def _test_positions(target):
  return np.concatenate([np.flatnonzero(target == c)[4::5] for c in range(10)])


# ---------------------------------------------------------------- Fashion-MNIST


def _write_idx(path, array):
  magic = 2051 if array.ndim == 3 else 2049
  header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_parser_on_hand_made_files(tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (3, 28, 28))
  labels = np.array([9, 0, 4])
  folder = tmp_path / "fashion-mnist"
  folder.mkdir()
  _write_idx(folder / "t10k-images-idx3-ubyte.gz", images)
  _write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels)
  ds = data.load("fashion_mnist", "test", data_dir=str(tmp_path))
  np.testing.assert_array_equal(ds.images[..., 0], images)
  np.testing.assert_array_equal(ds.labels, labels)
  assert ds.labels.dtype == np.int32 and ds.num_classes == 10


@needs_fashion_mnist
@pytest.mark.slow
def test_fashion_mnist_from_debian_files():
  train, test = data.load("fashion_mnist", "train"), data.load("fashion_mnist", "test")
  assert (train.num_examples, test.num_examples) == (60000, 10000)
  assert train.image_shape == (28, 28, 1) and train.images.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(train.labels), [6000] * 10)
  np.testing.assert_array_equal(np.bincount(test.labels), [1000] * 10)
  # Published training-set statistics (also the normalisation constants).
  np.testing.assert_allclose(train.images.mean() / 255, 0.2860, atol=5e-5)
  np.testing.assert_allclose(train.images.std() / 255, 0.3530, atol=5e-5)
  assert train.labels[0] == 9 and test.labels[0] == 9  # both files open with an ankle boot


# ---------------------------------------------------------------- tfds (mocked)


def test_tfds_mock_data_through_data_source(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=12):
    first = data.load("cifar100", "train", data_dir=str(tmp_path))
    again = data.load("cifar100", "train", data_dir=str(tmp_path))
    test = data.load("cifar10", "test", data_dir=str(tmp_path))
  assert first.images.shape == (12, 32, 32, 3) and first.images.dtype == np.uint8
  assert first.labels.shape == (12,) and first.labels.dtype == np.int32
  assert first.num_classes == 100 and test.num_classes == 10
  assert first.mean == data.spec("cifar100").mean
  np.testing.assert_array_equal(first.ids, np.arange(12, dtype=np.int32))
  np.testing.assert_array_equal(first.images, again.images)
  np.testing.assert_array_equal(first.labels, again.labels)

  # A run of 3 epochs and a run resumed at epoch 1 see identical batches.
  epochs = lambda seed, start: [
      data.batch_indices(first.num_examples, 5, seed=seed, epoch=e) for e in range(start, 3)]
  uninterrupted, resumed = epochs(7, 0), epochs(7, 1)
  for a, b in zip(uninterrupted[1:], resumed):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first.images[a], again.images[b])
  assert not np.array_equal(uninterrupted[0], uninterrupted[1])
  assert not np.array_equal(uninterrupted[0], epochs(8, 0)[0])


# ---------------------------------------------------------------- order


def test_batch_indices_are_a_permutation_without_remainder():
  idx = data.batch_indices(23, 5, seed=1, epoch=4)
  assert idx.shape == (4, 5) and idx.dtype == np.int32
  assert len(np.unique(idx)) == 20 and idx.min() >= 0 and idx.max() < 23
  expected = np.random.default_rng((1, 4, 0)).permutation(23)[:20].reshape(4, 5)
  np.testing.assert_array_equal(idx, expected)


@pytest.mark.parametrize("kwargs, field", [
    (dict(num_examples=4, batch_size=5, seed=0, epoch=0), "batch_size"),
    (dict(num_examples=4, batch_size=0, seed=0, epoch=0), "batch_size"),
    (dict(num_examples=4, batch_size=2, seed=-1, epoch=0), "seed"),
    (dict(num_examples=4, batch_size=2, seed=0, epoch=1.5), "epoch"),
])
def test_batch_indices_rejects_bad_input(kwargs, field):
  with pytest.raises(ValueError, match=field):
    data.batch_indices(**kwargs)


def test_partner_indices_same_class_never_self():
  labels = np.array([0, 1, 0, 2, 1, 0, 0, 1], np.int32)  # class 2 has one member
  indices = np.tile(np.arange(8), (500, 1))
  partners = data.partner_indices(labels, indices, seed=0, epoch=0)
  assert partners.shape == indices.shape and partners.dtype == np.int32
  np.testing.assert_array_equal(labels[partners], labels[indices])
  lonely = indices == 3
  assert np.all(partners[lonely] == 3) and np.all(partners[~lonely] != indices[~lonely])
  # Uniform over the other members: example 0's partners are 2, 5, 6 about 1/3 each.
  counts = np.bincount(partners[:, 0], minlength=8)[[2, 5, 6]] / 500
  np.testing.assert_allclose(counts, 1 / 3, atol=0.07)
  np.testing.assert_array_equal(
      partners, data.partner_indices(labels, indices, seed=0, epoch=0))
  assert not np.array_equal(partners, data.partner_indices(labels, indices, seed=0, epoch=1))
  # The reference sampler's choice over the whole class: itself 1/4 of the time.
  anyone = data.partner_indices(labels, indices, seed=0, epoch=0, exclude_self=False)
  np.testing.assert_array_equal(labels[anyone], labels[indices])
  counts = np.bincount(anyone[:, 0], minlength=8)[[0, 2, 5, 6]] / 500
  np.testing.assert_allclose(counts, 1 / 4, atol=0.07)


# ---------------------------------------------------------------- augmentation


def _image(h=6, w=5, c=2):
  return jnp.arange(h * w * c, dtype=jnp.float32).reshape(1, h, w, c) + 1.0


def _jit_augment(**kwargs):
  return jax.jit(functools.partial(data.device_augment, **kwargs))


def test_crop_shifts_by_the_sampled_offset():
  images = jnp.tile(_image(), (8, 1, 1, 1))
  key = jax.random.PRNGKey(3)
  out = np.asarray(_jit_augment(crop_padding=2, flip=False, rotation_degrees=0)(key, images))
  params = _augment.sample_params(key, 8, crop_padding=2, flip=False, rotation_degrees=0)
  offsets = np.asarray(params.offsets)
  assert len({tuple(o) for o in offsets}) > 1
  padded = np.pad(np.asarray(images[0]), ((2, 2), (2, 2), (0, 0)))
  for i, (dy, dx) in enumerate(offsets):
    np.testing.assert_array_equal(out[i], padded[dy:dy + 6, dx:dx + 5])
    # Pixel (0, 0) of the original lands at (2 - dy, 2 - dx) when that is inside.
    if dy <= 2 and dx <= 2:
      assert out[i, 2 - dy, 2 - dx, 0] == 1.0


def test_flip_mirrors_exactly():
  images = jnp.tile(_image(), (16, 1, 1, 1))
  key = jax.random.PRNGKey(0)
  out = np.asarray(_jit_augment(crop_padding=0, flip=True, rotation_degrees=0)(key, images))
  flips = np.asarray(_augment.sample_params(key, 16, crop_padding=0, flip=True,
                                            rotation_degrees=0).flips)
  assert 0 < flips.sum() < 16
  for i in range(16):
    expected = np.asarray(images[i])[:, ::-1] if flips[i] else np.asarray(images[i])
    np.testing.assert_array_equal(out[i], expected)


def _rotate(images, degrees, interpolation="nearest"):
  b = images.shape[0]
  params = data.AugmentParams(jnp.zeros((b, 2), jnp.int32), jnp.zeros((b,), bool),
                              jnp.full((b,), degrees, jnp.float32))
  fn = jax.jit(functools.partial(_augment.apply_params, crop_padding=0,
                                 interpolation=interpolation))
  return np.asarray(fn(images, params))


@pytest.mark.parametrize("interpolation", _augment.INTERPOLATIONS)
@pytest.mark.parametrize("degrees, k", [(90.0, 1), (-90.0, -1), (180.0, 2)])
def test_rotation_by_quarter_turns_equals_rot90(degrees, k, interpolation):
  image = _image(5, 5, 1)
  expected = np.rot90(np.asarray(image[0]), k=k, axes=(0, 1))
  np.testing.assert_allclose(_rotate(image, degrees, interpolation)[0], expected, atol=1e-4)


@pytest.mark.parametrize("degrees", [13.7, -41.0])
def test_rotation_matches_scipy_and_pil(degrees):
  image = np.random.default_rng(1).integers(0, 256, (32, 32)).astype(np.uint8)
  batch = jnp.asarray(image)[None, ..., None]
  for interpolation, order in (("nearest", 0), ("bilinear", 1)):
    expected = scipy.ndimage.rotate(image.astype(np.float32), degrees, reshape=False,
                                    order=order, mode="grid-constant", cval=0.0)
    got = _rotate(batch.astype(jnp.float32), degrees, interpolation)[0, ..., 0]
    np.testing.assert_allclose(got, expected, atol=1e-3)
  # torchvision rotates PIL images with Image.rotate (nearest, zero fill): same
  # pixels except at most a rounding tie or two.
  pil = np.asarray(Image.fromarray(image).rotate(degrees, resample=Image.NEAREST))
  assert (_rotate(batch, degrees)[0, ..., 0] != pil).sum() <= 2


def test_zero_rotation_and_disabled_parts_are_identity():
  images = jnp.tile(_image(), (4, 1, 1, 1))
  np.testing.assert_array_equal(_rotate(images, 0.0), images)
  out = _jit_augment(crop_padding=0, flip=False, rotation_degrees=0)(jax.random.PRNGKey(1), images)
  np.testing.assert_array_equal(out, images)


def test_augment_keeps_dtype_and_sharding():
  if len(jax.devices()) < 2:
    pytest.skip("needs several devices (tests/conftest.py simulates 8 CPU devices)")
  devices = np.array(jax.devices()[:4])
  mesh = jax.sharding.Mesh(devices, ("data",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  images = jax.device_put(jnp.tile(_image(8, 8, 3), (len(devices) * 2, 1, 1, 1)).astype(jnp.uint8),
                          sharding)
  out = _jit_augment()(jax.random.PRNGKey(0), images)
  assert isinstance(out, jax.Array) and out.dtype == jnp.uint8 and out.shape == images.shape
  assert out.sharding.is_equivalent_to(sharding, out.ndim)
  assert set(out.devices()) == set(devices)


@pytest.mark.parametrize("kwargs, field", [
    (dict(crop_padding=-1), "crop_padding"),
    (dict(crop_padding=2.0), "crop_padding"),
    (dict(flip=1), "flip"),
    (dict(rotation_degrees=200.0), "rotation_degrees"),
    (dict(interpolation="bicubic"), "interpolation"),
])
def test_augment_rejects_bad_settings(kwargs, field):
  with pytest.raises(ValueError, match=field):
    data.device_augment(jax.random.PRNGKey(0), _image(), **kwargs)


def test_normalize_matches_hand_values():
  images = np.array([0, 255, 51, 102], np.uint8).reshape(1, 1, 2, 2)
  out = jax.jit(data.normalize, static_argnums=(1, 2))(images, (0.2, 0.4), (0.5, 0.2))
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(out).ravel(), [-0.4, 3.0, 0.0, 0.0], atol=1e-6)
  with pytest.raises(ValueError, match="one entry per channel"):
    data.normalize(images, (0.5,), (0.2,))


def test_sliced_splits_follow_tensorflow_datasets_slicing():
  whole = data.load("digits", "train")
  n = whole.num_examples
  head = data.load("digits", "train[:90%]")
  tail = data.load("digits", "train[90%:]")
  cut = round(0.9 * n)
  assert (head.num_examples, tail.num_examples) == (cut, n - cut)
  np.testing.assert_array_equal(np.concatenate([head.labels, tail.labels]), whole.labels)
  np.testing.assert_array_equal(tail.images, whole.images[cut:])
  assert head.mean == whole.mean and tail.split == "train[90%:]"
  np.testing.assert_array_equal(data.load("digits", "test[-5:]").labels,
                                data.load("digits", "test").labels[-5:])
  for bad, match in (("valid", "split='valid' is not allowed"),
                     ("train[90%:10%]", r"selects examples \[\d+, \d+\).*non-empty slice"),
                     ("train[:x]", "optionally sliced like 'train\\[:90%\\]'")):
    with pytest.raises(ValueError, match=match):
      data.load("digits", bad)


def test_a_validation_split_carved_from_the_training_set_is_what_the_run_evaluates():
  from jaxkd.config import defaults
  from jaxkd.train import build_run
  config = defaults.get_config("smoke")
  config.mesh.data = 1
  config.data.train_split, config.data.eval_split = "train[:80%]", "train[80%:]"
  run = build_run(config)
  whole = data.load("digits", "train")
  cut = round(0.8 * whole.num_examples)
  assert run.train_data.num_examples == cut
  np.testing.assert_array_equal(run.eval_data.labels, whole.labels[cut:])
  config.data.eval_split = "validation"
  with pytest.raises(ValueError, match="config.data.eval_split: split='validation'"):
    build_run(config)

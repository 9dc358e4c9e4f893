"""Streamed data (ImageNet-sized): tfds's real layout, the reader, and `jaxkd train` on it.

The data is a tiny ``imagenet2012`` (conftest's `imagenet_dir`): image-net.org-style tars of
real JPEGs of mixed sizes, written to array_record files by tensorflow-datasets' own builder.
"""
import json
import os

import jax
import numpy as np
import pytest

from conftest import TINY_IMAGENET
from references import assert_relative_close
from jaxkd import data
from jaxkd.train import checkpoint, loop, run as run_lib, trainer as trainer_lib
from jaxkd.config import defaults

SIZE = 16
NUM_TRAIN = TINY_IMAGENET["classes"] * TINY_IMAGENET["per_class"]


def test_prepare_writes_tfds_layout_and_labels(imagenet_dir):
  import tensorflow_datasets as tfds
  version = os.path.join(imagenet_dir, "imagenet2012", "5.1.0")
  names = sorted(os.listdir(version))
  assert "dataset_info.json" in names and "features.json" in names
  assert "imagenet2012-train.array_record-00000-of-00001" in names
  train = tfds.data_source("imagenet2012", split="train", data_dir=imagenet_dir)
  assert len(train) == NUM_TRAIN
  for example in train:  # the wnid prefix of the file name is the class
    wnid = example["file_name"].decode().split("_")[0]
    assert example["label"] == train.dataset_info.features["label"].str2int(wnid)
    assert example["image"].shape[-1] == 3 and example["image"].dtype == np.uint8
  labels = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt").read_text().split()
  valid = tfds.data_source("imagenet2012", split="validation", data_dir=imagenet_dir)
  assert len(valid) == TINY_IMAGENET["validation"]
  for example in valid:  # ILSVRC2012_val_0000000k.JPEG has the k-th label of the list
    k = int(example["file_name"].decode()[-13:-5])
    assert valid.dataset_info.features["label"].int2str(example["label"]) == labels[k - 1]


@pytest.mark.slow
def test_prepare_demo_writes_a_tiny_imagenet_and_a_train_command_that_builds(tmp_path):
  """`jaxkd prepare imagenet2012 --demo DIR`, as the README gives it: the tests' tars (this
  file's `imagenet_dir`), prepared; its printed train command is a valid streamed run."""
  import shlex  # pylint: disable=import-outside-toplevel
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  from jaxkd import config as config_lib  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  demo = tmp_path / "demo"
  proc = subprocess.run([sys.executable, "-m", "jaxkd.cli", "prepare", "imagenet2012", "--demo",
                         str(demo)], env=dict(os.environ, PYTHONPATH=root), capture_output=True,
                        text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[-2] == (f"prepared imagenet2012: train {NUM_TRAIN} examples, validation "
                       f"{TINY_IMAGENET['validation']} examples")
  command = lines[-1].removeprefix("try streaming it: ")
  argv = shlex.split(command)
  assert argv[:4] == ["jaxkd", "train", "--workdir", str(demo / "run")]
  _, overrides = config_lib.split_overrides(argv[1:])
  config = defaults.get_config()
  for key, text in overrides:
    config_lib.override(config, key, text)
  run = run_lib.build_run(config)  # validates and opens the streams; nothing compiles
  assert isinstance(run.train_data, data.StreamingSplit)
  assert config.data.data_dir == str(demo / "data") and run.total_steps == 6
  assert sorted(os.listdir(demo / "manual")) == ["ILSVRC2012_img_train.tar",
                                                 "ILSVRC2012_img_val.tar"]
  assert "Traceback" not in proc.stderr


def test_reader_follows_batch_indices_per_process(imagenet_dir):
  stream = data.open_stream("imagenet2012", "train", data_dir=imagenet_dir, image_size=SIZE,
                            num_threads=2)
  assert (stream.num_examples, stream.num_classes, stream.image_shape) == (
      NUM_TRAIN, 1000, (SIZE, SIZE, 3))
  read = lambda process, epoch, start=0: list(stream.batches(
      global_batch_size=8, train=True, seed=1, epoch=epoch, start_step=start,
      process_index=process, process_count=2))
  batches = [read(p, epoch=3) for p in range(2)]
  expected = data.batch_indices(NUM_TRAIN, 8, seed=1, epoch=3)
  assert len(batches[0]) == expected.shape[0] == NUM_TRAIN // 8
  labels = np.array([e["label"] for e in stream.source])
  for step in range(expected.shape[0]):
    np.testing.assert_array_equal(
        np.concatenate([batches[p][step]["id"] for p in range(2)]), expected[step])
    for p in range(2):
      batch = batches[p][step]
      assert batch["image"].shape == (4, SIZE, SIZE, 3) and batch["image"].dtype == np.uint8
      np.testing.assert_array_equal(batch["label"], labels[batch["id"]])
      assert batch["mask"].all()
  # Bit-identical on a second read, and from the middle of the epoch (a resumed run).
  again = read(1, epoch=3, start=1)
  for a, b in zip(batches[1][1:], again):
    np.testing.assert_array_equal(a["image"], b["image"])
  assert not np.array_equal(read(0, epoch=4)[0]["id"], batches[0][0]["id"])


def test_evaluation_view_covers_each_example_once_centre_cropped(imagenet_dir):
  stream = data.open_stream("imagenet2012", "test", data_dir=imagenet_dir, image_size=SIZE,
                            num_threads=2)
  batches = list(stream.batches(global_batch_size=4, train=False, process_index=0,
                                process_count=1))
  assert len(batches) == stream.num_steps(4, train=False) == 3
  ids = np.concatenate([b["id"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  np.testing.assert_array_equal(ids[mask], np.arange(TINY_IMAGENET["validation"]))
  # The evaluation view, written out: shorter side to round(S / 0.875), central S square.
  from PIL import Image
  import io
  encoded = stream.source[int(ids[5])]["image"]
  with Image.open(io.BytesIO(encoded)) as pil:
    pil = pil.convert("RGB")
    w, h = pil.size
    short = round(SIZE / 0.875)
    new_w, new_h = max(SIZE, round(w * short / min(h, w))), max(SIZE, round(h * short / min(h, w)))
    reference = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR))
  top, left = (new_h - SIZE) // 2, (new_w - SIZE) // 2
  # The reader resizes only the central region (PIL's box argument): one grey level apart.
  np.testing.assert_allclose(batches[1]["image"][1].astype(int),
                             reference[top:top + SIZE, left:left + SIZE].astype(int), atol=1)


def test_a_corrupt_record_is_named_or_skipped_and_counted(imagenet_dir, caplog):
  stream = data.open_stream("imagenet2012", "train", data_dir=imagenet_dir, image_size=SIZE,
                            num_threads=1)
  bad = 5

  class Corrupt(list):
    dataset_info = stream.source.dataset_info

    def __getitem__(self, i):
      example = dict(stream.source[i])
      if i == bad:
        example["image"] = example["image"][:40]  # a truncated JPEG
      return example

  source = Corrupt(range(stream.num_examples))
  failing = stream.__class__(**{**stream.__dict__, "source": source, "skipped": set()})
  with pytest.raises(data.RecordError, match=r"split 'train': record 5 cannot be read"):
    failing.read(bad, train=True, seed=0, epoch=0)
  skipping = stream.__class__(**{**stream.__dict__, "source": source, "skip_corrupt": True,
                                 "skipped": set()})
  image, label = skipping.read(bad, train=False, seed=0, epoch=0)
  np.testing.assert_array_equal(image, stream.read(bad + 1, train=False, seed=0, epoch=0)[0])
  assert label == stream.source[bad + 1]["label"] and skipping.skipped == {bad}
  assert "record 5" in caplog.text


def _config(imagenet_dir, **overrides):
  config = defaults.get_config("smoke")
  config.data.name = "imagenet2012"
  config.data.data_dir = imagenet_dir
  config.data.image_size = SIZE
  config.data.num_workers = 2
  config.data.crop_padding, config.data.rotation_degrees = 0, 0.0
  config.data.flip = False  # the host crop flips already
  config.method.name = "ce"
  config.train.batch_size = 8
  config.train.eval_batch_size = 8
  config.train.num_steps = 7  # 3 steps per epoch: ends mid-epoch
  config.train.optimizer.schedule = "constant"
  # Small enough that 1 and 8 devices (different float sums) stay within 1e-5 after 7 steps
  # in float32; at 0.05 a 1000-class net memorising 24 images amplifies them to 1e-2.
  config.train.optimizer.learning_rate = 0.01
  config.train.checkpoint_every_steps = 100
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return config


def _params(workdir):
  variables, step = checkpoint.load_variables(str(workdir))
  return variables["params"], step


def _params64(workdir):
  """The parameters of a float64 run, read as float64 (under JAX's x64 switch)."""
  with jax.enable_x64(True):
    params, step = _params(workdir)
    return jax.device_get(params), step


@pytest.mark.slow
def test_streamed_run_on_1_and_8_devices_and_resumed_mid_epoch(imagenet_dir, tmp_path):
  """1 and 8 devices in float64 (`model.dtype`) agree to 1e-9; a run resumed mid-epoch ends
  bit-identical to the uninterrupted one. The MLP: what is checked is the streamed batches'
  sharding and order (BatchNorm over 8 devices: tests/test_train_step.py)."""
  summaries, f64 = {}, {"model.dtype": "float64", "model.name": "mlp"}
  for devices in (1, 8):
    summaries[devices] = loop.train_and_evaluate(
        _config(imagenet_dir, **{"mesh.data": devices}, **f64), str(tmp_path / str(devices)))
  one, step = _params64(tmp_path / "1")
  eight, _ = _params64(tmp_path / "8")
  assert step == 7
  assert {x.dtype for x in jax.tree_util.tree_leaves(one)} == {np.dtype(np.float64)}
  gap = max(float(np.max(np.abs(a - b)) / np.max(np.abs(a))) for a, b in zip(
      jax.tree_util.tree_leaves(one), jax.tree_util.tree_leaves(eight), strict=True))
  print(f"streamed, 1 vs 8 devices, float64, max relative gap {gap:.1e}")
  assert gap <= 1e-9, gap
  assert summaries[1]["last"]["top1"] == summaries[8]["last"]["top1"]
  # Stopped after step 4 (mid-epoch), then extended to 7 on the same workdir: bit-identical.
  resumed = tmp_path / "resumed"
  loop.train_and_evaluate(_config(imagenet_dir, **{"mesh.data": 8, "train.num_steps": 4}, **f64),
                          str(resumed))
  loop.train_and_evaluate(_config(imagenet_dir, **{"mesh.data": 8, "train.extend": True}, **f64),
                          str(resumed))
  again, _ = _params64(resumed)
  for a, b in zip(jax.tree_util.tree_leaves(eight), jax.tree_util.tree_leaves(again)):
    np.testing.assert_array_equal(a, b)
  records = [json.loads(line) for line in open(tmp_path / "8" / "metrics.jsonl")]
  evals = [r for r in records if "eval/top1" in r]
  assert [r["step"] for r in evals] == [3, 6, 7]


def _per_example_rows(objective_state):
  return [a for a in jax.tree_util.tree_leaves(objective_state)
          if a.ndim and a.shape[0] == NUM_TRAIN]


@pytest.mark.slow
def test_pskd_table_is_sharded_on_streamed_data(imagenet_dir):
  trainer = trainer_lib.build(_config(imagenet_dir, **{"method.name": "pskd", "mesh.data": 8}))
  state = trainer.init_state()
  tables = _per_example_rows(state.objective)
  assert tables, "PS-KD keeps one row per training example"
  for table in tables:
    assert {s.data.shape[0] for s in table.addressable_shards} == {NUM_TRAIN // 8}
    assert len(table.addressable_shards) == 8
  batch = trainer.batches().get(0)
  state, metrics = trainer.steps.train(state, trainer.consts, batch)
  assert np.isfinite(float(metrics["loss"]))
  # The step stored this batch's predictions in the rows of its example ids, and only there.
  table = np.asarray(_per_example_rows(state.objective)[0])
  written = np.flatnonzero(np.abs(table.astype(np.float32)).sum(-1) > 0)
  np.testing.assert_array_equal(written, np.sort(np.asarray(batch["indices"])))


@pytest.mark.parametrize("overrides, match", [
    ({"data.in_memory": True}, "too large to hold in memory"),
    ({"data.image_size": 4}, "data.image_size=4: must be an int >= 8"),
    ({"data.num_workers": -1}, "data.num_workers=-1"),
    ({"method.name": "cskd"}, "partner"),
    ({"data.name": "digits", "data.in_memory": False}, "no tensorflow-datasets source"),
])
def test_streaming_config_errors(imagenet_dir, overrides, match):
  with pytest.raises(run_lib.ConfigError, match=match):
    run_lib.build_run(_config(imagenet_dir, **overrides))


@pytest.mark.slow
def test_streamed_batches_stack_for_steps_per_dispatch(imagenet_dir):
  """`get_many(step, K)` stacks the batches `get` reads: K steps in one dispatch train alike."""
  trainer = trainer_lib.build(_config(imagenet_dir, **{"mesh.data": 2}))
  single, many = trainer.init_state(), trainer.init_state()
  batches = trainer.batches()
  stacked = trainer.batches().get_many(1, 2)  # steps 1 and 2, read by a second reader
  for step in range(3):
    batch = batches.get(step)
    single, _ = trainer.steps.train(single, trainer.consts, batch)
    if step == 0:
      many, _ = trainer.steps.train(many, trainer.consts, batch)
    else:
      np.testing.assert_array_equal(np.asarray(batch["inputs"]),
                                    np.asarray(stacked["inputs"][step - 1]))
  many, metrics = trainer.steps.train_many(many, trainer.consts, stacked)
  assert metrics["loss"].shape == (2,)
  assert_relative_close(single.params, many.params, 1e-6)  # BatchNorm: XLA may fuse a loop

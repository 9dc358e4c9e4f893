"""Bad input gets one clear line and leaves nothing behind; faults lose nothing."""
import json
import os
import shutil

import jax
import numpy as np
import pytest

from jaxkd import cli, data
from jaxkd.train import checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "configs", "default.py") + ":smoke"


def _fake_teacher(path, data_name="digits", steps=()):
  os.makedirs(os.path.join(path, "checkpoints"), exist_ok=True)
  for step in steps:
    os.makedirs(os.path.join(path, "checkpoints", str(step)), exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump({"data": {"name": data_name, "data_dir": ""},
               "model": {"name": "small_cnn", "dtype": "float32"}}, f)
  return path


KD = "--config.method.name=kd"
TEACHER_OTHER_DATA = "/tmp/jaxkd-test-teacher-mock"
TEACHER_NO_CKPT = "/tmp/jaxkd-test-teacher-empty"
TEACHER_STEPS = "/tmp/jaxkd-test-teacher-steps"

# (overrides, the substrings the one-line message must contain: key, value, what is allowed)
BAD_INPUTS = [
    (["--config.train.bogus=1"], ["train.bogus", "'1'", "unknown key 'bogus'", "batch_size"]),
    (["--config.bogus.x=1"], ["bogus.x", "unknown key 'bogus'", "allowed: data"]),
    (["--config.method.name=nope"], ["method.name='nope'", "allowed: ce, lsr"]),
    (["--config.model.name=resnet999"], ["model.name='resnet999'", "allowed:", "resnet18"]),
    (["--config.data.name=imagenet3"], ["data.name='imagenet3'", "allowed:", "digits"]),
    ([KD, "--config.method.temperature=0"], ["kd.temperature=0", "allowed: a float in (0.0"]),
    ([KD, "--config.method.temperature=-1.0"], ["kd.temperature=-1.0", "allowed"]),
    ([KD, "--config.method.alpha=1.5"], ["kd.alpha=1.5", "[0.0, 1.0]"]),
    ([KD, "--config.method.alpha=-0.1"], ["kd.alpha=-0.1", "[0.0, 1.0]"]),
    ([KD, "--config.method.alpha=fast"], ["kd.alpha='fast'", "schedule"]),
    ([KD, "--config.method.foo=1"], ["kd", "unknown hparam 'foo'", "allowed: alpha"]),
    ([KD, "--config.method.kl_reduction=sum"], ["kd.kl_reduction='sum'", "'batchmean'"]),
    (["--config.method.name=lsr", "--config.method.smoothing=1.0"],
     ["lsr.smoothing=1.0", "allowed"]),
    (["--config.method.name=lsr", "--config.method.smoothing=-0.1"],
     ["lsr.smoothing=-0.1", "allowed"]),
    (["--config.method.name=lsr", "--config.method.convention=bad"],
     ["lsr.convention='bad'", "'uniform', 'others'"]),
    (["--config.method.name=lsrkd_tc", "--config.method.correct_prob=1.0"],
     ["correct_prob=1.0", "allowed"]),
    (["--config.method.name=lsrkd_tc", "--config.method.correct_prob=0.05"],
     ["correct_prob=0.05", "1/K"]),
    (["--config.method.num_backups=0"], ["mrkd.num_backups=0", "an int >= 1"]),
    (["--config.method.refresh_every=0"], ["mrkd.refresh_every=0", "an int >= 1"]),
    (["--config.method.name=tfkd_reg", "--config.method.form=x"],
     ["tfkd_reg.form='x'", "'code', 'paper'"]),
    (["--config.train.batch_size=12", "--config.mesh.data=8"],
     ["train.batch_size=12", "multiple of the 8 devices"]),
    (["--config.train.batch_size=0"], ["train.batch_size=0", "positive multiple"]),
    (["--config.train.batch_size=100000", "--config.mesh.data=1"],
     ["train.batch_size=100000", "at most the 1442 training examples"]),
    (["--config.mesh.data=99"], ["mesh.data=99", "between 1 and the 8 available devices"]),
    (["--config.model.dtype=float16"],
     ["model.dtype='float16'", "allowed: float32, bfloat16, float64"]),
    (["--config.model.cpu_conv=taps"], ["model.cpu_conv='taps'", "allowed: xla, fast"]),
    ([KD], ["teacher.workdir=''", "needs a teacher"]),
    ([KD, "--config.teacher.workdir=/nonexistent/run"],
     ["teacher.workdir='/nonexistent/run'", "no config.json"]),
    ([KD, f"--config.teacher.workdir={TEACHER_OTHER_DATA}"],
     [f"teacher.workdir='{TEACHER_OTHER_DATA}'", "trained on 'mock'", "'digits'"]),
    ([KD, f"--config.teacher.workdir={TEACHER_NO_CKPT}"],
     [f"teacher.workdir='{TEACHER_NO_CKPT}'", "holds no checkpoint"]),
    ([KD, f"--config.teacher.workdir={TEACHER_STEPS}", "--config.teacher.step=7"],
     ["teacher.step=7", "[2, 4]"]),
    (["--config.train.num_steps=-1", "--config.train.num_epochs=0"],
     ["train.num_epochs=0", "int >= 1"]),
    (["--config.train.optimizer.learning_rate=0.0"],
     ["train.optimizer.learning_rate=0.0", "must be > 0"]),
    (["--config.train.optimizer.schedule=poly"],
     ["train.optimizer.schedule='poly'", "constant, cosine, multistep"]),
    (["--config.train.optimizer.name=rmsprop"], ["train.optimizer.name='rmsprop'", "sgd, adamw"]),
    (["--config.train.optimizer.warmup_epochs=-1.0"],
     ["train.optimizer.warmup_epochs=-1.0", "must be >= 0"]),
    (["--config.train.checkpoint_every_steps=0"], ["train.checkpoint_every_steps=0", ">= 1"]),
    (["--config.train.steps_per_dispatch=0"], ["train.steps_per_dispatch=0", "an int >= 1"]),
    (["--config.train.steps_per_dispatch=2.5"], ["train.steps_per_dispatch", "'2.5'", "type int"]),
    (["--config.seed=-1"], ["seed=-1", "int >= 0"]),
    (["--config.data.rotation_degrees=500.0"], ["data.rotation_degrees=500.0", "[0, 180]"]),
    (["--config.data.crop_padding=-1"], ["data.crop_padding=-1", "int >= 0"]),
    (["--config.train.eval_batch_size=7", "--config.mesh.data=8"],
     ["train.eval_batch_size=7", "multiple of the 8 devices"]),
    (["--config.train.batch_size=abc"], ["train.batch_size", "'abc'", "type int"]),
    (["--config.train.skip_nonfinite=3"], ["train.skip_nonfinite", "'3'", "True or False"]),
    (["--config.train.batch_size"], ["--config.train.batch_size", "--config.KEY=VALUE"]),
    (["--config.train.learning_rate=0.1"],
     ["train.learning_rate='0.1'", "did you mean train.optimizer.learning_rate?"]),
    (["--config.data.name=cifar10", "--config.data.data_dir=/tmp/jaxkd-no-data"],
     ["cifar10", "/tmp/jaxkd-no-data", "tfds build"]),
    ([KD, "--config.teacher.torchvision_checkpoint=resnet50.bin",
      "--config.teacher.torchvision_model=resnet50_imagenet"],
     ["teacher.torchvision_checkpoint='resnet50.bin'", "ending in .pth, .pt, .safetensors"]),
    ([KD, "--config.teacher.torchvision_checkpoint=/tmp/jaxkd-no-such-file.pth",
      "--config.teacher.torchvision_model=resnet50_imagenet"],
     ["teacher.torchvision_checkpoint='/tmp/jaxkd-no-such-file.pth'", "no such file"]),
    ([KD, "--config.teacher.torchvision_model=resnet50_imagenet"],
     ["teacher.torchvision_model='resnet50_imagenet'", "needs teacher.torchvision_checkpoint"]),
]


@pytest.fixture(scope="module", autouse=True)
def fake_teachers():
  _fake_teacher(TEACHER_OTHER_DATA, data_name="mock", steps=(2,))
  _fake_teacher(TEACHER_NO_CKPT)
  _fake_teacher(TEACHER_STEPS, steps=(2, 4))
  yield
  for path in (TEACHER_OTHER_DATA, TEACHER_NO_CKPT, TEACHER_STEPS):
    shutil.rmtree(path, ignore_errors=True)


def _fails_cleanly(capsys, tmp_path, argv, expected):
  workdir = tmp_path / "run"
  code = cli.main(["train", "--config", SMOKE, "--workdir", str(workdir), *argv])
  err = capsys.readouterr().err.strip()
  assert code == 2, err
  assert "\n" not in err and "Traceback" not in err, err
  assert err.startswith("jaxkd: error: "), err
  for part in expected:
    assert part in err, (part, err)
  assert not workdir.exists(), "a bad config must leave nothing behind"


@pytest.mark.parametrize("argv,expected", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_clear_line(argv, expected, capsys, tmp_path):
  _fails_cleanly(capsys, tmp_path, argv, expected)


def test_at_least_thirty_bad_inputs():
  assert len(BAD_INPUTS) >= 30


def test_missing_config_file(capsys, tmp_path):
  code = cli.main(["train", "--config", "/nonexistent.py", "--workdir", str(tmp_path / "w")])
  err = capsys.readouterr().err.strip()
  assert code == 2 and "--config='/nonexistent.py'" in err and "no such file" in err


@pytest.mark.parametrize("images,labels,message", [
    (np.full((3, 2, 2, 1), 0.5, np.float32), np.array([0, 1, 5]), "example 2 has label 5"),
    (np.stack([np.zeros((2, 2, 1)), np.full((2, 2, 1), np.nan), np.zeros((2, 2, 1))]),
     np.array([0, 1, 0]), "example 1 has NaN, Inf"),
    (np.stack([np.zeros((2, 2, 1)), np.zeros((2, 2, 1)), np.full((2, 2, 1), np.inf)]),
     np.array([0, 1, 0]), "example 2 has NaN, Inf"),
    (np.full((3, 2, 2, 1), 1.5, np.float32), np.array([0, 1, 0]), "example 0 has NaN, Inf"),
    (np.zeros((0, 2, 2, 1), np.uint8), np.zeros((0,), np.int32), "is empty (0 examples)"),
    (np.zeros((3, 2, 2), np.uint8), np.array([0, 1, 0]), "images have shape (3, 2, 2)"),
    (np.zeros((3, 4, 4, 1), np.uint8), np.array([0, 1, 0]), "allowed: [N, 2, 2, 1]"),
])
def test_bad_data_names_the_dataset_and_first_bad_example(images, labels, message):
  with pytest.raises(ValueError) as err:
    data.from_arrays("mine", "train", images, labels, num_classes=3, image_shape=(2, 2, 1))
  assert "dataset 'mine' (train)" in str(err.value) and message in str(err.value), err.value


def _run(tmp_path, name, *overrides):
  return cli.main(["train", "--config", SMOKE, "--workdir", str(tmp_path / name),
                   "--config.mesh.data=1", *overrides])


# From step 4 on, the learning rate is multiplied by 1e30: the parameters overflow.
EXPLODE = ("--config.train.num_steps=8", "--config.train.optimizer.schedule=multistep",
           "--config.train.optimizer.milestones=(0.05,)", "--config.train.optimizer.gamma=1e30")


@pytest.mark.slow
def test_nonfinite_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
  assert _run(tmp_path, "run", *EXPLODE) == 3
  err = capsys.readouterr().err
  assert "non-finite loss or gradient" in err and "step 6" in err, err
  steps = sorted(int(p) for p in os.listdir(tmp_path / "run" / "checkpoints") if p.isdigit())
  assert steps == [2, 4]
  variables, step = checkpoint.load_variables(str(tmp_path / "run"))
  assert step == 4
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(variables))


@pytest.mark.slow
def test_skip_nonfinite_keeps_the_parameters_finite(tmp_path):
  assert _run(tmp_path, "run", *EXPLODE, "--config.train.skip_nonfinite=True") == 0
  records = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
  assert sum(r.get("train/nonfinite", 0) for r in records) == 4  # steps 5..8 skipped
  variables, step = checkpoint.load_variables(str(tmp_path / "run"))
  assert step == 8
  assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(variables))


@pytest.mark.slow
def test_corrupted_latest_checkpoint_falls_back_and_resumes_exactly(tmp_path, caplog):
  assert _run(tmp_path, "ref") == 0
  assert _run(tmp_path, "run") == 0
  state_dir = tmp_path / "run" / "checkpoints" / "4" / "state"
  for path in state_dir.rglob("*"):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(b"garbage")
  (tmp_path / "run" / "checkpoints" / "6.orbax-checkpoint-tmp-123").mkdir()  # killed mid-write
  assert _run(tmp_path, "run") == 0
  assert "checkpoint at step 4 is unreadable" in caplog.text
  moved = os.listdir(tmp_path / "run" / "checkpoints_unreadable")
  assert len(moved) == 1 and moved[0].startswith("4-")
  ref, _ = checkpoint.load_variables(str(tmp_path / "ref"))
  run, step = checkpoint.load_variables(str(tmp_path / "run"))
  assert step == 4
  for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(run)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_workdir_of_another_config_is_refused_and_untouched(tmp_path, capsys):
  assert _run(tmp_path, "run") == 0
  before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
  capsys.readouterr()
  assert _run(tmp_path, "run", "--config.seed=1") == 2
  err = capsys.readouterr().err
  assert "holds a run of another config (differs in seed)" in err, err
  after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
  assert before == after

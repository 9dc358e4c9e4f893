"""The command line: help, both override forms, did-you-mean, short runs, `jaxkd methods`."""
import json
import logging
import math
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import cli, config as config_lib, data, models, objectives
from jaxkd.config import defaults
from jaxkd.train import run as run_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _help(capsys, argv):
  with pytest.raises(SystemExit) as exit_info:
    cli.main(argv)
  assert exit_info.value.code == 0
  return capsys.readouterr().out


def test_train_help_lists_overrides_methods_models_datasets_and_examples(capsys):
  out = _help(capsys, ["train", "--help"])
  for form in ("--config.KEY=VALUE", "--config.KEY VALUE", "--config.method.HPARAM",
               "jaxkd methods", "examples:", "--config.train.num_steps=3"):
    assert form in out, form
  for name in objectives.names():
    assert f"  {name:<9}  {objectives.describe(name)}\n" in out, name
  listed = " ".join(out.split("models (--config.model.name):")[1].split("\n\n")[0].split())
  assert listed == ", ".join(models.names())
  listed = " ".join(out.split("datasets (")[1].split("\n\n")[0].split(":", 1)[1].split())
  assert listed == ", ".join(data.names())
  assert "mock" in listed and "cifar100" in listed and "resnet18" in out


def test_top_level_help_lists_the_commands_and_does_not_import_jax():
  script = ("import sys\nfrom jaxkd import cli\ntry:\n  cli.main(['--help'])\n"
            "except SystemExit:\n  pass\nprint('jax imported:', 'jax' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, text=True,
                       stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": ROOT}).stdout
  for command in ("train", "methods", "report", "bench"):
    assert f"    {command} " in out, (command, out)
  assert "time every method's train step" in out  # jaxkd.bench's HELP, read from its source
  assert out.strip().endswith("jax imported: False"), out


SPACE_FORM = ["train", "--config.method.name", "lsr", "--workdir", "w",
              "--config.method.smoothing", "0.2", "--config.seed", "-1",
              "--config.train.optimizer.milestones", "(3, 6)",
              "--config.train.skip_nonfinite", "True", "--config.data.name", "mock"]
EQUALS_FORM = ["train", "--config.method.name=lsr", "--workdir", "w",
               "--config.method.smoothing=0.2", "--config.seed=-1",
               "--config.train.optimizer.milestones=(3, 6)",
               "--config.train.skip_nonfinite=True", "--config.data.name=mock"]


def _config(argv):
  rest, pairs = config_lib.split_overrides(argv)
  config = config_lib.load(None)
  for key, text in pairs:
    config_lib.override(config, key, text)
  return rest, pairs, config


def test_space_form_equals_equals_form():
  rest_space, pairs, space = _config(SPACE_FORM)
  rest_equals, _, equals = _config(EQUALS_FORM)
  assert rest_space == rest_equals == ["train", "--workdir", "w"]
  assert pairs == [("method.name", "lsr"), ("method.smoothing", "0.2"), ("seed", "-1"),
                   ("train.optimizer.milestones", "(3, 6)"),
                   ("train.skip_nonfinite", "True"), ("data.name", "mock")]
  assert space.to_dict() == equals.to_dict()
  assert (space.method.name, space.method.smoothing, space.seed) == ("lsr", 0.2, -1)
  assert space.train.optimizer.milestones == (3, 6) and space.train.skip_nonfinite is True
  assert space.data.name == "mock" and space.model.name == "small_cnn"  # untouched


@pytest.mark.parametrize("argv", [["--config.seed"], ["--config.seed", "--workdir", "w"]])
def test_space_form_without_a_value_names_both_forms(argv):
  with pytest.raises(config_lib.UsageError) as err:
    config_lib.split_overrides(argv)
  assert str(err.value) == ("'--config.seed': no value; write --config.KEY=VALUE or "
                            "--config.KEY VALUE")


@pytest.mark.parametrize("key,closest", [
    ("train.learning_rate", "train.optimizer.learning_rate"),
    ("learning_rate", "train.optimizer.learning_rate"),
    ("train.optimiser.name", "train.optimizer.name"),
    ("train.name", "train.optimizer.name"),
    ("train.batchsize", "train.batch_size"),
    ("num_epochs", "train.num_epochs"),
    ("teacher.dir", "teacher.workdir"),
    ("model.nme", "model.name"),
])
def test_unknown_key_suggests_the_closest_in_the_whole_schema(key, closest):
  config = config_lib.load(None)
  with pytest.raises(config_lib.UsageError) as err:
    config_lib.override(config, key, "1")
  assert f"(did you mean {closest}?)" in str(err.value), err.value
  assert f"--config.{key}" in str(err.value) and "allowed: " in str(err.value)


@pytest.mark.parametrize("key", ["train.bogus", "bogus.x", "mesh.devices"])
def test_unknown_key_far_from_every_field_gets_no_suggestion(key):
  with pytest.raises(config_lib.UsageError) as err:
    config_lib.override(config_lib.load(None), key, "1")
  assert "did you mean" not in str(err.value) and "allowed: " in str(err.value)


def test_config_file_with_an_unknown_key_suggests_the_closest(tmp_path, capsys):
  path = tmp_path / "mine.py"
  path.write_text("from jaxkd.config.defaults import get_config as base\n\n"
                  "def get_config(arg=None):\n  config = base()\n"
                  "  config.train.learning_rate = 0.1\n  return config\n")
  assert cli.main(["train", "--config", str(path), "--workdir", str(tmp_path / "w")]) == 2
  assert capsys.readouterr().err.strip() == (
      "jaxkd: error: config.train.learning_rate=0.1: unknown key (did you mean "
      "train.optimizer.learning_rate?); allowed here: batch_size, checkpoint_every_steps, "
      "eval_batch_size, extend, keep_best, keep_checkpoints, log_every_steps, num_epochs, "
      "num_steps, optimizer, skip_nonfinite, steps_per_dispatch")
  assert not (tmp_path / "w").exists()


def _learning_rates(*, steps_per_epoch, total_steps, num, **opt_fields):
  """The learning rate of the first ``num`` steps, read off SGD updates of a gradient of 1."""
  opt = defaults.get_config().train.optimizer
  opt.momentum, opt.weight_decay = 0.0, 0.0
  opt.update(opt_fields)
  tx = run_lib.make_optimizer(opt, steps_per_epoch=steps_per_epoch, total_steps=total_steps)
  params = jnp.zeros(())
  state = tx.init(params)
  rates = []
  for _ in range(num):
    updates, state = tx.update(jnp.ones(()), state, params)
    rates.append(-float(updates))
  return np.array(rates)


def _cosine(step, decay_steps, lr=0.05):
  return 0.5 * lr * (1 + math.cos(math.pi * step / decay_steps))


@pytest.mark.parametrize("total_steps,warmup,unit", [(100, 10, "steps"), (22, 2, "steps"),
                                                     (15, 1, "step"), (3, 0, "steps")])
def test_warmup_longer_than_a_tenth_of_the_run_is_clipped(total_steps, warmup, unit):
  rates = _learning_rates(steps_per_epoch=22, total_steps=total_steps, num=total_steps)
  opt = defaults.get_config().train.optimizer
  assert run_lib.warmup_note(opt, steps_per_epoch=22, total_steps=total_steps) == (
      f"train.optimizer.warmup_epochs=1.0 (22 steps) clipped to {warmup} {unit}, 10% of this "
      f"{total_steps}-step run")
  expected = [0.05 * t / warmup if t < warmup else _cosine(t - warmup, total_steps - warmup)
              for t in range(total_steps)]
  np.testing.assert_allclose(rates, expected, rtol=1e-6, atol=1e-9)
  assert rates[0] == pytest.approx(0.0 if warmup else 0.05)  # no warm-up left: full rate


def test_warmup_within_a_tenth_of_the_run_is_kept():
  rates = _learning_rates(steps_per_epoch=22, total_steps=1000, num=30)
  opt = defaults.get_config().train.optimizer
  assert run_lib.warmup_note(opt, steps_per_epoch=22, total_steps=1000) is None
  np.testing.assert_allclose(rates[[0, 11, 22, 26]],
                             [0.0, 0.025, 0.05, _cosine(4, 1000 - 22)], rtol=1e-6)


def test_negative_warmup_is_rejected():
  with pytest.raises(run_lib.ConfigError) as err:
    _learning_rates(steps_per_epoch=22, total_steps=100, num=1, warmup_epochs=-0.5)
  assert str(err.value) == "config.train.optimizer.warmup_epochs=-0.5: must be >= 0"


# README's method table: kd and tfkd_self read a finished (frozen) run, MrKD its replay ring,
# CS-KD a partner example of the same class, RAS-KD its auxiliary head, ema_kd the weights'
# moving average; the others make their targets without a teacher.
TEACHERS = {"ce": "-", "lsr": "-", "kd": "frozen", "tfkd_self": "frozen", "tfkd_reg": "-",
            "lsrkd": "-", "lsrkd_tc": "-", "mrkd": "replay", "mrkd_tc": "replay", "alr": "-",
            "ols": "-", "pskd": "-", "cskd": "partner", "zipf": "-", "ema_kd": "ema",
            "ras_kd": "aux_head", "dkd": "frozen", "dist": "frozen", "ctkd": "frozen+T"}


def _jaxkd(*argv):
  proc = subprocess.run([sys.executable, "-m", "jaxkd.cli", *argv], cwd=ROOT, text=True,
                        capture_output=True, env={**os.environ, "PYTHONPATH": ROOT},
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr
  return proc.stdout


@pytest.mark.slow
def test_version_and_every_commands_help_as_a_user_reads_them():
  import jaxkd  # pylint: disable=import-outside-toplevel
  assert _jaxkd("--version") == f"jaxkd {jaxkd.__version__}\n"
  helps = {c: _jaxkd(c, "--help") for c in ("train", "eval", "compare", "methods", "report",
                                            "bench", "prepare", "bench-pipeline",
                                            "cache-teacher")}
  helps.update({f"report {c}": _jaxkd("report", c, "--help") for c in ("run", "one", "render")})
  for command, text in helps.items():
    assert "``" not in text, command  # no reStructuredText marks from the docstrings
    description = text.split("\n\n")[1]
    assert description[:1].isalpha() or description.startswith("jaxkd"), (command, description)
  assert helps["prepare"].split("\n\n")[1].startswith("Write ImageNet's tars")
  assert "--config.teacher.cache=DIR" in helps["cache-teacher"]
  bench = helps["bench"]
  assert "timed against plain cross-entropy" in bench.split("options:")[0]
  for flag, default in (("model", "resnet18"), ("batch-size", 128), ("steps", 10),
                        ("warmup", 2), ("dtype", "float32")):
    after = " ".join(bench.split(f"--{flag} ")[2].split("--")[0].split())  # its help text
    assert f"(default: {default})" in after, flag


@pytest.mark.slow
def test_methods_legend_explains_every_teacher_named_in_the_table():
  out = _jaxkd("methods")
  legend = out.split("teacher: where the teacher logits come from (- = none):\n")[1]
  named = {objectives.get(n).teacher for n in objectives.names()} - {None}
  assert {t.name for t in named} >= {"frozen", "replay", "partner", "ema", "aux_head"}
  for teacher in named:
    assert teacher.doc, teacher.name  # each teacher documents itself
    entry = next(l for l in legend.splitlines() if l.split()[:1] == [teacher.name])
    assert " ".join(entry.split()[1:]) == " ".join(teacher.doc.split())[:len(
        " ".join(entry.split()[1:]))], teacher.name
  assert "model =" not in out


def test_methods_lists_every_method_with_teacher_and_defaults(capsys):
  assert cli.main(["methods"]) == 0
  lines = capsys.readouterr().out.splitlines()
  heads = [i for i, line in enumerate(lines) if line and not line[0].isspace()]
  rows = {lines[i].split()[0]: (lines[i], " ".join(l.strip() for l in lines[i + 1:j]))
          for i, j in zip(heads[1:], heads[2:] + [len(lines)])}
  assert set(TEACHERS) == set(objectives.names()) <= set(rows)
  for name in objectives.names():
    head, hparams = rows[name]
    assert head.split()[1] == TEACHERS[name], name
    assert head.endswith(objectives.describe(name)), name
    for key, value in objectives.defaults(name).items():
      assert f"{key}={'<run>' if value is None else repr(value)}" in hparams.split(), (name, key)
  assert rows["kd"][1].startswith("alpha=0.9 temperature=4.0 multiplier=1.0")
  assert rows["ce"][1].startswith("(none)")
  assert "[abs, reconstructed" in rows["mrkd"][0] and "[code: Tf-KD loss_kd]" in rows["kd"][0]


@pytest.mark.slow
def test_three_steps_of_the_default_data_with_space_overrides(tmp_path, capsys, caplog):
  workdir = tmp_path / "run"
  with caplog.at_level(logging.WARNING):
    assert cli.main(["train", "--workdir", str(workdir), "--config.train.num_steps", "3",
                     "--config.method.name", "ce", "--config.mesh.data", "1"]) == 0
  assert "clipped to 0 steps, 10% of this 3-step run" in caplog.text
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["train"]["num_steps"] == 3 and saved["method"]["name"] == "ce"
  assert saved["data"]["name"] == "digits"
  records = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert records[-1]["step"] == 3 and 0.0 <= records[-1]["eval/top1"] <= 1.0
  out = capsys.readouterr().out
  assert out.startswith("best top-1 ") and "teacher active" not in out  # ce has no teacher
  assert "train/teacher_active" not in records[0]

"""Table configs: every row's smoke variant trains through the engine, and the full configs
carry the published hyperparameters and values of the papers and their official code.

The expected numbers below are copied from the papers and code by hand (the independent
reference), not read from the configs.
"""
import glob
import json
import os
import subprocess
import sys

import ml_collections
import pytest

from jaxkd import cli
from jaxkd import data as data_lib
from jaxkd import models, objectives
from jaxkd.config import recipes
from jaxkd.reporting import Row, Table, parse_arg, runner
from jaxkd.train import build_run, train_and_evaluate

from conftest import needs_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE_CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                       if os.path.basename(p) != "default.py")
NAMES = [os.path.basename(p)[:-3] for p in TABLE_CONFIGS]
# Tables on streamed data, with their dataset: their smoke variants keep it (the tiny copies
# of conftest's `imagenet_dir` and `cub_dir`) instead of the mock set, see
# `test_ls_vs_kd_imagenet_smoke_trains` and the two after it.
STREAMED = {"ls_vs_kd_imagenet": "imagenet2012", "ls_vs_kd_cub": "caltech_birds2011",
            "tfkd_imagenet": "imagenet2012", "ls_vs_kd_binary": "imagenet2012"}


def _load(name):
  return runner.load_table(os.path.join(ROOT, "configs", f"{name}.py"))


def _row_config(name, row_name, smoke=False):
  module, table = _load(name)
  return module.get_config(table.row(row_name).arg + (",smoke" if smoke else ""))


def _method(config):
  """The resolved hyperparameters of a config's method (defaults filled in)."""
  method = config.method.to_dict()
  name = method.pop("name")
  return objectives.get(name, **method).hparams


def test_every_table_config_is_found():
  assert set(NAMES) >= {"tfkd_cifar100", "lsrkd_cifar100", "alr_cifar", "ls_vs_kd_cifar100",
                        "ras_kd_cifar100", "fashion_mnist"} | set(STREAMED)


@pytest.mark.parametrize("name", NAMES)
def test_docstring_names_command_runtime_and_rows(name):
  module, table = _load(name)
  doc = module.__doc__
  assert "jaxkd report run configs/" + name + ".py" in doc
  assert "jaxkd train --config configs/" + name + ".py:" in doc
  assert "Expected runtime" in doc or "expected runtime" in doc
  assert table.rows and all(isinstance(r, Row) for r in table.rows)


# Tables whose full configs write the Fashion-MNIST subset from the real files.
READS_FASHION_MNIST = {name for name, path in zip(NAMES, TABLE_CONFIGS)
                       if "fashion_subset.prepare" in open(path, encoding="utf-8").read()}


@pytest.mark.parametrize("name", [pytest.param(n, marks=needs_fashion_mnist)
                                  if n in READS_FASHION_MNIST else n for n in NAMES])
def test_full_configs_resolve(name, tmp_path, monkeypatch):
  """Every row (and teacher stage) builds its objective, model and dataset names."""
  monkeypatch.setenv("JAXKD_CACHE", str(tmp_path))  # the Fashion-MNIST subset, written afresh
  module, table = _load(name)
  for row in table.teachers + table.rows:
    config = module.get_config(row.arg)
    assert config.model.name in models.names(), row.name
    assert config.data.name in data_lib.names(), row.name
    assert config.data.name not in ("mock", "mock_text"), row.name
    _method(config)  # raises on an unknown or out-of-range hyperparameter
    teacher = objectives.get(config.method.name).teacher
    loads_a_run = teacher is not None and teacher.setup is not None
    assert loads_a_run == (row.teacher is not None), row.name


@pytest.mark.slow
def test_without_fashion_mnist_its_tests_skip_saying_why(tmp_path):
  """A machine without Debian's package, simulated: the guard and the library look in a missing
  directory, with an empty subset cache. The tests that read Fashion-MNIST skip, naming the
  package, and none fails (``defaults_sweep`` reads it too)."""
  assert READS_FASHION_MNIST >= {"fashion_mnist", "defaults_sweep"}
  env = dict(os.environ, JAXKD_TEST_FASHION_MNIST_DIR=str(tmp_path / "absent"),
             JAXKD_CACHE=str(tmp_path / "cache"))
  tests = os.path.join(ROOT, "tests")
  proc = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
       os.path.join(tests, "test_configs.py") + "::test_full_configs_resolve",
       os.path.join(tests, "test_data.py") + "::test_fashion_mnist_from_debian_files",
       "-k", " or ".join(sorted(READS_FASHION_MNIST) + ["debian"])],
      env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  skipped = len(READS_FASHION_MNIST) + 1
  assert f"{skipped} skipped" in proc.stdout and "passed" not in proc.stdout, proc.stdout
  assert proc.stdout.count("Fashion-MNIST is not installed") == 2, proc.stdout  # [n] and [1]
  assert "apt-get install dataset-fashion-mnist" in proc.stdout


def test_tfkd_published_hyperparameters_and_values():
  expected_reg = {"resnet18": (20.0, 0.1, 100.0), "mobilenetv2": (40.0, 0.95, 1.0),
                  "shufflenetv2": (10.0, 0.95, 1.0), "googlenet": (40.0, 0.1, 50.0)}
  for model, (t, a, m) in expected_reg.items():
    hp = _method(_row_config("tfkd_cifar100", f"{model}-tfkd_reg"))
    assert (hp["temperature"], hp["alpha"], hp["multiplier"]) == (t, a, m), model
    assert hp["form"] == "code" and hp["kl_reduction"] == "elementwise_mean"
  expected_self = {"resnet18": (0.95, 6.0, 50.0), "mobilenetv2": (0.95, 20.0, 1.0),
                   "shufflenetv2": (0.95, 20.0, 1.0), "googlenet": (0.4, 20.0, 50.0),
                   "densenet121": (0.9, 20.0, 50.0), "resnext29_8x64d": (0.9, 20.0, 100.0)}
  for model, (a, t, m) in expected_self.items():
    hp = _method(_row_config("tfkd_cifar100", f"{model}-tfkd_self"))
    assert (hp["alpha"], hp["temperature"], hp["multiplier"]) == (a, t, m), model
  _, table = _load("tfkd_cifar100")
  published = {r.name: r.published for r in table.rows}
  assert published["resnet18-ce"] == 75.87 and published["resnet18-lsr"] == 77.26
  assert published["resnet18-tfkd_self"] == 77.10 and published["resnet18-tfkd_reg"] == 77.36
  assert published["resnet18-kd_resnet50"] == 77.19
  assert published["mobilenetv2-tfkd_reg"] == 70.88 and published["googlenet-tfkd_reg"] == 79.22
  assert published["resnext29_8x64d-tfkd_self"] == 82.08
  assert "densenet121-tfkd_reg" not in published  # no official setting: no invented row


def test_tfkd_recipe():
  config = _row_config("tfkd_cifar100", "resnet18-tfkd_reg")
  opt = config.train.optimizer
  assert (config.data.name, config.train.batch_size, config.train.num_epochs) == (
      "cifar100", 128, 200)
  assert (opt.name, opt.learning_rate, opt.momentum, opt.weight_decay) == ("sgd", 0.1, 0.9, 5e-4)
  assert (opt.schedule, tuple(opt.milestones), opt.gamma, opt.warmup_epochs) == (
      "multistep", (60, 120, 160), 0.2, 1.0)
  assert (config.data.crop_padding, config.data.flip, config.data.rotation_degrees) == (
      4, True, 15.0)
  kd = _row_config("tfkd_cifar100", "resnet18-kd_resnet50")
  hp = _method(kd)
  assert (hp["alpha"], hp["temperature"], hp["kl_reduction"]) == (0.6, 20.0, "elementwise_mean")
  # Batch 64 in the repo's params.json, lr 0.1 x batch/128.
  assert (kd.train.batch_size, kd.train.optimizer.learning_rate) == (64, 0.05)
  lsr = _method(_row_config("tfkd_cifar100", "resnet18-lsr"))
  assert (lsr["smoothing"], lsr["convention"]) == (0.1, "others")


def _schedule(config):
  opt = config.train.optimizer
  return (config.train.num_epochs, opt.name, opt.learning_rate, opt.momentum, opt.weight_decay,
          opt.schedule, tuple(opt.milestones), opt.gamma, opt.warmup_epochs)


def test_logit_kd_rows_follow_the_official_settings():
  """mdistiller's schedule for every stage; each row's method as its official code sets it."""
  _, table = _load("logit_kd_cifar100")
  schedule = (240, "sgd", 0.05, 0.9, 5e-4, "multistep", (150, 180, 210), 0.1, 0.0)
  for row in table.teachers + table.rows:
    config = _row_config("logit_kd_cifar100", row.name)
    assert _schedule(config) == schedule and config.train.batch_size == 64, row.name
  published = {r.name: r.published for r in table.rows}
  assert (published["resnet8x4-kd"], published["resnet8x4-dkd"], published["resnet8x4-kd_ls"],
          published["resnet8x4-dkd_ls"], published["resnet8x4-ctkd"]) == (
              73.33, 76.32, 76.62, 77.01, 73.39)
  dkd_ls = _method(_row_config("logit_kd_cifar100", "resnet8x4-dkd_ls"))
  assert (dkd_ls["alpha"], dkd_ls["beta"], dkd_ls["temperature"],
          dkd_ls["logit_standardization"]) == (9.0, 72.0, 2.0, True)
  kd_ls = _method(_row_config("logit_kd_cifar100", "resnet8x4-kd_ls"))
  assert (1 - kd_ls["alpha"], kd_ls["alpha"] * kd_ls["multiplier"], kd_ls["temperature"]) == (
      pytest.approx(0.1), pytest.approx(9.0), 2.0)
  assert _method(_row_config("logit_kd_cifar100", "vgg8-dkd"))["beta"] == 6.0


def test_ls_vs_kd_rows_follow_their_protocol():
  """Shen et al. (ICLR 2021) and the ICML'22 re-run, each row with its own protocol's values."""
  _, table = _load("ls_vs_kd_cifar100")
  # 90 epochs, lr 0.1, x0.1 every 30: Shen et al.'s teachers and torchvision's recipe.
  teacher_schedule = (90, "sgd", 0.1, 0.9, 1e-4, "multistep", (30, 60), 0.1, 0.0)
  for stage in table.teachers:
    assert _schedule(_row_config("ls_vs_kd_cifar100", stage.name)) == teacher_schedule
  ce = _method(_row_config("ls_vs_kd_cifar100", "teacher_ce"))
  assert ce == {} and "both protocols" in table.row("teacher_ce").note
  shen_ls = _method(_row_config("ls_vs_kd_cifar100", "shen_teacher_ls"))
  assert (shen_ls["smoothing"], shen_ls["convention"]) == (0.1, "others")
  icml_ls = _method(_row_config("ls_vs_kd_cifar100", "icml22_teacher_ls"))
  assert (icml_ls["smoothing"], icml_ls["convention"]) == (0.1, "uniform")
  temperatures = {"shen": set(), "icml22": set()}
  for row in table.rows:
    protocol = row.name.split("_")[0]
    assert protocol in temperatures and protocol in row.arg, row.name
    assert ("Shen et al." if protocol == "shen" else "ICML'22") in row.note, row.name
    assert row.teacher in ("teacher_ce", f"{protocol}_teacher_ls"), row.name
    config = _row_config("ls_vs_kd_cifar100", row.name)
    hp = _method(config)
    # KD only: alpha 1 gives the CE term a weight of 1 - alpha = 0.
    assert (hp["alpha"], hp["kl_reduction"], hp["temperature_squared"]) == (
        1.0, "batchmean", True), row.name
    temperatures[protocol].add(hp["temperature"])
    warmup = 5.0 if protocol == "icml22" else 0.0
    assert _schedule(config) == (200, "sgd", 0.1, 0.9, 1e-4, "multistep", (80, 160), 0.1,
                                 warmup), row.name
  assert temperatures == {"shen": {1.0}, "icml22": {1.0, 2.0, 3.0, 64.0}}
  assert {r.teacher for r in table.rows} == {"teacher_ce", "shen_teacher_ls",
                                             "icml22_teacher_ls"}
  module, _ = _load("ls_vs_kd_cifar100")
  with pytest.raises(ValueError, match="temperature=64.0 is not Shen et al.'s protocol; "
                                       "allowed: 1"):
    module.get_config("protocol=shen,method=kd,T=64")
  with pytest.raises(ValueError, match="method=lsr needs protocol=; allowed: shen, icml22"):
    module.get_config("model=resnet50,method=lsr")


def test_self_kd_baselines_recipes_and_values():
  pskd = _row_config("ras_kd_cifar100", "pskd")
  opt = pskd.train.optimizer
  assert (pskd.model.name, pskd.train.num_epochs, opt.nesterov, tuple(opt.milestones)) == (
      "preact_resnet18", 300, True, (150, 225))
  cskd = _row_config("ras_kd_cifar100", "cskd")
  assert (cskd.train.optimizer.weight_decay, tuple(cskd.train.optimizer.milestones)) == (
      1e-4, (100, 150))
  hp = _method(cskd)
  assert (hp["temperature"], hp["weight"]) == (4.0, 1.0)
  assert _method(_row_config("ras_kd_cifar100", "zipf"))["weight"] == 0.1
  _, table = _load("ras_kd_cifar100")
  published = {r.name: r.published for r in table.rows}
  assert (published["pskd"], published["pskd-ce"]) == (79.18, 75.82)
  assert (published["zipf"], published["zipf-ce"]) == (77.38, 75.51)


@pytest.mark.parametrize("name", ["lsrkd_cifar100", "alr_cifar", "alr_text", "fashion_mnist"])
def test_reconstructed_and_own_tables_have_no_invented_targets(name):
  _, table = _load(name)
  assert all(r.published is None for r in table.teachers + table.rows)


def test_ras_kd_rows_have_no_targets():
  _, table = _load("ras_kd_cifar100")
  assert all(r.published is None for r in table.rows if r.name.startswith("ras_kd"))


def test_fashion_mnist_covers_every_method_with_teachers_of_the_study():
  _, table = _load("fashion_mnist")
  rows = {r.name: r for r in table.rows}
  assert set(objectives.names()) <= set(rows)
  assert rows["kd"].teacher == "teacher_ce" and rows["tfkd_self"].teacher == "teacher_self"
  assert {r.name for r in table.rows if r.name.startswith("kd_T")} == {
      f"kd_T{t}_from_{k}" for t in (1, 2, 3, 64) for k in ("ce", "ls")}


def test_bad_arguments_name_key_value_and_allowed():
  module, _ = _load("tfkd_cifar100")
  with pytest.raises(ValueError, match="model='vgg99'.*allowed: resnet18"):
    module.get_config("model=vgg99")
  with pytest.raises(ValueError, match="'colour' is not known; allowed: model"):
    module.get_config("colour=red")
  with pytest.raises(ValueError, match="not a KD pair"):
    module.get_config("model=googlenet,method=kd,teacher=resnet50")
  with pytest.raises(ValueError, match="write key=value"):
    parse_arg("model", {"model": ("a",)})
  with pytest.raises(ValueError, match="not a teacher stage"):
    Table("t", "t", rows=(Row("a", "x", teacher="nobody"),))
  with pytest.raises(ValueError, match="not unique"):
    Table("t", "t", rows=(Row("a", "x"), Row("a", "y")))


def _smoke_key(config):
  """Rows whose smoke variants train the same code path share one engine run.

  The smoke variant replaces data, model and schedule, so what differs between rows is the
  method and the hyperparameters they set. Rows that only change numeric values of the same
  hyperparameters (the defaults sweep's grid) take the same path through the engine; every
  row's smoke config is still validated and resolved on its own (`build_run`).
  """
  hparams = _method(config)
  categorical = {k: v for k, v in hparams.items() if not isinstance(v, (int, float))
                 or isinstance(v, bool)}
  return json.dumps({"name": config.method.name, "set": sorted(config.method.keys()),
                     "data": config.data.name,  # images or token ids: different paths
                     "teachers": config.teacher.workdir.count(","),  # an ensemble's path
                     **categorical}, sort_keys=True, default=str)


_SMOKE_RUNS = {}  # shared by the tables: a method trained once is not trained again
# Tables whose report collects and renders one smoke row here (the streamed tables' below).
_COLLECTED = {"alr_text": "ag_news_subset-alr", "ls_vs_kd_iwslt": "kd_from_ls"}


def _summary(workdir):
  with open(os.path.join(workdir, "summary.json"), encoding="utf-8") as f:
    return json.load(f)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NAMES if n not in STREAMED])
def test_every_smoke_variant_trains(name, tmp_path_factory):
  """The table's teacher stages, then its rows, in their smoke variants, through the engine."""
  module, table = _load(name)
  teacher_dirs = {}
  for row in table.teachers + table.rows:
    config = module.get_config(row.arg + ",smoke")
    assert config.data.name in ("mock", "mock_text", "mock_translation") and (
        config.train.num_steps <= 5), row.name
    if row.teacher:  # several stages: an ensemble
      config.teacher.workdir = ",".join(teacher_dirs[t] for t in row.teacher_stages)
    build_run(config)  # every row: data, model, objective and teacher checks
    key = _smoke_key(config)
    if key not in _SMOKE_RUNS:
      workdir = str(tmp_path_factory.mktemp("smoke"))
      summary = train_and_evaluate(config, workdir)
      assert summary["method"] == config.method.name and summary["steps"] == 3, row.name
      assert 0.0 <= summary["last"]["top1"] <= 1.0, row.name
      _SMOKE_RUNS[key] = workdir
    if row in table.teachers:
      teacher_dirs[row.name] = _SMOKE_RUNS[key]
    elif name in _COLLECTED and row.name == _COLLECTED[name]:
      _collect_and_render(name, row.name, _SMOKE_RUNS[key], _summary(_SMOKE_RUNS[key]))


def _assert_streamed(config, dataset):
  """The ImageNet-style data and precision of `recipes.streamed`, batch 256."""
  data, train = config.data, config.train
  assert (data.name, data.image_size, data.crop_padding, data.flip, data.rotation_degrees) == (
      dataset, 224, 0, False, 0.0)
  assert (train.batch_size, train.eval_batch_size % 8) == (256, 0)
  assert train.optimizer.learning_rate == 0.1 * train.batch_size / 256
  assert (config.model.dtype, config.model.cpu_conv) == ("bfloat16", "xla")


def test_ls_vs_kd_imagenet_published_values_and_protocols():
  """Shen et al. Tables 1-2 and the ICML'22 re-run's T sweep, on ImageNet."""
  _, table = _load("ls_vs_kd_imagenet")
  published = {r.name: r.published for r in table.teachers + table.rows}
  assert (published["teacher_ce"], published["shen_teacher_ls"],
          published["icml22_teacher_ls"]) == (76.056, 76.128, 76.200)
  shen = {("resnet18", "ce"): 71.425, ("resnet18", "ls"): 71.816,
          ("resnet50", "ce"): 76.325, ("resnet50", "ls"): 77.052}
  for (model, kind), value in shen.items():
    assert published[f"shen_{model}_kd_T1_from_{kind}"] == value
  icml22 = {"resnet18": {"1": (71.488, 71.666), "2": (71.360, 68.860), "3": (69.674, 67.752),
                         "64": (66.194, 64.362)},
            "resnet50": {"1": (76.328, 76.896), "2": (76.180, 76.110), "3": (75.488, 75.790),
                         "64": (74.278, 74.566)}}
  for model, by_t in icml22.items():
    for t, (ce, ls) in by_t.items():
      assert (published[f"icml22_{model}_kd_T{t}_from_ce"],
              published[f"icml22_{model}_kd_T{t}_from_ls"]) == (ce, ls), (model, t)
  assert len(table.rows) == 20
  teacher_schedule = (90, "sgd", 0.1, 0.9, 1e-4, "multistep", (30, 60), 0.1, 0.0)
  for stage in table.teachers:
    config = _row_config("ls_vs_kd_imagenet", stage.name)
    assert _schedule(config) == teacher_schedule and config.model.name == "resnet50_imagenet"
    _assert_streamed(config, "imagenet2012")
  assert _method(_row_config("ls_vs_kd_imagenet", "shen_teacher_ls"))["convention"] == "others"
  assert _method(_row_config("ls_vs_kd_imagenet", "icml22_teacher_ls"))["convention"] == (
      "uniform")
  for row in table.rows:
    protocol, model = row.name.split("_")[:2]
    config = _row_config("ls_vs_kd_imagenet", row.name)
    hp = _method(config)
    assert (hp["alpha"], hp["kl_reduction"], hp["temperature_squared"]) == (
        1.0, "batchmean", True), row.name
    warmup = 5.0 if protocol == "icml22" else 0.0
    assert _schedule(config) == (200, "sgd", 0.1, 0.9, 1e-4, "multistep", (80, 160), 0.1,
                                 warmup), row.name
    assert config.model.name == f"{model}_imagenet", row.name
    _assert_streamed(config, "imagenet2012")
  stability = [c for c in table.claims if c.metric == "stability"]
  assert {(c.better, c.worse) for c in stability} == {("shen_teacher_ls", "teacher_ce"),
                                                      ("icml22_teacher_ls", "teacher_ce")}


def test_ls_vs_kd_cub_rows_and_no_targets_from_scratch():
  """ICML'22's and Shen et al.'s CUB rows; published numbers (fine-tuned) only in the notes."""
  _, table = _load("ls_vs_kd_cub")
  assert all(r.published is None for r in table.teachers + table.rows)
  notes = {r.name: r.note for r in table.rows}
  expected = {"shen_resnet18_kd_T1_from_ce": "77.116", "shen_resnet50_kd_T1_from_ls": "82.355",
              "icml22_resnet18_kd_T64_from_ce": "73.611",
              "icml22_resnet18_kd_T64_from_ls": "67.161",
              "icml22_resnet50_kd_T1_from_ls": "83.742",
              "icml22_mobilenetv2_kd_T1_from_ce": "81.144"}
  for name, value in expected.items():
    assert f"published {value}" in notes[name], name
  config = _row_config("ls_vs_kd_cub", "icml22_mobilenetv2_kd_T1_from_ls")
  assert config.model.name == "mobilenet_v2_imagenet"
  _assert_streamed(config, "caltech_birds2011")
  spec = data_lib.spec("caltech_birds2011")
  assert (spec.tfds_name, spec.test_split, spec.in_memory) == ("caltech_birds2011", "test",
                                                                False)
  assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)


def test_tfkd_imagenet_recipe_and_paper_form():
  """90 epochs, lr 0.1 x batch/256, x0.1 at 30/60/80; Tf-KD_reg alpha 0.1, T 20, student
  tempered (the paper form, as the maintainer says the ImageNet runs are)."""
  module, table = _load("tfkd_imagenet")
  assert {r.name for r in table.rows} == {
      f"{m}-{x}" for m in ("resnet18", "resnet50", "densenet121", "resnext101_32x8d")
      for x in ("ce", "lsr", "tfkd_reg")}
  assert all(r.published is None for r in table.rows)
  for row in table.rows:
    config = module.get_config(row.arg)
    assert _schedule(config) == (90, "sgd", 0.1, 0.9, 1e-4, "multistep", (30, 60, 80), 0.1,
                                 0.0), row.name
    _assert_streamed(config, "imagenet2012")
  hp = _method(module.get_config("model=resnet50,method=tfkd_reg"))
  assert (hp["alpha"], hp["temperature"], hp["form"]) == (0.1, 20.0, "paper")
  assert _method(module.get_config("model=resnet18,method=lsr"))["convention"] == "others"
  config = module.get_config("model=resnet18,method=ce")
  recipes.tfkd_imagenet(config, batch_size=1024)
  assert config.train.optimizer.learning_rate == 0.1 * 1024 / 256


def _train_smoke(name, arg, workdir, data_dir, *extra):
  """``jaxkd train`` of a streamed table's smoke row on the tiny data in ``data_dir``."""
  config = os.path.join(ROOT, "configs", f"{name}.py") + f":{arg},smoke"
  assert cli.main(["train", "--config", config, "--workdir", str(workdir),
                   "--config.data.data_dir=" + data_dir, *extra]) == 0
  with open(os.path.join(str(workdir), "summary.json"), encoding="utf-8") as f:
    summary = json.load(f)
  assert summary["steps"] == 3 and 0.0 <= summary["last"]["top1"] <= 1.0
  return summary


def _build_every_smoke_row(name, data_dir, teacher_dir):
  """Every row's and teacher stage's smoke variant validates and loads (no compilation)."""
  module, table = _load(name)
  for row in table.teachers + table.rows:
    config = module.get_config(row.arg + ",smoke")
    assert (config.data.name, config.data.image_size, config.model.name) == (
        STREAMED[name], 16, "small_cnn"), row.name
    assert config.train.num_steps <= 5, row.name
    config.data.data_dir = data_dir
    if row.teacher:
      config.teacher.workdir = teacher_dir
    build_run(config)


def _collect_and_render(name, row_name, workdir, summary):
  """`jaxkd report`'s record of a streamed smoke run, collected through the engine's one
  prediction path (streamed, sharded over the 8 devices), agrees with what the loop measured
  and renders as Fashion-MNIST's does."""
  from jaxkd.reporting import _collect, render  # pylint: disable=import-outside-toplevel
  _, table = _load(name)
  with open(os.path.join(str(workdir), "config.json"), encoding="utf-8") as f:
    config = ml_collections.ConfigDict(json.load(f))
  record = _collect.collect(config, str(workdir), summary,
                            projection_classes=table.projection_classes)
  final, last = record["final"], summary["last"]
  assert final["count"] == sum(final["ece_bin_count"])
  if config.data.name in STREAMED.values():
    assert final["count"] == config_count(config)
  assert final["correct_top1"] / final["count"] == pytest.approx(last["top1"], abs=1e-6)
  assert final["nll"] == pytest.approx(last["nll"], rel=1e-4)
  row = table.row(row_name)
  record = dict(record, table=table.name, row=row.name, seed=0, arg=row.arg, teacher=row.teacher,
                smoke=True, config=config.to_dict())
  text = render.render_markdown(table, {row.name: [record]}, [])
  assert f"| {row.name} |" in text
  if record["stability"] is None:  # translation: per-token metrics and BLEU
    assert f"{last['bleu']:.2f}" in text and "1 - S" not in text
    return record
  assert 0.0 < record["stability"]["probabilities"] <= 1.0
  assert 0.0 <= record["stability"]["features"] <= 1.0
  assert f"{1.0 - record['stability']['probabilities']:.4f}" in text  # the 1 - S column
  return record


def config_count(config):
  """The number of examples of a config's evaluation split."""
  return data_lib.open_stream(config.data.name, config.data.eval_split,
                              data_dir=config.data.data_dir, image_size=16).num_examples


@pytest.fixture(scope="module")
def imagenet_teacher(imagenet_dir, tmp_path_factory):
  """One smoke CE teacher on the tiny ImageNet, shared by the ImageNet tables' students."""
  workdir = tmp_path_factory.mktemp("imagenet_teacher")
  _train_smoke("ls_vs_kd_imagenet", "model=resnet50,method=ce", workdir, imagenet_dir)
  return str(workdir)


@pytest.mark.slow
def test_ls_vs_kd_imagenet_smoke_trains(imagenet_dir, imagenet_teacher, tmp_path):
  _build_every_smoke_row("ls_vs_kd_imagenet", imagenet_dir, imagenet_teacher)
  summary = _train_smoke("ls_vs_kd_imagenet", "protocol=icml22,method=kd,T=64", tmp_path,
                         imagenet_dir, "--config.teacher.workdir=" + imagenet_teacher)
  assert summary["method"] == "kd"
  _collect_and_render("ls_vs_kd_imagenet", "icml22_resnet18_kd_T64_from_ce", tmp_path, summary)


@pytest.mark.slow
def test_tfkd_imagenet_smoke_trains(imagenet_dir, tmp_path, capsys):
  _build_every_smoke_row("tfkd_imagenet", imagenet_dir, None)  # no row has a teacher
  summary = _train_smoke("tfkd_imagenet", "model=resnet18,method=tfkd_reg", tmp_path,
                         imagenet_dir)
  assert summary["method"] == "tfkd_reg"
  record = _collect_and_render("tfkd_imagenet", "resnet18-tfkd_reg", tmp_path, summary)
  # `jaxkd eval` of the streamed run: top-1 and 1 - S, through the same prediction path.
  assert cli.main(["eval", "--workdir", str(tmp_path)]) == 0
  out = capsys.readouterr().out
  assert "| top-1 | top-5 | NLL | ECE | S | 1 - S |" in out
  path, = glob.glob(os.path.join(str(tmp_path), "eval", "eval_*_3.json"))
  with open(path, encoding="utf-8") as f:
    metrics = json.load(f)["metrics"]
  assert metrics["top1"] == summary["last"]["top1"]
  assert metrics["intra_class_variance"] == pytest.approx(
      1.0 - record["stability"]["probabilities"], abs=2e-6)


@pytest.mark.slow
def test_ls_vs_kd_cub_smoke_trains(cub_dir, tmp_path):
  """A smoke LS teacher trains on the tiny CUB (200 classes from tfds); every student row
  binds it as its teacher (the KD step itself is the ImageNet table's smoke run)."""
  summary = _train_smoke("ls_vs_kd_cub", "protocol=icml22,model=resnet50,method=lsr", tmp_path,
                         cub_dir)
  assert summary["method"] == "lsr"
  _build_every_smoke_row("ls_vs_kd_cub", cub_dir, str(tmp_path))
  _collect_and_render("ls_vs_kd_cub", "icml22_teacher_ls", tmp_path, summary)


def test_ls_vs_kd_binary_rows_follow_reactnet_and_shen():
  """ReActNet's two stages (official code) as KD-only students of Shen et al.'s teachers."""
  _, table = _load("ls_vs_kd_binary")
  published = {r.name: r.published for r in table.rows + table.teachers}
  assert published["reactnet18_from_ce"] == 63.002 and published["reactnet18_from_ls"] == 63.108
  for kind in ("ce", "ls"):
    stage1, stage2 = (_row_config("ls_vs_kd_binary", f"reactnet18{s}_from_{kind}")
                      for s in ("_stage1", ""))
    assert stage1.model.name == "reactnet18_stage1_imagenet"
    assert stage2.model.name == "reactnet18_imagenet"
    # resnet/{1_step1,2_step2}/run.sh: batch 512, lr 2.5e-3, 128 epochs, wd 1e-5 then 0.
    assert _schedule(stage1) == (128, "adam", 2.5e-3, 0.9, 1e-5, "linear", (), 0.1, 0.0)
    assert _schedule(stage2) == (128, "adam", 2.5e-3, 0.9, 0.0, "linear", (), 0.1, 0.0)
    for config in (stage1, stage2):
      hp = _method(config)
      assert config.method.name == "kd" and (hp["alpha"], hp["temperature"]) == (1.0, 1.0)
      assert (config.data.name, config.train.batch_size) == ("imagenet2012", 512)
      assert config.train.optimizer.decay_params == "conv_kernels"
    assert table.row(f"reactnet18_from_{kind}").init_from == f"reactnet18_stage1_from_{kind}"
    assert table.row(f"reactnet18_from_{kind}").teacher == f"teacher_{kind}"
  ls = _method(_row_config("ls_vs_kd_binary", "teacher_ls"))
  assert (ls["smoothing"], ls["convention"]) == (0.1, "others")
  # The runner trains stage 1 before stage 2 of the same seed, and binds it as model.init_from.
  jobs = runner.plan(table, (0,), ["reactnet18_from_ls"])
  assert [j.key for j in jobs] == ["teacher_ls/s100", "reactnet18_stage1_from_ls/s0",
                                   "reactnet18_from_ls/s0"]
  assert jobs[-1].needs == ("teacher_ls/s100", "reactnet18_stage1_from_ls/s0")


def test_a_row_initialised_from_an_unknown_row_is_rejected():
  with pytest.raises(ValueError, match="init_from='nope' is not another row"):
    Table(name="t", title="t", rows=(Row("a", "method=ce", init_from="nope"),))


@pytest.mark.slow
def test_ls_vs_kd_binary_smoke_trains(imagenet_dir, imagenet_teacher, tmp_path):
  """Every smoke row builds; stage 1 trains from the smoke teacher and stage 2 starts from it."""
  _build_every_smoke_row("ls_vs_kd_binary", imagenet_dir, imagenet_teacher)
  teacher = "--config.teacher.workdir=" + imagenet_teacher
  stage1 = _train_smoke("ls_vs_kd_binary", "method=kd,stage=1", tmp_path / "s1", imagenet_dir,
                        teacher)
  stage2 = _train_smoke("ls_vs_kd_binary", "method=kd,stage=2", tmp_path / "s2", imagenet_dir,
                        teacher, f"--config.model.init_from={tmp_path / 's1'}")
  assert stage1["method"] == stage2["method"] == "kd"
  _collect_and_render("ls_vs_kd_binary", "reactnet18_from_ce", tmp_path / "s2", stage2)

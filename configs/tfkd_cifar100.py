"""Tf-KD on CIFAR-100: Yuan et al., "Revisiting Knowledge Distillation via Label Smoothing
Regularization", CVPR 2020 (the official README table; Re-KD and De-KD experiments).

Rows (config arguments; published best-epoch top-1 %, docs/METHODS.md section 11):

  model=M,method=ce          baseline: resnet18 75.87, mobilenetv2 68.38, shufflenetv2 70.34,
                             googlenet 78.15, densenet121 79.04, resnext29_8x64d 81.03
  model=M,method=lsr         LSR (e 0.1, the repo's "others" convention): resnet18 77.26,
                             mobilenetv2 69.32, shufflenetv2 70.83
  model=M,method=tfkd_self   teacher: the same net trained with CE (stage teacher_M):
                             resnet18 77.10, mobilenetv2 70.96, shufflenetv2 72.23,
                             densenet121 80.26, resnext29_8x64d 82.08 (googlenet: none)
  model=M,method=tfkd_reg    resnet18 77.36, mobilenetv2 70.88, shufflenetv2 72.09,
                             googlenet 79.22 (densenet121 / resnext29: no official setting)
  model=resnet18,method=kd,teacher=resnet50          KD from ResNet50: 77.19
  model=S,method=kd,teacher=T   Re-KD (a weaker teacher) and De-KD (teacher=resnet18_poor,
                             a ResNet18 trained one epoch): no published value here
  model=M,method=ce,epochs=1  the De-KD teacher stage (teacher_resnet18_poor)
  ...,smoke                  a few steps of a tiny MLP on mock data

Hyperparameters: Tf-KD_self (a, T, m) and Tf-KD_reg (T, a, m) per network as in the official
code (docs/METHODS.md section 3); KD, Re-KD and De-KD a = 0.6, T = 20, KL elementwise_mean,
batch 64 for the ResNet50->ResNet18 and MobileNetV2->ResNeXt29 pairs, 128 otherwise (the repo's
experiments/kd_experiments/*/params.json). Recipe: `jaxkd.config.recipes.tfkd_cifar`.

Commands:
  jaxkd report run configs/tfkd_cifar100.py --seeds 0,1,2
  jaxkd train --config configs/tfkd_cifar100.py:model=resnet18,method=tfkd_reg --workdir DIR \
      --config.data.data_dir=$TFDS_DATA_DIR
  jaxkd train --config configs/tfkd_cifar100.py:model=resnet18,method=tfkd_self --workdir DIR \
      --config.teacher.workdir=<the finished run of model=resnet18,method=ce>

Needs CIFAR-100 prepared for tensorflow-datasets (array_record) under data.data_dir.
Expected runtime per run (200 epochs): about 1-2 GPU-hours for ResNet18 on one A100-class
GPU, 3-6 for DenseNet121 / ResNeXt29; about 30 runs per seed plus 8 teacher stages.
"""
from jaxkd.config import recipes
from jaxkd.reporting import Row, Table, parse_arg

MODELS = ("resnet18", "mobilenetv2", "shufflenetv2", "googlenet", "densenet121",
          "resnext29_8x64d")
# Official (alpha, temperature, multiplier) of Tf-KD_self and (temperature, alpha, multiplier)
# of Tf-KD_reg (docs/METHODS.md section 3).
TFKD_SELF = {"resnet18": (0.95, 6.0, 50.0), "mobilenetv2": (0.95, 20.0, 1.0),
             "shufflenetv2": (0.95, 20.0, 1.0), "googlenet": (0.4, 20.0, 50.0),
             "densenet121": (0.9, 20.0, 50.0), "resnext29_8x64d": (0.9, 20.0, 100.0)}
TFKD_REG = {"resnet18": (20.0, 0.1, 100.0), "mobilenetv2": (40.0, 0.95, 1.0),
            "shufflenetv2": (10.0, 0.95, 1.0), "googlenet": (40.0, 0.1, 50.0)}
PUBLISHED = {
    "ce": {"resnet18": 75.87, "mobilenetv2": 68.38, "shufflenetv2": 70.34, "googlenet": 78.15,
           "densenet121": 79.04, "resnext29_8x64d": 81.03},
    "lsr": {"resnet18": 77.26, "mobilenetv2": 69.32, "shufflenetv2": 70.83},
    "tfkd_self": {"resnet18": 77.10, "mobilenetv2": 70.96, "shufflenetv2": 72.23,
                  "densenet121": 80.26, "resnext29_8x64d": 82.08},
    "tfkd_reg": {"resnet18": 77.36, "mobilenetv2": 70.88, "shufflenetv2": 72.09,
                 "googlenet": 79.22},
}
# (student, teacher) -> batch size of the repo's KD params.json; the teacher "resnet18_poor"
# is De-KD's poorly trained ResNet18.
KD_PAIRS = {("resnet18", "resnet50"): 64, ("resnet18", "mobilenetv2"): 128,
            ("resnet18", "shufflenetv2"): 128, ("densenet121", "mobilenetv2"): 128,
            ("resnext29_8x64d", "mobilenetv2"): 64, ("mobilenetv2", "resnet18_poor"): 128,
            ("shufflenetv2", "resnet18_poor"): 128}
_ALLOWED = {"model": MODELS + ("resnet50",), "method": ("ce", "lsr", "tfkd_self", "tfkd_reg", "kd"),
            "teacher": ("", "resnet50", "mobilenetv2", "shufflenetv2", "resnet18_poor"),
            "epochs": ("200", "1")}


def _method(config, model: str, method: str, teacher: str) -> int:
  """Sets the method's hyperparameters; returns the batch size."""
  if method == "lsr":
    config.method.smoothing = 0.1
    config.method.convention = "others"
  elif method == "tfkd_self":
    _require(model in TFKD_SELF, f"model={model!r} has no official Tf-KD_self setting")
    config.method.alpha, config.method.temperature, config.method.multiplier = TFKD_SELF[model]
    config.method.kl_reduction = "elementwise_mean"
  elif method == "tfkd_reg":
    _require(model in TFKD_REG, f"model={model!r} has no official Tf-KD_reg setting")
    t, a, m = TFKD_REG[model]
    config.method.temperature, config.method.alpha, config.method.multiplier = t, a, m
    config.method.form = "code"
    config.method.kl_reduction = "elementwise_mean"
  elif method == "kd":
    _require((model, teacher) in KD_PAIRS,
             f"model={model!r},teacher={teacher!r} is not a KD pair of the table; allowed: "
             + ", ".join(f"{s}<-{t}" for s, t in KD_PAIRS))
    config.method.alpha, config.method.temperature, config.method.multiplier = 0.6, 20.0, 1.0
    config.method.kl_reduction = "elementwise_mean"
    config.method.temperature_squared = True
    return KD_PAIRS[(model, teacher)]
  _require(not teacher, f"teacher={teacher!r} is only for method=kd")
  return 128


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(f"config argument: {message}")


def get_config(arg=None):
  """One row of the table; ``arg`` is ``model=M,method=X[,teacher=T][,epochs=1][,smoke]``."""
  values, smoke = parse_arg(arg, _ALLOWED)
  config = recipes.base_config()
  model, method = values["model"], values["method"]
  config.method.name = method
  config.model.name = model
  batch = _method(config, model, method, values["teacher"])
  recipes.tfkd_cifar(config, batch_size=batch)
  if values["epochs"] == "1":
    _require(method == "ce", "epochs=1 is the De-KD teacher stage: method=ce only")
    # De-KD's poorly trained teacher: the recipe's first epoch, at the full learning rate.
    config.train.num_epochs = 1
    config.train.optimizer.warmup_epochs = 0.0
  return recipes.smoke(config) if smoke else config


def _rows():
  rows = []
  for model in MODELS:
    for method in ("ce", "lsr", "tfkd_self", "tfkd_reg"):
      if (method == "tfkd_self" and model not in TFKD_SELF) or (
          method == "tfkd_reg" and model not in TFKD_REG):
        continue
      rows.append(Row(f"{model}-{method}", f"model={model},method={method}",
                      teacher=f"teacher_{model}" if method == "tfkd_self" else None,
                      published=PUBLISHED.get(method, {}).get(model), group=model))
    if model == "resnet18":
      rows.append(Row("resnet18-kd_resnet50", "model=resnet18,method=kd,teacher=resnet50",
                      teacher="teacher_resnet50", published=77.19, group=model,
                      note="KD from ResNet50"))
  for student, teacher in KD_PAIRS:
    if teacher != "resnet50":
      kind = "De-KD" if teacher == "resnet18_poor" else "Re-KD"
      rows.append(Row(f"{student}-{kind.lower()}_{teacher}",
                      f"model={student},method=kd,teacher={teacher}",
                      teacher=f"teacher_{teacher}", group=kind,
                      note=f"{kind}: {student} taught by {teacher}"))
  return tuple(rows)


def table():
  """Baseline / LSR / Tf-KD_self / Tf-KD_reg / KD per network, then Re-KD and De-KD."""
  teachers = tuple(Row(f"teacher_{m}", f"model={m},method=ce", group="Teachers",
                       note=f"{m} trained with CE") for m in MODELS + ("resnet50",))
  teachers += (Row("teacher_resnet18_poor", "model=resnet18,method=ce,epochs=1",
                   group="Teachers", note="De-KD's poorly trained ResNet18: one epoch"),)
  return Table(
      name="tfkd_cifar100",
      title="Tf-KD (Yuan et al., CVPR 2020), CIFAR-100",
      description=("CIFAR-100, Tf-KD recipe (SGD 0.9, wd 5e-4, lr 0.1 x batch/128, 200 epochs, "
                   "x0.2 at 60/120/160, 1 warm-up epoch, crop+flip+rotate 15)."),
      teachers=teachers, rows=_rows())

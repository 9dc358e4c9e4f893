"""The logit-KD methods of the last years on CIFAR-100: KD, DKD (Zhao et al., CVPR 2022), DIST
(Huang et al., NeurIPS 2022), logit standardization (Sun et al., CVPR 2024) on KD and DKD, and
CTKD (Li et al., AAAI 2023), for the teacher -> student pairs of mdistiller's table that the zoo
has: ResNet32x4 -> ResNet8x4, VGG13 -> VGG8, WRN-40-2 -> WRN-40-1.

Rows (config arguments; published best-epoch top-1 %, docs/METHODS.md section 12):

  model=S,method=kd       KD (mdistiller CFG.KD: CE 0.1, KD 0.9, T 4): resnet8x4 73.33,
                          vgg8 72.98, wrn_40_1 73.54 (mdistiller README)
  model=S,method=dkd      DKD (alpha 1, T 4, warm-up 20; beta 8, 6, 6 as mdistiller's
                          configs/cifar100/dkd/*.yaml): 76.32, 74.68, 74.81 (mdistiller README)
  model=S,method=dist     DIST (the official loss's defaults beta = gamma = tau = 1; its CIFAR
                          config was not read): resnet8x4 76.31, wrn_40_1 74.43 (DIST_KD README,
                          mean of its runs, trained with its own CIFAR recipe); vgg8 none
  model=S,method=kd_ls    KD + logit standardization (CE 0.1, KD 9, base T 2; vgg8 T 3, from
                          the log file's name): 76.62, 74.36, 74.37 (logit-standardization README)
  model=S,method=dkd_ls   DKD + logit standardization, T 2, alpha and beta times the KD weight
                          (9 with beta 8; vgg8 15 and wrn_40_1 12 with beta 2, read from the log
                          files' names): 77.01, 74.81, 74.89 (logit-standardization README)
  model=S,method=ctkd     CTKD (global temperature, t in (1, 21), reversal cosine 0 -> -1 over
                          10 epochs, CE 0.1, KD 0.9): 73.39, 73.52, 73.93 (the CTKD row of the
                          logit-standardization README)
  model=T,method=ce       the teachers resnet32x4, vgg13, wrn_40_2 (CE, the same recipe)
  ...,smoke               a few steps of a tiny MLP on mock data

Recipe (`jaxkd.config.recipes.mdistiller_cifar`): SGD momentum 0.9, weight decay 5e-4, lr 0.05
at batch 64, 240 epochs, x0.1 at epochs 150/180/210; crop 32 pad 4 and flip. mdistiller's
teachers are RepDistiller's, trained with this schedule; ours are trained here.

Commands:
  jaxkd report run configs/logit_kd_cifar100.py --seeds 0,1,2
  jaxkd train --config configs/logit_kd_cifar100.py:model=resnet32x4,method=ce --workdir T \
      --config.data.data_dir=$TFDS_DATA_DIR
  jaxkd train --config configs/logit_kd_cifar100.py:model=resnet8x4,method=dkd --workdir S \
      --config.teacher.workdir=T --config.data.data_dir=$TFDS_DATA_DIR

Needs CIFAR-100 prepared for tensorflow-datasets under data.data_dir. Expected runtime (an
estimate, not measured): about 1 GPU-hour per 240-epoch student on one A100-class GPU, 1-2 per
teacher; 18 students per seed plus 3 teachers.
"""
from jaxkd.config import recipes
from jaxkd.reporting import Claim, Row, Table, parse_arg

PAIRS = {"resnet8x4": "resnet32x4", "vgg8": "vgg13", "wrn_40_1": "wrn_40_2"}
METHODS = ("kd", "dkd", "dist", "kd_ls", "dkd_ls", "ctkd")
PUBLISHED = {
    "kd": {"resnet8x4": 73.33, "vgg8": 72.98, "wrn_40_1": 73.54},
    "dkd": {"resnet8x4": 76.32, "vgg8": 74.68, "wrn_40_1": 74.81},
    "dist": {"resnet8x4": 76.31, "wrn_40_1": 74.43},
    "kd_ls": {"resnet8x4": 76.62, "vgg8": 74.36, "wrn_40_1": 74.37},
    "dkd_ls": {"resnet8x4": 77.01, "vgg8": 74.81, "wrn_40_1": 74.89},
    "ctkd": {"resnet8x4": 73.39, "vgg8": 73.52, "wrn_40_1": 73.93},
}
# mdistiller's DKD beta per student (configs/cifar100/dkd/*.yaml; alpha 1, T 4 throughout).
DKD_BETA = {"resnet8x4": 8.0, "vgg8": 6.0, "wrn_40_1": 6.0}
# Logit standardization: (base temperature, KD weight) of KD, and (base temperature, KD weight,
# beta before scaling) of DKD, from the README's command (resnet8x4) and the log files' names.
KD_LS = {"resnet8x4": (2.0, 9.0), "vgg8": (3.0, 9.0), "wrn_40_1": (2.0, 9.0)}
DKD_LS = {"resnet8x4": (2.0, 9.0, 8.0), "vgg8": (2.0, 15.0, 2.0), "wrn_40_1": (2.0, 12.0, 2.0)}
NAMES = {"kd": "KD", "dkd": "DKD", "dist": "DIST", "kd_ls": "KD + LS", "dkd_ls": "DKD + LS",
         "ctkd": "CTKD"}
_ALLOWED = {"model": tuple(PAIRS) + tuple(PAIRS.values()), "method": ("ce",) + METHODS}


def _method(config, model: str, method: str) -> None:
  m = config.method
  if method == "ce":
    _require(model in PAIRS.values(), f"model={model!r}: method=ce trains a teacher; allowed: "
             + ", ".join(PAIRS.values()))
    return
  _require(model in PAIRS, f"model={model!r} is not a student of the table; allowed: "
           + ", ".join(PAIRS))
  m.name = method.removesuffix("_ls")
  if method == "kd":
    m.alpha, m.temperature, m.multiplier = 0.9, 4.0, 1.0
  elif method == "dkd":
    m.alpha, m.beta, m.temperature, m.ce_weight, m.warmup_epochs = (
        1.0, DKD_BETA[model], 4.0, 1.0, 20)
  elif method == "kd_ls":  # CE 0.1, KD w
    temperature, weight = KD_LS[model]
    recipes.kd_logit_standardization(config, temperature=temperature, weight=weight)
  elif method == "dkd_ls":  # their train script multiplies alpha and beta by the KD weight
    temperature, weight, beta = DKD_LS[model]
    m.alpha, m.beta, m.temperature, m.ce_weight, m.warmup_epochs = (
        weight, beta * weight, temperature, 1.0, 20)
    m.logit_standardization = True
  elif method == "ctkd":
    m.alpha, m.t_start, m.t_end = 0.9, 1.0, 20.0
    m.decay_max, m.decay_min, m.decay_loops = 0.0, -1.0, 10.0
  # dist: the official loss's defaults


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(f"config argument: {message}")


def get_config(arg=None):
  """One row of the table; ``arg`` is ``model=M,method=X[,smoke]``."""
  values, smoke = parse_arg(arg, _ALLOWED)
  config = recipes.row_config(values)
  _method(config, values["model"], values["method"])
  recipes.mdistiller_cifar(config)
  return recipes.smoke(config) if smoke else config


def _rows():
  return tuple(
      Row(f"{student}-{method}", f"model={student},method={method}",
          teacher=f"teacher_{teacher}", published=PUBLISHED[method].get(student),
          group=f"{teacher} -> {student}", note=NAMES[method])
      for student, teacher in PAIRS.items() for method in METHODS)


def table():
  """Three CE teachers, then six methods per teacher -> student pair."""
  return Table(
      name="logit_kd_cifar100",
      title="Logit KD on CIFAR-100: KD, DKD, DIST, logit standardization, CTKD",
      description=("CIFAR-100, mdistiller's recipe (SGD 0.9, wd 5e-4, lr 0.05 at batch 64, 240 "
                   "epochs, x0.1 at 150/180/210, crop+flip); teachers trained here with the "
                   "same recipe."),
      teachers=tuple(Row(f"teacher_{t}", f"model={t},method=ce", group="Teachers",
                         note=f"{t} trained with CE") for t in PAIRS.values()),
      rows=_rows(),
      claims=(
          Claim("mdistiller: DKD beats KD (ResNet32x4 -> ResNet8x4)", "resnet8x4-dkd",
                "resnet8x4-kd"),
          Claim("Sun et al.: logit standardization improves KD", "resnet8x4-kd_ls",
                "resnet8x4-kd"),
          Claim("Sun et al.: logit standardization improves DKD", "resnet8x4-dkd_ls",
                "resnet8x4-dkd"),
      ))

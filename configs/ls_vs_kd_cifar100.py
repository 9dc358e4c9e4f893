"""Is label smoothing truly incompatible with knowledge distillation? (Shen et al., ICLR 2021):
students of a teacher trained with and without label smoothing, at T in {1, 2, 3, 64}.

The protocol (METHODS.md s6): two teachers, CE and LSR (e = 0.1); students learn from the
teacher alone (alpha = 1: T^2 KL(softmax(z_t/T) || softmax(z/T)), batchmean), T in
{1, 2, 3, 64}. The report also gives each teacher's stability (our reconstruction of the
paper's metric) and the three-class projection of its features.

The published numbers are ImageNet's (ResNet50 -> ResNet18, ICML'22 re-run of the protocol):
T=1: CE teacher 71.49, LS teacher 71.67; T=64: CE teacher 66.19, LS teacher 64.36. The engine
trains in-memory datasets only, so this table runs the same pairing, ResNet50 -> ResNet18 (the
CIFAR variants), on CIFAR-100 with Tf-KD's recipe (our choice); there is no CIFAR-100 number
to compare with, only the pattern (LS teacher at least as good at T=1, worse at T=64).

Rows (config arguments):
  model=resnet50,method=ce | model=resnet50,method=lsr    the teacher stages
  method=kd,T=1|2|3|64       a student (resnet18); pass the CE or the LS teacher's workdir
  ...,smoke                  a few steps of a tiny MLP on mock data

Commands:
  jaxkd report run configs/ls_vs_kd_cifar100.py --seeds 0,1,2
  jaxkd train --config configs/ls_vs_kd_cifar100.py:model=resnet50,method=lsr --workdir T_LS
  jaxkd train --config configs/ls_vs_kd_cifar100.py:method=kd,T=64 --workdir S \
      --config.teacher.workdir=T_LS

Needs CIFAR-100 prepared for tensorflow-datasets under data.data_dir. Expected runtime: about
3-4 GPU-hours per ResNet50 teacher and 1-2 per student (200 epochs); 2 teachers + 24 students.
"""
from jaxkd.reporting import Claim, Row, Table, parse_arg, recipes

TEMPERATURES = ("1", "2", "3", "64")
_ALLOWED = {"method": ("ce", "lsr", "kd"), "model": ("resnet18", "resnet50"),
            "T": ("",) + TEMPERATURES}


def get_config(arg=None):
  """One run; ``arg`` is ``model=resnet50,method=ce|lsr`` or ``method=kd,T=t`` (+ ``smoke``)."""
  values, smoke = parse_arg(arg, _ALLOWED)
  config = recipes.row_config(values)
  if (values["method"] == "kd") != bool(values["T"]):
    raise ValueError(f"config argument: T is given exactly for method=kd; got "
                     f"method={values['method']!r}, T={values['T']!r}")
  if values["T"]:
    recipes.kd_only(config, float(values["T"]))
  recipes.tfkd_cifar(config)
  return recipes.smoke(config) if smoke else config


def table():
  """Two ResNet50 teachers (CE, LS), eight ResNet18 students."""
  rows = tuple(Row(f"kd_T{t}_from_{kind}", f"method=kd,T={t}", teacher=f"teacher_{kind}",
                   group="ResNet50 -> ResNet18, CIFAR-100",
                   note=f"KD only, T={t}, {kind.upper()} teacher")
               for t in TEMPERATURES for kind in ("ce", "ls"))
  return Table(
      name="ls_vs_kd_cifar100",
      title="LS teachers and KD (Shen et al., ICLR 2021), CIFAR-100",
      description=("ResNet50 teachers with and without LSR (e 0.1), ResNet18 students with "
                   "the KD term only; Tf-KD's CIFAR recipe. Published numbers exist only for "
                   "ImageNet (see the config's docstring)."),
      teachers=(Row("teacher_ce", "model=resnet50,method=ce", group="Teachers"),
                Row("teacher_ls", "model=resnet50,method=lsr", group="Teachers")),
      rows=rows,
      claims=(
          Claim("The LS teacher's features are more stable", "teacher_ls", "teacher_ce",
                metric="stability"),
          Claim("At T=1 the LS teacher is the better teacher", "kd_T1_from_ls",
                "kd_T1_from_ce"),
          Claim("At T=64 KD from the LS teacher degrades", "kd_T64_from_ce", "kd_T64_from_ls"),
      ))

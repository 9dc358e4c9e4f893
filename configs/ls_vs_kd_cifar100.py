"""Is label smoothing truly incompatible with knowledge distillation? Two protocols, CIFAR-100:
Shen et al. (ICLR 2021) and Chandrasegaran et al.'s re-run (ICML 2022).

Every row names its protocol (`recipes.ls_kd_protocol` holds both, with their sources):

  shen_*    Shen et al., ICLR 2021. LS teachers in the "others" convention (0.9 on the label,
            0.1/99 on each other class); students learn from the teacher alone (alpha = 1, no
            CE term) at T = 1 only. Teachers 90 epochs, lr 0.1, x0.1 every 30; students 200
            epochs, lr 0.1, x0.1 every 80, no warm-up (the student schedule as the ICML'22
            code attributes it to Shen et al.; their main text does not state it).
  icml22_*  Chandrasegaran et al., ICML 2022 (sutd-visual-computing-group/LS-KD-compatibility).
            LS teachers in the uniform convention (0.901 on the label, 0.001 elsewhere);
            KD-only students, T^2 KL batchmean, T in {1, 2, 3, 64}; SGD momentum 0.9, weight
            decay 1e-4, lr 0.1, x0.1 every 80 epochs of 200, 5 epochs of linear warm-up.
            Teachers: torchvision's 90-epoch recipe (lr 0.1, x0.1 every 30).

Ours: CIFAR-100 (a cheap stand-in for ImageNet; the papers' own ImageNet setting is
configs/ls_vs_kd_imagenet.py, and CUB's configs/ls_vs_kd_cub.py), the CIFAR
ResNet50 -> ResNet18, batch 128, crop 32 pad 4 and flip, momentum 0.9 and weight decay 1e-4
for Shen et al. too. Both protocols then train the same CE teacher, `teacher_ce`, shared.
The report gives each teacher's 1 - S (Shen et al.'s Eq. 2 on its test probabilities).

Published numbers exist only for ImageNet and CUB (the two configs above carry them), so no
row here has a target; the pattern is what to compare. Shen et al., ResNet50 teacher ->
student top-1 at T = 1 (mean of 3; Table 2): CE teacher (76.056) -> ResNet18 71.425, ResNet50
76.325; LS teacher (76.128) -> ResNet18 71.816, ResNet50 77.052. Their Table 1, ResNet50
1 - S: 0.3217 (CE), 0.3106 (LS).
ICML'22, ResNet50 -> ResNet18 top-1, CE teacher ; LS teacher (teachers 76.132 ; 76.200):
T=1 71.488 ; 71.666, T=2 71.360 ; 68.860, T=3 69.674 ; 67.752, T=64 66.194 ; 64.362.

Rows (config arguments):
  model=resnet50,method=ce                          the CE teacher of both protocols
  protocol=shen|icml22,model=resnet50,method=lsr    a protocol's LS teacher
  protocol=shen,method=kd,T=1                       a Shen student (resnet18)
  protocol=icml22,method=kd,T=1|2|3|64              an ICML'22 student (resnet18)
  ...,smoke                                         a few steps of a tiny MLP on mock data

Commands:
  jaxkd report run configs/ls_vs_kd_cifar100.py --seeds 0,1,2
  jaxkd train --config configs/ls_vs_kd_cifar100.py:protocol=shen,model=resnet50,method=lsr \
      --workdir T_LS
  jaxkd train --config configs/ls_vs_kd_cifar100.py:protocol=shen,method=kd,T=1 --workdir S \
      --config.teacher.workdir=T_LS

Needs CIFAR-100 prepared for tensorflow-datasets under data.data_dir. Expected runtime: about
1.5-2 GPU-hours per ResNet50 teacher (90 epochs) and 1-2 per student (200 epochs); 3 teachers
and 10 students per seed.
"""
from jaxkd.config import recipes
from jaxkd.reporting import Claim, Row, Table, parse_arg

TEMPERATURES = ("1", "2", "3", "64")
_ALLOWED = {"protocol": ("",) + recipes.LS_KD_PROTOCOLS, "method": ("ce", "lsr", "kd"),
            "model": ("resnet18", "resnet50"), "T": ("",) + TEMPERATURES}
_NAMES = {"shen": "Shen et al. (ICLR 2021)", "icml22": "ICML'22 re-run"}


def get_config(arg=None):
  """One run; ``arg`` is one of the rows of the module docstring (+ ``,smoke``)."""
  values, smoke = parse_arg(arg, _ALLOWED)
  recipes.check_ls_kd_row(values)
  config = recipes.row_config(values)
  # The CE teacher's recipe is the same in both protocols.
  recipes.ls_kd_protocol(config, values["protocol"] or "icml22",
                         temperature=float(values["T"]) if values["T"] else None)
  return recipes.smoke(config) if smoke else config


def _students(protocol, temperatures):
  return tuple(
      Row(f"{protocol}_kd_T{t}_from_{kind}", f"protocol={protocol},method=kd,T={t}",
          teacher="teacher_ce" if kind == "ce" else f"{protocol}_teacher_ls",
          group=f"{_NAMES[protocol]} protocol: ResNet50 -> ResNet18, KD only",
          note=f"{_NAMES[protocol]} protocol: KD only, T={t}, {kind.upper()} teacher")
      for t in temperatures for kind in ("ce", "ls"))


def table():
  """The shared CE teacher, one LS teacher per protocol, 2 Shen and 8 ICML'22 students."""
  return Table(
      name="ls_vs_kd_cifar100",
      title="LS teachers and KD on CIFAR-100: Shen et al. (ICLR 2021) and the ICML'22 re-run",
      description=(
          "ResNet50 teachers with and without LS (e = 0.1), ResNet18 students learning from "
          "the teacher alone. Shen et al.'s protocol: LS in the 'others' convention, students "
          "at T = 1, 200 epochs without warm-up. The ICML'22 re-run's: uniform LS, T in "
          "{1, 2, 3, 64}, 200 epochs with 5 of warm-up. Teachers 90 epochs, lr 0.1 x0.1 "
          "every 30; students lr 0.1 x0.1 every 80; SGD momentum 0.9, weight decay 1e-4, batch "
          "128. Published numbers exist only for ImageNet and CUB (see the config's "
          "docstring)."),
      teachers=(
          Row("teacher_ce", "model=resnet50,method=ce", group="Teachers",
              note="CE, both protocols (their teacher recipes coincide)"),
          Row("shen_teacher_ls", "protocol=shen,model=resnet50,method=lsr", group="Teachers",
              note="Shen et al. (ICLR 2021) protocol: LS e=0.1, 'others' convention"),
          Row("icml22_teacher_ls", "protocol=icml22,model=resnet50,method=lsr",
              group="Teachers", note="ICML'22 re-run protocol: LS e=0.1, uniform convention"),
      ),
      rows=_students("shen", ("1",)) + _students("icml22", TEMPERATURES),
      claims=(
          Claim("Shen et al. (Table 1): the LS teacher is more stable (higher S, lower 1 - S)",
                "shen_teacher_ls", "teacher_ce", metric="stability"),
          Claim("Shen et al. (Table 2): at T=1 the LS teacher is the better teacher",
                "shen_kd_T1_from_ls", "shen_kd_T1_from_ce"),
          Claim("ICML'22: the uniform-LS teacher is more stable (higher S)",
                "icml22_teacher_ls", "teacher_ce", metric="stability"),
          Claim("ICML'22: at T=1 the LS teacher is the better teacher",
                "icml22_kd_T1_from_ls", "icml22_kd_T1_from_ce"),
          Claim("ICML'22: at T=64 KD from the LS teacher degrades (the CE teacher is better)",
                "icml22_kd_T64_from_ce", "icml22_kd_T64_from_ls"),
      ))

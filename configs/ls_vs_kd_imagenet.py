"""Is label smoothing truly incompatible with knowledge distillation? ImageNet: Shen et al.
(ICLR 2021) Tables 1-2 and Chandrasegaran et al.'s re-run (ICML 2022).

The CIFAR-100 version of the same two protocols is configs/ls_vs_kd_cifar100.py; this one runs
them where the papers did, on ImageNet-1k with torchvision's networks. Every row names its
protocol (`recipes.ls_kd_protocol` holds both, with their sources):

  shen_*    Shen et al., ICLR 2021. ResNet-50 teachers with and without LS in the "others"
            convention (0.9 on the label, 0.1/999 on each other class); teachers 90 epochs,
            lr 0.1, x0.1 every 30. Students ResNet-18 and ResNet-50 learn from the teacher
            alone (no CE term) at T = 1 only; 200 epochs, lr 0.1, x0.1 every 80, no warm-up
            (the student schedule as the ICML'22 code attributes it to them). Every entry of
            their Table 2 is a mean of 3 runs.
  icml22_*  Chandrasegaran et al., ICML 2022 (sutd-visual-computing-group/LS-KD-compatibility).
            LS teachers in the uniform convention (0.9001 on the label, 0.0001 elsewhere),
            trained with torchvision's 90-epoch recipe; KD-only students, T^2 KL batchmean,
            T in {1, 2, 3, 64}; SGD momentum 0.9, weight decay 1e-4, lr 0.1, x0.1 every 80
            epochs of 200, 5 epochs of linear warm-up.

Data and precision (`recipes.streamed`): imagenet2012 streamed at 224 (RandomResizedCrop and
flip on the host; evaluation resizes to 256 and centre-crops 224), batch 256 with lr 0.1
(= 0.1 x batch/256), evaluation batch 512, bfloat16 networks. Shared, and ours where no source
states them: momentum 0.9 and weight decay 1e-4 for Shen et al. too, so both protocols train
the same CE teacher, `teacher_ce`.

Published top-1 % (the rows' targets; top-5 of Shen et al.'s students in brackets):
  Shen et al., Table 2 (T = 1, mean of 3):
    CE teacher ResNet-50 76.056 -> ResNet-18 71.425 (90.185), ResNet-50 76.325 (92.984)
    LS teacher ResNet-50 76.128 -> ResNet-18 71.816 (90.466), ResNet-50 77.052 (93.376)
  Shen et al., Table 1, teacher top-1 / 1 - S (Eq. 2 on the teacher's test probabilities,
  lower = more information erased), without LS ; with LS:
    ResNet-18 69.758 / 0.3359 ; 69.774 / 0.3358    ResNet-50 75.888 / 0.3217 ; 76.130 / 0.3106
    ResNet-101 77.374 / 0.3185 ; 77.726 / 0.3070   Wide-ResNet50-2 78.468 / 0.3201 ; 77.808 / 0.3155
    ResNeXt50-32x4d 77.618 / 0.3229 ; 77.774 / 0.3182
    ResNeXt101-32x8d 79.312 / 0.3177 ; 79.698 / 0.3116
    MobileNetV2 71.878 / 0.3341 (CE only)           DenseNet121 74.434 / 0.3243 (CE only)
    (the without-LS accuracies are those of torchvision's published weights). The report
    prints each teacher stage's 1 - S; the claims below compare them.
  ICML'22 re-run, CE teacher ; LS teacher (teachers 76.132 ; 76.200):
    ResNet-50 -> ResNet-18  T=1 71.488 ; 71.666   T=2 71.360 ; 68.860
                            T=3 69.674 ; 67.752   T=64 66.194 ; 64.362
    ResNet-50 -> ResNet-50  T=1 76.328 ; 76.896   T=2 76.180 ; 76.110
                            T=3 75.488 ; 75.790   T=64 74.278 ; 74.566
  `teacher_ce` carries Shen et al.'s 76.056 (the re-run's CE teacher: 76.132).

Rows (config arguments; networks are torchvision's, `<name>_imagenet`):
  model=resnet50,method=ce                              the CE teacher of both protocols
  protocol=shen|icml22,model=resnet50,method=lsr        a protocol's LS teacher
  protocol=shen,method=kd,T=1[,model=resnet50]          a Shen student (default resnet18)
  protocol=icml22,method=kd,T=1|2|3|64[,model=resnet50] an ICML'22 student
  ...,smoke      a few steps of small_cnn on 16 x 16 crops of the data in data.data_dir

The CE teacher may instead be torchvision's published ResNet-50 weights: the ImageNet zoo's
keys ``teacher.torchvision_checkpoint`` (the state_dict file) and ``teacher.torchvision_model=
resnet50_imagenet`` in place of ``teacher.workdir`` (last command below). Those weights are the
75.888 / 0.3217 row of Table 1 (torchvision's recipe), not a 3-run mean of this one.

Commands:
  jaxkd prepare imagenet2012 --manual_dir TARS --data_dir $TFDS_DATA_DIR
  jaxkd report run configs/ls_vs_kd_imagenet.py --seeds 0,1,2
  jaxkd train --config configs/ls_vs_kd_imagenet.py:protocol=shen,model=resnet50,method=lsr \
      --workdir T_LS --config.data.data_dir=$TFDS_DATA_DIR
  jaxkd train --config configs/ls_vs_kd_imagenet.py:protocol=shen,method=kd,T=1 --workdir S \
      --config.teacher.workdir=T_LS --config.data.data_dir=$TFDS_DATA_DIR
  jaxkd train --config configs/ls_vs_kd_imagenet.py:protocol=shen,method=kd,T=1 --workdir S_TV \
      --config.teacher.torchvision_checkpoint=resnet50-0676ba61.pth \
      --config.teacher.torchvision_model=resnet50_imagenet --config.data.data_dir=$TFDS_DATA_DIR

Needs imagenet2012 in tfds's array_record layout under data.data_dir (`jaxkd prepare
imagenet2012` writes it from image-net.org's tars) and the ImageNet networks. Expected runtime
(an estimate, not measured): about 40-60 A100-GPU-hours per ResNet-50 teacher (90 epochs) and
60-100 per 200-epoch student (with the teacher's forward pass), if the host decodes fast
enough (16+ cores per GPU); 3 teachers and 20 students per seed.
"""
from jaxkd.config import recipes
from jaxkd.reporting import Claim, Row, Table, parse_arg

TEMPERATURES = ("1", "2", "3", "64")
STUDENTS = ("resnet18", "resnet50")
_ALLOWED = {"protocol": ("",) + recipes.LS_KD_PROTOCOLS, "method": ("ce", "lsr", "kd"),
            "model": STUDENTS, "T": ("",) + TEMPERATURES}
_NAMES = {"shen": "Shen et al. (ICLR 2021)", "icml22": "ICML'22 re-run"}
# Published top-1: (protocol, student, T) -> (from the CE teacher, from the LS teacher).
PUBLISHED_STUDENTS = {
    ("shen", "resnet18", "1"): (71.425, 71.816), ("shen", "resnet50", "1"): (76.325, 77.052),
    ("icml22", "resnet18", "1"): (71.488, 71.666), ("icml22", "resnet18", "2"): (71.360, 68.860),
    ("icml22", "resnet18", "3"): (69.674, 67.752),
    ("icml22", "resnet18", "64"): (66.194, 64.362),
    ("icml22", "resnet50", "1"): (76.328, 76.896), ("icml22", "resnet50", "2"): (76.180, 76.110),
    ("icml22", "resnet50", "3"): (75.488, 75.790),
    ("icml22", "resnet50", "64"): (74.278, 74.566),
}
PUBLISHED_TEACHERS = {"teacher_ce": 76.056, "shen_teacher_ls": 76.128,
                      "icml22_teacher_ls": 76.200}


def get_config(arg=None):
  """One run; ``arg`` is one of the rows of the module docstring (+ ``,smoke``)."""
  values, smoke = parse_arg(arg, _ALLOWED)
  recipes.check_ls_kd_row(values)
  config = recipes.row_config(values)
  config.model.name = values["model"] + "_imagenet"
  # The CE teacher's recipe is the same in both protocols.
  recipes.ls_kd_protocol(config, values["protocol"] or "icml22",
                         temperature=float(values["T"]) if values["T"] else None,
                         dataset="imagenet2012")
  recipes.streamed(config, "imagenet2012", batch_size=256)  # lr 0.1 = 0.1 x 256/256
  return recipes.smoke_streamed(config) if smoke else config


def _students(protocol, temperatures, model):
  return tuple(
      Row(f"{protocol}_{model}_kd_T{t}_from_{kind}",
          f"protocol={protocol},method=kd,T={t},model={model}",
          teacher="teacher_ce" if kind == "ce" else f"{protocol}_teacher_ls",
          published=PUBLISHED_STUDENTS[(protocol, model, t)][kind == "ls"],
          group=f"{_NAMES[protocol]} protocol: ResNet50 -> {model}, KD only",
          note=f"{_NAMES[protocol]} protocol: KD only, T={t}, {kind.upper()} teacher")
      for t in temperatures for kind in ("ce", "ls"))


def table():
  """The shared CE teacher, one LS teacher per protocol, 4 Shen and 16 ICML'22 students."""
  rows = ()
  for model in STUDENTS:
    rows += _students("shen", ("1",), model) + _students("icml22", TEMPERATURES, model)
  return Table(
      name="ls_vs_kd_imagenet",
      title="LS teachers and KD on ImageNet: Shen et al. (ICLR 2021) and the ICML'22 re-run",
      description=(
          "ResNet-50 teachers with and without LS (e = 0.1), ResNet-18 and ResNet-50 students "
          "learning from the teacher alone. Shen et al.'s protocol: LS in the 'others' "
          "convention, students at T = 1, 200 epochs without warm-up. The ICML'22 re-run's: "
          "uniform LS, T in {1, 2, 3, 64}, 200 epochs with 5 of warm-up. Teachers 90 epochs, "
          "lr 0.1 x0.1 every 30; students lr 0.1 x0.1 every 80; SGD momentum 0.9, weight "
          "decay 1e-4, batch 256, 224 x 224 RandomResizedCrop + flip, bfloat16."),
      teachers=(
          Row("teacher_ce", "model=resnet50,method=ce", group="Teachers",
              published=PUBLISHED_TEACHERS["teacher_ce"],
              note="CE, both protocols (Shen et al. 76.056, ICML'22 76.132)"),
          Row("shen_teacher_ls", "protocol=shen,model=resnet50,method=lsr", group="Teachers",
              published=PUBLISHED_TEACHERS["shen_teacher_ls"],
              note="Shen et al. (ICLR 2021) protocol: LS e=0.1, 'others' convention"),
          Row("icml22_teacher_ls", "protocol=icml22,model=resnet50,method=lsr",
              group="Teachers", published=PUBLISHED_TEACHERS["icml22_teacher_ls"],
              note="ICML'22 re-run protocol: LS e=0.1, uniform convention"),
      ),
      rows=rows,
      claims=(
          Claim("Shen et al. (Table 1): the LS teacher is more stable (1 - S 0.3106 vs 0.3217)",
                "shen_teacher_ls", "teacher_ce", metric="stability"),
          Claim("Shen et al. (Table 2): at T=1 the LS teacher is the better teacher (ResNet-18 "
                "71.816 vs 71.425)", "shen_resnet18_kd_T1_from_ls",
                "shen_resnet18_kd_T1_from_ce"),
          Claim("Shen et al. (Table 2): at T=1 the LS teacher is the better teacher (ResNet-50 "
                "77.052 vs 76.325)", "shen_resnet50_kd_T1_from_ls",
                "shen_resnet50_kd_T1_from_ce"),
          Claim("ICML'22: the uniform-LS teacher is more stable (higher S)",
                "icml22_teacher_ls", "teacher_ce", metric="stability"),
          Claim("ICML'22: at T=1 the LS teacher is the better teacher (71.666 vs 71.488)",
                "icml22_resnet18_kd_T1_from_ls", "icml22_resnet18_kd_T1_from_ce"),
          Claim("ICML'22: at T=64 KD from the LS teacher degrades (64.362 vs 66.194)",
                "icml22_resnet18_kd_T64_from_ce", "icml22_resnet18_kd_T64_from_ls"),
      ))

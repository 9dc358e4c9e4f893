"""Is label smoothing truly incompatible with knowledge distillation? CUB-200-2011: Shen et al.
(ICLR 2021) Table 2 and Chandrasegaran et al.'s re-run (ICML 2022).

The same two protocols as configs/ls_vs_kd_imagenet.py (see it, and `recipes.ls_kd_protocol`),
on the 200 bird species of CUB-200-2011 (tfds ``caltech_birds2011``: 5,994 training and 5,794
test images; only the image and its label are read, not the boxes or masks):

  shen_*    LS teachers in the "others" convention, KD-only students at T = 1.
  icml22_*  LS teachers in the uniform convention, KD-only students at T = 1 and T = 64.

Published top-1 % (the papers fine-tune ImageNet-pretrained networks on CUB):
  Shen et al., Table 2 (T = 1, mean of 3), ResNet-50 teachers:
    without LS 79.931 -> ResNet-18 77.116, ResNet-50 80.910
    with LS    81.497 -> ResNet-18 78.382, ResNet-50 82.355
  ICML'22 re-run, ResNet-50 teacher, CE teacher ; LS teacher:
    ResNet-18  T=1 80.169 ; 80.946   T=64 73.611 ; 67.161
    ResNet-50  T=1 82.902 ; 83.742
    MobileNetV2  T=1 81.144 ; 81.731

Ours: these rows train from random initialisation (the engine has no key yet that starts a
student from ImageNet weights), so they are far below the papers' fine-tuned numbers and carry
no targets; each row's note gives the published value to read the pattern against, and the
claims check the direction (LS teacher better at T = 1, worse at T = 64). The schedules are
the protocols' ImageNet ones (teachers 90 epochs, x0.1 every 30; students 200 epochs, x0.1
every 80; SGD momentum 0.9, weight decay 1e-4, lr 0.1, batch 256; the ICML'22 students with 5
epochs of warm-up); the papers' CUB fine-tuning schedules are not in the sources we read.
Data as ImageNet (`recipes.streamed`): 224 x 224 RandomResizedCrop + flip on the host, ImageNet
mean/std, bfloat16 networks; the 200 classes come from the tfds source.

Rows (config arguments; networks are torchvision's, `<name>_imagenet`):
  model=resnet50,method=ce                                the CE teacher of both protocols
  protocol=shen|icml22,model=resnet50,method=lsr          a protocol's LS teacher
  protocol=shen,method=kd,T=1,model=resnet18|resnet50     a Shen student
  protocol=icml22,method=kd,T=1|64,model=resnet18|resnet50|mobilenetv2   an ICML'22 student
  ...,smoke      a few steps of small_cnn on 16 x 16 crops of the data in data.data_dir

Commands:
  tfds build caltech_birds2011 --data_dir=$TFDS_DATA_DIR --file_format=array_record  # 1.1 GB
  jaxkd report run configs/ls_vs_kd_cub.py --seeds 0,1,2
  jaxkd train --config configs/ls_vs_kd_cub.py:protocol=icml22,model=resnet50,method=lsr \
      --workdir T_LS --config.data.data_dir=$TFDS_DATA_DIR
  jaxkd train --config configs/ls_vs_kd_cub.py:protocol=icml22,method=kd,T=64 --workdir S \
      --config.teacher.workdir=T_LS --config.data.data_dir=$TFDS_DATA_DIR

Needs caltech_birds2011 prepared for tensorflow-datasets in array_record format under
data.data_dir (tfds downloads it from caltech.edu; preparing needs TensorFlow, reading does
not) and the ImageNet networks.
Expected runtime (an estimate, not measured): CUB is 1/200 of ImageNet's training set, so
about 0.5-1 A100-GPU-hour per ResNet-50 teacher (90 epochs) and 1-2 per 200-epoch student;
3 teachers and 12 students per seed.
"""
from jaxkd.config import recipes
from jaxkd.reporting import Claim, Row, Table, parse_arg

STUDENTS = ("resnet18", "resnet50", "mobilenetv2")
# torchvision's network names, as the ImageNet networks are registered (`<name>_imagenet`).
NETWORKS = {"resnet18": "resnet18_imagenet", "resnet50": "resnet50_imagenet",
            "mobilenetv2": "mobilenet_v2_imagenet"}
_ALLOWED = {"protocol": ("",) + recipes.LS_KD_PROTOCOLS, "method": ("ce", "lsr", "kd"),
            "model": STUDENTS, "T": ("", "1", "64")}
_NAMES = {"shen": "Shen et al. (ICLR 2021)", "icml22": "ICML'22 re-run"}
# Published top-1 (ImageNet-pretrained, fine-tuned): (protocol, student, T) -> (from the CE
# teacher, from the LS teacher).
PUBLISHED_STUDENTS = {
    ("shen", "resnet18", "1"): (77.116, 78.382), ("shen", "resnet50", "1"): (80.910, 82.355),
    ("icml22", "resnet18", "1"): (80.169, 80.946), ("icml22", "resnet18", "64"): (73.611, 67.161),
    ("icml22", "resnet50", "1"): (82.902, 83.742),
    ("icml22", "mobilenetv2", "1"): (81.144, 81.731),
}


def get_config(arg=None):
  """One run; ``arg`` is one of the rows of the module docstring (+ ``,smoke``)."""
  values, smoke = parse_arg(arg, _ALLOWED)
  recipes.check_ls_kd_row(values)
  config = recipes.row_config(values)
  config.model.name = NETWORKS[values["model"]]
  recipes.ls_kd_protocol(config, values["protocol"] or "icml22",
                         temperature=float(values["T"]) if values["T"] else None,
                         dataset="caltech_birds2011")
  recipes.streamed(config, "caltech_birds2011", batch_size=256)
  return recipes.smoke_streamed(config) if smoke else config


def _rows():
  rows = []
  for (protocol, model, t), published in PUBLISHED_STUDENTS.items():
    for kind, value in zip(("ce", "ls"), published):
      rows.append(Row(
          f"{protocol}_{model}_kd_T{t}_from_{kind}",
          f"protocol={protocol},method=kd,T={t},model={model}",
          teacher="teacher_ce" if kind == "ce" else f"{protocol}_teacher_ls",
          group=f"{_NAMES[protocol]} protocol: ResNet50 -> {model}, KD only",
          note=(f"{_NAMES[protocol]}: T={t}, {kind.upper()} teacher; published {value} "
                "(ImageNet-pretrained)")))
  return tuple(rows)


def table():
  """The shared CE teacher, one LS teacher per protocol, 4 Shen and 8 ICML'22 students."""
  return Table(
      name="ls_vs_kd_cub",
      title="LS teachers and KD on CUB-200-2011: Shen et al. (ICLR 2021) and the ICML'22 re-run",
      description=(
          "ResNet-50 teachers with and without LS (e = 0.1), KD-only students; the two "
          "protocols' schedules from random initialisation (the papers fine-tune ImageNet "
          "networks, so their numbers are in the notes, not targets). 224 x 224 "
          "RandomResizedCrop + flip, batch 256, bfloat16."),
      teachers=(
          Row("teacher_ce", "model=resnet50,method=ce", group="Teachers",
              note="CE, both protocols; published 79.931 (Shen et al., pretrained)"),
          Row("shen_teacher_ls", "protocol=shen,model=resnet50,method=lsr", group="Teachers",
              note="Shen et al.: LS e=0.1, 'others'; published 81.497 (pretrained)"),
          Row("icml22_teacher_ls", "protocol=icml22,model=resnet50,method=lsr",
              group="Teachers", note="ICML'22 re-run: LS e=0.1, uniform convention"),
      ),
      rows=_rows(),
      claims=(
          Claim("Shen et al. (Table 2): at T=1 the LS teacher is the better teacher",
                "shen_resnet18_kd_T1_from_ls", "shen_resnet18_kd_T1_from_ce"),
          Claim("ICML'22: at T=1 the LS teacher is the better teacher",
                "icml22_resnet18_kd_T1_from_ls", "icml22_resnet18_kd_T1_from_ce"),
          Claim("ICML'22: at T=64 KD from the LS teacher degrades (67.161 vs 73.611)",
                "icml22_resnet18_kd_T64_from_ce", "icml22_resnet18_kd_T64_from_ls"),
      ))

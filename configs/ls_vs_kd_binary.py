"""Is label smoothing truly incompatible with knowledge distillation? Binary networks: Shen et al.
(ICLR 2021), ReActNet students of ResNet-50 teachers trained with and without LS.

Shen et al. distil a binary ReActNet on a ResNet-18 backbone (Liu et al., ECCV 2020) from a
real-valued ResNet-50 teacher, once trained with cross-entropy and once with LS, and report
the student's ImageNet top-1: 63.002 from the CE teacher, 63.108 from the LS teacher. The
student learns from the teacher alone (ReActNet's distributional loss: the KL divergence to
the teacher's softmax at T = 1, no CE term; `recipes.kd_only`).

Teachers: the same recipe as configs/ls_vs_kd_imagenet.py's Shen et al. protocol (ResNet-50,
90 epochs, SGD lr 0.1, x0.1 every 30, LS e = 0.1 in the 'others' convention).

Student (`reactnet18_*_imagenet`, jaxkd/models/_reactnet.py): the two-stage schedule of
ReActNet's official ResNet code (liuzechun/ReActNet, resnet/*/run.sh, the active 128-epoch
setting; its 256-epoch alternative uses lr 1e-3), each stage 128 epochs at batch 512 with Adam
(coupled weight decay, as torch.optim.Adam), lr 2.5e-3 decaying linearly to 0:
  stage 1  binary activations, real weights (`reactnet18_stage1_imagenet`), weight decay 1e-5;
  stage 2  binary activations and weights (`reactnet18_imagenet`), weight decay 0, the model
           initialised from stage 1's last checkpoint (`model.init_from`, bound by the runner
           through `Row.init_from`).
The weight decay reaches the convolution kernels only, as the official code's. Ours where the
sources differ or are silent: the rate decays every step (the official scheduler every epoch); no extra augmentation beyond
`recipes.streamed` (RandomResizedCrop 224 and flip; the official code adds lighting noise, 0.1);
bfloat16 networks. The official students learn from a torchvision ResNet-34; here, as in Shen
et al., from the ResNet-50 teachers (ReActNet's loss is the cross-entropy to the teacher's
softmax, the KL at T = 1 up to the teacher's entropy).
Shen et al. do not state the schedule they used for ReActNet; we assume the official one.

Published top-1 % (the stage-2 rows' targets): ReActNet-18 from the CE teacher 63.002, from the
LS teacher 63.108; teachers as configs/ls_vs_kd_imagenet.py (76.056 CE, 76.128 LS).

Rows (config arguments):
  method=ce                            the CE ResNet-50 teacher
  method=lsr                           the LS ResNet-50 teacher (Shen et al.'s convention)
  method=kd,stage=1|2                  a ReActNet-18 student stage (from either teacher)
  ...,smoke      a few steps of small_cnn on 16 x 16 crops of the data in data.data_dir

Commands:
  jaxkd prepare imagenet2012 --manual_dir TARS --data_dir $TFDS_DATA_DIR
  jaxkd report run configs/ls_vs_kd_binary.py --seeds 0
  jaxkd train --config configs/ls_vs_kd_binary.py:method=kd,stage=1 --workdir S1 \\
      --config.teacher.workdir=T_LS --config.data.data_dir=$TFDS_DATA_DIR
  jaxkd train --config configs/ls_vs_kd_binary.py:method=kd,stage=2 --workdir S2 \\
      --config.teacher.workdir=T_LS --config.model.init_from=S1 \\
      --config.data.data_dir=$TFDS_DATA_DIR

Needs imagenet2012 in tfds's array_record layout under data.data_dir. Expected runtime (an
estimate, not measured): about 40-60 A100-GPU-hours per ResNet-50 teacher and 40-70 per
128-epoch student stage (with the teacher's forward pass); 2 teachers and 4 student stages
per seed.
"""
from jaxkd.config import recipes
from jaxkd.reporting import Claim, Row, Table, parse_arg

_ALLOWED = {"method": ("ce", "lsr", "kd"), "stage": ("", "1", "2")}
PUBLISHED_STUDENTS = {"ce": 63.002, "ls": 63.108}  # stage 2, Shen et al.
PUBLISHED_TEACHERS = {"teacher_ce": 76.056, "teacher_ls": 76.128}
STUDENT_EPOCHS = 128  # per stage, ReActNet's official ResNet schedule (run.sh)
STUDENT_BATCH, STUDENT_LR = 512, 2.5e-3


def get_config(arg=None):
  """One run; ``arg`` is one of the rows of the module docstring (+ ``,smoke``)."""
  values, smoke = parse_arg(arg, _ALLOWED)
  if (values["method"] == "kd") != bool(values["stage"]):
    raise ValueError(f"config argument: stage is given exactly for method=kd (the ReActNet "
                     f"students); got method={values['method']!r}, stage={values['stage']!r}")
  config = recipes.row_config({"method": values["method"], "model": "resnet50"})
  config.model.name = "resnet50_imagenet"
  if values["method"] == "kd":
    recipes.ls_kd_protocol(config, "shen", temperature=1.0, dataset="imagenet2012")
    stage1 = values["stage"] == "1"
    config.model.name = "reactnet18_stage1_imagenet" if stage1 else "reactnet18_imagenet"
    config.train.num_epochs = STUDENT_EPOCHS
    opt = config.train.optimizer
    opt.name, opt.learning_rate, opt.weight_decay = "adam", STUDENT_LR, 1e-5 if stage1 else 0.0
    opt.schedule, opt.milestones, opt.warmup_epochs = "linear", (), 0.0
    opt.decay_params = "conv_kernels"
    recipes.streamed(config, "imagenet2012", batch_size=STUDENT_BATCH)
  else:
    recipes.ls_kd_protocol(config, "shen", dataset="imagenet2012")
    recipes.streamed(config, "imagenet2012", batch_size=256)  # lr 0.1 = 0.1 x 256/256
  return recipes.smoke_streamed(config) if smoke else config


def _stages(kind):
  teacher = f"teacher_{kind}"
  return (
      Row(f"reactnet18_stage1_from_{kind}", "method=kd,stage=1", teacher=teacher,
          group="ResNet-50 -> ReActNet-18, KD only (T = 1)",
          note=f"stage 1 (binary activations, real weights), {kind.upper()} teacher"),
      Row(f"reactnet18_from_{kind}", "method=kd,stage=2", teacher=teacher,
          published=PUBLISHED_STUDENTS[kind], init_from=f"reactnet18_stage1_from_{kind}",
          group="ResNet-50 -> ReActNet-18, KD only (T = 1)",
          note=f"stage 2 (binary activations and weights) from stage 1, {kind.upper()} "
               "teacher"))


def table():
  """Two ResNet-50 teachers and the two ReActNet-18 stages distilled from each."""
  return Table(
      name="ls_vs_kd_binary",
      title="LS teachers and KD into binary networks: Shen et al. (ICLR 2021), ReActNet",
      description=(
          "ResNet-50 teachers with and without LS (e = 0.1, 'others' convention; 90 epochs, "
          "SGD lr 0.1 x0.1 every 30), ReActNet-18 students learning from the teacher alone "
          "at T = 1 in ReActNet's two stages (binary activations, then binary weights too, "
          "from stage 1), 128 epochs each at batch 512, Adam lr 2.5e-3 decaying linearly to 0, "
          "weight decay 1e-5 then 0 (ReActNet's ResNet code); teachers batch 256; 224 x 224 "
          "RandomResizedCrop + flip, bfloat16."),
      teachers=(
          Row("teacher_ce", "method=ce", group="Teachers",
              published=PUBLISHED_TEACHERS["teacher_ce"], note="ResNet-50, CE"),
          Row("teacher_ls", "method=lsr", group="Teachers",
              published=PUBLISHED_TEACHERS["teacher_ls"],
              note="ResNet-50, LS e=0.1, 'others' convention"),
      ),
      rows=_stages("ce") + _stages("ls"),
      claims=(
          Claim("Shen et al.: the LS teacher is the better teacher of a binary ReActNet-18 "
                "(63.108 vs 63.002)", "reactnet18_from_ls", "reactnet18_from_ce"),
      ))

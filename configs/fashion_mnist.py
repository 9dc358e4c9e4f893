"""Every method of jaxkd on Fashion-MNIST, and the LS-vs-KD study: our own study, no paper table.

CIFAR and ImageNet cannot be downloaded on our machines; Fashion-MNIST ships with Debian
(`apt-get install dataset-fashion-mnist`), so this study carries real numbers for every method
of `jaxkd.objectives.names()` and for the LS-vs-KD question of Shen et al. (ICLR 2021, "Is label
smoothing truly incompatible with knowledge distillation?") in the form of its ICML'22 re-run
(Chandrasegaran et al., "Revisiting label smoothing and knowledge distillation compatibility:
what was missing?": uniform-LS teachers, KD-only students at T in {1, 2, 3, 64}), at a size that
runs on 2 CPU cores. configs/ls_vs_kd_cifar100.py separates the two protocols.

Setting (sized so the study fits about 75 minutes on 2 shared CPU cores, see REPORT.md):
  data: a fixed stratified subset of Fashion-MNIST, 500 training and 300 test images per class
    (5,000 + 3,000), mean-pooled 2x2 to 14x14 (`jaxkd.data.fashion_subset`; written to
    ~/.cache/jaxkd on first use); random crop (pad 1) and horizontal flip.
  model: resnet8 (RepDistiller's CIFAR ResNet-8, 78k parameters); teachers resnet20.
  recipe: SGD momentum 0.9, lr 0.1, batch 128, weight decay 5e-4, cosine decay after half an
    epoch of warm-up, `EPOCHS` = 10 epochs for students, `TEACHER_EPOCHS` = 16 for teachers.
  methods: every method with the library's defaults (the papers' CIFAR-100 settings where the
    papers give them, ours where they do not: LsrKD/TC/MrKD, ALR, RAS-KD); no tuning here.
  teachers: `teacher_ce` (resnet20, CE) for `kd`; `teacher_self` (resnet8, CE) for `tfkd_self`
    (a pretrained copy of the same network); `teacher_ce` and `teacher_ls` (resnet20, LSR 0.1)
    for the LS-vs-KD students, which train with the KD term only (alpha 1, T^2 KL batchmean)
    at T in {1, 2, 3, 64}.

Rows (config arguments):
  method=NAME            NAME in jaxkd.objectives.names(), student resnet8
  model=resnet20,method=ce|lsr,epochs=16 | method=ce,epochs=16     the teacher stages
  method=kd,T=1|2|3|64   an LS-vs-KD student (pass the CE or the LS teacher's workdir)
  ...,smoke              a few steps of a tiny MLP on mock data

Commands:
  jaxkd report run configs/fashion_mnist.py --seeds 0,1,2 --workers 2   # the whole study
  jaxkd report render configs/fashion_mnist.py                         # REPORT.md from JSON
  jaxkd train --config configs/fashion_mnist.py:method=lsrkd --workdir /tmp/fm-lsrkd
  jaxkd train --config configs/fashion_mnist.py:method=kd,T=64 --workdir /tmp/fm-kd64 \
      --config.teacher.workdir=/tmp/fm-teacher-ls

Expected runtime: 2-3 minutes per student run and 10 per teacher on 2 busy shared CPU cores
(73 runs, about 80 minutes with two workers); seconds per run on a GPU.

Published values: none (no paper reports this setting); the report compares the methods with
each other and checks the papers' claims.
"""
from jaxkd import objectives
from jaxkd.data import fashion_subset
from jaxkd.reporting import Claim, Row, Table, parse_arg, recipes

EPOCHS = 10  # students
TEACHER_EPOCHS = 16
PER_CLASS_TRAIN = 500
PER_CLASS_TEST = 300
TEMPERATURES = ("1", "2", "3", "64")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")

_ALLOWED = {"method": objectives.names(), "model": ("resnet8", "resnet20"),
            "T": ("",) + TEMPERATURES,
            "epochs": (str(EPOCHS), str(TEACHER_EPOCHS), str(2 * EPOCHS))}


def get_config(arg=None):
  """One run; ``arg`` is ``method=NAME[,model=M][,T=t][,epochs=E][,smoke]``."""
  values, smoke = parse_arg(arg, _ALLOWED)
  config = recipes.row_config(values)
  if recipes.only_with(values, "T", "", "kd"):
    recipes.kd_only(config, float(values["T"]))
  if smoke:
    return recipes.smoke(config)
  recipes.fashion_subset_cpu(
      config, data_dir=fashion_subset.prepare(per_class_train=PER_CLASS_TRAIN,
                                              per_class_test=PER_CLASS_TEST, pool=2),
      epochs=int(values["epochs"]), eval_batch_size=500, log_every_steps=13)
  return config


def _rows():
  teachers = {"kd": "teacher_ce", "tfkd_self": "teacher_self"}
  main = tuple(Row(name, f"method={name}", teacher=teachers.get(name), group="Every method",
                   note=objectives.describe(name)) for name in objectives.names())
  study = tuple(
      Row(f"kd_T{t}_from_{kind}", f"method=kd,T={t}", teacher=f"teacher_{kind}",
          group="LS-vs-KD: KD-only students of a CE or an LS teacher",
          note=f"KD only (alpha 1), T={t}, {kind.upper()} teacher")
      for t in TEMPERATURES for kind in ("ce", "ls"))
  check = Row(f"ce_{2 * EPOCHS}_epochs", f"method=ce,epochs={2 * EPOCHS}", seeds=(0,),
              group="Convergence check",
              note=f"CE trained twice as long ({2 * EPOCHS} epochs), one seed: how far the "
                   f"{EPOCHS}-epoch runs are from converged")
  return main + study + (check,)


def table():
  """The study: teacher stages, every method, the LS-vs-KD students, the claims checked."""
  return Table(
      name="fashion_mnist",
      title="Every method on Fashion-MNIST, and the LS-vs-KD study (our study, CPU)",
      description=(
          f"Fashion-MNIST, a fixed stratified subset of {PER_CLASS_TRAIN} training and "
          f"{PER_CLASS_TEST} test images per class, mean-pooled to 14x14; resnet8 students, "
          f"resnet20 teachers; SGD lr 0.1, batch 128, cosine, {EPOCHS} epochs "
          f"({TEACHER_EPOCHS} for the teachers); library default hyperparameters for every "
          "method (no tuning on this data). The Tf-KD settings were set for CIFAR-100: with "
          "their elementwise_mean KL (divided by K), their KD terms weigh 10x more with K = 10 "
          "classes. Trained on the CPU (2 cores shared with other jobs)."),
      teachers=(
          Row("teacher_ce", f"model=resnet20,method=ce,epochs={TEACHER_EPOCHS}",
              group="Teachers", note="resnet20, CE"),
          Row("teacher_ls", f"model=resnet20,method=lsr,epochs={TEACHER_EPOCHS}",
              group="Teachers", note="resnet20, LSR e=0.1"),
          Row("teacher_self", f"method=ce,epochs={TEACHER_EPOCHS}", group="Teachers",
              note="resnet8, CE: the pretrained copy Tf-KD_self distils from"),
      ),
      rows=_rows(),
      # Two look-alike classes and a different one, as in Mueller et al.'s figure 1.
      projection_classes=(2, 4, 8),
      projection_rows=("ce", "lsr"),
      convergence=("ce", f"ce_{2 * EPOCHS}_epochs"),
      claims=(
          Claim("Tf-KD: Tf-KD_reg matches or beats LSR", "tfkd_reg", "lsr"),
          Claim("LsrKD: LsrKD matches or beats LSR", "lsrkd", "lsr"),
          Claim("LsrKD + TC beats LsrKD", "lsrkd_tc", "lsrkd"),
          Claim("MrKD beats the CE baseline", "mrkd", "ce"),
          Claim("MrKD + TC beats MrKD", "mrkd_tc", "mrkd"),
          Claim("Tf-KD_self beats the CE baseline", "tfkd_self", "ce"),
          Claim("LSR beats the CE baseline", "lsr", "ce"),
          Claim("Shen et al.: the LS teacher is more stable (higher S, lower 1 - S: more "
                "information erased) than the CE teacher", "teacher_ls", "teacher_ce",
                metric="stability"),
          Claim("Shen et al.: LSR students are more stable (higher S) than CE students",
                "lsr", "ce", metric="stability"),
          Claim("Shen et al.: at T=1 the LS teacher is the better teacher",
                "kd_T1_from_ls", "kd_T1_from_ce"),
          Claim("ICML'22 re-run: at T=64 KD from the LS teacher degrades (the CE teacher is "
                "better)",
                "kd_T64_from_ce", "kd_T64_from_ls"),
      ))

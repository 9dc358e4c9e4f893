"""Every method of jaxkd on Fashion-MNIST, and the LS-vs-KD study: our own study, no paper table.

CIFAR and ImageNet cannot be downloaded on our machines; Fashion-MNIST ships with Debian
(`apt-get install dataset-fashion-mnist`), so this study carries real numbers for every method
of `jaxkd.objectives.names()` and for the LS-vs-KD question of Shen et al. (ICLR 2021, "Is label
smoothing truly incompatible with knowledge distillation?") in the form of its ICML'22 re-run
(Chandrasegaran et al., "Revisiting label smoothing and knowledge distillation compatibility:
what was missing?": uniform-LS teachers, KD-only students at T in {1, 2, 3, 64}), at a size that
runs on 2 CPU cores. configs/ls_vs_kd_cifar100.py separates the two protocols.

Setting (see REPORT.md for what ran at which budget):
  data: a fixed stratified subset of Fashion-MNIST, 500 training and 300 test images per class
    (5,000 + 3,000), mean-pooled 2x2 to 14x14 (`jaxkd.data.fashion_subset`; written to
    ~/.cache/jaxkd on first use); random crop (pad 1) and horizontal flip. Every run trains on
    the first 85% of the training subset (`train[:85%]`, 4,250 images) and evaluates each epoch
    on the other 15% (`train[85%:]`, 750 images), which selects the best epoch
    (`train.keep_best`); the report then evaluates the test subset once, at the selected and at
    the last checkpoint (`Table.report_split`): the test set chooses nothing.
  model: resnet8 (RepDistiller's CIFAR ResNet-8, 78k parameters); teachers resnet20.
  recipe: SGD momentum 0.9, lr 0.1, batch 128, weight decay 5e-4, cosine decay after half an
    epoch of warm-up.
  budget: `CONVERGED_EPOCHS` = 60 epochs for every row and teacher: measured for `ce` on the
    validation split, 30 -> 60 epochs moved last-epoch top-1 by +1.3 points, 60 -> 120 the
    best epoch by +0.07 (two seeds; experiments/results/fashion_mnist/convergence_validation.json),
    and the report's row `ce_120_epochs` repeats the check on the test split. The report's
    epochs column shows each row's budget (every committed record: 60, the check 120).
  methods: every method with the library's defaults (the papers' CIFAR-100 settings where the
    papers give them, ours where they do not: LsrKD/TC/MrKD, ALR, RAS-KD, chosen on a
    validation split by configs/defaults_sweep.py); no tuning here.
  teachers: `teacher_ce` (resnet20, CE) for `kd`, `kd_logit_std`, `dkd`, `dist` and `ctkd`;
    `teacher_self` (resnet8, CE) for `tfkd_self` (a pretrained copy of the same network);
    `teacher_ce` and `teacher_ls` (resnet20, LSR 0.1) for the LS-vs-KD students, which train
    with the KD term only (alpha 1, T^2 KL batchmean) at T in {1, 2, 3, 64}; all three for
    `kd_3_teachers` (`teacher.workdir` lists them: an ensemble).

Rows (config arguments):
  method=NAME[,epochs=60]   NAME in jaxkd.objectives.names(), student resnet8
  model=resnet20,method=ce|lsr,epochs=60 | method=ce,epochs=60     the teacher stages
  method=kd,T=1|2|3|64[,epochs=60]   an LS-vs-KD student (pass the CE or the LS teacher's workdir)
  method=kd,logit_std=1     KD + logit standardization (Sun et al.'s CIFAR setting)
  ...,smoke                 a few steps of a tiny MLP on mock data

Commands:
  jaxkd report run configs/fashion_mnist.py --seeds 0,1,2 --workers 2   # the whole study
  jaxkd report render configs/fashion_mnist.py                         # REPORT.md from JSON
  jaxkd train --config configs/fashion_mnist.py:method=lsrkd,epochs=60 --workdir /tmp/fm-lsrkd
  jaxkd train --config configs/fashion_mnist.py:method=kd,T=64 --workdir /tmp/fm-kd64 \\
      --config.teacher.workdir=/tmp/fm-teacher-ls

Expected runtime, measured on 2 CPU cores with two runs at a time (`--workers 2`): about 4.5
minutes per 60-epoch student run (6 with a teacher's or the replay copies' forward pass), 1-1.5
minutes per 10-epoch run, 26 minutes per 60-epoch resnet20 teacher; the study as first run (3
teachers, 12 rows x 3 seeds at 60 epochs, 12 rows x 3 seeds at 10, the 120-epoch check) 5.6
hours of runs summed, about 3 hours of wall time; every row at 60 epochs (27 rows x 3 seeds)
about 8 hours summed (estimate); seconds per run on a GPU.

Published values: none (no paper reports this setting); the report compares the methods with
each other and checks the papers' claims.
"""
from jaxkd import objectives
from jaxkd.data import fashion_subset
from jaxkd.config import recipes
from jaxkd.reporting import Choice, Claim, Row, Table, parse_arg

EPOCHS = 10  # the short budget (rows no claim compares)
CONVERGED_EPOCHS = 60  # the claims' rows and the teachers (measured: see the docstring)
TRAIN_SPLIT, VALIDATION_SPLIT = "train[:85%]", "train[85%:]"
PER_CLASS_TRAIN = 500
PER_CLASS_TEST = 300
TEMPERATURES = ("1", "2", "3", "64")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")

_ALLOWED = {"method": objectives.names(), "model": ("resnet8", "resnet20"),
            "T": ("",) + TEMPERATURES, "logit_std": ("", "1"),
            "epochs": (str(EPOCHS), str(CONVERGED_EPOCHS), str(2 * CONVERGED_EPOCHS))}


def get_config(arg=None):
  """One run; ``arg`` is ``method=NAME[,model=M][,T=t][,logit_std=1][,epochs=E][,smoke]``."""
  values, smoke = parse_arg(arg, _ALLOWED)
  config = recipes.row_config(values)
  if recipes.only_with(values, "T", "", "kd"):
    recipes.kd_only(config, float(values["T"]))
  if recipes.only_with(values, "logit_std", "", "kd"):
    recipes.kd_logit_standardization(config)
  if smoke:
    return recipes.smoke(config)
  recipes.fashion_subset_cpu(
      config, data_dir=fashion_subset.prepare(per_class_train=PER_CLASS_TRAIN,
                                              per_class_test=PER_CLASS_TEST, pool=2),
      epochs=int(values["epochs"]), eval_batch_size=250, log_every_steps=11)
  config.data.train_split, config.data.eval_split = TRAIN_SPLIT, VALIDATION_SPLIT
  config.train.keep_best = True  # the validation split selects; the report reads the test split
  return config


_CLAIMS = (
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
          "better)", "kd_T64_from_ce", "kd_T64_from_ls"),
    Claim("DKD (Zhao et al.): DKD beats KD", "dkd", "kd"),
    Claim("DIST (Huang et al.): DIST beats KD", "dist", "kd"),
    Claim("CTKD (Li et al.): a curriculum temperature beats KD's fixed one", "ctkd", "kd"),
    Claim("Sun et al.: logit standardization improves KD", "kd_logit_std", "kd"),
)
# The reconstructed methods (their defaults are ours) and the baseline each must not lose to.
RECONSTRUCTED = (("lsrkd", "lsr"), ("lsrkd_tc", "lsr"), ("mrkd", "ce"), ("mrkd_tc", "ce"),
                 ("alr", "ce"), ("ras_kd", "ce"))
_CALIBRATION_CLAIMS = tuple(
    Claim(f"Calibration: the {name} default's last-epoch NLL is no higher than {base}'s",
          base, name, metric="nll") for name, base in RECONSTRUCTED)


def _row(name: str, arg: str, note: str, **kwargs) -> Row:
  """A row at the study's budget (every row trains CONVERGED_EPOCHS)."""
  return Row(name, f"{arg},epochs={CONVERGED_EPOCHS}", note=f"{note} ({CONVERGED_EPOCHS} epochs)",
             **kwargs)


def _teacher(name: str):
  """The teacher stage of a method distilling from a frozen run: Tf-KD_self's pretrained copy
  of the student, the resnet20 CE teacher for the others."""
  teacher = objectives.get(name).teacher
  if teacher is None or not teacher.name.startswith("frozen"):
    return None
  return "teacher_self" if name == "tfkd_self" else "teacher_ce"


def _rows():
  main = tuple(_row(name, f"method={name}", objectives.describe(name), teacher=_teacher(name),
                    group="Every method")
               for name in objectives.names())
  logit_kd = (
      _row("kd_logit_std", "method=kd,logit_std=1",
           "KD + logit standardization, Sun et al.'s CIFAR setting (CE 0.1, KD 9, T 2)",
           teacher="teacher_ce", group="Every method"),
      _row("kd_3_teachers", "method=kd",
           "KD from the mean of three teachers' tempered probabilities (resnet20 CE, resnet20 "
           "LSR, resnet8 CE)", teacher=("teacher_ce", "teacher_ls", "teacher_self"),
           group="Every method"))
  study = tuple(
      _row(f"kd_T{t}_from_{kind}", f"method=kd,T={t}",
           f"KD only (alpha 1), T={t}, {kind.upper()} teacher", teacher=f"teacher_{kind}",
           group="LS-vs-KD: KD-only students of a CE or an LS teacher")
      for t in TEMPERATURES for kind in ("ce", "ls"))
  longer = 2 * CONVERGED_EPOCHS
  check = Row(f"ce_{longer}_epochs", f"method=ce,epochs={longer}", seeds=(0,),
              group="Convergence check",
              note=f"CE trained twice as long ({longer} epochs), one seed: how far the "
                   f"{CONVERGED_EPOCHS}-epoch runs are from converged")
  return main + logit_kd + study + (check,)


def table():
  """The study: teacher stages, every method, the LS-vs-KD students, the claims checked."""
  return Table(
      name="fashion_mnist",
      title="Every method on Fashion-MNIST, and the LS-vs-KD study (our study, CPU)",
      description=(
          f"Fashion-MNIST, a fixed stratified subset of {PER_CLASS_TRAIN} training and "
          f"{PER_CLASS_TEST} test images per class, mean-pooled to 14x14; every run trains on "
          f"{TRAIN_SPLIT} of the training subset and selects its best epoch on {VALIDATION_SPLIT} "
          "(750 images); the numbers below are on the test subset. resnet8 students, resnet20 "
          f"teachers; SGD lr 0.1, batch 128, cosine; {CONVERGED_EPOCHS} epochs (converged for "
          "CE) for every row and teacher; a row whose records were trained at another budget "
          "says so in the table; library default hyperparameters for every "
          "method (no tuning on this data). The Tf-KD settings were set for CIFAR-100: with "
          "their elementwise_mean KL (divided by K), their KD terms weigh 10x more with K = 10 "
          "classes. Trained on the CPU (2 cores)."),
      teachers=(
          Row("teacher_ce", f"model=resnet20,method=ce,epochs={CONVERGED_EPOCHS}",
              group="Teachers", note="resnet20, CE"),
          Row("teacher_ls", f"model=resnet20,method=lsr,epochs={CONVERGED_EPOCHS}",
              group="Teachers", note="resnet20, LSR e=0.1"),
          Row("teacher_self", f"method=ce,epochs={CONVERGED_EPOCHS}", group="Teachers",
              note="resnet8, CE: the pretrained copy Tf-KD_self distils from"),
      ),
      rows=_rows(),
      # Two look-alike classes and a different one, as in Mueller et al.'s figure 1.
      projection_classes=(2, 4, 8),
      projection_rows=("ce", "lsr"),
      convergence=("ce", f"ce_{2 * CONVERGED_EPOCHS}_epochs"),
      report_split="test",
      claims=_CLAIMS + _CALIBRATION_CLAIMS,
      # Each reconstructed default checked against the NLL bound of the defaults rule.
      choices=tuple(Choice(name, (name,)) for name, _ in RECONSTRUCTED))

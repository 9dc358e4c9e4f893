"""LsrKD, Teacher Correction and MrKD on CIFAR-100 (arXiv 2009.05226 "Does label smoothing
regularize knowledge distillation?", and its follow-ups: Appl. Sci. 2021 "LSR-OS-TC",
Sensors 2021 "Memory-Replay Knowledge Distillation").

RECONSTRUCTED (docs/METHODS.md section 4): only the abstracts are public to us. The losses
follow them; the hyperparameters are the library's defaults, ours, not the papers', chosen on a
validation split by configs/defaults_sweep.py (LsrKD a = 0.1, tau = 4; LsrKD + TC a = 0.1,
tau = 2, b = 0.5; MrKD a = 0.1, tau = 1, one backup refreshed every epoch; MrKD + TC a = 0.3,
tau = 4, g = 0.5); the network (resnet18) and the recipe
(Tf-KD's CIFAR recipe, which these papers build on) are our choice too. No published values are
known, so the table has no targets: it reports what it measures.

Rows (config arguments):
  method=ce | lsr            baselines (LSR: e 0.1, uniform convention)
  method=lsrkd               LsrKD: (1-a) CE + a tau^2 KL(u || softmax(z/tau))
  method=lsrkd_tc            LsrKD with the corrected uniform teacher u_TC (b = 0.5)
  method=mrkd                MrKD: KD from a frozen backup of the model, refreshed every epoch
  method=mrkd_tc             MrKD + TC, mixing form t' = (1-g) t + g e_y (g = 0.5)
  method=mrkd_tc,correction=swap   MrKD + TC, "knowledge adjustment" (swap) form
  model=M                    resnet18 (default), mobilenetv2 or shufflenetv2
  data=cifar100 | cifar10
  ...,smoke                  a few steps of a tiny MLP on mock data

Commands:
  jaxkd report run configs/lsrkd_cifar100.py --seeds 0,1,2
  jaxkd train --config configs/lsrkd_cifar100.py:method=mrkd_tc,correction=swap --workdir DIR \
      --config.data.data_dir=$TFDS_DATA_DIR

Needs CIFAR prepared for tensorflow-datasets under data.data_dir. Expected runtime: about
1-2 GPU-hours per ResNet18 run (200 epochs; MrKD adds one frozen forward pass per step).
"""
from jaxkd.config import recipes
from jaxkd.reporting import Row, Table, parse_arg

METHODS = ("ce", "lsr", "lsrkd", "lsrkd_tc", "mrkd", "mrkd_tc")
_ALLOWED = {"method": METHODS, "correction": ("mix", "swap"),
            "model": ("resnet18", "mobilenetv2", "shufflenetv2"),
            "data": ("cifar100", "cifar10")}


def get_config(arg=None):
  """One row; ``arg`` is ``method=X[,correction=swap][,model=M][,data=D][,smoke]``."""
  values, smoke = parse_arg(arg, _ALLOWED)
  config = recipes.row_config(values)
  if recipes.only_with(values, "correction", "mix", "mrkd_tc"):
    config.method.correction = "swap"
  recipes.tfkd_cifar(config, dataset=values["data"])
  return recipes.smoke(config) if smoke else config


def table():
  """The LsrKD / TC / MrKD rows on ResNet18, CIFAR-100."""
  rows = tuple(Row(m, f"method={m}", group="ResNet18, CIFAR-100",
                   note="" if m in ("ce", "lsr") else "reconstructed; defaults ours")
               for m in METHODS)
  rows += (Row("mrkd_tc_swap", "method=mrkd_tc,correction=swap", group="ResNet18, CIFAR-100",
               note="reconstructed; knowledge-adjustment form of TC"),)
  return Table(
      name="lsrkd_cifar100",
      title="LsrKD, Teacher Correction and MrKD (arXiv 2009.05226 and follow-ups), CIFAR-100",
      description=("RECONSTRUCTED methods (abstracts only); ResNet18, Tf-KD's CIFAR recipe; "
                   "no published numbers exist to compare with."),
      rows=rows)

"""Adaptive label regularization (ALR) on CIFAR-10 and CIFAR-100 (arXiv 1908.05474), with
online label smoothing (OLS, zhangchbin/OnlineLabelSmoothing) beside it.

RECONSTRUCTED (docs/METHODS.md section 5): only ALR's abstract is public to us. The residual
correlation matrix R (K x K, zero diagonal) is learned online from misclassified samples,
updated at every epoch end with momentum mu = 0.9, and loss = CE + a CE(z, R[y]) with a = 1: all
ours. The network (resnet18) and the recipe (Tf-KD's CIFAR recipe) are our choice. OLS follows
its code (0.5 CE + 0.5 CE(z, S[y])). No published values are known for this setting, so the
table has no targets.

Rows (config arguments):
  method=ce | lsr | alr | ols     (LSR: e 0.1, uniform convention)
  data=cifar100 | cifar10
  model=resnet18 | wrn_40_2 | resnet56
  ...,smoke                        a few steps of a tiny MLP on mock data

Commands:
  jaxkd report run configs/alr_cifar.py --seeds 0,1,2
  jaxkd train --config configs/alr_cifar.py:method=alr,data=cifar10 --workdir DIR \
      --config.data.data_dir=$TFDS_DATA_DIR

Needs CIFAR prepared for tensorflow-datasets under data.data_dir. Expected runtime: about
1-2 GPU-hours per ResNet18 run (200 epochs).
"""
from jaxkd.config import recipes
from jaxkd.reporting import Row, Table, parse_arg

METHODS = ("ce", "lsr", "alr", "ols")
DATASETS = ("cifar100", "cifar10")
_ALLOWED = {"method": METHODS, "data": DATASETS, "model": ("resnet18", "wrn_40_2", "resnet56")}


def get_config(arg=None):
  """One row; ``arg`` is ``method=X[,data=D][,model=M][,smoke]``."""
  values, smoke = parse_arg(arg, _ALLOWED)
  config = recipes.row_config(values)
  recipes.tfkd_cifar(config, dataset=values["data"])
  return recipes.smoke(config) if smoke else config


def table():
  """CE, LSR, ALR and OLS on ResNet18, CIFAR-100 and CIFAR-10."""
  rows = tuple(Row(f"{data}-{m}", f"method={m},data={data}", group=data.upper(),
                   note="reconstructed; defaults ours" if m == "alr" else "")
               for data in DATASETS for m in METHODS)
  return Table(
      name="alr_cifar",
      title="Adaptive label regularization (arXiv 1908.05474) and OLS, CIFAR",
      description=("ALR RECONSTRUCTED (abstract only); ResNet18, Tf-KD's CIFAR recipe; no "
                   "published numbers to compare with."),
      rows=rows)

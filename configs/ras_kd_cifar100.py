"""RAS-KD (Kim and Woo, PAKDD 2024) and the self-KD baselines it is compared with: CS-KD
(Yun et al., CVPR 2020), PS-KD (Kim et al., ICCV 2021), OLS (Zhang et al., TIP 2021) and
Zipf's LS (Liang et al., ECCV 2022), on CIFAR-100.

RAS-KD is RECONSTRUCTED (docs/METHODS.md section 7; abstract only): relation targets from the
rows of an auxiliary classifier (or EMA class means), e = 0.1, tau_r = 0.5, T = 4, lam = 1 are
ours, and so are its network (resnet18) and recipe (Tf-KD's CIFAR recipe): no published targets.

Self-KD baselines, each with a CE baseline trained the same way (published top-1 %,
docs/METHODS.md section 11; the methods: section 8):
  method=cskd,model=resnet18,recipe=cskd           CS-KD (T 4, lam 1): no published number
  method=pskd,model=preact_resnet18,recipe=pskd    PS-KD: 79.18 (error 20.82); CE 75.82
  method=zipf,model=resnet18,recipe=cskd           Zipf's LS (lam 0.1): 77.38; CE 75.51. The
                                                   recipe is assumed to be CS-KD's (the
                                                   paper's is not known to us): compare
                                                   with care
  method=ols,model=resnet18,recipe=tfkd            OLS (0.5 CE + 0.5 CE(z, S[y])); recipe ours
  method=ce,model=M,recipe=R                       the matching baseline
  method=ras_kd[,representatives=ema]              RAS-KD, resnet18, Tf-KD recipe
  method=lsr                                       LSR (e 0.1, uniform), resnet18, Tf-KD recipe
  ...,smoke                                        a few steps of a tiny MLP on mock data

Recipes: `jaxkd.config.recipes` (tfkd_cifar, cskd_cifar: 200 epochs, wd 1e-4, lr /10 at
100 and 150; pskd_cifar: 300 epochs, Nesterov, lr /10 at 150 and 225).

Commands:
  jaxkd report run configs/ras_kd_cifar100.py --seeds 0,1,2
  jaxkd train --config configs/ras_kd_cifar100.py:method=pskd,model=preact_resnet18,recipe=pskd \
      --workdir DIR --config.data.data_dir=$TFDS_DATA_DIR

Needs CIFAR-100 prepared for tensorflow-datasets under data.data_dir. Expected runtime: about
1-2 GPU-hours per ResNet18 run (200 epochs), 2-3 for PS-KD's 300 epochs; CS-KD doubles the
batch (each sample with a same-class partner).
"""
from jaxkd.config import recipes
from jaxkd.reporting import Row, Table, parse_arg

_RECIPES = {"tfkd": recipes.tfkd_cifar, "cskd": recipes.cskd_cifar, "pskd": recipes.pskd_cifar}
_ALLOWED = {"method": ("ce", "lsr", "ras_kd", "cskd", "pskd", "zipf", "ols"),
            "model": ("resnet18", "preact_resnet18"), "recipe": tuple(_RECIPES),
            "representatives": ("classifier", "ema")}


def get_config(arg=None):
  """One row; ``arg`` is ``method=X[,model=M][,recipe=R][,representatives=ema][,smoke]``."""
  values, smoke = parse_arg(arg, _ALLOWED)
  config = recipes.row_config(values)
  if recipes.only_with(values, "representatives", "classifier", "ras_kd"):
    config.method.representatives = "ema"
  _RECIPES[values["recipe"]](config)
  return recipes.smoke(config) if smoke else config


def table():
  """RAS-KD next to CE and LSR, then each self-KD baseline next to its own CE baseline."""
  ras = "RAS-KD (reconstructed), ResNet18, Tf-KD recipe"
  rows = (Row("tfkd-ce", "method=ce", group=ras),
          Row("tfkd-lsr", "method=lsr", group=ras),
          Row("ras_kd", "method=ras_kd", group=ras, note="reconstructed; defaults ours"),
          Row("ras_kd_ema", "method=ras_kd,representatives=ema", group=ras,
              note="reconstructed; EMA class-mean representatives"),
          Row("tfkd-ols", "method=ols", group=ras, note="OLS; recipe ours"),
          Row("cskd-ce", "method=ce,recipe=cskd", group="CS-KD recipe, ResNet18"),
          Row("cskd", "method=cskd,recipe=cskd", group="CS-KD recipe, ResNet18"),
          Row("zipf-ce", "method=ce,recipe=cskd", published=75.51,
              group="CS-KD recipe, ResNet18", note="Zipf's LS paper's baseline"),
          Row("zipf", "method=zipf,recipe=cskd", published=77.38,
              group="CS-KD recipe, ResNet18", note="recipe assumed to be CS-KD's"),
          Row("pskd-ce", "method=ce,model=preact_resnet18,recipe=pskd", published=75.82,
              group="PS-KD recipe, PreAct-ResNet18"),
          Row("pskd", "method=pskd,model=preact_resnet18,recipe=pskd", published=79.18,
              group="PS-KD recipe, PreAct-ResNet18"))
  return Table(
      name="ras_kd_cifar100",
      title="RAS-KD (PAKDD 2024) and the self-KD baselines, CIFAR-100",
      description=("RAS-KD RECONSTRUCTED (abstract only); the baselines follow their code's "
                   "recipes where their code gives them."),
      rows=rows)

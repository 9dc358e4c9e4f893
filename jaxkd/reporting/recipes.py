"""Training recipes shared by the table configs, and the smoke switch.

Every table config starts from ``configs/default.py``'s ``get_config()`` (`base_config`) and
overrides fields with one of these recipes; the values are the papers' (shared/METHODS.md)
unless a docstring says "ours".
"""
from __future__ import annotations

import ml_collections

from jaxkd import config as config_lib

__all__ = ["base_config", "cskd_cifar", "kd_only", "only_with", "pskd_cifar", "row_config",
           "smoke", "tfkd_cifar", "SMOKE_MODEL"]

# The tiny network every smoke variant trains (no convolution: compiles in a second).
SMOKE_MODEL = "mlp"


def base_config() -> ml_collections.ConfigDict:
  """``configs/default.py``'s ``get_config()``: the base every table config overrides."""
  return config_lib.default()


def row_config(values: dict) -> ml_collections.ConfigDict:
  """`base_config` with a row's ``method`` and ``model``; an ``lsr`` row gets e 0.1, uniform.

  ``values`` is `parse_arg`'s dict of the row's config arguments.
  """
  config = base_config()
  config.method.name = values["method"]
  config.model.name = values["model"]
  if values["method"] == "lsr":
    config.method.smoothing = 0.1
    config.method.convention = "uniform"
  return config


def only_with(values: dict, key: str, default: str, method: str) -> bool:
  """Whether argument ``key`` is set away from ``default``; raises unless the row is ``method``."""
  if values[key] == default:
    return False
  if values["method"] != method:
    raise ValueError(f"config argument {key}={values[key]} needs method={method}, got "
                     f"method={values['method']!r}")
  return True


def kd_only(config: ml_collections.ConfigDict, temperature: float) -> None:
  """Shen et al.'s students: the KD term alone (alpha 1), T^2 KL with ``batchmean``."""
  config.method.alpha = 1.0
  config.method.temperature = float(temperature)
  config.method.kl_reduction = "batchmean"
  config.method.temperature_squared = True


def _sgd_cifar(config, *, dataset: str, rotation: float, batch_size: int, epochs: int,
               learning_rate: float, weight_decay: float, nesterov: bool, milestones: tuple,
               gamma: float, warmup_epochs: float) -> None:
  """Crop 32 pad 4 + flip (+ rotation), SGD momentum 0.9 with a multistep schedule."""
  config.data.name = dataset
  config.data.crop_padding = 4
  config.data.flip = True
  config.data.rotation_degrees = rotation
  config.train.batch_size = batch_size
  config.train.num_epochs = epochs
  opt = config.train.optimizer
  opt.name, opt.momentum, opt.nesterov, opt.weight_decay = "sgd", 0.9, nesterov, weight_decay
  opt.learning_rate = learning_rate
  opt.schedule, opt.milestones, opt.gamma = "multistep", milestones, gamma
  opt.warmup_epochs = warmup_epochs


def tfkd_cifar(config: ml_collections.ConfigDict, *, dataset: str = "cifar100",
               batch_size: int = 128) -> None:
  """Tf-KD's CIFAR recipe (yuanli2333/Teacher-free-Knowledge-Distillation, METHODS.md s3).

  SGD momentum 0.9, weight decay 5e-4, lr 0.1 x batch/128, 200 epochs, lr x0.2 at epochs
  60/120/160, one epoch of linear warm-up; crop 32 pad 4, horizontal flip, rotation 15 deg.
  """
  _sgd_cifar(config, dataset=dataset, rotation=15.0, batch_size=batch_size, epochs=200,
             learning_rate=0.1 * batch_size / 128, weight_decay=5e-4, nesterov=False,
             milestones=(60, 120, 160), gamma=0.2, warmup_epochs=1.0)


def cskd_cifar(config: ml_collections.ConfigDict, *, dataset: str = "cifar100") -> None:
  """CS-KD's CIFAR recipe (alinlab/cs-kd, METHODS.md s8).

  SGD momentum 0.9, lr 0.1, batch 128, weight decay 1e-4, 200 epochs, lr /10 at 100 and 150,
  crop 32 pad 4 and flip; no warm-up.
  """
  _sgd_cifar(config, dataset=dataset, rotation=0.0, batch_size=128, epochs=200,
             learning_rate=0.1, weight_decay=1e-4, nesterov=False, milestones=(100, 150),
             gamma=0.1, warmup_epochs=0.0)


def pskd_cifar(config: ml_collections.ConfigDict, *, dataset: str = "cifar100") -> None:
  """PS-KD's CIFAR recipe (lgcnsai/PS-KD-Pytorch, METHODS.md s8).

  SGD Nesterov momentum 0.9, lr 0.1, batch 128, 300 epochs, lr /10 at 150 and 225, crop 32
  pad 4 and flip; no warm-up. Weight decay 5e-4 (the base config's; METHODS.md names none).
  """
  _sgd_cifar(config, dataset=dataset, rotation=0.0, batch_size=128, epochs=300,
             learning_rate=0.1, weight_decay=5e-4, nesterov=True, milestones=(150, 225),
             gamma=0.1, warmup_epochs=0.0)


def smoke(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a row to a few steps of the tiny `SMOKE_MODEL` on the ``mock`` dataset.

  The method and its hyperparameters stay the row's, so the smoke run checks that the row's
  objective builds, compiles and trains; data, model and schedule are the smoke test's.
  """
  config.data.name = "mock"
  config.data.data_dir = ""
  config.data.crop_padding = 1
  config.data.rotation_degrees = 0.0
  config.model.name = SMOKE_MODEL
  config.train.batch_size = 16
  config.train.eval_batch_size = 64
  config.train.num_epochs = 1
  config.train.num_steps = 3
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 3
  config.train.optimizer.warmup_epochs = 0.0
  config.train.optimizer.milestones = ()
  config.mesh.data = 1
  return config

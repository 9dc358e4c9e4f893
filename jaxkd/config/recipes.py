"""Training recipes shared by the table configs, and the smoke switch.

Every table config starts from `base_config` (`jaxkd.config.defaults.base_config`) and
overrides fields with one of these recipes; the values are the papers' or their official
code's (each docstring names which) unless a docstring says "ours".
"""
from __future__ import annotations

from typing import Optional

import ml_collections

from jaxkd.config import defaults

__all__ = ["base_config", "check_ls_kd_row", "cskd_cifar", "fashion_subset_cpu", "kd_logit_standardization", "kd_only", "ls_kd_protocol",
           "mdistiller_cifar",
           "only_with", "pskd_cifar", "row_config", "smoke", "smoke_streamed", "smoke_text",
           "streamed", "text_classification", "tfkd_cifar", "tfkd_imagenet", "LS_KD_PROTOCOLS",
           "SMOKE_MODEL", "SMOKE_STREAMED_MODEL", "SMOKE_TEXT_MODEL", "SMOKE_TRANSLATION_MODEL",
           "translation", "smoke_translation"]

# The tiny network every smoke variant trains (no convolution: compiles in a second).
SMOKE_MODEL = "mlp"
# Its text counterpart (smoke variants of text rows, on the ``mock_text`` corpus).
SMOKE_TEXT_MODEL = "fasttext_text"

# Its translation counterpart (smoke variants of translation rows, on ``mock_translation``).
SMOKE_TRANSLATION_MODEL = "transformer_translation_tiny"

# The network of the streamed smoke variants (`smoke_streamed`): a small convolutional net.
SMOKE_STREAMED_MODEL = "small_cnn"

# The two protocols of the LS-vs-KD question, see `ls_kd_protocol`.
LS_KD_PROTOCOLS = ("shen", "icml22")


def base_config() -> ml_collections.ConfigDict:
  """`jaxkd.config.defaults.base_config`: the base every table config overrides."""
  return defaults.base_config()


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
  """A KD-only student: ``T^2 KL(softmax(z_t/T) || softmax(z/T))``, ``batchmean``, no CE term.

  ``kd`` weighs CE by ``1 - alpha``, so alpha 1 leaves the KD term alone. This is the student
  of both LS-vs-KD protocols (`ls_kd_protocol`): at T = 1 the T^2 factor is 1 and the KL
  differs from Shen et al.'s cross-entropy ``H(p_T, p_S)`` by the teacher's entropy only, a
  constant with no gradient.
  """
  config.method.alpha = 1.0
  config.method.temperature = float(temperature)
  config.method.kl_reduction = "batchmean"
  config.method.temperature_squared = True


def kd_logit_standardization(config: ml_collections.ConfigDict, *, temperature: float = 2.0,
                             weight: float = 9.0) -> None:
  """``kd`` in Sun et al.'s (CVPR 2024) CIFAR setting: logit standardization, CE weight 0.1,
  KD weight ``weight`` (9), base temperature ``temperature`` (2), ``batchmean``.

  ``kd`` weighs CE by ``1 - alpha`` and the KD term by ``alpha * multiplier``: alpha 0.9 and
  multiplier ``weight / 0.9`` give CE 0.1 and KD ``weight``.
  """
  config.method.name = "kd"
  config.method.alpha = 0.9
  config.method.multiplier = weight / 0.9
  config.method.temperature = float(temperature)
  config.method.kl_reduction = "batchmean"
  config.method.logit_standardization = True


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
  """Tf-KD's CIFAR recipe (official code: yuanli2333/Teacher-free-Knowledge-Distillation).

  SGD momentum 0.9, weight decay 5e-4, lr 0.1 x batch/128, 200 epochs, lr x0.2 at epochs
  60/120/160, one epoch of linear warm-up; crop 32 pad 4, horizontal flip, rotation 15 deg.
  """
  _sgd_cifar(config, dataset=dataset, rotation=15.0, batch_size=batch_size, epochs=200,
             learning_rate=0.1 * batch_size / 128, weight_decay=5e-4, nesterov=False,
             milestones=(60, 120, 160), gamma=0.2, warmup_epochs=1.0)


def mdistiller_cifar(config: ml_collections.ConfigDict, *, dataset: str = "cifar100") -> None:
  """mdistiller's CIFAR-100 recipe (megvii-research/mdistiller ``configs/cifar100/*.yaml``),
  shared by the logit-standardization and CTKD code: SGD momentum 0.9, weight decay 5e-4,
  lr 0.05 at batch 64, 240 epochs, lr x0.1 at epochs 150/180/210, no warm-up; crop 32 pad 4
  and horizontal flip."""
  _sgd_cifar(config, dataset=dataset, rotation=0.0, batch_size=64, epochs=240,
             learning_rate=0.05, weight_decay=5e-4, nesterov=False, milestones=(150, 180, 210),
             gamma=0.1, warmup_epochs=0.0)


def cskd_cifar(config: ml_collections.ConfigDict, *, dataset: str = "cifar100") -> None:
  """CS-KD's CIFAR recipe (official code: alinlab/cs-kd).

  SGD momentum 0.9, lr 0.1, batch 128, weight decay 1e-4, 200 epochs, lr /10 at 100 and 150,
  crop 32 pad 4 and flip; no warm-up.
  """
  _sgd_cifar(config, dataset=dataset, rotation=0.0, batch_size=128, epochs=200,
             learning_rate=0.1, weight_decay=1e-4, nesterov=False, milestones=(100, 150),
             gamma=0.1, warmup_epochs=0.0)


def pskd_cifar(config: ml_collections.ConfigDict, *, dataset: str = "cifar100") -> None:
  """PS-KD's CIFAR recipe (official code: lgcnsai/PS-KD-Pytorch).

  SGD Nesterov momentum 0.9, lr 0.1, batch 128, 300 epochs, lr /10 at 150 and 225, crop 32
  pad 4 and flip; no warm-up. Weight decay 5e-4: the base config's (ours; the recipe as we
  have it names none).
  """
  _sgd_cifar(config, dataset=dataset, rotation=0.0, batch_size=128, epochs=300,
             learning_rate=0.1, weight_decay=5e-4, nesterov=True, milestones=(150, 225),
             gamma=0.1, warmup_epochs=0.0)


def check_ls_kd_row(values: dict) -> None:
  """The row arguments of an LS-vs-KD table (`ls_kd_protocol`): ``T`` given exactly for
  ``method=kd``, and a ``protocol`` for every row but the shared CE teacher.

  Raises:
    ValueError: naming the arguments and what is allowed.
  """
  if (values["method"] == "kd") != bool(values["T"]):
    raise ValueError(f"config argument: T is given exactly for method=kd; got "
                     f"method={values['method']!r}, T={values['T']!r}")
  if not values["protocol"] and values["method"] != "ce":
    raise ValueError(f"config argument: method={values['method']} needs protocol=; allowed: "
                     f"{', '.join(LS_KD_PROTOCOLS)} (only the CE teacher is shared)")


def ls_kd_protocol(config: ml_collections.ConfigDict, protocol: str, *,
                   temperature: Optional[float] = None, dataset: str = "cifar100") -> None:
  """A teacher (``temperature`` None) or KD-only student of one LS-vs-KD protocol, on CIFAR.

  The ImageNet and CUB tables apply this, then `streamed` for their data (224 x 224 crops,
  batch 256 with the same lr 0.1, as 0.1 x batch/256 gives).

  ``"shen"``: Shen et al., ICLR 2021. LS teachers in the ``others`` convention (1 - e on the
  label, e/(K-1) on each other class, e = 0.1); teachers 90 epochs, lr 0.1, x0.1 every 30
  epochs. Students: the KD term alone at T = 1 only; 200 epochs, lr 0.1, x0.1 every 80, no
  warm-up: Shen et al.'s main text does not give the student schedule, the ICML'22 re-run's
  code (``train_student_dali.py``) calls it Shen et al.'s and adds the warm-up itself.

  ``"icml22"``: Chandrasegaran et al.'s ICML 2022 re-run
  (sutd-visual-computing-group/LS-KD-compatibility). LS teachers in the ``uniform``
  convention (1 - e + e/K on the label, e/K elsewhere, e = 0.1), trained with torchvision's
  90-epoch recipe (``train_teacher.py``: lr 0.1, x0.1 every 30, momentum 0.9, weight decay
  1e-4). Students: ``T^2 KL`` with ``batchmean`` alone, T in {1, 2, 3, 64}; SGD momentum 0.9,
  weight decay 1e-4, lr 0.1, x0.1 every 80 epochs of 200, 5 epochs of linear warm-up.

  Shared, and ours where no source states them: SGD momentum 0.9 and weight decay 1e-4 for
  Shen et al. too (the torchvision values their re-run uses), batch 128 (their ImageNet
  scripts use 256 per GPU), crop 32 pad 4 and flip; so both protocols train the same CE
  teacher.

  Args:
    config: a `row_config` of method ``ce`` or ``lsr`` (teachers) or ``kd`` (students).
    protocol: one of `LS_KD_PROTOCOLS`.
    temperature: the student's T (``"shen"``: 1 only); None for a teacher.
    dataset: the dataset's registry name.
  """
  if protocol not in LS_KD_PROTOCOLS:
    raise ValueError(f"protocol={protocol!r} is not known; allowed: "
                     f"{', '.join(LS_KD_PROTOCOLS)}")
  if (temperature is None) == (config.method.name == "kd"):
    raise ValueError(f"temperature={temperature!r} with method={config.method.name!r}: a "
                     "temperature is given for method=kd (the students) and only for it")
  if protocol == "shen" and temperature not in (None, 1.0):
    raise ValueError(f"temperature={temperature!r} is not Shen et al.'s protocol; allowed: 1 "
                     "(their students learn at T = 1 only; the T sweep is protocol=icml22)")
  if config.method.name == "lsr":
    config.method.smoothing = 0.1
    config.method.convention = "others" if protocol == "shen" else "uniform"
  if temperature is None:
    epochs, milestones, warmup = 90, (30, 60), 0.0
  else:
    kd_only(config, temperature)
    epochs, milestones, warmup = 200, (80, 160), (5.0 if protocol == "icml22" else 0.0)
  _sgd_cifar(config, dataset=dataset, rotation=0.0, batch_size=128, epochs=epochs,
             learning_rate=0.1, weight_decay=1e-4, nesterov=False, milestones=milestones,
             gamma=0.1, warmup_epochs=warmup)


def streamed(config: ml_collections.ConfigDict, dataset: str, *, batch_size: int = 256,
             eval_batch_size: int = 512) -> None:
  """Streamed ImageNet-style data (`jaxkd.data.open_stream`) and a bfloat16 network.

  ``dataset`` (``imagenet2012``, ``caltech_birds2011``) streams at 224 x 224: the host draws
  torchvision's RandomResizedCrop(224) and a horizontal flip for training, and resizes the
  shorter side to 256 then centre-crops 224 for evaluation, so the device adds nothing (no
  padding crop, flip or rotation). The batch is ``batch_size`` (the learning rate is the
  recipe's, 0.1 x batch/256 in the ImageNet recipes); ``eval_batch_size`` is a multiple of 8
  so that it divides over 1, 2, 4 or 8 devices (the last evaluation batch is padded). The
  network runs in bfloat16 (losses stay float32) and, off GPU, with XLA's own convolutions.
  """
  config.data.name = dataset
  config.data.image_size = 224
  config.data.crop_padding = 0
  config.data.flip = False
  config.data.rotation_degrees = 0.0
  config.train.batch_size = batch_size
  config.train.eval_batch_size = eval_batch_size
  config.model.dtype = "bfloat16"
  config.model.cpu_conv = "xla"


def tfkd_imagenet(config: ml_collections.ConfigDict, *, batch_size: int = 256) -> None:
  """Tf-KD's ImageNet recipe (official code: ``ImageNet_train/main.py``), torchvision's.

  SGD momentum 0.9, weight decay 1e-4, lr 0.1 x batch/256, 90 epochs, lr x0.1 at epochs
  30/60/80, no warm-up; streamed 224 x 224 crops (`streamed`).
  """
  streamed(config, "imagenet2012", batch_size=batch_size)
  config.train.num_epochs = 90
  opt = config.train.optimizer
  opt.name, opt.momentum, opt.nesterov, opt.weight_decay = "sgd", 0.9, False, 1e-4
  opt.learning_rate = 0.1 * batch_size / 256
  opt.schedule, opt.milestones, opt.gamma = "multistep", (30, 60, 80), 0.1
  opt.warmup_epochs = 0.0


def fashion_subset_cpu(config: ml_collections.ConfigDict, *, data_dir: str, epochs: int,
                       eval_batch_size: int, log_every_steps: int) -> None:
  """The CPU recipe of our Fashion-MNIST studies (configs/fashion_mnist.py and
  configs/defaults_sweep.py): the prepared 14x14 subset in ``data_dir``, crop (pad 1) and flip,
  SGD lr 0.1 momentum 0.9 weight decay 5e-4, batch 128, cosine after half an epoch of warm-up,
  one checkpoint at the end, one device."""
  config.data.name, config.data.data_dir = "fashion_mnist", data_dir
  config.data.crop_padding, config.data.flip, config.data.rotation_degrees = 1, True, 0.0
  train = config.train
  train.batch_size, train.eval_batch_size, train.num_epochs = 128, eval_batch_size, epochs
  train.log_every_steps = log_every_steps
  train.checkpoint_every_steps, train.keep_checkpoints = 100_000, 1  # one, at the end
  opt = train.optimizer
  opt.name, opt.learning_rate, opt.momentum, opt.weight_decay = "sgd", 0.1, 0.9, 5e-4
  opt.schedule, opt.warmup_epochs = "cosine", 0.5
  config.mesh.data = 1


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


def smoke_streamed(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a streamed row (`streamed`) to a few steps of `SMOKE_STREAMED_MODEL` on its data.

  The dataset stays the row's (``--config.data.data_dir`` points at a prepared copy; the tests
  write tiny ones), read at 16 x 16 with two host threads; the method and its hyperparameters
  stay the row's, so the smoke run checks that the row's objective, teacher and streamed input
  build, compile and train together.
  """
  config.data.image_size = 16
  config.data.num_workers = 2
  config.model.name = SMOKE_STREAMED_MODEL
  config.model.dtype = "float32"
  config.model.cpu_conv = "fast"
  config.train.batch_size = 8
  config.train.eval_batch_size = 8
  config.train.num_epochs = 1
  config.train.num_steps = 3
  config.train.log_every_steps = 1
  config.train.checkpoint_every_steps = 3
  # Small: a 1000-class head memorising 24 images at the rows' lr 0.1 swings wildly.
  config.train.optimizer.learning_rate = 0.01
  config.train.optimizer.warmup_epochs = 0.0
  config.train.optimizer.milestones = ()
  config.mesh.data = 1
  return config


# Epochs per text dataset (ours): about 20k steps of batch 64 on AG News (120k examples), fewer
# passes over the larger sets (Yahoo 1.4M, Yelp-Full 650k, Yelp polarity 560k examples).
TEXT_EPOCHS = {"ag_news_subset": 10, "yahoo_answers": 2, "yelp_review_full": 3,
               "yelp_polarity_reviews": 3, "mock_text": 10}


def text_classification(config: ml_collections.ConfigDict, *, dataset: str,
                        model: str = "transformer_text") -> None:
  """Text classification on token ids (ours: ALR's abstract gives no recipe).

  AdamW (weight decay 0.01), lr 1e-3 for ``fasttext_text`` and ``cnn_text`` (ours: Kim used
  Adadelta) and 5e-4 for ``transformer_text``, batch 64, cosine decay after 0.1 epoch of linear
  warm-up, `TEXT_EPOCHS` epochs; a 16k-piece sentencepiece vocabulary and 256 pieces per
  example; no augmentation.
  """
  config.data.name = dataset
  config.data.crop_padding, config.data.flip, config.data.rotation_degrees = 0, False, 0.0
  config.data.vocab_size, config.data.max_length = 16000, 256
  config.model.name = model
  config.train.batch_size = 64
  config.train.num_epochs = TEXT_EPOCHS[dataset]
  opt = config.train.optimizer
  opt.name, opt.weight_decay, opt.schedule, opt.warmup_epochs = "adamw", 0.01, "cosine", 0.1
  opt.learning_rate = 1e-3 if model in ("fasttext_text", "cnn_text") else 5e-4


def smoke_text(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`smoke` for a text row: a few steps of `SMOKE_TEXT_MODEL` on ``mock_text``."""
  config = smoke(config)
  config.data.name = "mock_text"
  config.data.crop_padding, config.data.flip, config.data.rotation_degrees = 0, False, 0.0
  config.model.name = SMOKE_TEXT_MODEL
  return config


def translation(config: ml_collections.ConfigDict, *, dataset: str = "iwslt14_de_en",
                epochs: int = 50) -> None:
  """fairseq's IWSLT'14 de-en Transformer recipe (examples/translation/README.md).

  ``transformer_iwslt_de_en``; Adam betas (0.9, 0.98), lr 5e-4, ``inverse_sqrt`` after 4000
  warm-up updates, dropout 0.3 (in the model), batches of at most 4096 tokens, beam 5 with
  length penalty 1 for BLEU. Weight decay 0 as Shen et al. state (fairseq's README uses
  1e-4); no gradient clipping (fairseq's ``--clip-norm 0``). fairseq's README trains until
  stopped; ``epochs`` (50) is ours.
  """
  config.data.name = dataset
  config.data.crop_padding, config.data.flip, config.data.rotation_degrees = 0, False, 0.0
  config.data.max_tokens, config.data.max_length = 4096, 1024
  config.model.name = "transformer_iwslt_de_en"
  config.train.num_epochs = epochs
  config.train.checkpoint_every_steps = 5000
  opt = config.train.optimizer
  opt.name, opt.learning_rate, opt.betas, opt.weight_decay = "adam", 5e-4, (0.9, 0.98), 0.0
  opt.schedule, opt.warmup_steps, opt.warmup_epochs, opt.milestones = "inverse_sqrt", 4000, 0.0, ()
  config.generate.beam_size, config.generate.len_penalty = 5, 1.0
  config.generate.max_len_a, config.generate.max_len_b = 0.0, 200


def smoke_translation(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A translation row shrunk to a few steps of `SMOKE_TRANSLATION_MODEL` on
  ``mock_translation`` (the row's method and hyperparameters kept)."""
  config.data.name, config.data.data_dir = "mock_translation", ""
  config.data.max_tokens, config.data.max_length = 256, 64
  config.model.name = SMOKE_TRANSLATION_MODEL
  config.train.num_epochs, config.train.num_steps = 1, 3
  config.train.log_every_steps, config.train.checkpoint_every_steps = 1, 3
  config.train.optimizer.warmup_steps = 2
  config.generate.beam_size, config.generate.max_len_b = 2, 10
  config.mesh.data = 1
  return config

"""Classification tasks: images (augmented and normalised on the device) and token ids.

Both train one example per input and are evaluated by the same reducers: top-1, top-5, NLL and
ECE during training; with Shen et al.'s stability S in `jaxkd eval`; with the feature variant
of S (and, for chosen classes, a feature projection) in a report.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from jaxkd import data as data_lib
from jaxkd.tasks import _evaluators as ev
from jaxkd.tasks._base import Task, check

__all__ = ["AugmentConfig", "IMAGE_AUGMENTATION", "image_classification", "preprocess_images",
           "text_classification"]

# The data section's image augmentation and its off values.
IMAGE_AUGMENTATION = {"crop_padding": 0, "flip": False, "rotation_degrees": 0.0}


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """On-device augmentation and normalisation of images (static settings of the jitted step)."""
  mean: tuple[float, ...]
  std: tuple[float, ...]
  crop_padding: int = 0
  flip: bool = False
  rotation_degrees: float = 0.0
  # float64 for a float64 run (``model.dtype``): pixels in float32 would put float32 rounding,
  # which XLA's fusion choices can move by an ulp, into the float64 verification mode.
  dtype: str = "float32"


def preprocess_images(aug: AugmentConfig, rng, images):
  """uint8 ``[B,H,W,C]`` -> normalised float32 (float64 in a float64 run); augmented when
  ``rng`` is given.

  Crops, flips and rotations run on ``[0, 1]`` pixels (padding is black, as torchvision pads
  before ``Normalize``); `jaxkd.data.normalize` follows.
  """
  x = images.astype(aug.dtype) / 255.0
  if rng is not None and (aug.crop_padding or aug.flip or aug.rotation_degrees):
    x = data_lib.device_augment(rng, x, crop_padding=aug.crop_padding, flip=aug.flip,
                                rotation_degrees=aug.rotation_degrees)
  return data_lib.normalize(x, aug.mean, aug.std, max_value=1.0, dtype=aug.dtype)


def _image_setup(config, dataset) -> AugmentConfig:
  data = config.data
  check(isinstance(data.crop_padding, int) and not isinstance(data.crop_padding, bool)
        and data.crop_padding >= 0, "data.crop_padding", data.crop_padding, "must be an int >= 0")
  check(isinstance(data.flip, bool), "data.flip", data.flip, "must be True or False")
  check(0 <= data.rotation_degrees <= 180, "data.rotation_degrees", data.rotation_degrees,
        "must be in [0, 180]")
  return AugmentConfig(mean=tuple(dataset.mean), std=tuple(dataset.std),
                       crop_padding=int(data.crop_padding), flip=bool(data.flip),
                       rotation_degrees=float(data.rotation_degrees),
                       dtype="float64" if config.model.dtype == "float64" else "float32")


def _no_augmentation(config, dataset) -> None:
  """Token ids take no image augmentation: a key of it set (not None, not off) is refused."""
  for key, off in IMAGE_AUGMENTATION.items():
    value = config.data.get(key)
    check(value is None or value == off, f"data.{key}", value,
          f"dataset {dataset.name!r} holds token ids, which take no image augmentation; "
          f"allowed: {off!r}")


def _identity_examples(logits, labels, teacher_logits, mask):
  return logits, labels, teacher_logits, mask


def classification_evaluators(run, purpose: str) -> tuple:
  """``loop``/``final``: top-1, top-5, NLL, ECE; ``checkpoint``: and S; ``report``: and the
  feature variant of S."""
  num_classes = run.train_data.num_classes
  if purpose == "checkpoint":
    return (ev.metrics(), ev.stability(num_classes))
  if purpose == "report":
    return (ev.metrics(), ev.stability(num_classes), ev.feature_stability(num_classes))
  return (ev.metrics(),)


def _shape(dataset) -> str:
  return "x".join(str(n) for n in dataset.input_shape)


def _describe_images(run) -> tuple[str, str]:
  data = run.train_data
  return (f"examples, {_shape(data)}, {data.num_classes} classes",
          f"batch {run.config.train.batch_size}")


def _describe_text(run) -> tuple[str, str]:
  data = run.train_data
  return (f"examples, {_shape(data)} tokens, vocabulary {data.vocab_size}, "
          f"{data.num_classes} classes", f"batch {run.config.train.batch_size}")


def _text_objective(config, objective) -> None:
  # Per-position votes (Zipf's LS) come from an image's feature map; on text they would count
  # the padding, so no text model offers them.
  check("dense_logits" not in objective.requires, "method.name", config.method.name,
        "it reads per-position class votes (dense_logits) of an image feature map, which text "
        "models do not give; allowed on text: every method without dense_logits")


# `jaxkd eval`'s columns: the metrics and Shen et al.'s S.
_COLUMNS = (("top1", "top-1"), ("top5", "top-5"), ("nll", "NLL"), ("ece", "ECE"),
            ("stability", "S"), ("intra_class_variance", "1 - S"))

# Tf-KD's CIFAR recipe is crop 32 pad 4, flip, rotation 15; digits (the default run) are not
# mirror symmetric, so the defaults only crop and rotate.
image_classification = Task(
    name="image_classification", input_kind="images", unit="images",
    defaults={"crop_padding": 1, "flip": False, "rotation_degrees": 10.0},
    setup=_image_setup, preprocess=preprocess_images, feed=lambda x, labels: x,
    examples=_identity_examples, evaluators=classification_evaluators,
    describe=_describe_images, eval_columns=_COLUMNS)

text_classification = Task(
    name="text_classification", input_kind="token ids", unit="examples",
    defaults=IMAGE_AUGMENTATION, setup=_no_augmentation,
    preprocess=lambda settings, rng, tokens: tokens, feed=lambda x, labels: x,
    examples=_identity_examples, evaluators=classification_evaluators,
    describe=_describe_text, check_objective=_text_objective, eval_columns=_COLUMNS)

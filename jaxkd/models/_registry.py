"""Models by name: ``get(name, num_classes=K, dtype=..., cpu_conv=...)`` and ``names()``.

Names follow the configs of the papers' code: the Tf-KD zoo
(yuanli2333/Teacher-free-Knowledge-Distillation, ``main.py``), RepDistiller's
``models/__init__.py`` ``model_dict`` (``vgg8``/``vgg13`` are its BatchNorm
variants; ``shufflev1``/``shufflev2``/``mobilenetv2_half`` are ``ShuffleV1``,
``ShuffleV2``, ``mobile_half``), and PS-KD's ``CIFAR_ResNet18_preActBasic``.
torchvision's ImageNet networks are ``<torchvision name>_imagenet``
(``resnet50_imagenet``, ``mobilenet_v2_imagenet``, ...). Every model declares the input it
reads (`input_kind`): text classifiers read token ids (``transformer_text``, ``fasttext_text``,
``cnn_text``; `is_text`).
Sequence-to-sequence translation models (`is_translation`: ``transformer_iwslt_de_en``,
fairseq's architecture of that name, and ``transformer_translation_tiny``) take
``{"source", "target"}`` token ids.
"""
from typing import Any, Callable, Optional

from functools import partial

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxkd.models import (_cpu_conv, _densenet, _googlenet, _imagenet, _mobilenetv2, _preact,
                          _reactnet, _resnet, _resnext, _shufflenet, _small, _text, _translation,
                          _vgg, _wrn)

__all__ = ["get", "is_text", "is_translation", "names", "takes_float64"]

_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    # Small nets: the offline digits default and tests.
    "small_cnn": _small.SmallCNN,
    "mlp": _small.MLP,
    # Tf-KD zoo (CIFAR variants).
    "resnet18": partial(_resnet.ResNet, depths=(2, 2, 2, 2)),
    "resnet50": partial(_resnet.ResNet, depths=(3, 4, 6, 3), bottleneck=True),
    "mobilenetv2": _mobilenetv2.MobileNetV2,
    "shufflenetv2": _shufflenet.ShuffleNetV2TfKD,
    "googlenet": _googlenet.GoogLeNet,
    "densenet121": partial(_densenet.DenseNet, depths=(6, 12, 24, 16), growth=32),
    "resnext29_8x64d": partial(_resnext.CifarResNeXt, cardinality=8, depth=29, widen=4),
    # RepDistiller zoo.
    **{f"resnet{d}": partial(_resnet.CifarResNet, depth=d, widths=(16, 16, 32, 64))
       for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": partial(_resnet.CifarResNet, depth=8, widths=(32, 64, 128, 256)),
    "resnet32x4": partial(_resnet.CifarResNet, depth=32, widths=(32, 64, 128, 256)),
    **{f"wrn_{d}_{k}": partial(_wrn.WideResNet, depth=d, widen=k)
       for d in (16, 40) for k in (1, 2)},
    "vgg8": partial(_vgg.VGG, blocks=_vgg.VGG8),
    "vgg13": partial(_vgg.VGG, blocks=_vgg.VGG13),
    "shufflev1": _shufflenet.ShuffleNetV1,
    "shufflev2": _shufflenet.ShuffleNetV2,
    "mobilenetv2_half": _mobilenetv2.MobileNetV2Half,
    # PS-KD.
    "preact_resnet18": partial(_preact.PreActResNet, depths=(2, 2, 2, 2)),
    # torchvision's ImageNet networks, ``<torchvision name>_imagenet`` (`from_torchvision`).
    "resnet18_imagenet": partial(_imagenet.ImageNetResNet, depths=(2, 2, 2, 2)),
    "resnet34_imagenet": partial(_imagenet.ImageNetResNet, depths=(3, 4, 6, 3)),
    **{f"resnet{d}_imagenet": partial(_imagenet.ImageNetResNet, depths=depths, bottleneck=True)
       for d, depths in ((50, (3, 4, 6, 3)), (101, (3, 4, 23, 3)), (152, (3, 8, 36, 3)))},
    "wide_resnet50_2_imagenet": partial(_imagenet.ImageNetResNet, depths=(3, 4, 6, 3),
                                        bottleneck=True, width_per_group=128),
    "resnext50_32x4d_imagenet": partial(_imagenet.ImageNetResNet, depths=(3, 4, 6, 3),
                                        bottleneck=True, groups=32, width_per_group=4),
    "resnext101_32x8d_imagenet": partial(_imagenet.ImageNetResNet, depths=(3, 4, 23, 3),
                                         bottleneck=True, groups=32, width_per_group=8),
    "mobilenet_v2_imagenet": _imagenet.ImageNetMobileNetV2,
    "densenet121_imagenet": partial(_imagenet.ImageNetDenseNet, depths=(6, 12, 24, 16)),
    # ReActNet-18 (binary activations; stage 1 real weights, stage 2 binary weights).
    "reactnet18_stage1_imagenet": partial(_reactnet.ReActNet, binary_weights=False),
    "reactnet18_imagenet": partial(_reactnet.ReActNet, binary_weights=True),
    # Text classifiers on token ids (`jaxkd.data.TokenDataset`); they need ``vocab_size``.
    "transformer_text": _text.TransformerClassifier,
    "fasttext_text": _text.FastTextClassifier,
    "cnn_text": _text.CNNClassifier,
    # Translation (sequence to sequence); they need ``vocab_size`` (the source vocabulary) and
    # take num_classes as the target vocabulary. fairseq's transformer_iwslt_de_en with the
    # IWSLT'14 recipe's dropout 0.3 and shared decoder input/output embeddings.
    "transformer_iwslt_de_en": _translation.TranslationTransformer,
    "transformer_translation_tiny": partial(
        _translation.TranslationTransformer, embed_dim=64, ffn_dim=128, heads=4,
        encoder_layers=2, decoder_layers=2, dropout=0.1),
}

_TRANSLATION = frozenset({"transformer_iwslt_de_en", "transformer_translation_tiny"})
_TEXT = frozenset({"transformer_text", "fasttext_text", "cnn_text"})


def input_kind(name: str) -> str:
  """What model ``name`` reads: ``"images"``, ``"token ids"`` (a text classifier) or
  ``"sentence pairs"`` (a translation model): the ``input_kind`` of its `jaxkd.tasks` task."""
  if name in _TRANSLATION:
    return "sentence pairs"
  return "token ids" if name in _TEXT else "images"


# Models whose parameters are float32 whatever the computation dtype (no float64 mode).
_FLOAT32_ONLY = frozenset({"reactnet18_stage1_imagenet", "reactnet18_imagenet"})


def is_text(name: str) -> bool:
  """Whether model ``name`` classifies token ids (else images)."""
  return name in _TEXT


def is_translation(name: str) -> bool:
  """Whether model ``name`` is a sequence-to-sequence translation model (inputs
  ``{"source": [B, S], "target": [B, T]}``, logits ``[B, T, num_classes]``)."""
  return name in _TRANSLATION


def takes_float64(name: str) -> bool:
  """Whether model ``name`` computes in float64 with ``dtype=float64`` (float64 parameters and
  outputs); the translation models and ReActNet keep float32 parameters by construction."""
  return not (is_translation(name) or name in _FLOAT32_ONLY)


def names() -> tuple[str, ...]:
  """All model names, sorted."""
  return tuple(sorted(_FACTORIES))


def get(name: str, *, num_classes: int, dtype: Any = jnp.float32,
        cpu_conv: str = "xla", vocab_size: Optional[int] = None) -> nn.Module:
  """The Flax module called ``name``.

  Args:
    name: one of :func:`names`.
    num_classes: K, the classifier width (a positive int).
    dtype: computation dtype (float32, bfloat16 or float16); parameters and
      every output stay float32. float64 (under JAX's x64 switch, for verification) makes
      parameters and outputs float64 too; the translation models and ReActNet (float32
      parameters by construction) do not take it.
    cpu_conv: how convolutions run on CPU, one of ``CPU_CONVS``: ``"xla"``, XLA's own
      everywhere (every transformation, ``jvp`` included, works); ``"fast"``, output maps
      smaller than the kernel as one im2col matrix product and kernel gradients as per-tap
      matrix products (reverse-mode autodiff only). GPUs and TPUs run XLA's own convolutions
      under both; ``mlp`` has no convolution. See ``_cpu_conv.py``.
    vocab_size: the token vocabulary of a text model (`is_text`) or the source vocabulary of
      a translation model (`is_translation`, whose ``num_classes`` is the target vocabulary),
      required there; None for image models.

  Returns:
    A module whose ``init(rng, x, train=False)`` on an NHWC batch (text models: int32
    token ids ``[B, L]``, 0 = padding) gives ``params``
    (and ``batch_stats`` for nets with BatchNorm) and whose ``apply`` returns
    ``{"logits", "features", "feature_map", "dense_logits"}``. Nets with dropout
    (``googlenet``, ``mobilenet_v2_imagenet``) drop only when ``train=True`` and
    ``rngs={"dropout": key}`` is passed to ``apply``; passing that rng to every model is
    harmless. Translation models (`is_translation`) instead take
    ``{"source": int32 [B, S], "target": int32 [B, T]}`` and return ``{"logits": [B, T, K],
    "features": [B, T, D]}``; see `jaxkd.models.TranslationTransformer`.
  """
  if name not in _FACTORIES:
    raise ValueError(f"model name={name!r} is unknown; allowed: {', '.join(names())}")
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
          or num_classes < 1:
    raise ValueError(f"num_classes={num_classes!r} must be a positive int")
  try:
    compute_dtype = jnp.dtype(dtype)
  except TypeError:
    compute_dtype = None
  if compute_dtype not in (jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64):
    raise ValueError(f"dtype={dtype!r} is not allowed; allowed: float32, bfloat16, "
                     "float16, float64")
  if compute_dtype == jnp.float64 and not takes_float64(name):
    raise ValueError(f"dtype=float64 is not allowed for model {name!r}, whose parameters are "
                     "float32 by construction; allowed: float32, bfloat16, float16")
  kwargs = {}
  if is_text(name) or is_translation(name):
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) \
            or vocab_size < 2:
      raise ValueError(f"model {name!r} reads token ids and needs vocab_size, an int >= 2; "
                       f"got vocab_size={vocab_size!r}")
    kwargs["vocab_size"] = int(vocab_size)
  elif vocab_size is not None:
    raise ValueError(f"vocab_size={vocab_size!r}: model {name!r} reads images; allowed: None "
                     "(vocab_size is for the text and translation models, "
                     f"{', '.join(n for n in names() if is_text(n) or is_translation(n))})")
  return _FACTORIES[name](num_classes=int(num_classes), dtype=compute_dtype,
                          cpu_conv=_cpu_conv.check(cpu_conv), **kwargs)

"""ImageNet networks of torchvision (``torchvision.models``), layer for layer.

``resnet18/34/50/101/152``, ``wide_resnet50_2``, ``resnext50_32x4d``,
``resnext101_32x8d``, ``mobilenet_v2`` and ``densenet121`` as torchvision defines them
(``torchvision/models/resnet.py``, ``mobilenetv2.py``, ``densenet.py``), registered as
``<torchvision name>_imagenet``; parameter counts equal torchvision's. Conventions kept:

* ResNet v1.5: 7x7 stride-2 stem, 3x3 stride-2 max-pool (padding 1); the bottleneck's
  stride is on its 3x3 conv; width ``int(planes * width_per_group / 64) * groups``; a
  1x1 conv + BN projection when the stride or width changes. Init: convs
  ``kaiming_normal_(fan_out)``, classifier PyTorch's default.
* MobileNetV2: 3x3 stride-2 stem (32), inverted residuals without the expansion conv
  when the expansion is 1, ReLU6, 1x1 conv to 1280, dropout 0.2 before the linear
  classifier. Init: convs ``kaiming_normal_(fan_out)``, classifier normal(0, 0.01), zero
  bias.
* DenseNet-121: 7x7 stride-2 stem (64) and max-pool, dense layers
  BN-ReLU-conv1x1(bn_size * growth)-BN-ReLU-conv3x3(growth), transitions
  BN-ReLU-conv1x1(half)-avgpool 2, final BN-ReLU. Init: convs ``kaiming_normal_``
  (fan_in), classifier bias zero.

BatchNorm is PyTorch's default everywhere (eps 1e-5, momentum 0.1 = Flax 0.9). Modules
are named after torchvision's ``state_dict`` keys with ``.`` written ``_``
(``layer1.0.downsample.0`` is ``layer1_0`` / ``downsample_0``) so that
`jaxkd.models.from_torchvision` maps a torchvision checkpoint onto them one to one.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models._common import (KAIMING_IN, KAIMING_OUT, NORMAL_001, ZEROS, avg_pool,
                                  batch_norm, check_image, conv, linear, max_pool, outputs,
                                  wide)

__all__ = ["ImageNetResNet", "ImageNetMobileNetV2", "ImageNetDenseNet"]


class _BasicBlock(nn.Module):
  """torchvision ``BasicBlock``: 3x3 (stride) - 3x3, projection when the shape changes."""
  planes: int
  strides: int
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    kw = dict(dtype=self.dtype, kernel_init=KAIMING_OUT, cpu_conv=self.cpu_conv)
    y = conv(x, self.planes, 3, strides=self.strides, padding=1, name="conv1", **kw)
    y = nn.relu(batch_norm(train, self.dtype, name="bn1")(y))
    y = conv(y, self.planes, 3, padding=1, name="conv2", **kw)
    y = batch_norm(train, self.dtype, name="bn2")(y)
    if self.strides != 1 or x.shape[-1] != self.planes:
      x = conv(x, self.planes, 1, strides=self.strides, name="downsample_0", **kw)
      x = batch_norm(train, self.dtype, name="downsample_1")(x)
    return nn.relu(x + y)


class _Bottleneck(nn.Module):
  """torchvision ``Bottleneck`` (v1.5): 1x1 - 3x3 (stride, groups) - 1x1 (4 * planes)."""
  planes: int
  strides: int
  groups: int
  width_per_group: int
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    kw = dict(dtype=self.dtype, kernel_init=KAIMING_OUT, cpu_conv=self.cpu_conv)
    width = int(self.planes * (self.width_per_group / 64.0)) * self.groups
    out = 4 * self.planes
    y = conv(x, width, 1, name="conv1", **kw)
    y = nn.relu(batch_norm(train, self.dtype, name="bn1")(y))
    y = conv(y, width, 3, strides=self.strides, padding=1, groups=self.groups,
             name="conv2", **kw)
    y = nn.relu(batch_norm(train, self.dtype, name="bn2")(y))
    y = batch_norm(train, self.dtype, name="bn3")(conv(y, out, 1, name="conv3", **kw))
    if self.strides != 1 or x.shape[-1] != out:
      x = conv(x, out, 1, strides=self.strides, name="downsample_0", **kw)
      x = batch_norm(train, self.dtype, name="downsample_1")(x)
    return nn.relu(x + y)


class ImageNetResNet(nn.Module):
  """torchvision ``ResNet``: stem, four stages of 64, 128, 256, 512 planes, ``fc``.

  Attributes:
    num_classes: classifier width.
    depths: blocks per stage (resnet18: 2, 2, 2, 2; resnet50: 3, 4, 6, 3).
    bottleneck: ``Bottleneck`` blocks (expansion 4) instead of ``BasicBlock``.
    groups: grouped 3x3 convs of the bottleneck (ResNeXt's cardinality).
    width_per_group: bottleneck width per group at 64 planes (128: Wide ResNet-50-2).
    dtype: computation dtype; parameters and outputs stay float32.
    cpu_conv: how convolutions run on CPU (``_cpu_conv.py``).
  """
  num_classes: int
  depths: Sequence[int] = (2, 2, 2, 2)
  bottleneck: bool = False
  groups: int = 1
  width_per_group: int = 64
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "resnet (ImageNet)")
    x = conv(x, 64, 7, strides=2, padding=3, dtype=self.dtype, kernel_init=KAIMING_OUT,
             cpu_conv=self.cpu_conv, name="conv1")
    x = nn.relu(batch_norm(train, self.dtype, name="bn1")(x))
    x = max_pool(x, 3, 2, padding=1)
    for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), self.depths)):
      for j in range(depth):
        strides = 2 if i > 0 and j == 0 else 1
        name = f"layer{i + 1}_{j}"
        if self.bottleneck:
          x = _Bottleneck(planes, strides, self.groups, self.width_per_group, self.dtype,
                          self.cpu_conv, name=name)(x, train)
        else:
          x = _BasicBlock(planes, strides, self.dtype, self.cpu_conv, name=name)(x, train)
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype, name="fc")
    return outputs(x, head)


class _InvertedResidual(nn.Module):
  """torchvision ``InvertedResidual`` (``features.<k>.conv.*``); no expansion conv at t=1."""
  features: int
  strides: int
  expansion: int
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    kw = dict(dtype=self.dtype, kernel_init=KAIMING_OUT, cpu_conv=self.cpu_conv)
    hidden = int(round(x.shape[-1] * self.expansion))
    y, k = x, 0
    if self.expansion != 1:
      y = conv(y, hidden, 1, name="conv_0_0", **kw)
      y = nn.relu6(batch_norm(train, self.dtype, name="conv_0_1")(y))
      k = 1
    y = conv(y, hidden, 3, strides=self.strides, padding=1, groups=hidden,
             name=f"conv_{k}_0", **kw)
    y = nn.relu6(batch_norm(train, self.dtype, name=f"conv_{k}_1")(y))
    y = conv(y, self.features, 1, name=f"conv_{k + 1}", **kw)
    y = batch_norm(train, self.dtype, name=f"conv_{k + 2}")(y)
    if self.strides == 1 and x.shape[-1] == self.features:
      y = x + y
    return y


# torchvision's inverted_residual_setting: (expansion t, channels c, repeats n, stride s).
_MOBILENET_V2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                 (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class ImageNetMobileNetV2(nn.Module):
  """torchvision ``mobilenet_v2`` (width 1.0).

  Dropout (0.2, before the classifier) runs only when ``train=True`` and the caller passes
  ``rngs={"dropout": key}``.
  """
  num_classes: int
  dropout_rate: float = 0.2
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "mobilenet_v2 (ImageNet)")
    kw = dict(dtype=self.dtype, kernel_init=KAIMING_OUT, cpu_conv=self.cpu_conv)
    x = conv(x, 32, 3, strides=2, padding=1, name="features_0_0", **kw)
    x = nn.relu6(batch_norm(train, self.dtype, name="features_0_1")(x))
    k = 1
    for expansion, width, repeats, stride in _MOBILENET_V2:
      for j in range(repeats):
        x = _InvertedResidual(width, stride if j == 0 else 1, expansion, self.dtype,
                              self.cpu_conv, name=f"features_{k}")(x, train)
        k += 1
    x = conv(x, 1280, 1, name=f"features_{k}_0", **kw)
    x = nn.relu6(batch_norm(train, self.dtype, name=f"features_{k}_1")(x))
    features = jnp.mean(x.astype(wide(x.dtype)), axis=(1, 2)).astype(x.dtype)
    dropped = nn.Dropout(self.dropout_rate)(
        features, deterministic=not (train and self.has_rng("dropout")))
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype,
                  kernel_init=NORMAL_001, bias_init=ZEROS, name="classifier_1")
    return outputs(x, head, features=features, pooled_logits=head(dropped))


class _DenseLayer(nn.Module):
  """torchvision ``_DenseLayer``: norm1-relu-conv1 (1x1) - norm2-relu-conv2 (3x3)."""
  growth: int
  bn_size: int
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    kw = dict(dtype=self.dtype, kernel_init=KAIMING_IN, cpu_conv=self.cpu_conv)
    y = nn.relu(batch_norm(train, self.dtype, name="norm1")(x))
    y = conv(y, self.bn_size * self.growth, 1, name="conv1", **kw)
    y = nn.relu(batch_norm(train, self.dtype, name="norm2")(y))
    y = conv(y, self.growth, 3, padding=1, name="conv2", **kw)
    return jnp.concatenate([x, y], axis=-1)


class ImageNetDenseNet(nn.Module):
  """torchvision ``DenseNet`` (``densenet121``: blocks 6, 12, 24, 16; growth 32; bn_size 4;
  64 initial features)."""
  num_classes: int
  depths: Sequence[int] = (6, 12, 24, 16)
  growth: int = 32
  bn_size: int = 4
  init_features: int = 64
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "densenet (ImageNet)")
    kw = dict(dtype=self.dtype, kernel_init=KAIMING_IN, cpu_conv=self.cpu_conv)
    x = conv(x, self.init_features, 7, strides=2, padding=3, name="features_conv0", **kw)
    x = nn.relu(batch_norm(train, self.dtype, name="features_norm0")(x))
    x = max_pool(x, 3, 2, padding=1)
    for i, depth in enumerate(self.depths):
      for j in range(depth):
        x = _DenseLayer(self.growth, self.bn_size, self.dtype, self.cpu_conv,
                        name=f"features_denseblock{i + 1}_denselayer{j + 1}")(x, train)
      if i < len(self.depths) - 1:
        _check_poolable(x, i + 1)
        prefix = f"features_transition{i + 1}"
        x = nn.relu(batch_norm(train, self.dtype, name=f"{prefix}_norm")(x))
        x = conv(x, x.shape[-1] // 2, 1, name=f"{prefix}_conv", **kw)
        x = avg_pool(x, 2, 2)
    x = nn.relu(batch_norm(train, self.dtype, name="features_norm5")(x))
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype, bias_init=ZEROS,
                  name="classifier")
    return outputs(x, head)


def _check_poolable(x: jax.Array, transition: int) -> None:
  """A 2x2 average pool needs a map of at least 2x2 (torchvision fails there too)."""
  if min(x.shape[1:3]) < 2:
    raise ValueError(f"densenet (ImageNet): the map before transition "
                     f"{transition} is {x.shape[1]}x{x.shape[2]}, too small for its 2x2 "
                     "average pool; use inputs of at least 32x32")

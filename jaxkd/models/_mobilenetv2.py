"""MobileNetV2 (Sandler et al., arXiv 1801.04381) in the two CIFAR variants of the seeds.

* ``MobileNetV2`` (``mobilenetv2``): Tf-KD, yuanli2333/Teacher-free-Knowledge-Distillation
  ``model/mobilenetv2.py``. Quirks kept: the stem is a *1x1* conv with ``padding=1``
  (32x32 -> 34x34, the zero border becomes bias-only pixels); every conv has a bias
  although a BatchNorm follows; ReLU6; the classifier is a 1x1 conv with bias after
  global pooling (the same affine map as a linear layer, so it is one here); no stride
  in stage 5 and 6 (final map 5x5 at 32x32). PyTorch's default init.
* ``MobileNetV2Half`` (``mobilenetv2_half``): RepDistiller ``models/mobilenetv2.py``
  ``mobile_half`` (expansion 6, width 0.5): 3x3 stride-2 stem, no conv bias, plain
  ReLU, last conv keeps 1280 channels, linear classifier. Init: convs
  normal(0, sqrt(2 / (k*k*out))), classifier normal(0, 0.01), zero biases.
"""
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models._common import (KAIMING_OUT, NORMAL_001, TORCH_WEIGHT, ZEROS,
                                  batch_norm, check_image, conv, linear, outputs)

__all__ = ["MobileNetV2", "MobileNetV2Half"]


class InvertedResidual(nn.Module):
  """pw expand - dw 3x3 - pw linear, residual when stride 1 and width unchanged."""
  features: int
  strides: int
  expansion: int
  bias: bool
  act: Callable[[jax.Array], jax.Array]
  kernel_init: Any
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    kw = dict(bias=self.bias, kernel_init=self.kernel_init, dtype=self.dtype,
              cpu_conv=self.cpu_conv, bias_init=None if self.bias else ZEROS)
    hidden = x.shape[-1] * self.expansion
    y = self.act(batch_norm(train, self.dtype)(conv(x, hidden, 1, **kw)))
    y = conv(y, hidden, 3, strides=self.strides, padding=1, groups=hidden, **kw)
    y = self.act(batch_norm(train, self.dtype)(y))
    y = batch_norm(train, self.dtype)(conv(y, self.features, 1, **kw))
    if self.strides == 1 and x.shape[-1] == self.features:
      y = y + x
    return y


def _blocks(x, train, setting, **block_kw):
  """Stages given as (expansion, width, repeats, stride of the first block)."""
  for expansion, width, repeats, stride in setting:
    for j in range(repeats):
      x = InvertedResidual(width, stride if j == 0 else 1, expansion, **block_kw)(
          x, train)
  return x


class MobileNetV2(nn.Module):
  """Tf-KD CIFAR MobileNetV2 (``mobilenetv2``)."""
  num_classes: int
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "mobilenetv2")
    kw = dict(dtype=self.dtype, cpu_conv=self.cpu_conv)
    x = conv(x, 32, 1, padding=1, bias=True, **kw)
    x = nn.relu6(batch_norm(train, self.dtype)(x))
    setting = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
               (6, 96, 3, 1), (6, 160, 3, 1), (6, 320, 1, 1))
    x = _blocks(x, train, setting, bias=True, act=nn.relu6, kernel_init=TORCH_WEIGHT, **kw)
    x = conv(x, 1280, 1, bias=True, **kw)
    x = nn.relu6(batch_norm(train, self.dtype)(x))
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype)
    return outputs(x, head)


class MobileNetV2Half(nn.Module):
  """RepDistiller ``mobile_half``: MobileNetV2 with expansion 6 and width 0.5."""
  num_classes: int
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "mobilenetv2_half")
    kw = dict(kernel_init=KAIMING_OUT, dtype=self.dtype, cpu_conv=self.cpu_conv)
    x = nn.relu(batch_norm(train, self.dtype)(conv(x, 16, 3, strides=2, padding=1, **kw)))
    # int(c * 0.5) of the original (t, c, n, s) table.
    setting = ((1, 8, 1, 1), (6, 12, 2, 1), (6, 16, 3, 2), (6, 32, 4, 2),
               (6, 48, 3, 1), (6, 80, 3, 2), (6, 160, 1, 1))
    x = _blocks(x, train, setting, bias=False, act=nn.relu, **kw)
    # width 0.5 <= 1 keeps the last conv at 1280 channels.
    x = nn.relu(batch_norm(train, self.dtype)(conv(x, 1280, 1, **kw)))
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype,
                  kernel_init=NORMAL_001, bias_init=ZEROS)
    return outputs(x, head)

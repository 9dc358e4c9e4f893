"""CIFAR ResNets of two zoos.

* ``ResNet`` (4 stages of 64..512 channels, ``resnet18``/``resnet50``): Tf-KD,
  yuanli2333/Teacher-free-Knowledge-Distillation ``model/resnet.py`` (the kuangliu
  pytorch-cifar layout: 3x3 stem, no max-pool, projection shortcut with BatchNorm).
  PyTorch's default weight init (the file sets none).
* ``CifarResNet`` (3 stages, ``resnet8`` ... ``resnet110``, ``resnet8x4``,
  ``resnet32x4``): RepDistiller, HobbitLong/RepDistiller ``models/resnet.py``;
  ``kaiming_normal_(fan_out)`` convolutions, default-init linear classifier.

The originals pool with a fixed window equal to the last map at 32x32 input
(``avg_pool2d(out, 4)`` / ``AvgPool2d(8)``); a global mean is the same there and
also works on 8x8 and 28x28 inputs.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models._common import (KAIMING_OUT, TORCH_WEIGHT, batch_norm, check_image,
                                  conv, linear, outputs)

__all__ = ["ResNet", "CifarResNet"]


class BasicBlock(nn.Module):
  """3x3-3x3 residual block; projection (1x1 conv + BN) when the shape changes."""
  features: int
  strides: int
  dtype: Any
  kernel_init: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    kw = dict(dtype=self.dtype, kernel_init=self.kernel_init, cpu_conv=self.cpu_conv)
    y = conv(x, self.features, 3, strides=self.strides, padding=1, **kw)
    y = nn.relu(batch_norm(train, self.dtype)(y))
    y = batch_norm(train, self.dtype)(conv(y, self.features, 3, padding=1, **kw))
    if self.strides != 1 or x.shape[-1] != self.features:
      x = conv(x, self.features, 1, strides=self.strides, **kw)
      x = batch_norm(train, self.dtype)(x)
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """1x1-3x3-1x1 residual block with expansion 4 (stride on the 3x3)."""
  features: int
  strides: int
  dtype: Any
  kernel_init: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    kw = dict(dtype=self.dtype, kernel_init=self.kernel_init, cpu_conv=self.cpu_conv)
    out = 4 * self.features
    y = nn.relu(batch_norm(train, self.dtype)(conv(x, self.features, 1, **kw)))
    y = conv(y, self.features, 3, strides=self.strides, padding=1, **kw)
    y = nn.relu(batch_norm(train, self.dtype)(y))
    y = batch_norm(train, self.dtype)(conv(y, out, 1, **kw))
    if self.strides != 1 or x.shape[-1] != out:
      x = batch_norm(train, self.dtype)(conv(x, out, 1, strides=self.strides, **kw))
    return nn.relu(x + y)


def _stages(x, train, block, widths, depths, dtype, kernel_init, cpu_conv):
  """Stages of ``block``; the first block of every stage but the first has stride 2."""
  for i, (width, depth) in enumerate(zip(widths, depths)):
    for j in range(depth):
      strides = 2 if i > 0 and j == 0 else 1
      x = block(width, strides, dtype, kernel_init, cpu_conv)(x, train)
  return x


class ResNet(nn.Module):
  """Tf-KD CIFAR ResNet: 3x3 stem (64), four stages (64, 128, 256, 512)."""
  num_classes: int
  depths: Sequence[int] = (2, 2, 2, 2)
  bottleneck: bool = False
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "resnet")
    x = conv(x, 64, 3, padding=1, dtype=self.dtype, cpu_conv=self.cpu_conv)
    x = nn.relu(batch_norm(train, self.dtype)(x))
    block = Bottleneck if self.bottleneck else BasicBlock
    x = _stages(x, train, block, (64, 128, 256, 512), self.depths, self.dtype,
                TORCH_WEIGHT, self.cpu_conv)
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype)
    return outputs(x, head)


class CifarResNet(nn.Module):
  """RepDistiller CIFAR ResNet-(6n+2): stem ``widths[0]``, three stages of n
  BasicBlocks with ``widths[1:]`` channels (strides 1, 2, 2)."""
  num_classes: int
  depth: int = 20
  widths: Sequence[int] = (16, 16, 32, 64)
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "resnet")
    n = (self.depth - 2) // 6
    x = conv(x, self.widths[0], 3, padding=1, dtype=self.dtype, kernel_init=KAIMING_OUT,
             cpu_conv=self.cpu_conv)
    x = nn.relu(batch_norm(train, self.dtype)(x))
    x = _stages(x, train, BasicBlock, self.widths[1:], (n, n, n), self.dtype,
                KAIMING_OUT, self.cpu_conv)
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype)
    return outputs(x, head)

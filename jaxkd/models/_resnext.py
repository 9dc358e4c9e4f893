"""ResNeXt-29 for CIFAR as in Tf-KD (yuanli2333/Teacher-free-Knowledge-Distillation
``model/resnext.py``, imported there from prlz77/ResNeXt.pytorch; Xie et al.,
arXiv 1611.05431).

``resnext29_8x64d`` is ``CifarResNeXt(cardinality=8, depth=29, widen_factor=4)``:
stages of 256, 512, 1024 channels, three type-C bottlenecks each, inner width
``cardinality * out // widen_factor``. Quirk kept: the projection shortcut is used
only when the width changes (not on stride alone). Init as the original: convs
kaiming_normal(fan_out), classifier kaiming_normal(fan_in), zero biases.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models._common import (KAIMING_IN, KAIMING_OUT, ZEROS, batch_norm,
                                  check_image, conv, linear, outputs)

__all__ = ["CifarResNeXt"]


class _Bottleneck(nn.Module):
  features: int
  strides: int
  cardinality: int
  widen: int
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    kw = dict(kernel_init=KAIMING_OUT, dtype=self.dtype, cpu_conv=self.cpu_conv)
    inner = self.cardinality * self.features // self.widen
    y = nn.relu(batch_norm(train, self.dtype)(conv(x, inner, 1, **kw)))
    y = conv(y, inner, 3, strides=self.strides, padding=1, groups=self.cardinality, **kw)
    y = nn.relu(batch_norm(train, self.dtype)(y))
    y = batch_norm(train, self.dtype)(conv(y, self.features, 1, **kw))
    if x.shape[-1] != self.features:
      x = conv(x, self.features, 1, strides=self.strides, **kw)
      x = batch_norm(train, self.dtype)(x)
    return nn.relu(x + y)


class CifarResNeXt(nn.Module):
  """CIFAR ResNeXt-(9n+2) with ``cardinality`` groups."""
  num_classes: int
  cardinality: int = 8
  depth: int = 29
  widen: int = 4
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "resnext")
    n = (self.depth - 2) // 9
    x = conv(x, 64, 3, padding=1, kernel_init=KAIMING_OUT, dtype=self.dtype,
             cpu_conv=self.cpu_conv)
    x = nn.relu(batch_norm(train, self.dtype)(x))
    for i, width in enumerate((64 * self.widen, 128 * self.widen, 256 * self.widen)):
      for j in range(n):
        x = _Bottleneck(width, 2 if i > 0 and j == 0 else 1, self.cardinality,
                        self.widen, self.dtype, self.cpu_conv)(x, train)
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype,
                  kernel_init=KAIMING_IN, bias_init=ZEROS)
    return outputs(x, head)

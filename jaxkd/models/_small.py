"""Small networks for the offline default (8x8 digits) and for tests.

``SmallCNN`` is a three-stage residual net (a CIFAR ResNet in miniature: conv-BN-ReLU
stem, then one BasicBlock per stage, stride 2 from the second stage on). It runs on
any input of at least 4x4 pixels: 8x8x1 digits, 28x28x1 Fashion-MNIST, 32x32x3 CIFAR.
``MLP`` has no convolution and no BatchNorm (so no ``batch_stats``).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models._common import (KAIMING_OUT, batch_norm, check_image, linear,
                                  conv, outputs)

__all__ = ["SmallCNN", "MLP"]


class _Block(nn.Module):
  """conv3x3-BN-ReLU-conv3x3-BN plus a (projected) shortcut, then ReLU."""
  features: int
  strides: int
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    kw = dict(kernel_init=KAIMING_OUT, dtype=self.dtype, cpu_conv=self.cpu_conv)
    y = conv(x, self.features, 3, strides=self.strides, padding=1, **kw)
    y = nn.relu(batch_norm(train, self.dtype)(y))
    y = conv(y, self.features, 3, padding=1, **kw)
    y = batch_norm(train, self.dtype)(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = conv(x, self.features, 1, strides=self.strides, **kw)
      x = batch_norm(train, self.dtype)(x)
    return nn.relu(x + y)


class SmallCNN(nn.Module):
  """Small residual CNN, the default model (digits 8x8x1 -> 2x2 final map).

  Attributes:
    num_classes: K.
    widths: channels of the stem / each stage.
    dtype: computation dtype; parameters stay float32 (float64 for float64).
    cpu_conv: how the convolutions run on CPU, ``"xla"`` or ``"fast"`` (``_cpu_conv.py``).
  """
  num_classes: int
  widths: Sequence[int] = (32, 64, 128)
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "small_cnn")
    x = conv(x, self.widths[0], 3, padding=1, kernel_init=KAIMING_OUT, dtype=self.dtype,
             cpu_conv=self.cpu_conv)
    x = nn.relu(batch_norm(train, self.dtype)(x))
    for i, width in enumerate(self.widths):
      x = _Block(width, 1 if i == 0 else 2, self.dtype, self.cpu_conv)(x, train)
    head = linear(self.widths[-1], self.num_classes, dtype=self.dtype)
    return outputs(x, head)


class MLP(nn.Module):
  """Flatten, ReLU hidden layers, linear classifier; for the tiniest tests.

  There is no spatial map: ``feature_map`` is the last hidden layer as a 1x1 map
  and ``dense_logits`` the logits at that single position. ``cpu_conv`` is accepted so that
  every zoo module takes the same fields; there is no convolution for it to choose.
  """
  num_classes: int
  hidden: Sequence[int] = (128, 128)
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    del train  # no BatchNorm, no dropout
    x = x.reshape(x.shape[0], -1)
    for width in self.hidden:
      layer = linear(x.shape[-1], width, dtype=self.dtype)
      x = nn.relu(layer(x))
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype)
    return outputs(x[:, None, None, :], head)

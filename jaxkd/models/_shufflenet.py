"""ShuffleNet V1 / V2 for CIFAR, in the variants of the seeds' code.

* ``ShuffleNetV1`` (``shufflev1``): RepDistiller ``models/ShuffleNetv1.py``
  (kuangliu layout, groups 3, widths 240/480/960, 4/8/4 units). Quirks kept: 1x1
  stem; the first 1x1 conv after the stem is ungrouped (``g = 1 if in_planes == 24``);
  a ReLU after the depthwise conv; the stride-2 unit concatenates an average-pooled
  shortcut (``AvgPool2d(3, 2, padding=1)``, zero padding counted in the mean).
* ``ShuffleNetV2`` (``shufflev2``): RepDistiller ``models/ShuffleNetv2.py``
  (net size 1: widths 116/232/464, final 1x1 conv to 1024; 1x1 stem; no conv bias).
* ``ShuffleNetV2TfKD`` (``shufflenetv2``): Tf-KD ``model/shufflenetv2.py``. Quirks
  kept: every conv has a bias; the 3x3 stem has BatchNorm but no ReLU; the
  down-sampling unit's branch order is (shortcut, residual) before the shuffle.

All use PyTorch's default init (the files set none).
"""
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models._common import (avg_pool, batch_norm, channel_shuffle, check_image,
                                  conv, linear, outputs)

__all__ = ["ShuffleNetV1", "ShuffleNetV2", "ShuffleNetV2TfKD"]


class _V1Unit(nn.Module):
  features: int
  strides: int
  groups: int
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    bn = functools.partial(batch_norm, train, self.dtype)
    kw = dict(dtype=self.dtype, cpu_conv=self.cpu_conv)
    mid = self.features // 4
    g = 1 if x.shape[-1] == 24 else self.groups
    y = nn.relu(bn()(conv(x, mid, 1, groups=g, **kw)))
    y = channel_shuffle(y, g)
    y = conv(y, mid, 3, strides=self.strides, padding=1, groups=mid, **kw)
    y = nn.relu(bn()(y))
    y = bn()(conv(y, self.features, 1, groups=self.groups, **kw))
    if self.strides == 2:
      return nn.relu(jnp.concatenate([y, avg_pool(x, 3, 2, padding=1)], axis=-1))
    return nn.relu(y + x)


class ShuffleNetV1(nn.Module):
  """RepDistiller ``ShuffleV1``."""
  num_classes: int
  widths: Sequence[int] = (240, 480, 960)
  depths: Sequence[int] = (4, 8, 4)
  groups: int = 3
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "shufflev1")
    x = conv(x, 24, 1, dtype=self.dtype, cpu_conv=self.cpu_conv)
    x = nn.relu(batch_norm(train, self.dtype)(x))
    for width, depth in zip(self.widths, self.depths):
      for j in range(depth):
        # The stride-2 unit concatenates its input, so it adds only the rest.
        features = width - x.shape[-1] if j == 0 else width
        x = _V1Unit(features, 2 if j == 0 else 1, self.groups, self.dtype, self.cpu_conv)(
            x, train)
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype)
    return outputs(x, head)


class _V2Basic(nn.Module):
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    bn = functools.partial(batch_norm, train, self.dtype)
    kw = dict(dtype=self.dtype, cpu_conv=self.cpu_conv)
    c = x.shape[-1] // 2
    x1, x2 = x[..., :c], x[..., c:]
    y = nn.relu(bn()(conv(x2, c, 1, **kw)))
    y = bn()(conv(y, c, 3, padding=1, groups=c, **kw))
    y = nn.relu(bn()(conv(y, c, 1, **kw)))
    return channel_shuffle(jnp.concatenate([x1, y], axis=-1), 2)


class _V2Down(nn.Module):
  features: int
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    bn = functools.partial(batch_norm, train, self.dtype)
    kw = dict(dtype=self.dtype, cpu_conv=self.cpu_conv)
    c, mid = x.shape[-1], self.features // 2
    left = bn()(conv(x, c, 3, strides=2, padding=1, groups=c, **kw))
    left = nn.relu(bn()(conv(left, mid, 1, **kw)))
    right = nn.relu(bn()(conv(x, mid, 1, **kw)))
    right = bn()(conv(right, mid, 3, strides=2, padding=1, groups=mid, **kw))
    right = nn.relu(bn()(conv(right, mid, 1, **kw)))
    return channel_shuffle(jnp.concatenate([left, right], axis=-1), 2)


class ShuffleNetV2(nn.Module):
  """RepDistiller ``ShuffleV2`` (net size 1)."""
  num_classes: int
  widths: Sequence[int] = (116, 232, 464, 1024)
  depths: Sequence[int] = (3, 7, 3)
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "shufflev2")
    x = conv(x, 24, 1, dtype=self.dtype, cpu_conv=self.cpu_conv)
    x = nn.relu(batch_norm(train, self.dtype)(x))
    for width, depth in zip(self.widths[:3], self.depths):
      x = _V2Down(width, self.dtype, self.cpu_conv)(x, train)
      for _ in range(depth):
        x = _V2Basic(self.dtype, self.cpu_conv)(x, train)
    x = conv(x, self.widths[3], 1, dtype=self.dtype, cpu_conv=self.cpu_conv)
    x = nn.relu(batch_norm(train, self.dtype)(x))
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype)
    return outputs(x, head)


class _TfKDUnit(nn.Module):
  features: int
  strides: int
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    bn = functools.partial(batch_norm, train, self.dtype)
    kw = dict(bias=True, dtype=self.dtype, cpu_conv=self.cpu_conv)
    c = x.shape[-1]
    if self.strides == 1 and c == self.features:
      shortcut, x = x[..., :c // 2], x[..., c // 2:]
      c, out = c // 2, c // 2
    else:
      out = self.features // 2
      shortcut = bn()(conv(x, c, 3, strides=self.strides, padding=1, groups=c, **kw))
      shortcut = nn.relu(bn()(conv(shortcut, out, 1, **kw)))
    y = nn.relu(bn()(conv(x, c, 1, **kw)))
    y = bn()(conv(y, c, 3, strides=self.strides, padding=1, groups=c, **kw))
    y = nn.relu(bn()(conv(y, out, 1, **kw)))
    return channel_shuffle(jnp.concatenate([shortcut, y], axis=-1), 2)


class ShuffleNetV2TfKD(nn.Module):
  """Tf-KD ``shufflenetv2`` (ratio 1): stages of 1 + (3, 7, 3) units."""
  num_classes: int
  widths: Sequence[int] = (116, 232, 464, 1024)
  depths: Sequence[int] = (3, 7, 3)
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "shufflenetv2")
    kw = dict(bias=True, dtype=self.dtype, cpu_conv=self.cpu_conv)
    x = batch_norm(train, self.dtype)(conv(x, 24, 3, padding=1, **kw))
    for width, depth in zip(self.widths[:3], self.depths):
      x = _TfKDUnit(width, 2, self.dtype, self.cpu_conv)(x, train)
      for _ in range(depth):
        x = _TfKDUnit(width, 1, self.dtype, self.cpu_conv)(x, train)
    x = conv(x, self.widths[3], 1, **kw)
    x = nn.relu(batch_norm(train, self.dtype)(x))
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype)
    return outputs(x, head)

"""DenseNet-BC for CIFAR as in Tf-KD (yuanli2333/Teacher-free-Knowledge-Distillation
``model/densenet.py``, after Huang et al., arXiv 1608.06993).

3x3 stem with 2k channels, dense blocks of BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k)
layers, transitions halving channels and resolution, final BN-ReLU. Quirk kept: the
transition is BN then 1x1 conv then 2x2 average pool, *without* a ReLU. PyTorch's
default init.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models._common import (avg_pool, batch_norm, check_image, conv, linear,
                                  outputs)

__all__ = ["DenseNet"]


class _DenseLayer(nn.Module):
  growth: int
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    y = nn.relu(batch_norm(train, self.dtype)(x))
    y = conv(y, 4 * self.growth, 1, dtype=self.dtype, cpu_conv=self.cpu_conv)
    y = nn.relu(batch_norm(train, self.dtype)(y))
    y = conv(y, self.growth, 3, padding=1, dtype=self.dtype, cpu_conv=self.cpu_conv)
    return jnp.concatenate([x, y], axis=-1)


class DenseNet(nn.Module):
  """DenseNet-BC; ``densenet121`` is depths (6, 12, 24, 16), growth 32."""
  num_classes: int
  depths: Sequence[int] = (6, 12, 24, 16)
  growth: int = 32
  reduction: float = 0.5
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "densenet")
    kw = dict(dtype=self.dtype, cpu_conv=self.cpu_conv)
    x = conv(x, 2 * self.growth, 3, padding=1, **kw)
    for i, depth in enumerate(self.depths):
      for _ in range(depth):
        x = _DenseLayer(self.growth, self.dtype, self.cpu_conv)(x, train)
      if i < len(self.depths) - 1:
        x = batch_norm(train, self.dtype)(x)
        x = conv(x, int(self.reduction * x.shape[-1]), 1, **kw)
        x = avg_pool(x, 2, 2)
    x = nn.relu(batch_norm(train, self.dtype)(x))
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype)
    return outputs(x, head)

"""Wide ResNet WRN-d-k for CIFAR, as in RepDistiller (HobbitLong/RepDistiller
``models/wrn.py``, after Zagoruyko & Komodakis, arXiv 1605.07146).

Pre-activation blocks. Quirk kept from the original: when a block changes the
width, its BN-ReLU is applied to the input *before* the split, so the 1x1
projection shortcut sees the activated input (not the raw one). RepDistiller's
``wrn_*`` builders leave ``dropRate=0``, so there is no dropout. Init: convs
normal(0, sqrt(2 / (k*k*out))), linear bias zero (its weight keeps PyTorch's default).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models._common import (KAIMING_OUT, ZEROS, batch_norm, check_image, conv,
                                  linear, outputs)

__all__ = ["WideResNet"]


class _Block(nn.Module):
  features: int
  strides: int
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    kw = dict(dtype=self.dtype, kernel_init=KAIMING_OUT, cpu_conv=self.cpu_conv)
    equal_in_out = x.shape[-1] == self.features
    act = nn.relu(batch_norm(train, self.dtype)(x))
    y = conv(act, self.features, 3, strides=self.strides, padding=1, **kw)
    y = nn.relu(batch_norm(train, self.dtype)(y))
    y = conv(y, self.features, 3, padding=1, **kw)
    shortcut = x if equal_in_out else conv(act, self.features, 1, strides=self.strides,
                                           **kw)
    return shortcut + y


class WideResNet(nn.Module):
  """WRN-depth-widen: 3x3 stem (16), three stages of (depth-4)/6 blocks with
  16k, 32k, 64k channels (strides 1, 2, 2), final BN-ReLU, linear classifier."""
  num_classes: int
  depth: int = 40
  widen: int = 2
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "wrn")
    n = (self.depth - 4) // 6
    x = conv(x, 16, 3, padding=1, dtype=self.dtype, kernel_init=KAIMING_OUT,
             cpu_conv=self.cpu_conv)
    for i, width in enumerate((16 * self.widen, 32 * self.widen, 64 * self.widen)):
      for j in range(n):
        x = _Block(width, 2 if i > 0 and j == 0 else 1, self.dtype, self.cpu_conv)(x, train)
    x = nn.relu(batch_norm(train, self.dtype)(x))
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype, bias_init=ZEROS)
    return outputs(x, head)

"""Pre-activation ResNet-18 for CIFAR as in PS-KD (lgcnsai/PS-KD-Pytorch
``models/preact_resnet.py``, ``CIFAR_ResNet18_preActBasic``; He et al., arXiv 1603.05027).

3x3 stem with BN-ReLU, four stages of two pre-activation blocks (64..512 channels),
average pool, linear classifier. Quirks kept: the identity shortcut carries the
*activated* input ``relu(bn1(x))`` (the block's ``shortcut`` is an empty
``nn.Sequential`` applied to ``out``), the projection shortcut is a bare 1x1 conv, and
there is no BN-ReLU after the last stage. PyTorch's default init.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models._common import batch_norm, check_image, conv, linear, outputs

__all__ = ["PreActResNet"]


class _PreActBlock(nn.Module):
  features: int
  strides: int
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    kw = dict(dtype=self.dtype, cpu_conv=self.cpu_conv)
    out = nn.relu(batch_norm(train, self.dtype)(x))
    shortcut = out
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = conv(out, self.features, 1, strides=self.strides, **kw)
    y = conv(out, self.features, 3, strides=self.strides, padding=1, **kw)
    y = nn.relu(batch_norm(train, self.dtype)(y))
    y = conv(y, self.features, 3, padding=1, **kw)
    return y + shortcut


class PreActResNet(nn.Module):
  """PS-KD CIFAR PreAct-ResNet; ``preact_resnet18`` is depths (2, 2, 2, 2)."""
  num_classes: int
  depths: Sequence[int] = (2, 2, 2, 2)
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "preact_resnet")
    x = conv(x, 64, 3, padding=1, dtype=self.dtype, cpu_conv=self.cpu_conv)
    x = nn.relu(batch_norm(train, self.dtype)(x))
    for i, (width, depth) in enumerate(zip((64, 128, 256, 512), self.depths)):
      for j in range(depth):
        x = _PreActBlock(width, 2 if i > 0 and j == 0 else 1, self.dtype, self.cpu_conv)(x, train)
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype)
    return outputs(x, head)

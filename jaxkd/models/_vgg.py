"""VGG with BatchNorm for CIFAR, as in RepDistiller (HobbitLong/RepDistiller
``models/vgg.py``; its ``vgg8``/``vgg13`` names are the ``*_bn`` builders).

Five blocks of 3x3 conv-BN-ReLU, 2x2 max-pool between blocks, global average pool,
one linear layer (the FC layers of VGG are removed). Quirks kept: every conv has a
bias although a BatchNorm follows (counted in the parameters); the fourth max-pool
runs only for 64x64 inputs (``if h == 64``), so a 32x32 input reaches the last block
at 4x4. Init: convs normal(0, sqrt(2 / (k*k*out))) with zero bias, classifier
normal(0, 0.01) with zero bias.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models._common import (KAIMING_OUT, NORMAL_001, ZEROS, batch_norm,
                                  check_image, conv, linear, max_pool, outputs)

__all__ = ["VGG", "VGG8", "VGG13"]

VGG8 = ((64,), (128,), (256,), (512,), (512,))
VGG13 = ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))


class VGG(nn.Module):
  """VGG-BN; ``blocks`` lists the conv widths of the five blocks."""
  num_classes: int
  blocks: Sequence[Sequence[int]] = VGG8
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "vgg")
    height = x.shape[1]
    for i, widths in enumerate(self.blocks):
      if i in (1, 2, 3) or (i == 4 and height == 64):
        x = max_pool(x, 2, 2)
      for width in widths:
        x = conv(x, width, 3, padding=1, bias=True, kernel_init=KAIMING_OUT,
                 bias_init=ZEROS, dtype=self.dtype, cpu_conv=self.cpu_conv)
        x = nn.relu(batch_norm(train, self.dtype)(x))
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype,
                  kernel_init=NORMAL_001, bias_init=ZEROS)
    return outputs(x, head)

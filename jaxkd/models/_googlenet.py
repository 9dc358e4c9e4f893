"""GoogLeNet (Inception v1) for CIFAR as in Tf-KD (yuanli2333/Teacher-free-Knowledge-
Distillation ``model/googlenet.py``; Szegedy et al., arXiv 1409.4842).

A 3x3 stem (192) instead of the ImageNet stem; the 5x5 branch is two stacked 3x3
convs; max-pools after inception 3b and 4e (final map 8x8 at 32x32); dropout 0.4 on
the pooled features. Quirks kept: every conv has a bias; the BatchNorm after the first
3x3 of the 5x5 branch is ``nn.BatchNorm2d(n5x5, n5x5)``, whose second argument is
``eps``, so its epsilon is ``n5x5`` (32 ... 128) rather than 1e-5. PyTorch's default init.

Dropout needs a ``"dropout"`` rng: it runs when ``train=True`` and the caller passes
``rngs={"dropout": key}``; without that rng the forward pass is deterministic.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models._common import (batch_norm, check_image, conv, linear, max_pool,
                                  outputs, wide)

__all__ = ["GoogLeNet"]

# (n1x1, n3x3_reduce, n3x3, n5x5_reduce, n5x5, pool_proj) of inceptions 3a ... 5b.
_INCEPTIONS = {
    "a3": (64, 96, 128, 16, 32, 32), "b3": (128, 128, 192, 32, 96, 64),
    "a4": (192, 96, 208, 16, 48, 64), "b4": (160, 112, 224, 24, 64, 64),
    "c4": (128, 128, 256, 24, 64, 64), "d4": (112, 144, 288, 32, 64, 64),
    "e4": (256, 160, 320, 32, 128, 128),
    "a5": (256, 160, 320, 32, 128, 128), "b5": (384, 192, 384, 48, 128, 128),
}


class _Inception(nn.Module):
  widths: tuple
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    n1, n3r, n3, n5r, n5, pool_proj = self.widths

    def conv_bn_relu(y, features, kernel, epsilon=1e-5):
      y = conv(y, features, kernel, padding=kernel // 2, bias=True, dtype=self.dtype,
               cpu_conv=self.cpu_conv)
      return nn.relu(batch_norm(train, self.dtype, epsilon=epsilon)(y))

    b1 = conv_bn_relu(x, n1, 1)
    b2 = conv_bn_relu(conv_bn_relu(x, n3r, 1), n3, 3)
    b3 = conv_bn_relu(conv_bn_relu(x, n5r, 1), n5, 3, epsilon=float(n5))
    b3 = conv_bn_relu(b3, n5, 3)
    b4 = conv_bn_relu(max_pool(x, 3, 1, padding=1), pool_proj, 1)
    return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class GoogLeNet(nn.Module):
  """Tf-KD CIFAR GoogLeNet."""
  num_classes: int
  dropout_rate: float = 0.4
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "googlenet")
    x = conv(x, 192, 3, padding=1, bias=True, dtype=self.dtype, cpu_conv=self.cpu_conv)
    x = nn.relu(batch_norm(train, self.dtype)(x))
    for name, widths in _INCEPTIONS.items():
      if name in ("a4", "a5"):
        x = max_pool(x, 3, 2, padding=1)
      x = _Inception(widths, self.dtype, self.cpu_conv, name=name)(x, train)
    features = jnp.mean(x.astype(wide(x.dtype)), axis=(1, 2)).astype(x.dtype)
    dropped = nn.Dropout(self.dropout_rate)(
        features, deterministic=not (train and self.has_rng("dropout")))
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype)
    return outputs(x, head, features=features, pooled_logits=head(dropped))

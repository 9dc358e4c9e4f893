"""ReActNet on a ResNet-18 backbone (Liu et al., ECCV 2020), the binary student of Shen et al.

Layout of the official ResNet-18 variant (Bi-Real Net 18 with ReAct blocks):

* real-valued stem: 7x7 stride-2 conv (64), BN, 3x3 stride-2 max-pool; real-valued final
  linear classifier on the global average;
* four stages of 64, 128, 256, 512 channels with four blocks each (16 binary 3x3 convs);
  the first block of stages 2-4 has stride 2;
* every block wraps one binary conv in a Bi-Real shortcut:
  ``y = RPReLU(BN(BinaryConv(RSign(x))) + shortcut(x))``, where RSign is a learnable
  per-channel shift followed by the sign, RPReLU is shift - PReLU (per-channel slope, 0.25 at
  init) - shift, and the shortcut is the identity or, when the stride or width changes,
  2x2 stride-2 average pooling + real 1x1 conv + BN;
* activations: forward ``sign``, backward the ApproxSign gradient of Bi-Real Net,
  ``2 + 2x`` on ``[-1, 0)``, ``2 - 2x`` on ``[0, 1)``, 0 outside;
* binary weights: forward ``a * sign(W)`` with ``a`` the mean ``|W|`` of each output
  channel (no gradient through ``a``), backward the straight-through gradient of
  ``clip(W, -1, 1)``.

Initialisation as the official code (``resnet/*/birealnet.py``): PyTorch's default for every
convolution and the classifier, except the stage-2 binary convs, ``torch.rand * 0.001``
(``U(0, 0.001)``; stage 2 normally starts from stage 1's weights anyway).

Two-stage training: stage 1 has binary activations and real weights (the binary convs are
plain convolutions of ``W``), stage 2 binarises both and starts from stage 1's variables. The two stages
are the registry names ``reactnet18_stage1_imagenet`` (``binary_weights=False``) and
``reactnet18_imagenet`` (``binary_weights=True``); their variables have the same tree.

Both signs map 0 to +1, so binary values are exactly +-1 (``torch.sign`` maps 0 to 0, a
measure-zero difference).
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models import _cpu_conv
from jaxkd.models._common import (TORCH_WEIGHT, avg_pool, batch_norm, check_image, conv, linear,
                                  max_pool, outputs)

__all__ = ["ReActNet", "binary_sign", "approx_sign", "binary_weight"]


def binary_sign(x: jax.Array) -> jax.Array:
  """``+1`` where ``x >= 0``, else ``-1``, in ``x``'s dtype."""
  return jnp.where(x >= 0, 1, -1).astype(x.dtype)


@jax.custom_jvp
def approx_sign(x: jax.Array) -> jax.Array:
  """``sign(x)`` forward with Bi-Real Net's ApproxSign gradient.

  The derivative is that of the piecewise polynomial ``-1`` (x < -1), ``x^2 + 2x``
  ([-1, 0)), ``-x^2 + 2x`` ([0, 1)), ``1`` (x >= 1): ``2 + 2x``, ``2 - 2x`` or 0. The
  forward value is exactly +-1 (a custom JVP, so forward- and reverse-mode both work).
  """
  return binary_sign(x)


@approx_sign.defjvp
def _approx_sign_jvp(primals, tangents):
  (x,), (dx,) = primals, tangents
  slope = jnp.where((x >= -1) & (x < 0), 2 + 2 * x,
                    jnp.where((x >= 0) & (x < 1), 2 - 2 * x, 0)).astype(x.dtype)
  return binary_sign(x), slope * dx


def _scale(w: jax.Array) -> jax.Array:
  return jnp.mean(jnp.abs(w), axis=tuple(range(w.ndim - 1)), keepdims=True)


@jax.custom_jvp
def binary_weight(w: jax.Array) -> jax.Array:
  """``a * sign(w)`` per output channel (last axis of an HWIO kernel), ``a = mean |w|``.

  The derivative is that of ``clip(w, -1, 1)`` (straight-through, zero where ``|w| > 1``;
  ``a`` is treated as a constant), as the official ``HardBinaryConv``; the forward value
  is exactly ``+-a``.
  """
  return _scale(w) * binary_sign(w)


@binary_weight.defjvp
def _binary_weight_jvp(primals, tangents):
  (w,), (dw,) = primals, tangents
  return binary_weight(w), jnp.where(jnp.abs(w) <= 1, dw, jnp.zeros_like(dw))


def _uniform_0_001(key, shape, dtype=jnp.float32):
  """``torch.rand(...) * 0.001``, the official binary-conv weight init."""
  return jax.random.uniform(key, shape, dtype, 0.0, 0.001)


class BinaryConv(nn.Module):
  """3x3 (``HardBinaryConv``-style) convolution without bias on NHWC inputs.

  Attributes:
    features: output channels.
    strides: spatial stride.
    binary_weights: binarise the kernel (stage 2); False uses it as it is (stage 1).
    dtype: computation dtype; the kernel parameter stays float32.
    cpu_conv: how the convolution runs on CPU (``_cpu_conv.py``).
  """
  features: int
  strides: int = 1
  binary_weights: bool = True
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = _uniform_0_001 if self.binary_weights else TORCH_WEIGHT
    kernel = self.param("kernel", init, (3, 3, x.shape[-1], self.features), jnp.float32)
    if self.binary_weights:
      kernel = binary_weight(kernel)
    self.sow("intermediates", "weight", kernel)
    return _cpu_conv.conv_fn(self.cpu_conv)(
        x.astype(self.dtype), kernel.astype(self.dtype), (self.strides, self.strides),
        ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))


class _Shift(nn.Module):
  """``LearnableBias``: a per-channel shift, zero at init."""

  @nn.compact
  def __call__(self, x):
    bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
    return x + bias.astype(x.dtype)


class _PReLU(nn.Module):
  """``nn.PReLU(C)``: per-channel negative slope, 0.25 at init."""

  @nn.compact
  def __call__(self, x):
    slope = self.param("weight", nn.initializers.constant(0.25), (x.shape[-1],), jnp.float32)
    return jnp.where(x >= 0, x, slope.astype(x.dtype) * x)


class _Block(nn.Module):
  """RSign - binary 3x3 conv - BN, plus the (downsampling) shortcut, then RPReLU."""
  planes: int
  strides: int
  binary_weights: bool
  dtype: Any
  cpu_conv: str

  @nn.compact
  def __call__(self, x, train):
    y = approx_sign(_Shift(name="move0")(x))
    self.sow("intermediates", "activation", y)
    y = BinaryConv(self.planes, self.strides, self.binary_weights, self.dtype, self.cpu_conv,
                   name="binary_conv")(y)
    y = batch_norm(train, self.dtype, name="bn1")(y)
    if self.strides != 1 or x.shape[-1] != self.planes:
      if self.strides != 1:
        x = avg_pool(x, 2, self.strides)
      x = conv(x, self.planes, 1, dtype=self.dtype, cpu_conv=self.cpu_conv,
               name="downsample_1")
      x = batch_norm(train, self.dtype, name="downsample_2")(x)
    y = y + x
    y = _Shift(name="move1")(y)
    y = _PReLU(name="prelu")(y)
    return _Shift(name="move2")(y)


class ReActNet(nn.Module):
  """ReActNet-18: real stem, stages of 64, 128, 256, 512 binary blocks, real ``fc``.

  Attributes:
    num_classes: classifier width.
    depths: blocks per stage (ResNet-18 backbone: 4, 4, 4, 4, one binary conv each);
      fewer entries build fewer stages.
    binary_weights: stage 2 (binary weights) when True, stage 1 (real weights) when False;
      activations are binary in both.
    dtype: computation dtype; parameters and outputs stay float32.
    cpu_conv: how convolutions run on CPU (``_cpu_conv.py``).
  """
  num_classes: int
  depths: Sequence[int] = (4, 4, 4, 4)
  binary_weights: bool = True
  dtype: Any = jnp.float32
  cpu_conv: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> dict:
    check_image(x, "reactnet")
    x = conv(x, 64, 7, strides=2, padding=3, dtype=self.dtype, cpu_conv=self.cpu_conv,
             name="conv1")
    x = batch_norm(train, self.dtype, name="bn1")(x)
    x = max_pool(x, 3, 2, padding=1)
    for i, (planes, depth) in enumerate(zip((64, 128, 256, 512), self.depths)):
      for j in range(depth):
        strides = 2 if i > 0 and j == 0 else 1
        if strides == 2 and min(x.shape[1:3]) < 2:
          raise ValueError(f"reactnet: stage {i + 1} halves a {x.shape[1]}x{x.shape[2]} map; "
                           "inputs must be at least 32x32 for four stages")
        x = _Block(planes, strides, self.binary_weights, self.dtype, self.cpu_conv,
                   name=f"layer{i + 1}_{j}")(x, train)
    head = linear(x.shape[-1], self.num_classes, dtype=self.dtype, name="fc")
    return outputs(x, head)

"""A convolution whose kernel gradient XLA:CPU computes as matrix products (a prototype).

Profiling jaxkd's ResNet18 step on this CPU showed the kernel gradient of the 3x3
convolutions at 1.6-3 GFLOP/s, 5-9x slower than PyTorch's (oneDNN) and 5-10x slower than the
forward and input-gradient convolutions of the same layer: XLA lowers it to a convolution with
an output-sized window, which its CPU emitter handles badly. Here the kernel gradient is
written as one matrix product per kernel tap,

    dW[i, j] = sum over (n, h, w) of x_pad[n, s*h + i, s*w + j, :]^T g[n, h, w, :],

each split into a few batched products so XLA:CPU's matrix kernel runs on every core. The
forward pass and the input gradient stay XLA's own. `jax.lax.platform_dependent` keeps XLA's
kernel gradient on GPU and TPU, where cuDNN and the TPU compiler do well.

`conv_general_dilated` has the signature of `jax.lax.conv_general_dilated` and falls back to it
outside the case it speeds up (NHWC/HWIO, no dilation, one group), so it can be passed to
``flax.linen.Conv(conv_general_dilated=...)``. `patch_jaxkd_models` does that for the jaxkd
model zoo inside one process (experiments only).
"""
from __future__ import annotations

import functools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["conv_general_dilated", "kernel_grad_taps", "patch_jaxkd_models"]

_CHUNKS = 8  # batched products per tap: enough rows per product, work for every core


def _dimension_numbers_ok(lhs, rhs, dimension_numbers) -> bool:
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
  given = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
  return given == nhwc


def kernel_grad_taps(x, g, kernel_shape, strides, padding):
  """``dW`` of an NHWC/HWIO convolution as per-tap matrix products.

  Args:
    x: ``[N, H, W, C]`` input.
    g: ``[N, Ho, Wo, K]`` output cotangent.
    kernel_shape: ``(KH, KW, C, K)``.
    strides: ``(sh, sw)``.
    padding: ``((top, bottom), (left, right))``.

  Returns:
    ``[KH, KW, C, K]`` in the dtype of ``x``, accumulated in float32.
  """
  kh_size, kw_size, channels, out = kernel_shape
  n, ho, wo, _ = g.shape
  sh, sw = strides
  xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  rows = n * ho * wo
  chunks = next(c for c in (_CHUNKS, 4, 2, 1) if rows % c == 0)
  g2 = g.reshape(chunks, rows // chunks, out)

  def tap(i, j):
    xs = lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, channels),
                   (1, sh, sw, 1))
    prod = lax.dot_general(xs.reshape(chunks, rows // chunks, channels), g2,
                           (((1,), (1,)), ((0,), (0,))), preferred_element_type=jnp.float32)
    return prod.sum(0)

  taps = [[tap(i, j) for j in range(kw_size)] for i in range(kh_size)]
  return jnp.stack([jnp.stack(row) for row in taps]).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv_fwd(x, w, strides, padding):
  return _conv(x, w, strides, padding), (x, w)


def _conv_bwd(strides, padding, residuals, g):
  x, w = residuals
  xla = lambda x, w: lax.conv_general_dilated(x, w, strides, padding,
                                              dimension_numbers=("NHWC", "HWIO", "NHWC"))
  _, vjp = jax.vjp(xla, x, w)
  dx, dw_xla = vjp(g)
  dw = lax.platform_dependent(
      x, g, cpu=lambda x, g: kernel_grad_taps(x, g, w.shape, strides, padding).astype(w.dtype),
      default=lambda x, g: dw_xla)
  return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
  """`jax.lax.conv_general_dilated`, with per-tap matrix products for the kernel gradient."""
  plain = (lhs.ndim == 4 and not isinstance(padding, str) and feature_group_count == 1
           and batch_group_count == 1 and precision is None and preferred_element_type is None
           and all(d in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ()))
           and dimension_numbers is not None
           and _dimension_numbers_ok(lhs, rhs, dimension_numbers))
  if not plain:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)
  return _conv(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding))


def patch_jaxkd_models() -> None:
  """Makes every jaxkd model convolution use `conv_general_dilated` (this process only).

  `jaxkd.models._common.conv` builds ``nn.Conv``; its module-level ``nn`` is swapped for a
  copy of ``flax.linen`` whose ``Conv`` passes this convolution. Parameter names and shapes
  are unchanged.
  """
  from jaxkd.models import _common
  linen = types.SimpleNamespace(**{k: getattr(nn, k) for k in dir(nn) if not k.startswith("__")})
  linen.Conv = functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated)
  _common.nn = linen

"""How the kernel gradient of the zoo's convolutions is computed: XLA's own, or tap products.

XLA lowers the kernel gradient of a convolution to another convolution whose window is the
whole output map. XLA:CPU runs that form slowly: profiling jaxkd's ResNet18 step on CIFAR
shapes (2-core x86 CPU) put the kernel gradients of the 3x3 convolutions at 1.6-3 GFLOP/s,
5-10x slower than the forward and input-gradient convolutions of the same layers and the
main reason the step was about 2x slower than PyTorch's (oneDNN). ``"taps"`` writes the kernel
gradient as one matrix product per kernel tap,

    dW[i, j] = sum over (n, h, w) of x_pad[n, s*h + i, s*w + j, :]^T g[n, h, w, :],

split into a few batched products so that XLA:CPU's matrix kernel keeps every core busy. The
forward pass and the input gradient stay XLA's, and `jax.lax.platform_dependent` keeps XLA's
kernel gradient on GPU and TPU, where cuDNN and the TPU compiler handle it well: the choice
only changes what runs on a CPU.

The choice is read while a function is traced, so it is made per compiled program:

    with jaxkd.models.kernel_grad("taps"):
      grads = jax.jit(jax.grad(loss))(params)   # traced here: taps on CPU

`jaxkd.train.make_steps(conv_kernel_grad=...)` (config ``model.kernel_grad``) does this for
the train and eval steps. ``"taps"`` is a `jax.custom_vjp`: reverse mode (``grad``, ``vjp``,
``vmap`` of them) works, forward mode (``jvp``, ``hessian``) does not, which is why ``"xla"``
is the default.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["KERNEL_GRADS", "conv_general_dilated", "current", "kernel_grad",
           "kernel_grad_taps"]

KERNEL_GRADS = ("xla", "taps")
_MODE = contextvars.ContextVar("jaxkd_kernel_grad", default="xla")
_NHWC = ("NHWC", "HWIO", "NHWC")
_CHUNKS = 8  # batched products per tap: enough rows per product, work for every core


@contextlib.contextmanager
def kernel_grad(mode: str) -> Iterator[None]:
  """Within the block, the zoo's convolutions traced use kernel gradient ``mode``."""
  if mode not in KERNEL_GRADS:
    raise ValueError(f"kernel_grad={mode!r}: allowed: {', '.join(KERNEL_GRADS)}")
  token = _MODE.set(mode)
  try:
    yield
  finally:
    _MODE.reset(token)


def current() -> Callable:
  """The ``conv_general_dilated`` for ``flax.linen.Conv`` under the active mode."""
  return conv_general_dilated if _MODE.get() == "taps" else lax.conv_general_dilated


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

  taps = [jnp.stack([tap(i, j) for j in range(kw_size)]) for i in range(kh_size)]
  return jnp.stack(taps).astype(x.dtype)


def _xla_conv(x, w, strides, padding):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, padding):
  return _xla_conv(x, w, strides, padding)


def _conv_fwd(x, w, strides, padding):
  return _xla_conv(x, w, strides, padding), (x, w)


def _conv_bwd(strides, padding, residuals, g):
  x, w = residuals
  _, vjp = jax.vjp(lambda x, w: _xla_conv(x, w, strides, padding), x, w)
  dx, dw_xla = vjp(g)
  dw = lax.platform_dependent(
      x, g, cpu=lambda x, g: kernel_grad_taps(x, g, w.shape, strides, padding).astype(w.dtype),
      default=lambda x, g: dw_xla)
  return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def _plain(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
           feature_group_count, batch_group_count, precision, preferred_element_type) -> bool:
  """Whether the call is the NHWC/HWIO, undilated, ungrouped case the taps form covers."""
  if (lhs.ndim != 4 or isinstance(padding, str) or feature_group_count != 1
      or batch_group_count != 1 or precision is not None or preferred_element_type is not None
      or dimension_numbers is None):
    return False
  if any(d not in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ())):
    return False
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
  """`jax.lax.conv_general_dilated` with the per-tap kernel gradient on CPU.

  Grouped, dilated or non-NHWC calls (depthwise convolutions, for one) fall back to
  `jax.lax.conv_general_dilated` unchanged.
  """
  if not _plain(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                feature_group_count, batch_group_count, precision, preferred_element_type):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)
  return _conv(lhs, rhs, tuple(window_strides), tuple(tuple(p) for p in padding))

"""How the zoo's convolutions run on a CPU: small maps as one matrix product, tap kernel grads.

Two things XLA:CPU does slowly, each replaced on CPU only (`jax.lax.platform_dependent` keeps
XLA's own convolutions on GPU and TPU, where cuDNN and the TPU compiler handle them well):

**Maps smaller than the kernel**, always. When a convolution's output map is smaller than
its kernel (a 3x3 convolution on the 2x2 last stage of ``small_cnn`` on 8x8 digits, or the
stride-2 convolution into it), XLA:CPU rewrites it into a form that ran 10-20x slower than
the same arithmetic as a matrix product (2-core x86, batch 64: 5.1 ms forward and 6.0 ms
input gradient against 0.4 and 0.3 ms). Such convolutions are computed as one product of
the ``kh*kw`` shifted copies of the input (im2col) with the reshaped kernel: plain JAX
operations, so every transformation (``jvp``, ``grad``, ``vmap``) works as for XLA's.

**Kernel gradients**, with ``kernel_grad("taps")``. XLA lowers the kernel gradient of a
convolution to another convolution whose window is the whole output map. XLA:CPU runs that
form slowly: profiling jaxkd's ResNet18 step on CIFAR shapes (2-core x86 CPU) put the kernel
gradients of the 3x3 convolutions at 1.6-3 GFLOP/s, 5-10x slower than the forward and
input-gradient convolutions of the same layers and the main reason the step was about 2x
slower than PyTorch's (oneDNN). ``"taps"`` writes the kernel gradient as one matrix product
per kernel tap,

    dW[i, j] = sum over (n, h, w) of x_pad[n, s*h + i, s*w + j, :]^T g[n, h, w, :],

split into a few batched products so that XLA:CPU's matrix kernel keeps every core busy. The
forward pass and the input gradient stay XLA's.

The kernel-gradient choice is read while a function is traced, so it is made per compiled
program:

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

__all__ = ["KERNEL_GRADS", "conv_general_dilated", "current", "im2col_conv", "kernel_grad",
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
  return functools.partial(conv_general_dilated, kernel_grad=_MODE.get())


def _output_map(in_hw, kernel_hw, strides, padding) -> tuple[int, int]:
  return tuple((size + lo + hi - k) // s + 1
               for size, k, s, (lo, hi) in zip(in_hw, kernel_hw, strides, padding))


def _tap(xp, i, j, out_hw, strides):
  """The input positions kernel tap ``(i, j)`` meets: ``[N, Ho, Wo, C]`` of padded ``xp``."""
  (ho, wo), (sh, sw) = out_hw, strides
  return lax.slice(xp, (0, i, j, 0), (xp.shape[0], i + (ho - 1) * sh + 1,
                                      j + (wo - 1) * sw + 1, xp.shape[3]), (1, sh, sw, 1))


def im2col_conv(x, w, strides, padding):
  """An NHWC/HWIO convolution as one matrix product of the shifted inputs with the kernel.

  ``cols[n, h, w, (i, j, c)] = x_pad[n, s*h + i, s*w + j, c]``, so the output is
  ``cols @ w.reshape(kh * kw * C, K)`` (the kernel's row-major order is ``(i, j, c)``).
  """
  kh, kw, channels, out = w.shape
  out_hw = _output_map(x.shape[1:3], (kh, kw), strides, padding)
  xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  cols = jnp.concatenate([_tap(xp, i, j, out_hw, strides)
                          for i in range(kh) for j in range(kw)], axis=-1)
  return lax.dot_general(cols, w.reshape(kh * kw * channels, out), (((3,), (0,)), ((), ())))


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
  xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  rows = n * ho * wo
  chunks = next(c for c in (_CHUNKS, 4, 2, 1) if rows % c == 0)
  g2 = g.reshape(chunks, rows // chunks, out)

  def tap(i, j):
    xs = _tap(xp, i, j, (ho, wo), strides)
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
  """Whether the call is the NHWC/HWIO, undilated, ungrouped case, padding >= 0, handled here."""
  if (lhs.ndim != 4 or isinstance(padding, str) or feature_group_count != 1
      or batch_group_count != 1 or precision is not None or preferred_element_type is not None
      or dimension_numbers is None or any(p < 0 for pair in padding for p in pair)):
    return False
  if any(d not in (None, 1) for d in tuple(lhs_dilation or ()) + tuple(rhs_dilation or ())):
    return False
  nhwc = lax.conv_dimension_numbers(lhs.shape, rhs.shape, _NHWC)
  return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == nhwc


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None, *,
                         kernel_grad: str = "xla"):
  """`jax.lax.conv_general_dilated` with the CPU forms of this module.

  On CPU, an output map smaller than the kernel is computed by `im2col_conv`; otherwise
  ``kernel_grad="taps"`` takes the per-tap kernel gradient. Grouped, dilated or non-NHWC
  calls (depthwise convolutions, for one) fall back to `jax.lax.conv_general_dilated`.
  """
  if not _plain(lhs, rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                feature_group_count, batch_group_count, precision, preferred_element_type):
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)
  strides = tuple(window_strides)
  pads = tuple(tuple(p) for p in padding)
  out_hw = _output_map(lhs.shape[1:3], rhs.shape[:2], strides, pads)
  if any(o < k for o, k in zip(out_hw, rhs.shape[:2])):
    return lax.platform_dependent(
        lhs, rhs, cpu=lambda x, w: im2col_conv(x, w, strides, pads),
        default=lambda x, w: _xla_conv(x, w, strides, pads))
  if kernel_grad == "taps":
    return _conv(lhs, rhs, strides, pads)
  return _xla_conv(lhs, rhs, strides, pads)

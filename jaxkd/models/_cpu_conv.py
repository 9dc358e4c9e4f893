"""How the zoo's convolutions run on a CPU: XLA's own, or the fast forms of this module.

Every zoo module has a ``cpu_conv`` field (``jaxkd.models.get(name, cpu_conv=...)``), one of
`CPU_CONVS`, that `jaxkd.models._common.conv` turns into the ``conv_general_dilated`` of
``flax.linen.Conv`` with :func:`conv_fn`:

* ``"xla"``: `jax.lax.conv_general_dilated`, Flax's own default, on every platform. Every
  transformation works, forward mode (``jvp``, ``hessian``) included.
* ``"fast"``: on CPU, the two convolution forms that XLA:CPU runs slowly are rewritten as
  matrix products; `jax.lax.platform_dependent` keeps XLA's own convolutions on GPU and TPU,
  where cuDNN and the TPU compiler handle them well. Reverse mode (``grad``, ``vjp``, ``vmap``
  of them) works; forward mode does not, except on the small maps below.

**Maps smaller than the kernel.** When a convolution's output map is smaller than its kernel (a
3x3 convolution on the 2x2 last stage of ``small_cnn`` on 8x8 digits, or the stride-2
convolution into it), XLA:CPU rewrites it into a form several times slower, forward and input
gradient alike, than the same arithmetic as one matrix product. ``"fast"`` computes such
convolutions as one product of the ``kh*kw`` shifted copies of the input (im2col) with the
reshaped kernel (`im2col_conv`): plain JAX operations, so every transformation works on them.

**Kernel gradients.** XLA lowers the kernel gradient of a convolution to another convolution
whose window is the whole output map. XLA:CPU runs that form at a fraction of the speed of the
forward and input-gradient convolutions of the same layer; it was the main reason jaxkd's
ResNet18 training step on CPU was slower than PyTorch's (oneDNN). ``"fast"`` writes the kernel
gradient as one matrix product per kernel tap (`kernel_grad_taps`),

    dW[i, j] = sum over (n, h, w) of x_pad[n, s*h + i, s*w + j, :]^T g[n, h, w, :],

split into a few batched products so that XLA:CPU's matrix kernel keeps every core busy. The
forward pass and the input gradient stay XLA's. It is a `jax.custom_vjp`, hence reverse mode
only.

Grouped, dilated or non-NHWC convolutions (depthwise ones, for instance) are XLA's under both
choices. Measured timings: experiments/bench/README.md.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["CPU_CONVS", "check", "conv_fn", "fast_conv_general_dilated", "im2col_conv",
           "kernel_grad_taps"]

CPU_CONVS = ("xla", "fast")
_NHWC = ("NHWC", "HWIO", "NHWC")
_CHUNKS = 8  # batched products per tap: enough rows per product, work for every core


def check(cpu_conv: str) -> str:
  """``cpu_conv`` if it is one of `CPU_CONVS`; a ValueError naming the choices otherwise."""
  if not (isinstance(cpu_conv, str) and cpu_conv in CPU_CONVS):
    raise ValueError(f"cpu_conv={cpu_conv!r} is not allowed; allowed: {', '.join(CPU_CONVS)}")
  return cpu_conv


def conv_fn(cpu_conv: str) -> Callable:
  """The ``conv_general_dilated`` for ``flax.linen.Conv`` under choice ``cpu_conv``."""
  if check(cpu_conv) == "fast":
    return fast_conv_general_dilated
  return lax.conv_general_dilated


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
    ``[KH, KW, C, K]`` in the dtype of ``x``, accumulated in float32 (float64 for float64
    ``x``).
  """
  kh_size, kw_size, channels, out = kernel_shape
  n, ho, wo, _ = g.shape
  xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  rows = n * ho * wo
  chunks = next(c for c in (_CHUNKS, 4, 2, 1) if rows % c == 0)
  g2 = g.reshape(chunks, rows // chunks, out)
  accumulate = jnp.promote_types(x.dtype, jnp.float32)

  def tap(i, j):
    xs = _tap(xp, i, j, (ho, wo), strides)
    prod = lax.dot_general(xs.reshape(chunks, rows // chunks, channels), g2,
                           (((1,), (1,)), ((0,), (0,))), preferred_element_type=accumulate)
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


def fast_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                              rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                              batch_group_count=1, precision=None, preferred_element_type=None):
  """`jax.lax.conv_general_dilated` with the CPU forms of ``cpu_conv="fast"``.

  On CPU, an output map smaller than the kernel is computed by `im2col_conv`, and any other
  convolution takes the per-tap kernel gradient. Grouped, dilated or non-NHWC calls (depthwise
  convolutions, for one) are `jax.lax.conv_general_dilated`'s.
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
  return _conv(lhs, rhs, strides, pads)

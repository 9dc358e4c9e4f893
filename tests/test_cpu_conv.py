"""The zoo's CPU convolutions: small maps by im2col and taps kernel gradients equal XLA's."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import models
from jaxkd.models import _cpu_conv


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 2, 0), (5, 1, 2)])
def test_taps_kernel_gradient_equals_xla(kernel, stride, padding):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 9, 9, 3))
  w = jax.random.normal(jax.random.PRNGKey(1), (2, kernel, kernel, 3, 5))

  def grads(conv, packed):
    loss = lambda x, w: jnp.sum(jnp.sin(conv(
        x, w, (stride, stride), ((padding, padding),) * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))))
    grad = jax.grad(loss, (0, 1))
    # vmap: packed seeds, each with its own weights.
    return jax.jit(jax.vmap(grad))(x, w) if packed else jax.jit(grad)(x[0], w[0])

  taps = functools.partial(_cpu_conv.conv_general_dilated, kernel_grad="taps")
  for packed in (False, True):
    for got, want in zip(grads(taps, packed), grads(jax.lax.conv_general_dilated, packed)):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_taps_kernel_gradient_by_hand():
  """dW of a 2x2 kernel, stride 1, no padding, one channel: sums of shifted input products."""
  x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
  g = np.ones((1, 3, 3, 1), np.float32)
  dw = _cpu_conv.kernel_grad_taps(jnp.asarray(x), jnp.asarray(g), (2, 2, 1, 1), (1, 1),
                                  ((0, 0), (0, 0)))
  want = np.array([[x[0, i:i + 3, j:j + 3, 0].sum() for j in range(2)] for i in range(2)])
  np.testing.assert_allclose(np.asarray(dw)[..., 0, 0], want)


def test_resnet_gradients_match_and_grouped_convs_fall_back():
  """Whole-network gradients under "taps" equal XLA's (MobileNetV2's depthwise convs fall back)."""
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 32, 32, 3))
  labels = jnp.arange(4) % 10
  for name in ("resnet8", "mobilenetv2"):
    model = models.get(name, num_classes=10)
    variables = model.init(jax.random.PRNGKey(0), x)

    def loss(params):
      out, _ = model.apply({**variables, "params": params}, x, train=True,
                           mutable=["batch_stats"])
      return -jnp.mean(jax.nn.log_softmax(out["logits"])[jnp.arange(4), labels])

    want = jax.jit(jax.grad(loss))(variables["params"])
    with models.kernel_grad("taps"):
      got = jax.jit(jax.grad(loss))(variables["params"])
    # Biases ahead of a BatchNorm have a zero gradient, computed as rounding noise, so the
    # absolute tolerance is set by the network's largest gradient, not by each leaf's.
    scale = max(float(np.abs(b).max()) for b in jax.tree_util.tree_leaves(want))
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5 * scale)


def test_unknown_mode_is_rejected():
  with pytest.raises(ValueError, match="kernel_grad='fast'.*xla, taps"):
    with models.kernel_grad("fast"):
      pass


_NHWC = ("NHWC", "HWIO", "NHWC")


def _loop_conv(x, w, stride, pad):
  """The convolution's definition, written out in numpy loops."""
  kh, kw, _, _ = w.shape
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho, wo = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
  out = np.zeros((x.shape[0], ho, wo, w.shape[3]), np.float64)
  for h in range(ho):
    for v in range(wo):
      patch = xp[:, h * stride:h * stride + kh, v * stride:v * stride + kw, :]
      out[:, h, v, :] = np.einsum("nijc,ijck->nk", patch, w)
  return out


# (input size, kernel, stride, padding): output maps smaller than the kernel (small_cnn's
# last stage on digits, the stride-2 convolution into it, a 1x1 map) and two that are not.
SHAPES = [(2, 3, 1, 1), (4, 3, 2, 1), (3, 5, 1, 2), (1, 3, 1, 1), (5, 3, 1, 1), (6, 1, 2, 0)]


@pytest.mark.parametrize("size,kernel,stride,padding", SHAPES)
def test_small_maps_run_as_one_matrix_product_and_equal_the_convolution(size, kernel, stride,
                                                                        padding):
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 3)))
  w = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (kernel, kernel, 3, 4)))
  ours = lambda x, w: _cpu_conv.conv_general_dilated(
      x, w, (stride, stride), ((padding, padding),) * 2, dimension_numbers=_NHWC)
  xla = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (stride, stride), ((padding, padding),) * 2, dimension_numbers=_NHWC)
  np.testing.assert_allclose(np.asarray(jax.jit(ours)(x, w)), _loop_conv(x, w, stride, padding),
                             rtol=1e-5, atol=1e-5)
  out = (size + 2 * padding - kernel) // stride + 1
  hlo = jax.jit(ours).lower(x, w).compile().as_text()
  assert ("convolution(" not in hlo) == (out < kernel), hlo

  # Every transformation, as for XLA's convolution: grad, jvp and vmap over packed weights.
  loss = lambda conv: (lambda x, w: jnp.sum(jnp.sin(conv(x, w))))
  for got, want in zip(jax.jit(jax.grad(loss(ours), (0, 1)))(x, w),
                       jax.grad(loss(xla), (0, 1))(x, w)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
  tangents = (np.ones_like(x), np.ones_like(w))
  np.testing.assert_allclose(np.asarray(jax.jvp(ours, (x, w), tangents)[1]),
                             np.asarray(jax.jvp(xla, (x, w), tangents)[1]), rtol=1e-4, atol=1e-4)
  xs, ws = np.stack([x, 2 * x]), np.stack([w, -w])
  np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(ours))(xs, ws)),
                             np.asarray(jax.vmap(xla)(xs, ws)), rtol=1e-4, atol=1e-4)

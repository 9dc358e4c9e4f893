"""model.kernel_grad="taps": the per-tap kernel gradient equals XLA's, in a layer and in a step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import models
from jaxkd.models import _kernel_grad


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

  for packed in (False, True):
    for got, want in zip(grads(_kernel_grad.conv_general_dilated, packed),
                         grads(jax.lax.conv_general_dilated, packed)):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_taps_kernel_gradient_by_hand():
  """dW of a 2x2 kernel, stride 1, no padding, one channel: sums of shifted input products."""
  x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
  g = np.ones((1, 3, 3, 1), np.float32)
  dw = _kernel_grad.kernel_grad_taps(jnp.asarray(x), jnp.asarray(g), (2, 2, 1, 1), (1, 1),
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
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4,
                                 atol=2e-5 * float(np.abs(b).max()) + 1e-7)


def test_unknown_mode_is_rejected():
  with pytest.raises(ValueError, match="kernel_grad='fast'.*xla, taps"):
    with models.kernel_grad("fast"):
      pass

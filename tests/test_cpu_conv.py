"""The zoo's CPU convolutions: ``cpu_conv="fast"`` (im2col small maps, taps kernel gradients)
equals XLA's convolution, and ``cpu_conv="xla"`` leaves XLA's own convolution in the program."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxkd import models
from jaxkd.models import _common, _cpu_conv

_NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 2, 0), (5, 1, 2)])
@pytest.mark.slow
def test_taps_kernel_gradient_equals_xla(kernel, stride, padding):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 9, 9, 3))
  w = jax.random.normal(jax.random.PRNGKey(1), (2, kernel, kernel, 3, 5))

  def grads(conv, packed):
    loss = lambda x, w: jnp.sum(jnp.sin(conv(
        x, w, (stride, stride), ((padding, padding),) * 2, dimension_numbers=_NHWC)))
    grad = jax.grad(loss, (0, 1))
    # vmap: packed seeds, each with its own weights.
    return jax.jit(jax.vmap(grad))(x, w) if packed else jax.jit(grad)(x[0], w[0])

  for packed in (False, True):
    for got, want in zip(grads(_cpu_conv.fast_conv_general_dilated, packed),
                         grads(jax.lax.conv_general_dilated, packed)):
      np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-5)


def test_taps_kernel_gradient_by_hand():
  """dW of a 2x2 kernel, stride 1, no padding, one channel: sums of shifted input products."""
  x = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)
  g = np.ones((1, 3, 3, 1), np.float32)
  dw = _cpu_conv.kernel_grad_taps(jnp.asarray(x), jnp.asarray(g), (2, 2, 1, 1), (1, 1),
                                  ((0, 0), (0, 0)))
  want = np.array([[x[0, i:i + 3, j:j + 3, 0].sum() for j in range(2)] for i in range(2)])
  np.testing.assert_allclose(np.asarray(dw)[..., 0, 0], want)


def _logits_and_grads(model, x, labels, *, train):
  """Logits and the cross-entropy gradient in BatchNorm mode ``train``, in one jitted program."""
  variables = model.init(jax.random.PRNGKey(0), x, train=False)

  def loss(params):
    out, _ = model.apply({**variables, "params": params}, x, train=train,
                         mutable=["batch_stats"])
    ce = -jnp.mean(jax.nn.log_softmax(out["logits"])[jnp.arange(x.shape[0]), labels])
    return ce, out["logits"]

  (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
  return logits, grads


def _assert_same_logits_and_grads(got, want):
  np.testing.assert_allclose(np.asarray(got[0]), np.asarray(want[0]), rtol=1e-4,
                             atol=1e-5 * float(np.abs(want[0]).max()))
  # Biases ahead of a BatchNorm have a zero gradient, computed as rounding noise, so the
  # absolute tolerance is set by the network's largest gradient, not by each leaf's.
  scale = max(float(np.abs(b).max()) for b in jax.tree_util.tree_leaves(want[1]))
  assert jax.tree_util.tree_structure(got[1]) == jax.tree_util.tree_structure(want[1])
  for a, b in zip(jax.tree_util.tree_leaves(got[1]), jax.tree_util.tree_leaves(want[1])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-5 * scale)


@pytest.mark.slow
def test_resnet_training_gradients_match_on_cifar_maps():
  """A training-mode step's gradients under "fast" equal XLA's on 32x32 input, where no map
  is small: every convolution takes the taps kernel gradient."""
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 32, 32, 3))
  labels = jnp.arange(4) % 10
  want, got = (_logits_and_grads(models.get("resnet8", num_classes=10, cpu_conv=c), x, labels,
                                 train=True) for c in ("xla", "fast"))
  _assert_same_logits_and_grads(got, want)


# Every zoo family (each class of jaxkd.models), shrunk where the class allows it.
FAMILIES = {
    "SmallCNN": lambda c: models.get("small_cnn", num_classes=5, cpu_conv=c),
    "MLP": lambda c: models.get("mlp", num_classes=5, cpu_conv=c),
    "CifarResNet": lambda c: models.get("resnet8", num_classes=5, cpu_conv=c),
    "ResNet": lambda c: models.ResNet(5, depths=(1, 1, 1, 1), bottleneck=True, cpu_conv=c),
    "PreActResNet": lambda c: models.PreActResNet(5, depths=(1, 1, 1, 1), cpu_conv=c),
    "WideResNet": lambda c: models.get("wrn_16_1", num_classes=5, cpu_conv=c),
    "VGG": lambda c: models.get("vgg8", num_classes=5, cpu_conv=c),
    "DenseNet": lambda c: models.DenseNet(5, depths=(1, 1, 1, 1), growth=8, cpu_conv=c),
    "CifarResNeXt": lambda c: models.CifarResNeXt(5, cardinality=2, depth=11, widen=4,
                                                  cpu_conv=c),
    "MobileNetV2": lambda c: models.get("mobilenetv2", num_classes=5, cpu_conv=c),
    "MobileNetV2Half": lambda c: models.get("mobilenetv2_half", num_classes=5, cpu_conv=c),
    "ShuffleNetV1": lambda c: models.ShuffleNetV1(5, depths=(1, 1, 1), cpu_conv=c),
    "ShuffleNetV2": lambda c: models.ShuffleNetV2(5, depths=(1, 1, 1), cpu_conv=c),
    "ShuffleNetV2TfKD": lambda c: models.ShuffleNetV2TfKD(5, depths=(1, 1, 1), cpu_conv=c),
    "GoogLeNet": lambda c: models.get("googlenet", num_classes=5, cpu_conv=c),
    "ImageNetResNet": lambda c: models.ImageNetResNet(5, depths=(1, 1, 1, 1), cpu_conv=c),
    "ImageNetMobileNetV2": lambda c: models.get("mobilenet_v2_imagenet", num_classes=5,
                                                cpu_conv=c),
    "ReActNet": lambda c: models.ReActNet(5, depths=(1, 1), cpu_conv=c),
    "ImageNetDenseNet": lambda c: models.ImageNetDenseNet(5, depths=(1, 1), growth=8,
                                                          init_features=16, cpu_conv=c),
}
# Compiling a family's gradient twice costs 10-40 s of a 2-core CPU, so the numbers are compared
# on one family per kind of convolution: ungrouped with small maps (SmallCNN, the default
# model, and VGG, with biases) and grouped (CifarResNeXt; depthwise convolutions take the same
# XLA path); resnet8's training step is compared above, the fast forms one by one below.
NUMERIC_FAMILIES = ("SmallCNN", "VGG", "CifarResNeXt")
_DIGIT_BATCH = (4, 8, 8, 3)  # 8x8 inputs: last stages with maps smaller than a 3x3 kernel
# Families without an ungrouped convolution whose map is smaller than its kernel on 8x8 inputs:
# their 3x3 convolutions are grouped (XLA's under both choices) or see maps of 4x4 and more.
_NO_SMALL_MAPS = ("MLP", "CifarResNeXt", "MobileNetV2", "MobileNetV2Half", "ShuffleNetV1",
                  "ShuffleNetV2", "ShuffleNetV2TfKD", "ImageNetMobileNetV2")


# The token models take token ids and no image convolution: cnn_text's 1-D convolutions are
# XLA's own whatever cpu_conv says.
_TEXT_CLASSES = {"FastTextClassifier", "TransformerClassifier", "CNNClassifier",
                 "TranslationTransformer"}


def test_families_cover_every_zoo_class():
  classes = {name for name in models.__all__ if isinstance(getattr(models, name), type)}
  assert set(FAMILIES) == classes - _TEXT_CLASSES


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.slow
def test_the_choice_reaches_every_convolution_of_every_family(family):
  """Traced only: "xla" leaves none of the fast forms in the program, "fast" has the taps
  custom VJP (every family has a full-size ungrouped convolution) and, where the last maps
  are small, the CPU im2col branch."""
  x = jax.ShapeDtypeStruct(_DIGIT_BATCH, jnp.float32)
  jaxprs = {}
  for cpu_conv in models.CPU_CONVS:
    model = FAMILIES[family](cpu_conv)
    assert model.cpu_conv == cpu_conv
    jaxprs[cpu_conv] = str(jax.make_jaxpr(
        lambda x, m=model: m.init(jax.random.PRNGKey(0), x, train=False))(x))
  assert "custom_vjp_call" not in jaxprs["xla"] and "platform_index" not in jaxprs["xla"]
  assert ("custom_vjp_call" in jaxprs["fast"]) == (family != "MLP")
  assert ("platform_index" in jaxprs["fast"]) == (family not in _NO_SMALL_MAPS)


@pytest.mark.parametrize("family", NUMERIC_FAMILIES)
@pytest.mark.slow
def test_fast_and_xla_give_the_same_logits_and_gradients(family):
  # Inference-mode BatchNorm: in training mode a 1x1 map normalised over 4 examples amplifies
  # the rounding differences of the two summation orders beyond float tolerance.
  x = jax.random.normal(jax.random.PRNGKey(2), _DIGIT_BATCH)
  labels = jnp.arange(4) % 5
  want, got = (_logits_and_grads(FAMILIES[family](c), x, labels, train=False)
               for c in ("xla", "fast"))
  _assert_same_logits_and_grads(got, want)


@pytest.mark.parametrize("value", ["taps", "XLA", "", None, 1])
def test_bad_choice_is_rejected_before_tracing(value):
  message = f"cpu_conv={value!r} is not allowed; allowed: xla, fast"
  with pytest.raises(ValueError, match=re.escape(message)):
    models.get("small_cnn", num_classes=10, cpu_conv=value)
  # A module built by hand is checked where its first convolution is traced.
  with pytest.raises(ValueError, match="cpu_conv="):
    models.SmallCNN(10, cpu_conv=value).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))


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
@pytest.mark.slow
def test_fast_small_maps_run_as_one_matrix_product_and_equal_the_convolution(
    size, kernel, stride, padding):
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, size, size, 3)))
  w = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (kernel, kernel, 3, 4)))
  fast = lambda x, w: _cpu_conv.fast_conv_general_dilated(
      x, w, (stride, stride), ((padding, padding),) * 2, dimension_numbers=_NHWC)
  xla = lambda x, w: jax.lax.conv_general_dilated(
      x, w, (stride, stride), ((padding, padding),) * 2, dimension_numbers=_NHWC)
  np.testing.assert_allclose(np.asarray(jax.jit(fast)(x, w)), _loop_conv(x, w, stride, padding),
                             rtol=1e-5, atol=1e-5)
  out = (size + 2 * padding - kernel) // stride + 1
  small = out < kernel
  hlo = jax.jit(fast).lower(x, w).compile().as_text()
  assert ("convolution(" not in hlo) == small, hlo

  # Reverse mode and vmap as for XLA's convolution; forward mode only where no custom VJP is
  # involved (the im2col form of small maps).
  loss = lambda conv: (lambda x, w: jnp.sum(jnp.sin(conv(x, w))))
  for got, want in zip(jax.jit(jax.grad(loss(fast), (0, 1)))(x, w),
                       jax.grad(loss(xla), (0, 1))(x, w)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-4)
  xs, ws = np.stack([x, 2 * x]), np.stack([w, -w])
  np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(fast))(xs, ws)),
                             np.asarray(jax.vmap(xla)(xs, ws)), rtol=1e-4, atol=1e-4)
  tangents = (np.ones_like(x), np.ones_like(w))
  if small:
    np.testing.assert_allclose(np.asarray(jax.jvp(fast, (x, w), tangents)[1]),
                               np.asarray(jax.jvp(xla, (x, w), tangents)[1]),
                               rtol=1e-4, atol=1e-4)
  else:
    with pytest.raises(TypeError, match="custom_vjp"):
      jax.jvp(fast, (x, w), tangents)


class _OneConv(nn.Module):
  """One zoo convolution (`_common.conv`): 3x3, padding 1, 4 output channels."""
  cpu_conv: str

  @nn.compact
  def __call__(self, x):
    return _common.conv(x, 4, 3, padding=1, dtype=jnp.float32, cpu_conv=self.cpu_conv)


def test_xla_choice_keeps_xlas_convolution_on_small_maps():
  """On CPU, a 2x2 map under a 3x3 kernel: "xla" compiles XLA's convolution and no matrix
  product, "fast" the im2col product and no convolution; both equal the loop reference, and
  under "xla" forward mode works."""
  x = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (2, 2, 2, 3)))
  variables = _OneConv("xla").init(jax.random.PRNGKey(1), x)
  w = np.asarray(variables["params"]["Conv_0"]["kernel"])
  for cpu_conv, has_conv in (("xla", True), ("fast", False)):
    apply = jax.jit(_OneConv(cpu_conv).apply)
    hlo = apply.lower(variables, x).compile().as_text()
    assert ("convolution(" in hlo) == has_conv and (" dot(" in hlo) != has_conv, hlo
    np.testing.assert_allclose(np.asarray(apply(variables, x)), _loop_conv(x, w, 1, 1),
                               rtol=1e-5, atol=1e-5)
  tangent = jax.tree_util.tree_map(np.ones_like, variables)
  jvp = jax.jvp(lambda v: _OneConv("xla").apply(v, x), (variables,), (tangent,))[1]
  np.testing.assert_allclose(np.asarray(jvp), _loop_conv(x, np.ones_like(w), 1, 1),
                             rtol=1e-5, atol=1e-5)


def test_taps_kernel_gradient_accumulates_in_float64_for_float64_inputs():
  """The float64 verification mode: the per-tap kernel gradient sums in float64, matching the
  definition dW[i, j] = sum x_pad[n, s*h + i, s*w + j, :]^T g[n, h, w, :] in numpy float64 to
  1e-12 (a float32 accumulation is off by about 1e-6 on these sums of 2 * 7 * 7 terms)."""
  rng = np.random.default_rng(0)
  x, g = rng.normal(size=(2, 9, 9, 3)), rng.normal(size=(2, 7, 7, 5))
  want = np.stack([np.stack([np.einsum("nhwc,nhwk->ck", x[:, i:i + 7, j:j + 7], g)
                             for j in range(3)]) for i in range(3)])
  with jax.enable_x64(True):
    got = _cpu_conv.kernel_grad_taps(jnp.asarray(x), jnp.asarray(g), (3, 3, 3, 5), (1, 1),
                                     ((0, 0), (0, 0)))
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)
    # Through the custom VJP of a float64 convolution as the models call it.
    dw = jax.grad(lambda w: jnp.vdot(g, _cpu_conv.fast_conv_general_dilated(
        jnp.asarray(x), w, (1, 1), ((0, 0), (0, 0)), dimension_numbers=_NHWC)))(
            jnp.zeros((3, 3, 3, 5), jnp.float64))
    np.testing.assert_allclose(np.asarray(dw), want, rtol=1e-12, atol=1e-12)

"""Tests of jaxkd.models: the registry contract, parameter counts, output shapes.

Reference parameter counts are those of the original PyTorch definitions at 100
classes on 3-channel input (counted with ``sum(p.numel() for p in net.parameters())``
on Tf-KD ``model/*.py``, RepDistiller ``models/*.py`` and PS-KD
``models/preact_resnet.py``); the small nets are counted by hand below.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxkd.models as models

# small_cnn, widths (32, 64, 128): stem 3*9*32 + BN 64; block 32->32: 2*9*32*32 + 2 BN;
# block 32->64: 9*32*64 + 9*64*64 + 2 BN + 1x1 projection 32*64 + BN; block 64->128
# likewise; head 128*100 + 100.
_SMALL_CNN = ((27 * 32 + 64) + (2 * 9 * 32 * 32 + 2 * 64)
              + (9 * 32 * 64 + 9 * 64 * 64 + 2 * 128 + 32 * 64 + 128)
              + (9 * 64 * 128 + 9 * 128 * 128 + 2 * 256 + 64 * 128 + 256) + 128 * 100 + 100)
# mlp, hidden (128, 128), on a flattened 32x32x3 image.
_MLP = (3072 * 128 + 128) + (128 * 128 + 128) + (128 * 100 + 100)

PARAM_COUNTS = {
    "small_cnn": _SMALL_CNN,
    "mlp": _MLP,
    # Tf-KD model/*.py (CIFAR variants).
    "resnet18": 11_220_132,
    "resnet50": 23_705_252,
    "mobilenetv2": 2_369_380,
    "shufflenetv2": 1_360_896,
    "googlenet": 6_258_500,
    "densenet121": 7_048_548,
    "resnext29_8x64d": 34_518_948,
    # RepDistiller models/*.py.
    "resnet8": 83_892,
    "resnet14": 181_108,
    "resnet20": 278_324,
    "resnet32": 472_756,
    "resnet44": 667_188,
    "resnet56": 861_620,
    "resnet110": 1_736_564,
    "resnet8x4": 1_233_540,
    "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916,
    "wrn_16_2": 703_284,
    "wrn_40_1": 569_780,
    "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028,
    "vgg13": 9_462_180,
    "shufflev1": 949_258,
    "shufflev2": 1_355_528,
    "mobilenetv2_half": 812_836,
    # PS-KD models/preact_resnet.py CIFAR_ResNet18_preActBasic.
    "preact_resnet18": 11_217_444,
}
# torchvision's ImageNet networks at 1000 classes: torchvision's documented parameter counts
# (``torchvision.models.<name>(weights=...).meta["num_params"]``, which equal
# ``sum(p.numel() for p in net.parameters())``).
IMAGENET_PARAM_COUNTS = {
    "resnet18_imagenet": 11_689_512,
    "resnet34_imagenet": 21_797_672,
    "resnet50_imagenet": 25_557_032,
    "resnet101_imagenet": 44_549_160,
    "resnet152_imagenet": 60_192_808,
    "wide_resnet50_2_imagenet": 68_883_240,
    "resnext50_32x4d_imagenet": 25_028_904,
    "resnext101_32x8d_imagenet": 88_791_336,
    "mobilenet_v2_imagenet": 3_504_872,
    "densenet121_imagenet": 7_978_856,
}
# ReActNet-18's two stages at 1000 classes (same variables; tests/test_reactnet.py derives the
# count from the layout). They need inputs of 32x32 or more, so the CIFAR-sized tests skip them.
BINARY_PARAM_COUNTS = {
    "reactnet18_stage1_imagenet": 11_704_424,
    "reactnet18_imagenet": 11_704_424,
}
_OUTPUT_KEYS = {"logits", "features", "feature_map", "dense_logits"}


@functools.lru_cache(maxsize=None)
def _abstract(name):
  """Shapes of the variables and outputs at 100 classes on a 2x32x32x3 batch,
  traced with jax.eval_shape: no parameter is materialised, nothing runs."""
  model = models.get(name, num_classes=100)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  return variables, out


def _count(tree):
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _check_outputs(out, n, k):
  assert set(out) == _OUTPUT_KEYS
  b, h, w, c = out["feature_map"].shape
  assert b == n and h >= 1 and w >= 1
  assert out["logits"].shape == (n, k)
  assert out["features"].shape == (n, c)
  assert out["dense_logits"].shape == (n, h, w, k)
  assert {v.dtype for v in out.values()} == {jnp.dtype(jnp.float32)}


def test_names_cover_the_table():
  # text: tests/test_text.py; translation: tests/test_translation_model.py
  images = {n for n in models.names() if not (models.is_text(n) or models.is_translation(n))}
  assert images == set(PARAM_COUNTS) | set(IMAGENET_PARAM_COUNTS) | set(BINARY_PARAM_COUNTS)
  assert models.torchvision_names() == tuple(sorted(IMAGENET_PARAM_COUNTS))


@pytest.mark.parametrize("name", sorted(IMAGENET_PARAM_COUNTS))
@pytest.mark.slow
def test_imagenet_parameter_count_equals_torchvisions(name):
  # Counts do not depend on the input size; 64x64 leaves every map >= 2x2. Only params
  # count (torchvision's excludes the BatchNorm running statistics).
  model = models.get(name, num_classes=1000)
  x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
  assert _count(variables["params"]) == IMAGENET_PARAM_COUNTS[name]
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("name", sorted(BINARY_PARAM_COUNTS))
def test_binary_parameter_count_and_outputs(name):
  model = models.get(name, num_classes=1000)
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
  assert _count(variables["params"]) == BINARY_PARAM_COUNTS[name]
  _check_outputs(jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x),
                 2, 1000)


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
@pytest.mark.slow
def test_parameter_count_matches_original(name):
  variables, _ = _abstract(name)
  assert _count(variables["params"]) == PARAM_COUNTS[name]
  assert ("batch_stats" in variables) == (name != "mlp")


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_output_shapes_on_cifar_batch(name):
  _, out = _abstract(name)
  _check_outputs(out, 2, 100)


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
@pytest.mark.slow
def test_bfloat16_on_digit_sized_input(name):
  # The default data is 8x8 digits: every net must reach a (>= 1x1) final map. The
  # float32 variables plug into the bfloat16 model unchanged (params stay float32)
  # and the outputs come back float32. Conv weights do not depend on the image size;
  # the MLP's first layer does. cpu_conv="fast": the CPU forms trace in bfloat16 too, im2col
  # included (8x8 inputs leave last maps smaller than the kernels).
  model = models.get(name, num_classes=100, dtype=jnp.bfloat16, cpu_conv="fast")
  x = jax.ShapeDtypeStruct((3, 8, 8, 3), jnp.float32)
  variables = _abstract(name)[0] if name != "mlp" else jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
  _check_outputs(out, 3, 100)


@pytest.mark.parametrize("name, shape", [
    ("small_cnn", (2, 8, 8, 1)), ("small_cnn", (2, 28, 28, 1)), ("small_cnn", (2, 32, 32, 3)),
    ("mlp", (2, 8, 8, 1)), ("resnet8", (2, 8, 8, 1)), ("resnet8", (2, 32, 32, 3)),
    ("wrn_16_1", (2, 32, 32, 3)),
])
@pytest.mark.slow
def test_forward_dense_logits_average_to_logits(name, shape):
  # Every head is linear after global average pooling, so the mean over positions of
  # the per-position logits equals the logits, and the features are the mean of the
  # feature map (up to float32 rounding).
  model = models.get(name, num_classes=7)
  x = jax.random.normal(jax.random.PRNGKey(1), shape)
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
  _check_outputs(out, shape[0], 7)
  assert np.isfinite(np.asarray(out["logits"])).all()
  assert np.abs(np.asarray(out["logits"])).max() > 1e-3
  np.testing.assert_allclose(out["dense_logits"].mean(axis=(1, 2)), out["logits"],
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(
      out["features"], out["feature_map"].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_bfloat16_model_gives_float32_outputs_and_params():
  model = models.get("small_cnn", num_classes=10, dtype=jnp.bfloat16)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  out = model.apply(variables, x, train=False)
  assert {v.dtype for v in out.values()} == {jnp.dtype(jnp.float32)}
  ref = models.get("small_cnn", num_classes=10).apply(variables, x, train=False)
  # bfloat16 keeps ~3 significant digits: same logits to that precision.
  np.testing.assert_allclose(out["logits"], ref["logits"], atol=0.05 * float(
      np.abs(ref["logits"]).max()) + 1e-3)


@pytest.mark.slow
def test_train_mode_updates_batch_stats_with_torch_momentum():
  model = models.get("small_cnn", num_classes=10)
  x = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
  variables = model.init(jax.random.PRNGKey(0), x, train=False)
  out, new = model.apply(variables, x, train=True, mutable=["batch_stats"])
  # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch statistic, from
  # running mean 0 and variance 1; the first BatchNorm sees the stem conv (no bias).
  conv_out = jax.lax.conv_general_dilated(
      x, variables["params"]["Conv_0"]["kernel"], (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  stats = new["batch_stats"]["BatchNorm_0"]
  np.testing.assert_allclose(stats["mean"], 0.1 * conv_out.mean(axis=(0, 1, 2)),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * conv_out.var(axis=(0, 1, 2)),
                             rtol=1e-4)
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)),
                         variables["batch_stats"], new["batch_stats"])
  assert all(jax.tree.leaves(changed))
  eval_out = model.apply(variables, x, train=False)
  assert not np.allclose(out["logits"], eval_out["logits"])


@pytest.mark.slow
def test_googlenet_dropout_only_in_training_with_a_dropout_rng():
  # Traced only (a GoogLeNet forward is too slow for CI): dropout draws random bits
  # exactly when train=True and a "dropout" rng is given.
  model = models.get("googlenet", num_classes=100)
  variables, _ = _abstract("googlenet")
  x = jnp.zeros((2, 8, 8, 3))

  def draws_random_bits(train, rngs):
    jaxpr = jax.make_jaxpr(lambda v: model.apply(
        v, x, train=train, mutable=["batch_stats"], rngs=rngs))(variables)
    return "random_bits" in str(jaxpr)

  key = jax.random.PRNGKey(0)
  assert draws_random_bits(True, {"dropout": key})
  assert not draws_random_bits(True, {})
  assert not draws_random_bits(False, {"dropout": key})


def test_channel_shuffle_matches_the_nchw_view_transpose():
  from jaxkd.models._common import channel_shuffle
  # torch: x.view(N, g, C/g, H, W).transpose(1, 2): with C=6, g=2 output channel
  # j*g + i is input channel i*(C/g) + j, i.e. the order 0, 3, 1, 4, 2, 5.
  x = jnp.arange(6.0).reshape(1, 1, 1, 6)
  np.testing.assert_array_equal(channel_shuffle(x, 2)[0, 0, 0], [0, 3, 1, 4, 2, 5])
  np.testing.assert_array_equal(channel_shuffle(x, 3)[0, 0, 0], [0, 2, 4, 1, 3, 5])


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="resnet9000", num_classes=10), "resnet9000.*allowed: .*small_cnn"),
    (dict(name="small_cnn", num_classes=0), "num_classes=0"),
    (dict(name="small_cnn", num_classes=10, dtype=jnp.int32), "dtype"),
    (dict(name="small_cnn", num_classes=10, cpu_conv="taps"),
     r"cpu_conv='taps' is not allowed; allowed: xla, fast"),
])
def test_get_rejects_bad_input(kwargs, match):
  with pytest.raises(ValueError, match=match):
    models.get(kwargs.pop("name"), **kwargs)


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_get_passes_the_cpu_conv_choice(name):
  assert models.get(name, num_classes=10).cpu_conv == "xla"
  assert models.get(name, num_classes=10, cpu_conv="fast").cpu_conv == "fast"


def test_conv_model_rejects_flat_input():
  model = models.get("small_cnn", num_classes=10)
  with pytest.raises(ValueError, match="NHWC"):
    model.init(jax.random.PRNGKey(0), jnp.zeros((2, 64)), train=False)


@pytest.mark.slow
def test_float64_model_keeps_parameters_statistics_and_outputs_in_float64():
  """``dtype=float64`` (under JAX's x64 switch): float64 variables, BatchNorm statistics reduced
  in float64 (to 1e-12 of numpy's float64 mean and variance of the stem convolution, where a
  float32 reduction is off by about 1e-7), and float64 outputs equal to the float32 model's to
  float32 rounding. ReActNet and the translation models keep float32 parameters: refused."""
  with jax.enable_x64(True):
    model = models.get("small_cnn", num_classes=10, dtype=jnp.float64, cpu_conv="fast")
    x = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1), jnp.float64)
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float64)}
    out, new = model.apply(variables, x, train=True, mutable=["batch_stats"])
    assert {v.dtype for v in out.values()} == {jnp.dtype(jnp.float64)}
    conv_out = np.asarray(jax.lax.conv_general_dilated(
        x, variables["params"]["Conv_0"]["kernel"], (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC")))
    stats = new["batch_stats"]["BatchNorm_0"]
    assert stats["mean"].dtype == jnp.float64
    np.testing.assert_allclose(stats["mean"], 0.1 * conv_out.mean(axis=(0, 1, 2)),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * conv_out.var(axis=(0, 1, 2)),
                               rtol=1e-12)
    ref = models.get("small_cnn", num_classes=10).apply(
        jax.tree.map(lambda v: v.astype(jnp.float32), variables), x.astype(jnp.float32))
    np.testing.assert_allclose(model.apply(variables, x)["logits"], ref["logits"],
                               rtol=1e-4, atol=1e-5)
  for name in ("reactnet18_imagenet", "transformer_translation_tiny"):
    with pytest.raises(ValueError, match=f"dtype=float64 is not allowed for model '{name}'"):
      models.get(name, num_classes=10, dtype="float64", vocab_size=20 if "trans" in name
                 else None)
  with pytest.raises(ValueError, match="allowed: float32, bfloat16, float16, float64"):
    models.get("mlp", num_classes=10, dtype="int8")

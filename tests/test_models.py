"""Tests of jaxkd.models: the registry contract, parameter counts, output shapes.

Reference parameter counts are those of the original PyTorch definitions at 100
classes on 3-channel input (counted with ``sum(p.numel() for p in net.parameters())``
on Tf-KD ``model/*.py``, RepDistiller ``models/*.py`` and PS-KD
``models/preact_resnet.py``); the small nets are counted by hand below.
"""
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
}

_X32 = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)


def _abstract_init(name, num_classes=100, dtype=jnp.float32, x=_X32):
    model = models.get(name, num_classes=num_classes, dtype=dtype)
    return model, jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(x.shape, x.dtype), train=False))


def _count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def test_names_cover_the_table():
    assert set(models.names()) == set(PARAM_COUNTS)


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_count_matches_original(name):
    _, variables = _abstract_init(name)
    assert _count(variables["params"]) == PARAM_COUNTS[name]


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_output_shapes_on_cifar_batch(name):
    model, variables = _abstract_init(name)
    out = jax.eval_shape(lambda v: model.apply(v, jnp.zeros(_X32.shape), train=False),
                         variables)
    assert set(out) == {"logits", "features", "feature_map", "dense_logits"}
    n, h, w, c = out["feature_map"].shape
    assert out["logits"].shape == (2, 100)
    assert out["features"].shape == (2, c) and n == 2
    assert out["dense_logits"].shape == (2, h, w, 100)
    assert all(v.dtype == jnp.float32 for v in out.values())


@pytest.mark.parametrize("shape", [(3, 8, 8, 1), (3, 28, 28, 1)])
@pytest.mark.parametrize("name", ["small_cnn", "mlp"])
def test_small_models_run_on_small_inputs(name, shape):
    model = models.get(name, num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    out = model.apply(variables, x, train=False)
    assert out["logits"].shape == (3, 10)
    assert np.isfinite(np.asarray(out["logits"])).all()


@pytest.mark.parametrize("name", ["small_cnn", "mlp"])
def test_dense_logits_average_to_logits(name):
    # The heads are linear after global average pooling, so the mean over positions
    # of the per-position logits equals the logits (up to float32 rounding).
    model = models.get(name, num_classes=7)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x)
    np.testing.assert_allclose(out["dense_logits"].mean(axis=(1, 2)), out["logits"],
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        out["features"], out["feature_map"].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


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


def test_train_mode_updates_batch_stats_and_uses_batch_statistics():
    model = models.get("small_cnn", num_classes=10)
    x = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8, 1))
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    out, new = model.apply(variables, x, train=True, mutable=["batch_stats"])
    old_mean = variables["batch_stats"]["BatchNorm_0"]["mean"]
    new_mean = new["batch_stats"]["BatchNorm_0"]["mean"]
    # PyTorch momentum 0.1: running = 0.9 * running + 0.1 * batch mean (running starts 0).
    conv_out = jax.lax.conv_general_dilated(
        x, variables["params"]["Conv_0"]["kernel"], (1, 1), ((1, 1), (1, 1)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    np.testing.assert_allclose(new_mean, 0.1 * conv_out.mean(axis=(0, 1, 2)),
                               rtol=1e-4, atol=1e-6)
    assert np.all(old_mean == 0)
    eval_out = model.apply(variables, x, train=False)
    assert not np.allclose(out["logits"], eval_out["logits"])


def test_mlp_has_no_batch_stats():
    variables = models.get("mlp", num_classes=3).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)
    assert set(variables) == {"params"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="resnet9000", num_classes=10), "resnet9000.*allowed: .*small_cnn"),
    (dict(name="small_cnn", num_classes=0), "num_classes=0"),
    (dict(name="small_cnn", num_classes=10, dtype=jnp.int32), "dtype"),
])
def test_get_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.get(kwargs.pop("name"), **kwargs)


def test_conv_model_rejects_flat_input():
    model = models.get("small_cnn", num_classes=10)
    with pytest.raises(ValueError, match="NHWC"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((2, 64)), train=False)

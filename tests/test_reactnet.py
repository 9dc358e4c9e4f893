"""ReActNet-18: binary forward values, the ApproxSign and weight STE gradients, the parameter
count, and both training stages on a small batch."""
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxkd import models
from jaxkd.models import _reactnet


def _approx_sign_grad(x):
  """Bi-Real Net's ApproxSign derivative, written out piece by piece."""
  return np.where((x >= -1) & (x < 0), 2 + 2 * x, np.where((x >= 0) & (x < 1), 2 - 2 * x, 0.0))


def test_approx_sign_is_sign_forward_and_piecewise_gradient_backward():
  x = jnp.concatenate([jnp.linspace(-2.0, 2.0, 401), jnp.array([-1.0, 0.0, 1.0, -0.5, 0.5])])
  np.testing.assert_array_equal(_reactnet.approx_sign(x), np.where(np.asarray(x) >= 0, 1, -1))
  grad = jax.vmap(jax.grad(_reactnet.approx_sign))(x)
  np.testing.assert_allclose(grad, _approx_sign_grad(np.asarray(x)), atol=1e-6)
  assert grad[-2] == pytest.approx(1.0) and grad[-1] == pytest.approx(1.0)


def test_binary_weight_is_scaled_sign_with_clipped_straight_through_gradient():
  w = jax.random.normal(jax.random.PRNGKey(0), (3, 3, 4, 6)) * 1.5
  b = _reactnet.binary_weight(w)
  scale = np.mean(np.abs(np.asarray(w)), axis=(0, 1, 2))
  np.testing.assert_allclose(b, np.where(np.asarray(w) >= 0, 1, -1) * scale, rtol=1e-5)
  # d/dw sum(b * g) = g where |w| <= 1, 0 where |w| > 1 (the scale is a constant), the
  # gradient of torch.clamp(w, -1, 1) that the official HardBinaryConv passes through.
  g = jax.random.normal(jax.random.PRNGKey(1), w.shape)
  grad = jax.grad(lambda w: jnp.sum(_reactnet.binary_weight(w) * g))(w)
  np.testing.assert_allclose(grad, np.where(np.abs(np.asarray(w)) <= 1, g, 0.0))


@pytest.mark.parametrize("binary_weights", [False, True])
@pytest.mark.slow
def test_binarised_layers_forward_values(binary_weights):
  """Every binary conv sees activations in {-1, +1}; its weights are {-a_k, +a_k} per output
  channel k with a_k = mean |W_k| (stage 2), or W itself (stage 1)."""
  model = _reactnet.ReActNet(7, depths=(1, 1), binary_weights=binary_weights)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 32, 32, 3))
  variables = model.init(jax.random.PRNGKey(1), x)
  _, state = model.apply(variables, x, mutable=["intermediates"])
  blocks = state["intermediates"]
  assert set(blocks) == {"layer1_0", "layer2_0"}
  for name, block in blocks.items():
    act = np.asarray(block["activation"][0])
    assert set(np.unique(act)) == {-1.0, 1.0}, name
    w = np.asarray(block["binary_conv"]["weight"][0])
    kernel = np.asarray(variables["params"][name]["binary_conv"]["kernel"])
    if binary_weights:
      # Exactly one magnitude a_k per output channel, and a_k = mean |W_k| (up to the
      # summation order).
      magnitudes = np.abs(w).reshape(-1, w.shape[-1])
      np.testing.assert_array_equal(magnitudes, np.broadcast_to(magnitudes[0], magnitudes.shape))
      np.testing.assert_allclose(magnitudes[0], np.mean(np.abs(kernel), axis=(0, 1, 2)),
                                 rtol=1e-5)
      np.testing.assert_array_equal(np.sign(w), np.where(kernel >= 0, 1, -1))
    else:
      np.testing.assert_array_equal(w, kernel)


def _reactnet18_params(k):
  """ReActNet-18's parameter count from its layout, for 3-channel inputs and k classes."""
  count = 7 * 7 * 3 * 64 + 2 * 64  # real stem conv (no bias) and its BN
  cin = 64
  for cout in (64, 128, 256, 512):
    for j in range(4):
      count += cin + 9 * cin * cout + 2 * cout  # RSign shift, binary 3x3 conv, BN
      if cin != cout:
        count += cin * cout + 2 * cout  # avgpool + real 1x1 conv + BN shortcut
      count += 3 * cout  # RPReLU: shift, slope, shift
      cin = cout
  return count + 512 * k + k  # real fc


def test_parameter_count_and_stages_share_one_tree():
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  shapes = {}
  for name in ("reactnet18_stage1_imagenet", "reactnet18_imagenet"):
    model = models.get(name, num_classes=1000)
    shapes[name] = jax.eval_shape(lambda x, m=model: m.init(jax.random.PRNGKey(0), x), x)
  count = sum(v.size for v in jax.tree_util.tree_leaves(shapes["reactnet18_imagenet"]["params"]))
  print(f"reactnet18_imagenet: {count} parameters (layout formula: {_reactnet18_params(1000)})")
  assert count == _reactnet18_params(1000) == 11_704_424
  assert jax.tree_util.tree_structure(shapes["reactnet18_stage1_imagenet"]) == \
      jax.tree_util.tree_structure(shapes["reactnet18_imagenet"])
  assert "reactnet18_imagenet" not in models.torchvision_names()


def test_reactnet_rejects_maps_too_small_to_halve():
  with pytest.raises(ValueError, match="at least 32x32"):
    models.get("reactnet18_imagenet", num_classes=3).init(jax.random.PRNGKey(0),
                                                          jnp.zeros((1, 8, 8, 3)))


def _train(model, variables, x, y, steps, lr=2e-3):
  tx = optax.adam(lr)
  params, stats = variables["params"], variables["batch_stats"]
  opt = tx.init(params)

  @jax.jit
  def step(params, stats, opt):
    def loss_fn(params):
      out, new = model.apply({"params": params, "batch_stats": stats}, x, train=True,
                             mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(out["logits"], y).mean(), new

    (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), new["batch_stats"], opt, loss

  losses = []
  for _ in range(steps):
    params, stats, opt, loss = step(params, stats, opt)
    losses.append(float(loss))
  return {"params": params, "batch_stats": stats}, losses


@pytest.mark.slow
def test_two_stages_train_on_a_small_batch():
  """Stage 1 (real weights) starts fitting 16 random 32x32 images; stage 2 (binary weights) starts from
  stage 1's variables and keeps lowering the loss."""
  start = time.time()
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 32, 32, 3))
  y = jnp.arange(16) % 10
  stage1 = _reactnet.ReActNet(10, depths=(1, 1, 1, 1), binary_weights=False)
  variables = stage1.init(jax.random.PRNGKey(1), x)
  variables, losses1 = _train(stage1, variables, x, y, 3, lr=1e-3)
  assert all(np.isfinite(losses1))
  assert min(losses1[-3:]) < 0.7 * losses1[0]
  stage2 = _reactnet.ReActNet(10, depths=(1, 1, 1, 1), binary_weights=True)
  _, losses2 = _train(stage2, variables, x, y, 12)
  assert all(np.isfinite(losses2))
  assert min(losses2[-3:]) < 0.7 * losses2[0]
  print(f"stage 1 loss {losses1[0]:.3f} -> {losses1[-1]:.3f}, stage 2 {losses2[0]:.3f} -> "
        f"{losses2[-1]:.3f} ({time.time() - start:.1f} s)")


def test_conv_kernels_only_weight_decay_and_linear_schedule():
  """``decay_params="conv_kernels"`` (ReActNet's official Adam groups): only the 4-D kernels
  decay; ``schedule="linear"`` reaches 0 at the last step."""
  from jaxkd.config import defaults  # pylint: disable=import-outside-toplevel
  from jaxkd.train import run as run_lib  # pylint: disable=import-outside-toplevel
  opt = defaults.get_config().train.optimizer
  opt.name, opt.learning_rate, opt.weight_decay, opt.warmup_epochs = "adam", 1.0, 0.5, 0.0
  opt.schedule, opt.decay_params = "linear", "conv_kernels"
  schedule = run_lib.make_schedule(opt, steps_per_epoch=10, total_steps=100)
  assert (float(schedule(0)), float(schedule(50)), float(schedule(100))) == (1.0, 0.5, 0.0)
  params = {"kernel": jnp.ones((3, 3, 2, 2)), "dense": jnp.ones((4, 2)), "bias": jnp.ones(2)}
  tx = run_lib.make_optimizer(opt, steps_per_epoch=10, total_steps=100)
  zero = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  assert float(jnp.abs(updates["kernel"]).min()) > 0  # decay term 0.5 w, through Adam
  assert float(jnp.abs(updates["dense"]).max()) == float(jnp.abs(updates["bias"]).max()) == 0
  opt.decay_params = "some"
  with pytest.raises(run_lib.ConfigError, match="decay_params='some'.*allowed: all, conv_kernels"):
    run_lib.make_optimizer(opt, steps_per_epoch=10, total_steps=100)

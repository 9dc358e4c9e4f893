"""The jitted train step: MrKD snapshots stay on the device, no retrace, 1 vs 8 devices."""
import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import default as default_config  # noqa: E402

from jaxkd.train import loop, packed, setup, state as state_lib, step as step_lib  # noqa: E402


def _config(method="mrkd", devices=1, batch=16, **method_hparams):
  config = default_config.get_config()
  config.method.name = method
  with config.method.unlocked():
    config.method.update(method_hparams)
  config.mesh.data = devices
  config.train.batch_size = batch
  config.train.num_steps = 5
  config.train.optimizer.warmup_epochs = 0.0
  return config


def _build(config):
  run = setup.resolve(config)
  optimizer = setup.make_optimizer(config.train.optimizer, steps_per_epoch=run.steps_per_epoch,
                                   total_steps=run.total_steps)
  aug = loop._augment(config, run.train_data)
  steps = step_lib.make_steps(model=run.model, objective=run.objective, optimizer=optimizer,
                              aug=aug, mesh=run.mesh,
                              conv_kernel_grad=config.model.kernel_grad)
  state = loop.init_state(run, optimizer, aug)
  data = {k: loop.replicate(run.mesh, getattr(run.train_data, k)) for k in ("images", "labels")}
  order = [loop.shard_batch(run.mesh, row) for row in np.asarray(
      __import__("jaxkd.data", fromlist=["x"]).batch_indices(
          run.train_data.num_examples, config.train.batch_size, seed=0, epoch=0))[:8]]
  return run, steps, state, data, order


def test_mrkd_refresh_stays_on_device_and_snapshots_current_params():
  _, steps, state, data, order = _build(_config(refresh_every=2))
  assert int(state.replay.refreshes) == 0
  with jax.transfer_guard("disallow"):
    state, _ = steps.train(state, data, order[0], None, None)
    state, _ = steps.train(state, data, order[1], None, None)  # step 2: refresh
    snapshot = jax.tree_util.tree_map(lambda x: x.copy(), state.params)
    state, metrics = steps.train(state, data, order[2], None, None)
    metrics["loss"].block_until_ready()
  assert int(state.replay.refreshes) == 1
  ring_first = jax.tree_util.tree_map(lambda x: x[0], state.replay.params)
  for ring_leaf, snap_leaf, live_leaf in zip(jax.tree_util.tree_leaves(ring_first),
                                             jax.tree_util.tree_leaves(snapshot),
                                             jax.tree_util.tree_leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(ring_leaf), np.asarray(snap_leaf))
  moved = [not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(ring_first), jax.tree_util.tree_leaves(state.params))]
  assert any(moved), "step 3 must train past the snapshot taken at step 2"


def test_mrkd_step_compiles_once_across_refreshes():
  _, steps, state, data, order = _build(_config(refresh_every=2, num_backups=2))
  for i in range(7):
    state, metrics = steps.train(state, data, order[i], None, None)
    metrics["loss"].block_until_ready()
  assert int(state.replay.refreshes) == 3
  assert steps.train._cache_size() == 1


def _train_params(config, steps_to_run=5):
  _, steps, state, data, order = _build(config)
  for i in range(steps_to_run):
    state, metrics = steps.train(state, data, order[i], None, None)
    metrics["loss"].block_until_ready()
  return jax.device_get(state.params), jax.device_get(state.replay.params)


@pytest.mark.parametrize("method", ["mrkd"])
def test_one_device_equals_eight_devices(method):
  """Same parameters after 5 MrKD steps on 1 and 8 devices, up to float rounding.

  ReLU's derivative jumps at 0, so a pre-activation within rounding of 0 lets the two runs
  take different subgradients, which later steps amplify: seed 0 meets one at step 2 (a
  last-block pre-activation of 6e-7) and ends 1e-4 apart. Seed 2 meets none and ends 2e-8
  apart; a sharding error (statistics or gradients summed over a shard, not the batch)
  moves the parameters by far more than the 1e-5 asserted.
  """
  assert len(jax.devices()) >= 8, "conftest.py sets 8 simulated CPU devices"
  runs = []
  for devices in (1, 8):
    config = _config(method, devices=devices, batch=32, refresh_every=2)
    config.seed = 2
    runs.append(_train_params(config))
  assert_relative_close(*runs, 1e-5)


def test_taps_kernel_gradient_trains_like_xla():
  """model.kernel_grad=taps changes only the rounding of the convolution kernel gradients."""
  xla = _train_params(_config(refresh_every=2))
  config = _config(refresh_every=2)
  config.model.kernel_grad = "taps"
  taps = _train_params(config)
  assert_relative_close(xla, taps, 1e-5)


def assert_relative_close(expected, actual, tol):
  """||actual - expected|| <= tol ||expected|| over the whole pytree, and elementwise to 10 tol.

  Sharding changes the order of the batch reductions (float32 sums), so the parameters differ
  by rounding only; per-leaf relative error is not meaningful for near-zero BatchNorm biases.
  """
  a = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(expected)])
  b = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(actual)])
  assert a.shape == b.shape
  assert np.linalg.norm(b - a) <= tol * np.linalg.norm(a), np.linalg.norm(b - a) / np.linalg.norm(a)
  np.testing.assert_allclose(b, a, rtol=0, atol=10 * tol * np.abs(a).max())


def test_replay_ring_is_fifo():
  params = {"w": np.zeros(2, np.float32)}
  ring = state_lib.init_replay(params, {}, num_backups=2, start_from_init=False)
  for value in (1.0, 2.0, 3.0):
    ring = state_lib.refresh_replay(ring, {"w": np.full(2, value, np.float32)}, {}, True)
  ring = state_lib.refresh_replay(ring, {"w": np.full(2, 9.0, np.float32)}, {}, False)
  np.testing.assert_array_equal(ring.params["w"][:, 0], [3.0, 2.0])  # slot 0 overwritten
  np.testing.assert_array_equal(ring.filled(), [True, True])
  assert int(ring.refreshes) == 3


@pytest.mark.parametrize("train_mode", [False, True])
def test_replay_logits_are_each_backups_own_forward(train_mode):
  """Three different backups (one forward each on CPU, a vmap elsewhere) and an empty ring."""
  from jaxkd import models
  model = models.get("small_cnn", num_classes=10)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
  backups = [model.init(jax.random.PRNGKey(seed), x) for seed in (1, 2, 3)]
  ring = state_lib.ReplayRing(params=packed.stack([b["params"] for b in backups]),
                              batch_stats=packed.stack([b["batch_stats"] for b in backups]),
                              refreshes=np.int32(3))
  logits = jax.jit(lambda ring: step_lib._replay_logits(model, ring, x, train_mode=train_mode))
  got = np.asarray(logits(ring))
  for i, variables in enumerate(backups):
    out = model.apply(variables, x, train=train_mode, mutable=["batch_stats"] if train_mode
                      else False)
    want = (out[0] if train_mode else out)["logits"]
    np.testing.assert_allclose(got[i], np.asarray(want), rtol=1e-5, atol=1e-5)
  assert np.abs(got[0] - got[1]).max() > 1e-3
  np.testing.assert_array_equal(np.asarray(logits(ring.replace(refreshes=np.int32(0)))), 0.0)

"""The jitted train step: MrKD snapshots stay on the device, no retrace, 1 vs 8 devices."""
import jax
import numpy as np
import pytest

from jaxkd import teachers, train
from jaxkd.config import defaults
from jaxkd.train import packed
from references import assert_relative_close


def _config(method="mrkd", devices=1, batch=16, model="mlp", **method_hparams):
  """A 5-step run of ``method`` on the digits; the MLP (compiles in about a second) unless a
  test needs BatchNorm or convolutions (``model="small_cnn"``)."""
  config = defaults.base_config()
  config.method.name = method
  config.model.name = model
  with config.method.unlocked():
    config.method.update(method_hparams)
  config.mesh.data = devices
  config.train.batch_size = batch
  config.train.num_steps = 5
  config.train.optimizer.warmup_epochs = 0.0
  return config


def _build(config):
  trainer = train.build(config)
  batches = trainer.batches()
  return trainer.steps, trainer.init_state(), trainer.consts, [batches.get(i) for i in range(8)]


@pytest.mark.slow
def test_mrkd_refresh_stays_on_device_and_snapshots_current_params():
  steps, state, consts, order = _build(_config(refresh_every=2))
  assert int(state.teacher.state.refreshes) == 0
  with jax.transfer_guard("disallow"):
    state, _ = steps.train(state, consts, order[0])
    state, _ = steps.train(state, consts, order[1])  # step 2: refresh
    snapshot = jax.tree_util.tree_map(lambda x: x.copy(), state.params)
    state, metrics = steps.train(state, consts, order[2])
    metrics["loss"].block_until_ready()
  assert int(state.teacher.state.refreshes) == 1
  ring_first = jax.tree_util.tree_map(lambda x: x[0], state.teacher.state.params)
  for ring_leaf, snap_leaf, live_leaf in zip(jax.tree_util.tree_leaves(ring_first),
                                             jax.tree_util.tree_leaves(snapshot),
                                             jax.tree_util.tree_leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(ring_leaf), np.asarray(snap_leaf))
  moved = [not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(ring_first), jax.tree_util.tree_leaves(state.params))]
  assert any(moved), "step 3 must train past the snapshot taken at step 2"


def test_mrkd_step_compiles_once_across_refreshes():
  steps, state, consts, order = _build(_config(refresh_every=2, num_backups=2))
  for i in range(7):
    state, metrics = steps.train(state, consts, order[i])
    metrics["loss"].block_until_ready()
  assert int(state.teacher.state.refreshes) == 3
  assert steps.train._cache_size() == 1


def _train_params(config, steps_to_run=5):
  with train.precision(config):
    steps, state, consts, order = _build(config)
    for i in range(steps_to_run):
      state, metrics = steps.train(state, consts, order[i])
      metrics["loss"].block_until_ready()
    return jax.device_get(state.params), jax.device_get(state.teacher.state.params)


def _relative_gap(a, b) -> float:
  """``|b - a| / |a|`` over every leaf of two trees, flattened into one vector each."""
  a, b = (np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(t)]) for t in (a, b))
  return float(np.linalg.norm(b - a) / np.linalg.norm(a))


@pytest.mark.slow
def test_one_device_equals_eight_devices():
  """Same parameters and MrKD ring after 5 steps (a refresh at 2 and 4) on 1 and 8 devices, in
  float64 (`model.dtype`) to 1e-9.

  In float32 the two orders of the batch sums differ by rounding, and a ReLU pre-activation
  within rounding of 0 takes different subgradients in the two runs, which later steps amplify
  to about 3e-4 (seen at step 1 or 2 for seed 0 or 2, depending on the CPU). In float64 the
  orders differ by about 1e-16, no unit sits that close to its kink, and the runs agree to
  rounding; a sharding error (statistics or gradients summed over a shard, not the batch)
  moves the parameters by far more (checked: a per-shard BatchNorm gives 1e-2).
  """
  assert len(jax.devices()) >= 8, "conftest.py sets 8 simulated CPU devices"
  runs = []
  for devices in (1, 8):
    config = _config("mrkd", devices=devices, batch=32, model="small_cnn", refresh_every=2)
    config.model.dtype = "float64"
    runs.append(_train_params(config))
  assert all(x.dtype == np.float64 for x in jax.tree_util.tree_leaves(runs))
  gap = _relative_gap(*runs)
  print(f"1 vs 8 devices, float64, relative gap {gap:.1e}")
  assert gap <= 1e-9, gap


@pytest.mark.slow
def test_fast_cpu_convolutions_train_like_xla():
  """model.cpu_conv=fast (im2col small maps, per-tap kernel gradients) changes only rounding."""
  config = _config(model="small_cnn", refresh_every=2)
  config.model.cpu_conv = "xla"
  xla = _train_params(config)
  config.model.cpu_conv = "fast"
  fast = _train_params(config)
  assert_relative_close(xla, fast, 1e-5)


def test_replay_ring_is_fifo():
  params = {"w": np.zeros(2, np.float32)}
  ring = teachers.init_ring(params, {}, num_backups=2, start_from_init=False)
  for value in (1.0, 2.0, 3.0):
    ring = teachers.refresh_ring(ring, {"w": np.full(2, value, np.float32)}, {}, True)
  ring = teachers.refresh_ring(ring, {"w": np.full(2, 9.0, np.float32)}, {}, False)
  np.testing.assert_array_equal(ring.params["w"][:, 0], [3.0, 2.0])  # slot 0 overwritten
  np.testing.assert_array_equal(ring.filled(), [True, True])
  assert int(ring.refreshes) == 3


@pytest.mark.parametrize("train_mode", [False, True])
@pytest.mark.slow
def test_replay_logits_are_each_backups_own_forward(train_mode):
  """Three different backups (one forward each on CPU, a vmap elsewhere) and an empty ring."""
  from jaxkd import models
  model = models.get("small_cnn", num_classes=10)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
  backups = [model.init(jax.random.PRNGKey(seed), x) for seed in (1, 2, 3)]
  ring = teachers.ReplayRing(params=packed.stack([b["params"] for b in backups]),
                              batch_stats=packed.stack([b["batch_stats"] for b in backups]),
                              refreshes=np.int32(3))
  logits = jax.jit(lambda ring: teachers.ring_logits(model, ring, x, train_mode=train_mode))
  got = np.asarray(logits(ring))
  for i, variables in enumerate(backups):
    out = model.apply(variables, x, train=train_mode, mutable=["batch_stats"] if train_mode
                      else False)
    want = (out[0] if train_mode else out)["logits"]
    np.testing.assert_allclose(got[i], np.asarray(want), rtol=1e-5, atol=1e-5)
  assert np.abs(got[0] - got[1]).max() > 1e-3
  np.testing.assert_array_equal(np.asarray(logits(ring.replace(refreshes=np.int32(0)))), 0.0)


def _pskd_run(devices, steps_to_run=3, dtype="float64", **hparams):
  """PS-KD's state after ``steps_to_run`` steps, fetched to the host (with the table's
  shards)."""
  config = _config("pskd", devices=devices, batch=32, **hparams)
  config.model.dtype = dtype
  with train.precision(config):
    steps, state, consts, order = _build(config)
    for i in range(steps_to_run):
      state, metrics = steps.train(state, consts, order[i])
      metrics["loss"].block_until_ready()
    table = state.objective["targets"]["soft_ce"].table
    shards = [(s.index[0].start, s.data.shape) for s in table.addressable_shards]
    return jax.device_get(state), shards


@pytest.mark.slow
def test_pskd_table_rows_are_split_over_the_devices_and_match_one_device():
  """Each of 8 devices holds 1/8 of PS-KD's per-example table; the run equals one device's, in
  float64 to 1e-9 (see test_one_device_equals_eight_devices)."""
  from jaxkd import data
  n = data.load("digits", "train").num_examples
  (one, _), (eight, shards) = _pskd_run(1), _pskd_run(8)
  table = eight.objective["targets"]["soft_ce"].table
  rows = -(-n // 8) * 8  # padded to split evenly; the padding rows are never read
  assert table.shape[0] == rows and one.objective["targets"]["soft_ce"].table.shape[0] == n
  assert len(shards) == 8 and all(shape[0] == rows // 8 for _, shape in shards)
  assert len({start for start, _ in shards}) == 8  # different rows on every device
  gap = _relative_gap(one.params, eight.params)
  print(f"PS-KD 1 vs 8 devices, float64, relative gap {gap:.1e}")
  assert gap <= 1e-9, gap
  # The table is stored in method.table_dtype (float32): float64 predictions, rounded once.
  np.testing.assert_allclose(np.asarray(table)[:n],
                             np.asarray(one.objective["targets"]["soft_ce"].table),
                             rtol=1e-6, atol=1e-9)
  np.testing.assert_array_equal(np.asarray(table)[n:], 0.0)
  half, _ = _pskd_run(8, steps_to_run=1, dtype="float32", table_dtype="bfloat16")
  assert half.objective["targets"]["soft_ce"].table.dtype == np.dtype("bfloat16")


@pytest.mark.slow
def test_steps_per_dispatch_trains_like_single_steps():
  """8 steps as two `train_many` dispatches of 4 give the state and metrics of 8 `train` calls.

  On 2 devices (the stacked batches sharded over ``data``), through MrKD's refreshes (a
  `lax.cond` in the loop's body). The state bit for bit with the MLP; a model with BatchNorm
  (small_cnn, checked by hand: 1.2e-7 after 8 steps) can differ in the last float bit, since
  XLA may fuse the loop's body differently from the single step's program.
  """
  config = _config("mrkd", devices=2, refresh_every=2)
  config.train.num_steps = 8
  trainer = train.build(config)
  batches = trainer.batches()
  single = trainer.init_state()
  single_metrics = []
  for i in range(8):
    single, metrics = trainer.steps.train(single, trainer.consts, batches.get(i))
    single_metrics.append(metrics)
  many = trainer.init_state()
  many_metrics = []
  for i in (0, 4):
    many, metrics = trainer.steps.train_many(many, trainer.consts, batches.get_many(i, 4))
    many_metrics.append(metrics)
  assert trainer.steps.train_many._cache_size() == 1
  assert int(many.step) == 8
  for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(single)),
                  jax.tree_util.tree_leaves(jax.device_get(many)), strict=True):
    np.testing.assert_array_equal(a, b)
  # The metrics leave the loop as its stacked outputs, which XLA may round differently from
  # the single step's outputs (seen: one loss 1 ulp apart on 2 devices).
  stacked = jax.device_get(many_metrics)
  for key in single_metrics[0]:
    np.testing.assert_allclose(
        np.concatenate([m[key] for m in stacked]),
        np.asarray([m[key] for m in jax.device_get(single_metrics)]), rtol=1e-6, atol=1e-7)
  assert int(many.teacher.state.refreshes) == 4


def test_float64_is_checked_before_anything_is_built():
  """model.dtype=float64 needs the x64 switch (`jaxkd.train.precision`) and a model with
  float64 parameters; both refusals name the key, the value and what is allowed."""
  config = _config("ce")
  config.model.dtype = "float64"
  with pytest.raises(train.ConfigError, match=r"config\.model\.dtype='float64': needs JAX's "
                     r"x64 switch.*jaxkd\.train\.precision"):
    train.build(config)
  config.model.name = "reactnet18_imagenet"
  with train.precision(config), pytest.raises(
      train.ConfigError, match="model 'reactnet18_imagenet' has float32 parameters"):
    train.build(config)
  assert not jax.config.jax_enable_x64  # the switch is a context: off again after it
  config.model.dtype = "float16"
  with pytest.raises(train.ConfigError,
                     match=r"model\.dtype='float16': allowed: float32, bfloat16, float64"):
    train.build(config)

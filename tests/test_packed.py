"""Seed packing: S runs in one vmapped program equal S separate runs of the same step."""
import os
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import default as default_config  # noqa: E402

from jaxkd import objectives  # noqa: E402
from jaxkd.train import loop, packed, setup, step as step_lib  # noqa: E402

SEEDS = (0, 1)
STEPS = 3


def _run(method, model="mlp", **hparams):
  config = default_config.get_config()
  config.method.name = method
  config.model.name = model
  with config.method.unlocked():
    config.method.update(hparams)
  config.mesh.data = 1
  config.train.batch_size = 32
  config.train.num_steps = STEPS
  config.train.optimizer.warmup_epochs = 0.0
  run = setup.resolve(config)
  optimizer = setup.make_optimizer(config.train.optimizer, steps_per_epoch=run.steps_per_epoch,
                                   total_steps=run.total_steps)
  aug = loop._augment(config, run.train_data)
  data = {k: loop.replicate(run.mesh, getattr(run.train_data, k)) for k in ("images", "labels")}
  return run, optimizer, aug, data


def _separate(run, optimizer, aug, data, steps, seed):
  config = run.config.copy_and_resolve_references()
  config.seed = seed
  state = loop.init_state(setup.Run(**{**run.__dict__, "config": config}), optimizer, aug)
  order = packed.batch_indices(run.train_data.num_examples, run.config.train.batch_size,
                               seeds=(seed,), epoch=0)
  for i in range(STEPS):
    state, metrics = steps.train(state, data, loop.shard_batch(run.mesh, order[i, 0]), None,
                                 None)
  return jax.device_get(state), jax.device_get(metrics)


def _assert_close(packed_tree, separate_tree, index):
  for got, want in zip(jax.tree_util.tree_leaves(packed.unstack(packed_tree, index)),
                       jax.tree_util.tree_leaves(separate_tree)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-4, atol=2e-5)


# The convolutional net (BatchNorm statistics, vmapped convolutions) once; the MLP, which
# compiles in a second, for the other strategy and method.
@pytest.mark.parametrize("method,hparams,strategy,model", [
    ("mrkd", {"refresh_every": 2}, "vmap", "small_cnn"),
    ("mrkd", {"refresh_every": 2}, "unroll", "mlp"), ("ols", {}, "vmap", "mlp")])
def test_packed_seeds_equal_separate_runs(method, hparams, strategy, model):
  run, optimizer, aug, data = _run(method, model, **hparams)
  steps = step_lib.make_steps(model=run.model, objective=run.objective, optimizer=optimizer,
                              aug=aug, mesh=run.mesh)
  states = packed.init_states(run, optimizer, aug, seeds=SEEDS)
  step = packed.pack_step(steps.train_fn, mesh=run.mesh, strategy=strategy)
  rows = packed.batch_indices(run.train_data.num_examples, run.config.train.batch_size,
                              seeds=SEEDS, epoch=0)
  for i in range(STEPS):
    states, metrics = step(states, data, packed.shard_rows(run.mesh, rows[i]), None, None)
  states = jax.device_get(states)
  assert metrics["loss"].shape == (len(SEEDS),)
  for index, seed in enumerate(SEEDS):
    state, last = _separate(run, optimizer, aug, data, steps, seed)
    _assert_close(states.params, state.params, index)
    _assert_close(states.opt_state, state.opt_state, index)
    _assert_close(states.objective, state.objective, index)
    np.testing.assert_allclose(np.asarray(metrics["loss"][index]), last["loss"], rtol=2e-4)
  if method == "mrkd":  # a refresh at step 2 (not 1, 3) under the packed lax.cond
    np.testing.assert_array_equal(states.replay.refreshes, [1] * len(SEEDS))
  seeds_differ = np.abs(packed.unstack(states.params, 0)["Dense_0"]["kernel"]
                        - packed.unstack(states.params, 1)["Dense_0"]["kernel"]).max()
  assert seeds_differ > 1e-3, "every packed run must start from its own seed"


def test_packed_refresh_stays_a_conditional():
  """The shared step is unbatched, so vmap keeps MrKD's refresh a conditional, not a select."""
  run, optimizer, aug, data = _run("mrkd", refresh_every=2)
  steps = step_lib.make_steps(model=run.model, objective=run.objective, optimizer=optimizer,
                              aug=aug, mesh=run.mesh)
  states = packed.init_states(run, optimizer, aug, seeds=SEEDS)
  rows = packed.batch_indices(run.train_data.num_examples, run.config.train.batch_size,
                              seeds=SEEDS, epoch=0)
  step = packed.pack_settings_step(lambda setting: steps.train_fn, mesh=run.mesh)
  hlo = step.lower(states, {}, data, packed.shard_rows(run.mesh, rows[0]), None,
                   None).compile().as_text()
  assert " conditional(" in hlo


def test_packed_settings_equal_separate_runs():
  alphas = np.asarray([0.0, 0.9], np.float32)
  run, optimizer, aug, data = _run("mrkd", refresh_every=1, start_from_init=True)
  hparams = dict(run.objective.hparams)

  def build(setting):
    objective = objectives.get("mrkd", **{**hparams, "alpha": setting["alpha"]})
    return step_lib.make_steps(model=run.model, objective=objective, optimizer=optimizer,
                               aug=aug, mesh=run.mesh).train_fn

  states = packed.init_states(run, optimizer, aug, seeds=(0,) * len(alphas))
  step = packed.pack_settings_step(build, mesh=run.mesh)
  rows = packed.batch_indices(run.train_data.num_examples, run.config.train.batch_size,
                              seeds=(0,) * len(alphas), epoch=0)
  for i in range(STEPS):
    states, _ = step(states, {"alpha": alphas}, data, packed.shard_rows(run.mesh, rows[i]),
                     None, None)
  states = jax.device_get(states)
  for index, alpha in enumerate(alphas):
    objective = objectives.get("mrkd", **{**hparams, "alpha": float(alpha)})
    steps = step_lib.make_steps(model=run.model, objective=objective, optimizer=optimizer,
                                aug=aug, mesh=run.mesh)
    state, _ = _separate(run, optimizer, aug, data, steps, 0)
    _assert_close(states.params, state.params, index)
  spread = np.abs(packed.unstack(states.params, 0)["Dense_0"]["kernel"]
                  - packed.unstack(states.params, 1)["Dense_0"]["kernel"]).max()
  assert spread > 1e-4, "alpha must change the packed runs"


def test_bad_arguments_are_rejected():
  run, optimizer, aug, _ = _run("ce")
  with pytest.raises(ValueError, match="seeds"):
    packed.init_states(run, optimizer, aug, seeds=())
  with pytest.raises(ValueError, match="strategy='loop'.*vmap, unroll"):
    packed.pack_step(lambda *a: a, mesh=run.mesh, strategy="loop")

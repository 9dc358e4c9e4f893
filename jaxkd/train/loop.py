"""`train_and_evaluate(config, workdir)`: the training loop around the jitted steps.

The loop only feeds example indices (a few hundred int32 per step), keeping one step in flight
(it waits on the previous step's loss); images, labels, teachers and all method state stay on
the device. Its outputs are the contract of DESIGN.md: ``config.json``, ``metrics.jsonl``,
``summary.json`` and orbax ``checkpoints/`` in the workdir; a run restarted on the same workdir
resumes from the newest checkpoint and sees exactly the batches an uninterrupted run would
have seen.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from jaxkd import analysis
from jaxkd import data as data_lib
from jaxkd.train import checkpoint as ckpt_lib
from jaxkd.train import setup as setup_lib
from jaxkd.train import state as state_lib
from jaxkd.train import step as step_lib

__all__ = ["init_state", "train_and_evaluate", "maybe_initialize_distributed"]


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """Joins a multi-process run (TPU pod, multi-node GPU, CPU processes) when asked to.

  ``config.distributed=True`` or ``JAX_COORDINATOR_ADDRESS`` in the environment calls
  `jax.distributed.initialize`; ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
  ``JAX_PROCESS_ID`` are passed on when set, otherwise JAX reads the cluster's own metadata
  (TPU pods, SLURM). CPU processes talk through gloo collectives.
  """
  env = os.environ
  if not (config.distributed or env.get("JAX_COORDINATOR_ADDRESS")) or \
      jax.distributed.is_initialized():
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  number = lambda key: int(env[key]) if env.get(key) else None
  jax.distributed.initialize(env.get("JAX_COORDINATOR_ADDRESS"), number("JAX_NUM_PROCESSES"),
                             number("JAX_PROCESS_ID"))


def replicate(mesh: jax.sharding.Mesh, array: np.ndarray) -> jax.Array:
  """A host array as one replicated global array (works across processes)."""
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def shard_batch(mesh: jax.sharding.Mesh, rows: np.ndarray) -> jax.Array:
  """The global batch ``rows`` sharded over ``data``; each process feeds only its own slice."""
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  per_process = rows.shape[0] // jax.process_count()
  start = jax.process_index() * per_process
  return jax.make_array_from_process_local_data(
      sharding, rows[start:start + per_process], rows.shape)


def init_state(run: setup_lib.Run, optimizer, aug: step_lib.Augment) -> state_lib.TrainState:
  """Initial `TrainState`, created directly on the mesh (replicated)."""
  key = jax.random.PRNGKey(run.config.seed)
  init_key, state_key = jax.random.split(key)
  sample = step_lib.preprocess(None, jnp.asarray(run.train_data.images[:1]), aug)
  feature_dim = jax.eval_shape(
      lambda: run.model.apply(run.model.init(init_key, sample), sample))["features"].shape[-1]
  replay = run.objective.replay

  def init():
    variables = run.model.init(init_key, sample, train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    objective = run.objective.init(num_classes=run.train_data.num_classes,
                                   num_examples=run.train_data.num_examples,
                                   feature_dim=feature_dim)
    ring = None
    if replay is not None:
      ring = state_lib.init_replay(params, batch_stats, num_backups=replay["num_backups"],
                                   start_from_init=replay["start_from_init"])
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
        opt_state=optimizer.init(state_lib.trainable(params, objective)), objective=objective,
        replay=ring, rng=state_key)

  replicated = jax.sharding.NamedSharding(run.mesh, jax.sharding.PartitionSpec())
  return jax.jit(init, out_shardings=replicated)()


def _augment(config, dataset) -> step_lib.Augment:
  return step_lib.Augment(mean=tuple(dataset.mean), std=tuple(dataset.std),
                          crop_padding=int(config.data.crop_padding), flip=bool(config.data.flip),
                          rotation_degrees=float(config.data.rotation_degrees))


def _step_of(line: str) -> int | None:
  try:
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None


class _Logger:
  """Appends JSON lines to ``metrics.jsonl`` (process 0 only)."""

  def __init__(self, workdir: str, resume_step: int):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.active = jax.process_index() == 0
    if self.active and os.path.exists(self.path):
      # Lines past the restored checkpoint were written by the interrupted run; the resumed
      # run writes them again.
      # A line torn by a kill mid-write is dropped too.
      with open(self.path) as f:
        kept = [line for line in f if _step_of(line) is not None and _step_of(line) <= resume_step]
      with open(self.path + ".tmp", "w") as f:
        f.writelines(kept)
      os.replace(self.path + ".tmp", self.path)

  def write(self, record: dict) -> None:
    if self.active:
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _evaluate(steps, state, run, eval_data, batch_size: int) -> dict:
  n = run.eval_data.num_examples
  sums = None
  for start in range(0, n, batch_size):
    rows = np.arange(start, start + batch_size)
    mask = rows < n
    out = steps.eval(state.params, state.batch_stats, eval_data,
                     shard_batch(run.mesh, np.where(mask, rows, 0).astype(np.int32)),
                     shard_batch(run.mesh, mask))
    sums = out if sums is None else jax.tree_util.tree_map(jnp.add, sums, out)
  return analysis.finalize_metrics(jax.device_get(sums))


def _write_json(path: str, obj: Any) -> None:
  if jax.process_index() == 0:
    with open(path + ".tmp", "w") as f:
      json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def _prepare_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes ``config.json``; refuses a workdir that holds a run of another config."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  new = json.loads(config.to_json())
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    if old != new:
      changed = sorted(_diff_keys(old, new))
      raise setup_lib.ConfigError(
          f"workdir={workdir!r} holds a run of another config (differs in {', '.join(changed)}); "
          "use a new workdir, or the same config to resume")
  _write_json(path, new)


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    return [k for key in sorted(set(old) | set(new))
            for k in _diff_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
  return [] if old == new else [prefix.rstrip(".")]


def _load_teacher(run: setup_lib.Run):
  if run.objective.teacher != "model":
    return None, None
  variables, _ = ckpt_lib.load_variables(
      run.config.teacher.workdir,
      step=None if run.config.teacher.step < 0 else run.config.teacher.step)
  return setup_lib.teacher_model(run.config), jax.tree_util.tree_map(
      lambda x: replicate(run.mesh, np.asarray(x)), variables)


def _summary(history: list[dict], *, wall_time: float, run: setup_lib.Run, state) -> dict:
  best = max(history, key=lambda r: r["eval/top1"])
  last = history[-1]
  pick = lambda r: {k.split("/", 1)[1]: r[k] for k in r if k.startswith("eval/")} | {
      "epoch": r["epoch"], "step": r["step"]}
  return {"best": pick(best), "last": pick(last), "wall_time_s": wall_time,
          "devices": [str(d) for d in run.mesh.devices.flat], "num_processes": jax.process_count(),
          "num_params": int(sum(x.size for x in jax.tree_util.tree_leaves(state.params))),
          "steps": int(state.step), "method": run.objective.name,
          "model": run.config.model.name, "data": run.config.data.name}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates one config in ``workdir`` (resuming if it holds checkpoints).

  Returns:
    The summary also written to ``<workdir>/summary.json``: best-epoch and last-epoch top-1,
    top-5, NLL and ECE, wall time, devices.
  """
  maybe_initialize_distributed(config)
  run = setup_lib.resolve(config)
  train_cfg = config.train
  aug = _augment(config, run.train_data)
  optimizer = setup_lib.make_optimizer(train_cfg.optimizer, steps_per_epoch=run.steps_per_epoch,
                                       total_steps=run.total_steps)
  teacher_model, teacher_vars = _load_teacher(run)
  steps = step_lib.make_steps(model=run.model, objective=run.objective, optimizer=optimizer,
                              aug=aug, mesh=run.mesh, teacher_model=teacher_model,
                              teacher_train_mode=config.teacher.train_mode,
                              skip_nonfinite=train_cfg.skip_nonfinite)
  state = init_state(run, optimizer, aug)
  _prepare_workdir(config, workdir)  # only once every input is known to be good
  store = ckpt_lib.CheckpointStore(workdir, max_to_keep=train_cfg.keep_checkpoints)
  restored = store.restore_latest(state)
  state, meta = restored if restored else (state, {"history": [], "wall_time_s": 0.0})
  logger = _Logger(workdir, int(state.step))
  history = meta["history"]
  start_time = time.time() - meta["wall_time_s"]
  train_data = {k: replicate(run.mesh, getattr(run.train_data, k)) for k in ("images", "labels")}
  eval_data = {k: replicate(run.mesh, getattr(run.eval_data, k)) for k in ("images", "labels")}
  batches = _Batches(run, config)
  pending, last_log = [], (int(state.step), time.time())
  bar = tqdm.tqdm(total=run.total_steps, initial=int(state.step), unit="step", dynamic_ncols=True,
                  disable=jax.process_index() != 0,
                  mininterval=0.1 if sys.stderr.isatty() else 30.0)  # logs stay short
  for step in range(int(state.step), run.total_steps):
    indices, partners = batches.get(step)
    state, metrics = steps.train(state, train_data, indices, partners, teacher_vars)
    # One step in flight: the host prepares and dispatches step t+1 while the device runs
    # step t, and waits only for step t-1. An unbounded queue of sharded steps times out
    # in XLA:CPU's collectives.
    if pending:
      pending[-1]["loss"].block_until_ready()
    pending.append(metrics)
    done = step + 1
    bar.update(1)
    save = done % train_cfg.checkpoint_every_steps == 0 or done == run.total_steps
    # Logging checks finiteness, so it runs before every save: no checkpoint holds NaNs.
    if save or done % train_cfg.log_every_steps == 0:
      record, last_log = _train_record(pending, done, run, last_log)
      _check_finite(record, store, train_cfg.skip_nonfinite)
      logger.write(record)
      bar.set_postfix(loss=f"{record['train/loss']:.4f}",
                      img_s=f"{record['images_per_sec']:.0f}")
      pending = []
    if done % run.steps_per_epoch == 0 or done == run.total_steps:
      record = {"step": done, "epoch": done / run.steps_per_epoch,
                **{f"eval/{k}": v for k, v in _evaluate(
                    steps, state, run, eval_data, train_cfg.eval_batch_size).items()}}
      history.append(record)
      logger.write(record)
    if save:
      store.save(done, state, {"history": history, "wall_time_s": time.time() - start_time})
  bar.close()
  store.close()
  summary = _summary(history, wall_time=time.time() - start_time, run=run, state=state)
  _write_json(os.path.join(workdir, "summary.json"), summary)
  return summary


class _Batches:
  """Global batches of example indices; the order is a pure function of (seed, epoch)."""

  def __init__(self, run: setup_lib.Run, config):
    self.run, self.seed, self.batch = run, config.seed, config.train.batch_size
    self.epoch, self.order, self.partners = None, None, None

  def get(self, step: int):
    epoch, i = divmod(step, self.run.steps_per_epoch)
    if epoch != self.epoch:
      self.epoch = epoch
      self.order = data_lib.batch_indices(self.run.train_data.num_examples, self.batch,
                                          seed=self.seed, epoch=epoch)
      if self.run.objective.teacher == "partner":
        self.partners = data_lib.partner_indices(self.run.train_data.labels, self.order,
                                                 seed=self.seed, epoch=epoch)
    partners = (shard_batch(self.run.mesh, self.partners[i])
                if self.partners is not None else None)
    return shard_batch(self.run.mesh, self.order[i]), partners


def _train_record(pending: list[dict], done: int, run, last_log) -> tuple[dict, tuple]:
  host = jax.device_get(pending)
  record = {"step": done, "epoch": done / run.steps_per_epoch}
  for key in host[0]:
    values = np.asarray([m[key] for m in host], np.float64)
    record[f"train/{key}"] = float(values.sum() if key == "nonfinite" else values.mean())
  now = time.time()
  record["images_per_sec"] = (done - last_log[0]) * run.config.train.batch_size / max(
      now - last_log[1], 1e-9)
  return record, (done, now)


class NonFiniteError(FloatingPointError):
  """The loss or a gradient became NaN/Inf; the last good checkpoint is kept."""


def _check_finite(record: dict, store: ckpt_lib.CheckpointStore, skipping: bool) -> None:
  bad = record.get("train/nonfinite", 0.0)
  if bad and not skipping:
    store.close()
    raise NonFiniteError(
        f"non-finite loss or gradient in {int(bad)} of the steps up to step {record['step']}; "
        f"the run stopped and its checkpoints up to the last good one are kept in "
        f"{store.directory} (set train.skip_nonfinite=True to skip such updates instead)")

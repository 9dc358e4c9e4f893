"""`train_and_evaluate(config, workdir)`: the training loop around the jitted steps.

The loop only feeds example indices (a few hundred int32 per step), keeping one step in flight
(it waits on the previous step's loss); images, labels, teachers and all method state stay on
the device. Its outputs are the contract of DESIGN.md: ``config.json``, ``metrics.jsonl``,
``summary.json`` and orbax ``checkpoints/`` in the workdir; a run restarted on the same workdir
resumes from the newest checkpoint and sees exactly the batches an uninterrupted run would
have seen. Each start writes ``run.json`` (provenance: versions, git commit, devices, the
method's resolved hyperparameters); the logs are `jaxkd.train.logs`'s (``metrics.jsonl``,
TensorBoard events, the console); SIGINT and SIGTERM stop after a checkpoint
(`jaxkd.train.signals`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time

import jax
import ml_collections
import numpy as np

from jaxkd import rundir
from jaxkd.train import checkpoint as ckpt_lib
from jaxkd.train import logs
from jaxkd.train import run as run_lib
from jaxkd.train import signals
from jaxkd.train import trainer as trainer_lib
from jaxkd.train import watchdog
from jaxkd.train import workdir as workdir_lib

__all__ = ["NonFiniteError", "maybe_initialize_distributed", "train_and_evaluate"]

_log = logging.getLogger(__name__)


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
  timeout = config.distributed_timeout_s
  if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
    raise run_lib.ConfigError(f"config.distributed_timeout_s={timeout!r}: must be a number of "
                              "seconds > 0")
  # JAX aborts a process whose peer's heartbeats stop after this; our watchdog speaks first.
  jax.distributed.initialize(env.get("JAX_COORDINATOR_ADDRESS"), number("JAX_NUM_PROCESSES"),
                             number("JAX_PROCESS_ID"),
                             heartbeat_timeout_seconds=int(timeout) + 60)


def _evaluate(trainer: trainer_lib.Trainer, state, waiting, *, final: bool) -> dict:
  """The task's evaluators of the loop (``final``: of the run's last step, where a translation
  run adds the BLEU of its beam search) over the evaluation split."""
  run = trainer.run
  evaluators = run.task.task.evaluators(run, "final" if final else "loop")
  numbers, _ = trainer.evaluate({"params": state.params, "batch_stats": state.batch_stats},
                                evaluators, waiting=waiting)
  return numbers


def _record_config(config: ml_collections.ConfigDict, workdir: str, start: int,
                   changes: dict, console: logs.Console) -> list[dict]:
  """Writes ``config.json``; the workdir's config history, with ``changes`` at ``start``."""
  history = []
  path = rundir.RunDir(workdir).run
  if changes and os.path.exists(path):
    with open(path) as f:
      history = json.load(f).get("config_changes", [])
  if changes:
    history = history + [{"step": start, "changes": changes}]
    console.line(f"config changed at step {start}: " + ", ".join(
        f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items()))
  logs.write_json(rundir.RunDir(workdir).config, json.loads(config.to_json()))
  return history


def _num_params(state) -> int:
  return int(sum(x.size for x in jax.tree_util.tree_leaves(state.params)))


def _summary(run: run_lib.Run, state, meta: dict, info: dict) -> dict:
  history = meta["history"]
  best = max(history, key=lambda r: r["eval/top1"])
  last = history[-1]
  pick = lambda r: {k.split("/", 1)[1]: r[k] for k in r if k.startswith("eval/")} | {
      "epoch": r["epoch"], "step": r["step"]}
  steps, active = int(state.step), meta.get("teacher_active_steps")
  return dict(best=pick(best), last=pick(last), wall_time_s=meta["wall_time_s"],
              time_split_s=meta.get("time_split_s"),
              num_params=_num_params(state), steps=steps, model=run.config.model.name,
              data=run.config.data.name,
              teacher_active_share=None if active is None else active / max(steps, 1),
              best_checkpoint_step=best["step"] if run.config.train.keep_best else None,
              **info)


def _warn_inactive_teacher(run: run_lib.Run, start: int) -> None:
  """Says for what share of the run the objective's teacher has no valid member (not again on
  a resume past those steps)."""
  inactive = 0 if run.teacher is None else run.teacher.inactive_steps
  if inactive <= start:
    return
  total, who = run.total_steps, f"the {run.teacher.name} teacher of {run.objective.name}"
  if inactive >= total:
    _log.warning("%s has no valid member during its first %d steps and this run has %d: the "
                 "teacher is NEVER ACTIVE, so the whole run trains on the method's no-teacher "
                 "terms alone (no distillation); train for more than %d steps to distil",
                 who, inactive, total, inactive)
  else:
    _log.warning("%s has no valid member during its first %d steps: inactive for %d of this "
                 "run's %d steps (%.0f%%), which train on the method's no-teacher terms alone",
                 who, inactive, inactive, total, 100.0 * inactive / total)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates one config in ``workdir`` (resuming if it holds checkpoints).

  A workdir whose run is complete is not trained again: its summary is returned.

  Returns:
    The summary also written to ``<workdir>/summary.json``: best-epoch and last-epoch top-1,
    top-5, NLL and ECE, wall time, the share of steps the teacher was active (None without a
    teacher) and the provenance of ``run.json`` (`jaxkd.train.logs.provenance`).

  Raises:
    jaxkd.train.signals.Interrupted: SIGINT or SIGTERM arrived; the step in flight finished
      and was checkpointed.
    NonFiniteError: a non-finite loss or update (unless ``train.skip_nonfinite``).
  """
  with run_lib.precision(config):  # float64 runs: JAX's x64 switch, before any array
    return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  maybe_initialize_distributed(config)
  trainer = trainer_lib.build(config)
  run = trainer.run
  state = trainer.init_state()
  os.makedirs(workdir, exist_ok=True)  # only once every input is known to be good
  store = ckpt_lib.CheckpointStore(workdir, max_to_keep=config.train.keep_checkpoints)
  try:
    changes = workdir_lib.check_config(config, workdir, steps_per_epoch=run.steps_per_epoch,
                                       latest_step=max(store.steps(), default=None))
  except run_lib.ConfigError:
    store.close()
    raise
  restored = store.restore_latest(state)
  state, meta = restored if restored else (state, {"history": [], "wall_time_s": 0.0})
  start, info = int(state.step), logs.provenance(run)
  console = logs.Console(run.total_steps)
  console.header(run, num_params=_num_params(state), workdir=workdir)
  if start >= run.total_steps:
    store.close()
    console.line(f"already finished at step {start}; nothing to train")
    return _finished(workdir, run, state, meta, info)
  if start:
    console.line(f"resumed from step {start} of {run.total_steps}")
  config_changes = _record_config(config, workdir, start, changes, console)
  if any(key in changes for key in ("train.num_epochs", "train.num_steps")):
    console.line(f"run length now {run.total_steps} steps, from step {start} on: the "
                 f"learning-rate schedule (and what the method derives from the length) is "
                 f"rebuilt for {run.total_steps} steps and read at step {start} on, so a cosine "
                 f"decay jumps back up there; steps 1-{start} are not replayed")
  _warn_inactive_teacher(run, start)
  note = run_lib.warmup_note(config.train.optimizer, steps_per_epoch=run.steps_per_epoch,
                             total_steps=run.total_steps)
  if note and not start:
    _log.warning(note)
  logs.write_json(rundir.RunDir(workdir).run, dict(
      info, model=config.model.name, data=config.data.name, workdir=os.path.abspath(workdir),
      start_step=start, total_steps=run.total_steps, config_changes=config_changes,
      started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())))
  log = logs.MetricsLog(workdir, start)
  best = (ckpt_lib.CheckpointStore(workdir, max_to_keep=1, name=ckpt_lib.BEST)
          if config.train.keep_best else None)
  guard = _watchdog(config, workdir)
  try:
    with signals.StopRequests() as stop:
      state, meta = _train(trainer, state, meta, store=store, best=best, log=log,
                           console=console, stop=stop, workdir=workdir,
                           waiting=guard.waiting if guard else contextlib.nullcontext)
  except BaseException:
    # A peer's death can also surface as an error here (a checkpoint's barrier); what follows
    # (closing the checkpointer, JAX's shutdown barrier at exit) waits on the dead peer too.
    if guard is not None:
      guard.arm()
    raise
  else:
    if guard is not None:
      guard.close()
  finally:  # waits for the last checkpoint, also when interrupted or stopped on NaNs
    console.close()
    log.close()
    store.close()
    if best is not None:
      best.close()
  summary = _summary(run, state, meta, info)
  logs.write_json(rundir.RunDir(workdir).summary, summary)
  return summary


def _watchdog(config, workdir: str):
  """A `watchdog.Watchdog` for a run of several processes (a peer may die), else None."""
  if jax.process_count() == 1:
    return None

  index, count = jax.process_index(), jax.process_count()

  def describe() -> str:  # no jax call: after a failure the backend may be gone
    steps = ckpt_lib.checkpoint_steps(workdir)
    where = (f"the newest checkpoint is step {steps[-1]} in {workdir}" if steps else
             f"no checkpoint in {workdir} yet")
    return (f"process {index} of {count} waited "
            f"{config.distributed_timeout_s} s for the other processes, which never answered: "
            f"one of them has stopped (killed, preempted or out of memory; see its log). "
            f"Exiting; {where}: run the same command on every process to resume.")

  return watchdog.Watchdog(float(config.distributed_timeout_s), describe)


def _finished(workdir: str, run: run_lib.Run, state, meta: dict, info: dict) -> dict:
  """The summary of a complete run: its file, or rebuilt when a kill came before it."""
  path = rundir.RunDir(workdir).summary
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  summary = _summary(run, state, meta, info)
  logs.write_json(path, summary)
  return summary


def _train(trainer: trainer_lib.Trainer, state, meta: dict, *, store: ckpt_lib.CheckpointStore,
           best: ckpt_lib.CheckpointStore | None, log: logs.MetricsLog,
           console: logs.Console, stop: signals.StopRequests, workdir: str, waiting):
  """Trains from ``state.step`` to the end; ``(state, meta)`` of the final checkpoint.

  Each dispatch runs `_dispatch_length` steps (``train.steps_per_dispatch``, or one); the
  logs, evaluations and checkpoints are those of single steps. ``waiting()`` brackets every
  wait on the other processes (the watchdog's arming).
  """
  run, train_cfg = trainer.run, trainer.run.config.train
  batches = trainer.batches()
  history, active = meta["history"], meta.get("teacher_active_steps")
  start_time = time.time() - meta["wall_time_s"]
  # Host seconds of the loop by where they went: preparing batches, dispatching and waiting
  # on train steps (compilation included), evaluating, saving checkpoints.
  split = dict.fromkeys(("data_s", "step_s", "eval_s", "checkpoint_s"), 0.0)
  split.update(meta.get("time_split_s") or {})
  progress = lambda: {"history": history, "wall_time_s": time.time() - start_time,
                      "teacher_active_steps": active, "time_split_s": dict(split)}
  # pending: the device metrics of the dispatches since the last fetch, as (metrics, steps);
  # unlogged: the host metrics of each step since the last log record.
  pending, unlogged, last_log = [], [], (int(state.step), time.time())
  console.start(int(state.step))
  step = int(state.step)
  while step < run.total_steps:
    k = _dispatch_length(step, run)
    with _timed(split, "data_s"):
      rows = batches.get(step) if k == 1 else batches.get_many(step, k)
    with _timed(split, "step_s"):
      if k == 1:
        state, metrics = trainer.steps.train(state, trainer.consts, rows)
      else:
        state, metrics = trainer.steps.train_many(state, trainer.consts, rows)
      # One dispatch in flight: the host prepares and dispatches dispatch t+1 while the device
      # runs dispatch t, and waits only for dispatch t-1. An unbounded queue of sharded steps
      # times out in XLA:CPU's collectives.
      if pending:
        with waiting():
          pending[-1][0]["loss"].block_until_ready()
    started = time.time()  # about when the device starts this dispatch
    pending.append((metrics, k))
    first, step = step + 1, step + k
    for _ in range(k):
      console.step()
    log_steps = [d for d in range(first, step + 1) if d % train_cfg.log_every_steps == 0]
    save = step % train_cfg.checkpoint_every_steps == 0 or step == run.total_steps
    with waiting():
      signum = stop.requested(sync=save or bool(log_steps))
    save = save or signum is not None
    if save and step not in log_steps:
      log_steps.append(step)
    # Logging checks finiteness, so it runs before every save: no checkpoint holds NaNs.
    if log_steps:
      with _timed(split, "step_s"):  # awaits the dispatches since the last fetch
        unlogged += _per_step(jax.device_get(pending))
      pending, now = [], time.time()
      for done in log_steps:
        # The steps of one dispatch are taken as evenly spaced in time.
        at = started + (now - started) * (done - first + 1) / k
        count = done - last_log[0]
        record, last_log = _train_record(unlogged[:count], done, run, last_log, at,
                                         _learning_rate(trainer, done))
        unlogged = unlogged[count:]
        _check_finite(record, store, train_cfg.skip_nonfinite)
        if "train/teacher_active" in record:
          active = (active or 0.0) + record["train/teacher_active"] * count
        log.write(record)
        console.train(record)
    if step % run.steps_per_epoch == 0 or step == run.total_steps:
      with _timed(split, "eval_s"):
        numbers = _evaluate(trainer, state, waiting, final=step == run.total_steps)
      record = {"step": step, "epoch": step / run.steps_per_epoch,
                **{f"eval/{k}": v for k, v in numbers.items()}}
      history.append(record)
      _keep_if_best(best, state, history)
      log.write(record)
      console.evaluation(record, _learning_rate(trainer, step))
    if save:
      with waiting(), _timed(split, "checkpoint_s"):  # a collective write
        store.save(step, state, progress())
      log.flush()
    if signum is not None and step < run.total_steps:
      raise signals.Interrupted(step, signum, workdir)
  return state, progress()


@contextlib.contextmanager
def _timed(split: dict, key: str):
  """Adds the seconds the block takes to ``split[key]``."""
  start = time.perf_counter()
  try:
    yield
  finally:
    split[key] += time.perf_counter() - start


def _dispatch_length(step: int, run: run_lib.Run) -> int:
  """The steps of the dispatch starting at ``step``: ``train.steps_per_dispatch``, or 1.

  A dispatch ends at the latest where the loop needs the state: an evaluation (the end of an
  epoch), a checkpoint, the end of the run. Fewer steps than K left before that run one by
  one, with the single-step program, so a run compiles two train programs at most whatever
  the epoch length, checkpoint interval and run length (a program per shorter length would
  compile up to K-1 more; the single steps cost at most K-1 dispatches per epoch or
  checkpoint). Log steps do not end a dispatch: its metrics come back per step.
  """
  train_cfg = run.config.train
  k = train_cfg.steps_per_dispatch
  if k == 1:
    return 1
  following = lambda every: (step // every + 1) * every
  boundary = min(following(run.steps_per_epoch), following(train_cfg.checkpoint_every_steps),
                 run.total_steps)
  return k if boundary - step >= k else 1


def _per_step(fetched: list) -> list[dict]:
  """Host metrics ``[(metrics, steps)]`` of single (scalars) and stacked (``[steps]``)
  dispatches as one dict per step."""
  out = []
  for metrics, k in fetched:
    if k == 1:
      out.append(metrics)
    else:
      out += [{key: value[i] for key, value in metrics.items()} for i in range(k)]
  return out


def _keep_if_best(best: ckpt_lib.CheckpointStore | None, state, history: list[dict]) -> None:
  """Keeps ``state`` in `BEST` when the newest evaluation beats every earlier one (on top-1;
  the first of equals, as the summary's ``best``)."""
  record = history[-1]
  if best is None or any(r["eval/top1"] >= record["eval/top1"] for r in history[:-1]):
    return
  # A resumed run redoes its evaluations bit for bit: a step already kept is this one.
  if record["step"] not in best.steps():
    best.save(record["step"], state, {"eval": record})


def _learning_rate(trainer: trainer_lib.Trainer, done: int) -> float:
  """The rate of the update that made the step count ``done``."""
  return float(trainer.schedule(done - 1))


def _train_record(host: list[dict], done: int, run, last_log, now: float,
                  lr: float) -> tuple[dict, tuple]:
  """The log record of step ``done`` from the host metrics of each step since the last one."""
  record = {"step": done, "epoch": done / run.steps_per_epoch}
  for key in host[0]:
    values = np.asarray([m[key] for m in host], np.float64)
    record[f"train/{key}"] = float(values.sum() if key == "nonfinite" else values.mean())
  record["train/lr"] = lr
  if getattr(run.train_data, "skip_corrupt", False):  # streamed records skipped so far
    record["data/skipped_records"] = len(run.train_data.skipped)
  record["images_per_sec"] = (done - last_log[0]) * run.config.train.batch_size / max(
      now - last_log[1], 1e-9)
  return record, (done, now)


class NonFiniteError(FloatingPointError):
  """The loss or a gradient became NaN/Inf; the last good checkpoint is kept."""


def _check_finite(record: dict, store: ckpt_lib.CheckpointStore, skipping: bool) -> None:
  bad = record.get("train/nonfinite", 0.0)
  if bad and not skipping:
    raise NonFiniteError(
        f"non-finite loss or gradient in {int(bad)} of the steps up to step {record['step']}; "
        f"the run stopped and its checkpoints up to the last good one are kept in "
        f"{store.directory} (set train.skip_nonfinite=True to skip such updates instead)")

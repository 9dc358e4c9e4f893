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
import copy
import dataclasses
import json
import logging
import os
import time
from typing import Any, Callable, Optional, Sequence

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

__all__ = ["NonFiniteError", "Program", "maybe_initialize_distributed", "single",
           "train_and_evaluate", "train_runs"]

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


@dataclasses.dataclass(frozen=True)
class Program:
  """How the loop advances its runs: one run, or S seeds packed in one program.

  ``seeds`` are the runs' seeds (one for a plain run); ``init()`` gives the fresh state (for
  S packed runs: their states stacked on a leading ``[S]`` axis); ``batches`` has ``get(step)``
  and ``get_many(step, k)`` for ``train`` and ``train_many`` (None: one step per dispatch);
  ``run_state(state, i)`` and ``run_metrics(metrics, i)`` are run ``i``'s state and host
  metrics; ``stack(states)`` is the inverse of ``run_state`` (a resume stacks the runs'
  checkpoints). `single` is the plain run's; `jaxkd.train.packed.program` the packed one's.
  """
  seeds: tuple[int, ...]
  init: Callable[[], Any]
  batches: Any
  train: Callable
  train_many: Optional[Callable]
  run_state: Callable[[Any, int], Any]
  run_metrics: Callable[[dict, int], dict]
  stack: Callable[[list], Any]


def single(trainer: trainer_lib.Trainer) -> Program:
  """The `Program` of one run of the trainer's config."""
  return Program(seeds=(trainer.run.config.seed,), init=trainer.init_state,
                 batches=trainer.batches(), train=trainer.steps.train,
                 train_many=trainer.steps.train_many, run_state=lambda state, i: state,
                 run_metrics=lambda metrics, i: metrics, stack=lambda states: states[0])


@dataclasses.dataclass
class _Lane:
  """One run of the loop's program: its workdir, stores, log and progress (``meta``)."""
  config: ml_collections.ConfigDict
  workdir: str
  store: ckpt_lib.CheckpointStore
  changes: dict = dataclasses.field(default_factory=dict)
  meta: dict = dataclasses.field(default_factory=dict)
  best: Optional[ckpt_lib.CheckpointStore] = None
  log: Optional[logs.MetricsLog] = None
  label: str = ""  # prefixes its console lines in a packed run

  def close(self) -> None:
    for closable in (self.log, self.store, self.best):
      if closable is not None:
        closable.close()


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
    maybe_initialize_distributed(config)
    return train_runs(config, [workdir], single)[0]


def train_runs(config: ml_collections.ConfigDict, workdirs: Sequence[str],
               program: Callable[[trainer_lib.Trainer], Program]) -> list[dict]:
  """Trains the runs of ``program`` (one per seed of `Program.seeds`) of ``config`` in their
  ``workdirs``, each with the checkpoints, logs and summary of `train_and_evaluate`.

  Called inside `run_lib.precision`. ``config`` is resolved in place (`jaxkd.train.build`);
  run ``i`` is ``config`` with ``seed = seeds[i]`` (``config`` itself for a single run). The
  runs resume together from the newest checkpoint step they all hold.

  Returns:
    The runs' summaries, in order.
  """
  trainer = trainer_lib.build(config)
  run = trainer.run
  prog = program(trainer)
  _require_one_per_seed(workdirs, prog.seeds)
  configs = [config] if len(prog.seeds) == 1 else [_with_seed(config, s) for s in prog.seeds]
  state = prog.init()
  lanes = []
  try:
    for seeded, workdir in zip(configs, workdirs):
      os.makedirs(workdir, exist_ok=True)  # only once every input is known to be good
      lane = _Lane(seeded, workdir, ckpt_lib.CheckpointStore(
          workdir, max_to_keep=config.train.keep_checkpoints),
                   label=f"seed {seeded.seed}: " if len(configs) > 1 else "")
      lanes.append(lane)
      lane.changes = workdir_lib.check_config(
          seeded, workdir, steps_per_epoch=run.steps_per_epoch,
          latest_step=max(lane.store.steps(), default=None))
    state = _restore(prog, state, lanes)
  except BaseException:
    for lane in lanes:
      lane.store.close()
    raise
  start, info = int(prog.run_state(state, 0).step), logs.provenance(run)
  console = logs.Console(run.total_steps)
  console.header(run, num_params=_num_params(prog.run_state(state, 0)),
                 workdir=", ".join(workdirs))
  if start >= run.total_steps:
    for lane in lanes:
      lane.store.close()
    console.line(f"already finished at step {start}; nothing to train")
    return [_finished(lane.workdir, run, prog.run_state(state, i), lane.meta, info)
            for i, lane in enumerate(lanes)]
  if start:
    console.line(f"resumed from step {start} of {run.total_steps}")
  for lane in lanes:
    history = _record_config(lane.config, lane.workdir, start, lane.changes, console)
    logs.write_json(rundir.RunDir(lane.workdir).run, dict(
        info, model=lane.config.model.name, data=lane.config.data.name,
        workdir=os.path.abspath(lane.workdir), start_step=start, total_steps=run.total_steps,
        config_changes=history, started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **({"packed_seeds": list(prog.seeds)} if len(lanes) > 1 else {})))
  changes = lanes[0].changes
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
  for lane in lanes:
    lane.log = logs.MetricsLog(lane.workdir, start)
    lane.best = (ckpt_lib.CheckpointStore(lane.workdir, max_to_keep=1, name=ckpt_lib.BEST)
                 if config.train.keep_best else None)
  guard = _watchdog(config, workdirs[0])
  try:
    with signals.StopRequests() as stop:
      state = _train(trainer, prog, state, lanes, console=console, stop=stop,
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
    for lane in lanes:
      lane.close()
  summaries = []
  for i, lane in enumerate(lanes):
    summaries.append(_summary(run, prog.run_state(state, i), lane.meta, info))
    logs.write_json(rundir.RunDir(lane.workdir).summary, summaries[-1])
  return summaries


def _with_seed(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
  config = copy.deepcopy(config)
  config.seed = seed
  return config


def _require_one_per_seed(workdirs: Sequence[str], seeds: Sequence[int]) -> None:
  if len(workdirs) != len(seeds):
    raise run_lib.ConfigError(f"workdirs={list(workdirs)!r}: allowed: one workdir per seed of "
                              f"seeds={list(seeds)!r}")


def _restore(prog: Program, state, lanes: list[_Lane]):
  """The state to start from: the runs' checkpoints at the newest step all of them hold
  (stacked), or ``state`` when none has one; fills each lane's ``meta``."""
  fresh = {"history": [], "wall_time_s": 0.0}
  held = [set(lane.store.steps()) for lane in lanes]
  if not any(held):
    for lane in lanes:
      lane.meta = copy.deepcopy(fresh)
    return state
  common = set.intersection(*held)
  restored = [lane.store.restore_latest(prog.run_state(state, i), at_most=max(common))
              if common else None for i, lane in enumerate(lanes)]
  steps = {None if r is None else int(r[0].step) for r in restored}
  if len(steps) != 1 or None in steps:
    found = ", ".join(f"{lane.workdir}: {sorted(h) or 'none'}" for lane, h in zip(lanes, held))
    raise run_lib.ConfigError(
        f"the packed runs of seeds {list(prog.seeds)} hold no common checkpoint step to resume "
        f"from together (checkpoint steps: {found}); resume them one by one (`jaxkd train`, or "
        "`jaxkd report run --pack 1`), or delete their workdirs to start again")
  at = steps.pop()
  for lane, (_, meta) in zip(lanes, restored):
    lane.meta = meta
    later = lane.store.discard_after(at)
    if later:
      _log.warning("%s: resuming with the other packed seeds from an earlier step; its "
                   "checkpoints of steps %s are deleted", lane.workdir, later)
  return prog.stack([r[0] for r in restored])


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


def _train(trainer: trainer_lib.Trainer, prog: Program, state, lanes: list[_Lane], *,
           console: logs.Console, stop: signals.StopRequests, waiting):
  """Trains from ``state``'s step to the end; the final state. Each lane's ``meta`` is left
  at its final checkpoint's.

  Each dispatch runs `_dispatch_length` steps (``train.steps_per_dispatch``, or one); the
  logs, evaluations and checkpoints are those of single steps, for every run of the program.
  ``waiting()`` brackets every wait on the other processes (the watchdog's arming).
  """
  run, train_cfg = trainer.run, trainer.run.config.train
  batches, first_meta = prog.batches, lanes[0].meta
  histories = [lane.meta["history"] for lane in lanes]
  active = [lane.meta.get("teacher_active_steps") for lane in lanes]
  start_time = time.time() - first_meta["wall_time_s"]
  # Host seconds of the loop by where they went: preparing batches, dispatching and waiting
  # on train steps (compilation included), evaluating, saving checkpoints.
  split = dict.fromkeys(("data_s", "step_s", "eval_s", "checkpoint_s"), 0.0)
  split.update(first_meta.get("time_split_s") or {})
  progress = lambda i: {"history": histories[i], "wall_time_s": time.time() - start_time,
                        "teacher_active_steps": active[i], "time_split_s": dict(split)}
  # pending: the device metrics of the dispatches since the last fetch, as (metrics, steps);
  # unlogged: the host metrics of each step since the last log record.
  step = int(prog.run_state(state, 0).step)
  pending, unlogged, last_log = [], [], (step, time.time())
  console.start(step)
  while step < run.total_steps:
    k = _dispatch_length(step, run)
    with _timed(split, "data_s"):
      rows = batches.get(step) if k == 1 else batches.get_many(step, k)
    with _timed(split, "step_s"):
      if k == 1:
        state, metrics = prog.train(state, trainer.consts, rows)
      else:
        state, metrics = prog.train_many(state, trainer.consts, rows)
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
      lr = {done: _learning_rate(trainer, done) for done in log_steps}
      for i, lane in enumerate(lanes):
        since = last_log
        mine = [prog.run_metrics(m, i) for m in unlogged]
        for done in log_steps:
          # The steps of one dispatch are taken as evenly spaced in time.
          at = started + (now - started) * (done - first + 1) / k
          count = done - since[0]
          record, since = _train_record(mine[:count], done, run, since, at, lr[done])
          mine = mine[count:]
          _check_finite(record, lane.store, train_cfg.skip_nonfinite)
          if "train/teacher_active" in record:
            active[i] = (active[i] or 0.0) + record["train/teacher_active"] * count
          lane.log.write(record)
          console.train(record, prefix=lane.label)
      unlogged = unlogged[log_steps[-1] - last_log[0]:]
      last_log = since
    if step % run.steps_per_epoch == 0 or step == run.total_steps:
      for i, lane in enumerate(lanes):
        run_state = prog.run_state(state, i)
        with _timed(split, "eval_s"):
          numbers = _evaluate(trainer, run_state, waiting, final=step == run.total_steps)
        record = {"step": step, "epoch": step / run.steps_per_epoch,
                  **{f"eval/{key}": v for key, v in numbers.items()}}
        histories[i].append(record)
        _keep_if_best(lane.best, run_state, histories[i])
        lane.log.write(record)
        console.evaluation(record, _learning_rate(trainer, step), prefix=lane.label)
    if save:
      for i, lane in enumerate(lanes):
        with waiting(), _timed(split, "checkpoint_s"):  # a collective write
          lane.store.save(step, prog.run_state(state, i), progress(i))
        lane.log.flush()
    if signum is not None and step < run.total_steps:
      raise signals.Interrupted(step, signum, ", ".join(lane.workdir for lane in lanes))
  for i, lane in enumerate(lanes):
    lane.meta = progress(i)
  return state


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

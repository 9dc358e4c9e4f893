"""The training engine: train state, sharded jitted steps, checkpoints and the loop.

``build(config)`` assembles a run (`Trainer`: data, model, objective, teacher, optimizer,
jitted steps, constants on the mesh); ``train_and_evaluate(config, workdir)`` trains it with
checkpoints and logs, and stops cleanly on SIGINT or SIGTERM (`Interrupted`);
``evaluate_checkpoint(workdir)`` evaluates a finished run's checkpoint on a split.
"""
from jaxkd.train.cache import cache_teacher
from jaxkd.train.checkpoint import CheckpointStore
from jaxkd.train.evaluate import evaluate_checkpoint
from jaxkd.train.loop import NonFiniteError, maybe_initialize_distributed, train_and_evaluate
from jaxkd.train.run import (DTYPES, ConfigError, Run, build_run, make_mesh, make_optimizer,
                             make_schedule, precision)
from jaxkd.train.signals import Interrupted
from jaxkd.train.state import TrainState, trainable
from jaxkd.train.step import StepFns, make_steps, step_keys
from jaxkd.train.trainer import (Batches, Trainer, build, example_rows, finalize, init_state,
                                 replicate, shard_batch, state_sharding)

__all__ = [
    "DTYPES", "Batches", "CheckpointStore", "ConfigError", "Interrupted", "NonFiniteError",
    "Run", "StepFns", "TrainState", "Trainer", "build", "build_run", "cache_teacher",
    "evaluate_checkpoint", "example_rows", "finalize", "init_state", "make_mesh",
    "make_optimizer", "make_schedule", "make_steps", "maybe_initialize_distributed",
    "precision", "replicate", "shard_batch", "state_sharding", "step_keys", "trainable",
    "train_and_evaluate",
]

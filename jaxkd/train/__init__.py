"""The training engine: train state, sharded jitted steps, checkpoints and the loop."""
from jaxkd.train.checkpoint import CheckpointStore, load_variables
from jaxkd.train.loop import NonFiniteError, init_state, train_and_evaluate
from jaxkd.train.setup import ConfigError, Run, make_mesh, make_optimizer, resolve
from jaxkd.train.state import ReplayRing, TrainState, init_replay, refresh_replay
from jaxkd.train.step import Augment, StepFns, make_steps, preprocess

__all__ = [
    "Augment", "CheckpointStore", "ConfigError", "NonFiniteError", "ReplayRing", "Run",
    "StepFns", "TrainState", "init_replay", "init_state", "load_variables", "make_mesh",
    "make_optimizer", "make_steps", "preprocess", "refresh_replay", "resolve",
    "train_and_evaluate",
]

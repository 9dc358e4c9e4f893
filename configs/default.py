"""The default run: MrKD self-distillation of a small CNN on scikit-learn's digits.

Offline and small: the digits images ship with scikit-learn (1,797 real 8x8 handwritten digits),
so this runs on a fresh machine with no download.

    jaxkd train --workdir /tmp/jaxkd-default
    jaxkd train --workdir /tmp/jaxkd-ce --config.method.name=ce

Expected: about 1-2 minutes on 2 CPU cores; test top-1 around 0.97-0.99.

Every other config in this directory starts from `get_config()` and overrides a few fields.
Config keys (all overridable as ``--config.<key>=<value>``):
  seed; method.name and method.<hparam> (see `jaxkd.objectives.defaults(name)`);
  model.name, model.dtype; data.name, data.data_dir, data.crop_padding, data.flip,
  data.rotation_degrees; train.batch_size, train.eval_batch_size, train.num_epochs,
  train.num_steps (wins when set), train.optimizer.*, train.checkpoint_every_steps,
  train.keep_checkpoints, train.log_every_steps, train.skip_nonfinite; teacher.workdir,
  teacher.step, teacher.train_mode; mesh.data; distributed.
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the default config; ``arg`` may be ``"smoke"`` for a few-step run."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Method hyperparameters not given here take `jaxkd.objectives.defaults(name)`; keys that
  # depend on the data (steps_per_epoch, total_epochs, num_examples, refresh_every) are filled
  # in by the engine.
  config.method = ml_collections.ConfigDict({"name": "mrkd"})

  config.model = ml_collections.ConfigDict({"name": "small_cnn", "dtype": "float32"})

  config.data = ml_collections.ConfigDict({
      "name": "digits",
      "data_dir": "",
      # Tf-KD's CIFAR recipe: crop 32 pad 4, flip, rotation 15. Digits are not mirror
      # symmetric, so the default run only crops and rotates.
      "crop_padding": 1,
      "flip": False,
      "rotation_degrees": 10.0,
  })

  config.train = ml_collections.ConfigDict({
      "batch_size": 64,
      "eval_batch_size": 256,
      "num_epochs": 30,
      "num_steps": -1,  # > 0 wins over num_epochs
      "optimizer": {
          "name": "sgd",  # sgd | adamw
          "learning_rate": 0.05,
          "momentum": 0.9,
          "nesterov": False,
          "weight_decay": 5e-4,  # coupled, added to the gradient as in torch.optim.SGD
          "schedule": "cosine",  # constant | cosine | multistep
          "milestones": (),  # epochs, for multistep
          "gamma": 0.1,
          "warmup_epochs": 1.0,
      },
      "checkpoint_every_steps": 500,
      "keep_checkpoints": 2,
      "log_every_steps": 50,
      "skip_nonfinite": False,
  })

  config.teacher = ml_collections.ConfigDict({
      "workdir": "",  # a finished jaxkd run; needed by kd and tfkd_self
      "step": -1,  # which checkpoint of it; -1 = latest
      "train_mode": False,
  })

  config.mesh = ml_collections.ConfigDict({"data": -1})  # -1 = every device
  config.distributed = False  # jax.distributed.initialize() (also when JAX_COORDINATOR_ADDRESS is set)

  if arg == "smoke":
    config.train.num_steps = 4
    config.train.batch_size = 16
    config.train.log_every_steps = 2
    config.train.checkpoint_every_steps = 2
    config.train.optimizer.warmup_epochs = 0.0
  elif arg:
    raise ValueError(f"config argument {arg!r} is not known; allowed: 'smoke' or nothing")
  return config

"""The default run (configs/default.py) and the base config every config extends.

It lives in the package so that an installed jaxkd (not only a source checkout) has its
defaults; ``configs/default.py`` re-exports `get_config` as the default config file.
"""
import ml_collections
from ml_collections import config_dict


__all__ = ["base_config", "get_config"]

# The default run's validation split, carved from the training set: it selects the best epoch
# (`train.keep_best`), so the test split chooses nothing.
MAIN_TRAIN_SPLIT, MAIN_EVAL_SPLIT = "train[:90%]", "train[90%:]"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The default run (configs/default.py): `base_config` selecting its best epoch on a
  validation split carved from train, whose checkpoint it keeps (``train.keep_best``).

  ``arg`` may be ``"smoke"``: a few steps of `base_config` (the whole training split,
  evaluated on test), for tests.
  """
  config = base_config()
  if arg == "smoke":
    config.train.num_steps = 4
    config.train.batch_size = 16
    config.train.log_every_steps = 2
    config.train.checkpoint_every_steps = 2
    config.train.optimizer.warmup_epochs = 0.0
  elif arg:
    raise ValueError(f"config argument {arg!r} is not known; allowed: 'smoke' or nothing")
  else:
    config.data.train_split, config.data.eval_split = MAIN_TRAIN_SPLIT, MAIN_EVAL_SPLIT
    config.train.keep_best = True
  return config


def base_config() -> ml_collections.ConfigDict:
  """The base every config extends (`jaxkd.config.default`): every key and its default, the
  default run's method, model and data, trained on ``train`` and evaluated on ``test``."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  # Method hyperparameters not given here take `jaxkd.objectives.defaults(name)`; those that
  # follow from the run (steps per epoch, ...) the method derives from it
  # (`jaxkd.objectives.Method.derive`).
  config.method = ml_collections.ConfigDict({"name": "mrkd"})

  # dtype: "float32" | "bfloat16" | "float64", the computation dtype. float64 is the
  # verification mode: parameters, activations and loss math in float64 under JAX's x64
  # switch (`jaxkd.train.precision`), so runs that differ only in their reduction order
  # (devices, processes, packing, resume) agree to 1e-9 rather than to float32 rounding.
  # cpu_conv: "fast" | "xla", how convolutions run on CPU (fast: small maps as one im2col
  # product, kernel gradients as per-tap products; xla: XLA's own). GPUs always use XLA's own.
  # init_from: a jaxkd workdir whose latest checkpoint's params and batch_stats initialise
  # the model (fine-tuning; ReActNet's stage 2 from stage 1); "" initialises at random. The
  # variables must have the model's tree and shapes; the optimizer and step start afresh.
  config.model = ml_collections.ConfigDict({"name": "small_cnn", "dtype": "float32",
                                            "cpu_conv": "fast", "init_from": ""})

  config.data = ml_collections.ConfigDict({
      "name": "digits",
      "data_dir": "",
      # tfds-style splits, sliceable: a validation split carved from the training set is
      # train_split="train[:90%]" with eval_split="train[90%:]" (choose hyperparameters there,
      # never on the test set).
      "train_split": "train",
      "eval_split": "test",
      # Image augmentation on the device; None: the data's task's default
      # (`jaxkd.tasks`: images crop with padding 1 and rotate by up to 10 degrees, as digits
      # are not mirror symmetric; text and translation take none).
      "crop_padding": config_dict.placeholder(int),
      "flip": config_dict.placeholder(bool),
      "rotation_degrees": config_dict.placeholder(float),
      # Streaming (datasets too large for memory: imagenet2012, or any tfds dataset with
      # in_memory=False): records read, decoded and cropped on host threads each step.
      # in_memory: None = the dataset's own choice (imagenet2012 streams, the rest load).
      "in_memory": config_dict.placeholder(bool),
      "image_size": 224,  # streamed images: RandomResizedCrop(S) + flip; eval S/0.875 -> S
      "num_workers": 0,  # host decoding threads per process; 0 = min(16, CPU cores)
      # Streamed records that cannot be decoded: fail naming split and record (False), or
      # skip them, counted in the log (True).
      "skip_corrupt": False,
      # Text datasets (token ids): the sentencepiece vocabulary trained on the training split
      # (an upper bound) and the pieces kept per example; cached under data_dir/jaxkd_text.
      "vocab_size": 16000,
      "max_length": 256,  # translation: the longest training sentence kept (fairseq: 1024)
      # Translation: batches by token count, the most padded tokens of one batch over all
      # devices (fairseq's --max-tokens times its GPUs); train.batch_size is not read there.
      "max_tokens": 4096,
  })

  config.train = ml_collections.ConfigDict({
      "batch_size": 64,
      "eval_batch_size": 256,
      "num_epochs": 30,
      "num_steps": -1,  # > 0 wins over num_epochs
      "optimizer": {
          "name": "sgd",  # sgd | adamw | adam (coupled weight decay, as torch.optim.Adam)
          "learning_rate": 0.05,
          "momentum": 0.9,
          "nesterov": False,
          "weight_decay": 5e-4,  # coupled, added to the gradient as in torch.optim.SGD
          # which parameters decay: "all" | "conv_kernels" (the 4-D convolution kernels only,
          # as ReActNet's official code)
          "decay_params": "all",
          "schedule": "cosine",  # constant | cosine | multistep | linear (to 0) | inverse_sqrt
          "milestones": (),  # epochs, for multistep
          "gamma": 0.1,
          "warmup_epochs": 1.0,  # linear; clipped to 10% of a shorter run, with a warning
          # > 0: the warm-up in steps instead (not clipped; inverse_sqrt needs it, fairseq's
          # --warmup-updates)
          "warmup_steps": 0,
          "betas": (0.9, 0.999),  # adam and adamw (fairseq's translation recipes: 0.9, 0.98)
      },
      "checkpoint_every_steps": 500,
      "keep_checkpoints": 2,
      "log_every_steps": 50,
      "skip_nonfinite": False,
      # Training steps per dispatch from Python: K > 1 runs K steps as one lax.scan program
      # (the same batches, metrics and logs), for steps so short that dispatching each from
      # Python dominates (small nets on an accelerator). Evaluations, checkpoints and the end
      # of the run split the steps; a rest shorter than K runs as single steps.
      "steps_per_dispatch": 1,
      # Keep the state of the best evaluation (top-1) in checkpoints_best/, beside the latest
      # keep_checkpoints; it selects on data.eval_split, which must then be carved from train.
      "keep_best": False,
      # Continue a finished workdir to a larger num_steps/num_epochs (jaxkd.train.workdir).
      "extend": False,
  })

  config.teacher = ml_collections.ConfigDict({
      "workdir": "",  # a finished jaxkd run; needed by kd and tfkd_self
      "step": -1,  # which checkpoint of it; -1 = latest
      "train_mode": False,
      # Or torchvision's weights of an ImageNet network instead of a jaxkd run: a state_dict
      # file (.pth, .pt or .safetensors) and its network, one of
      # jaxkd.models.torchvision_names() (e.g. "resnet50_imagenet"); 1000 classes, so the
      # student's data must be ImageNet's.
      "torchvision_checkpoint": "",
      "torchvision_model": "",
      # A directory written by `jaxkd cache-teacher` for this run: the frozen teacher's
      # outputs are read from it instead of running the teacher ("": run it).
      "cache": "",
  })

  # Translation: the beam search that decodes the evaluation split for BLEU at the end of a
  # run and in `jaxkd eval` (fairseq-generate's --beam, --lenpen, --max-len-a, --max-len-b:
  # the longest output is max_len_a * source length + max_len_b).
  config.generate = ml_collections.ConfigDict({"beam_size": 5, "len_penalty": 1.0,
                                               "max_len_a": 0.0, "max_len_b": 200})

  config.mesh = ml_collections.ConfigDict({"data": -1})  # -1 = every device
  config.distributed = False  # jax.distributed.initialize() (also when JAX_COORDINATOR_ADDRESS is set)
  # Several processes: one that waits this long for a step while a peer is silent (it died)
  # exits with a message and status 75 instead of hanging; JAX's own heartbeat check, later.
  config.distributed_timeout_s = 60

  return config

"""The default run: MrKD self-distillation of a small CNN on scikit-learn's digits.

Offline and small: the digits images ship with scikit-learn (1,797 real 8x8 handwritten digits),
so this runs on a fresh machine with no download.

    jaxkd train --workdir /tmp/jaxkd-default
    jaxkd eval --workdir /tmp/jaxkd-default --checkpoint best --split test
    jaxkd train --workdir /tmp/jaxkd-ce --config.method.name=ce

It trains on train[:90%] of the training split and selects its best epoch on train[90%:]
(validation), keeping that checkpoint (train.keep_best); the test split chooses nothing, and
`jaxkd eval --checkpoint best --split test` gives the selected checkpoint's test top-1.
Expected (measured 2026-12-06, 30 epochs of 20 steps): best validation top-1 0.9861 (epoch
16), test top-1 of that checkpoint 0.9859; 28 s of training and 8 s of eval on 2 idle CPU
cores (483 s under a load average of 15-18 from other jobs).

Every other config in this directory starts from `jaxkd.config.defaults.base_config()` (the
same keys, trained on train and evaluated on test) and overrides a few fields.
Config keys (all overridable as ``--config.<key>=<value>`` or ``--config.<key> <value>``):
  seed; method.name and method.<hparam> (see `jaxkd.objectives.defaults(name)`);
  model.name, model.dtype, model.cpu_conv; data.name, data.data_dir, data.crop_padding,
  data.flip, data.rotation_degrees, data.in_memory, data.image_size, data.num_workers,
  data.skip_corrupt; train.batch_size, train.eval_batch_size, train.num_epochs,
  train.num_steps (wins when set), train.optimizer.*, train.checkpoint_every_steps,
  train.keep_checkpoints, train.log_every_steps, train.skip_nonfinite, train.keep_best,
  train.extend, train.steps_per_dispatch (K steps as one lax.scan dispatch; default 1);
  teacher.workdir, teacher.step, teacher.train_mode, teacher.torchvision_checkpoint,
  teacher.torchvision_model, teacher.cache (`jaxkd cache-teacher`'s directory); mesh.data;
  distributed, distributed_timeout_s.
"""
from jaxkd.config.defaults import get_config  # defined in the package, so installs have it

__all__ = ["get_config"]

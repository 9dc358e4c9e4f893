"""What the scripts here share: the default run packing.py and steps_per_dispatch.py time,
their JSON, and the command line and JSON file every script writes."""
from __future__ import annotations

import json
import os
import sys

from jaxkd import bench, config as config_lib, train


def build(args):
  """The default config (configs/default.py: MrKD on 8x8 digits, batch 64) with the method,
  model, batch size and CPU convolution of ``args``, on one device."""
  config = config_lib.default()
  config.method.name = args.method
  config.model.name = args.model
  config.train.batch_size = args.batch_size
  config.model.cpu_conv = args.cpu_conv
  config.mesh.data = 1
  return train.build(config)


def command() -> str:
  """The command line of this script, as run from the repo root."""
  return " ".join(["python", os.path.relpath(sys.argv[0])] + sys.argv[1:])


def dump(path: str | None, result: dict) -> None:
  """Writes ``result`` as JSON to ``path`` (its folder made), if ``path`` is set."""
  if path:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
      json.dump(result, f, indent=2)


def write(args, trainer, results: list, load_before) -> None:
  """The benchmark's JSON (command, run, machine, load, results) to ``args.out``, if set."""
  run = trainer.run
  out = {"command": command(),
         "method": args.method, "model": args.model, "batch_size": args.batch_size,
         "cpu_conv": args.cpu_conv, "data": run.config.data.name,
         "image_shape": list(run.train_data.image_shape), "machine": bench.machine(),
         "load_average": {"before": load_before, "after": os.getloadavg()}, "results": results}
  dump(args.out, out)

"""All ten ``*_imagenet`` networks against torchvision: parameter counts and logits.

For each network: torchvision's model with random weights (BatchNorm affine maps and running
statistics random too) in ``eval()`` mode, its ``state_dict`` converted with
``jaxkd.models.from_torchvision``, and the logits of both on the same random 64x64 images
(NCHW there, NHWC here), float32, ``cpu_conv="xla"``. Writes
``experiments/results/imagenet_models/torchvision_logits.json``: per network the parameter
counts (jaxkd's params, torchvision's ``parameters()``), the largest logit and the largest
absolute difference; plus versions and the command. Exit status 1 when a count differs or a
difference exceeds 1e-4.

    PYTHONPATH=. python experiments/imagenet_models/check_torchvision.py

About 3 minutes on 2 CPU cores (needs ``pip install -e '.[torch]'``).
"""
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torchvision

import jaxkd.models as models

NETWORKS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2",
            "resnext50_32x4d", "resnext101_32x8d", "mobilenet_v2", "densenet121")
ATOL = 1e-4
OUT = os.path.join(os.path.dirname(__file__), "..", "results", "imagenet_models",
                   "torchvision_logits.json")


def randomized(net: torch.nn.Module) -> torch.nn.Module:
  """``net`` in eval mode with non-trivial BatchNorm affine maps and running statistics."""
  gen = torch.Generator().manual_seed(1)
  with torch.no_grad():
    for module in net.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.copy_(torch.rand(module.weight.shape, generator=gen) * 0.5 + 0.25)
        module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
        module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=gen) * 0.1)
        module.running_var.copy_(torch.rand(module.running_var.shape, generator=gen) + 1.0)
  return net.eval()


def check(network: str) -> dict:
  """Counts and the largest logit difference of one network."""
  start = time.time()
  torch.manual_seed(0)
  net = randomized(getattr(torchvision.models, network)())
  x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
  with torch.no_grad():
    expected = net(x).numpy()
  name = f"{network}_imagenet"
  variables = models.from_torchvision(name, net.state_dict())
  model = models.get(name, num_classes=1000, cpu_conv="xla")
  logits = jax.jit(lambda v, x: model.apply(v, x, train=False)["logits"])(
      variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 1)))
  diff = float(np.abs(np.asarray(logits) - expected).max())
  return {
      "jaxkd_params": int(sum(np.size(p) for p in jax.tree.leaves(variables["params"]))),
      "torchvision_params": int(sum(p.numel() for p in net.parameters())),
      "max_abs_logit": float(np.abs(expected).max()),
      "max_abs_diff": diff,
      "ok": diff <= ATOL,
      "seconds": round(time.time() - start, 1),
  }


def main() -> int:
  results = {}
  for network in NETWORKS:
    results[network] = check(network)
    results[network]["ok"] &= (results[network]["jaxkd_params"]
                               == results[network]["torchvision_params"])
    print(network, results[network], flush=True)
  report = {
      "what": ("torchvision model (random weights, random BatchNorm statistics, eval mode) vs "
               "jaxkd.models.from_torchvision + jaxkd.models.get(<name>_imagenet), float32, "
               "cpu_conv='xla', 2 random 64x64 images; max |logit difference| per network"),
      "atol": ATOL,
      "networks": results,
      "all_ok": all(r["ok"] for r in results.values()),
      "versions": {"python": platform.python_version(), "jax": jax.__version__,
                   "torch": torch.__version__, "torchvision": torchvision.__version__,
                   "numpy": np.__version__},
      "command": "PYTHONPATH=. python experiments/imagenet_models/check_torchvision.py",
  }
  os.makedirs(os.path.dirname(OUT), exist_ok=True)
  with open(OUT, "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
    f.write("\n")
  print("wrote", os.path.normpath(OUT), "all_ok:", report["all_ok"])
  return 0 if report["all_ok"] else 1


if __name__ == "__main__":
  sys.exit(main())

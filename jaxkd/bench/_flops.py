"""Model FLOPs and model FLOP utilisation (MFU) of a timed train step.

MFU is the model's own arithmetic per second over the device's dense peak. The model's
arithmetic is the usual training count, three forward passes per image (the forward, and
twice that for the backward), the forward counted by XLA's cost analysis of the student's
unoptimised program, which is the same on every platform. The extra forward passes some
methods make (a teacher, MrKD's backups, CS-KD's partner batch) are not counted as useful
work, so their MFU is lower by what they cost.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["PEAK_TFLOPS", "model_flops_per_image", "peak_flops"]

# Dense peak TFLOP/s by device kind (substring of ``jax.Device.device_kind``) and compute
# dtype, from the vendors' datasheets. float32 on these GPUs is XLA's default TF32 matmul.
PEAK_TFLOPS = {
    "H100": {"bfloat16": 989.4, "float32": 494.7},  # SXM
    "H200": {"bfloat16": 989.4, "float32": 494.7},
    "A100": {"bfloat16": 312.0, "float32": 156.0},
    "TPU v4": {"bfloat16": 275.0},
    "TPU v5 lite": {"bfloat16": 197.0},
    "TPU v5p": {"bfloat16": 459.0},
    "TPU v6 lite": {"bfloat16": 918.0},
}


def peak_flops(dtype: str, device: jax.Device | None = None) -> tuple[float | None, str]:
  """``(peak FLOP/s, where it came from)`` of ``device`` at ``dtype``; None when unknown."""
  kind = (device or jax.devices()[0]).device_kind
  for name, peaks in PEAK_TFLOPS.items():
    if name in kind and dtype in peaks:
      return peaks[dtype] * 1e12, f"datasheet dense {dtype} peak of {name} ({kind})"
  return None, f"no peak known for {kind!r} at {dtype} (give --peak-tflops)"


def model_flops_per_image(model, image_shape) -> float:
  """Training FLOPs per image: 3x the forward pass of ``model`` on one image."""
  x = jax.ShapeDtypeStruct((1,) + tuple(image_shape), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), x)

  def forward(variables, x):
    return model.apply(variables, x, train=False)["logits"]

  cost = jax.jit(forward).lower(variables, x).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return 3.0 * float(cost["flops"])

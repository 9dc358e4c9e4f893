"""Layers shared by the model zoo: PyTorch-faithful convolutions, BatchNorm, heads.

The zoo re-implements PyTorch CIFAR networks (Tf-KD ``model/*.py``, RepDistiller
``models/*.py``, PS-KD ``models/preact_resnet.py``). Three things must agree with
PyTorch for the results to transfer:

* padding is explicit and symmetric (``padding=p`` in ``nn.Conv2d``); Flax's
  ``"SAME"`` pads a stride-2 convolution asymmetrically and would shift features;
* BatchNorm uses PyTorch's defaults, ``momentum=0.1`` (Flax ``momentum=0.9``:
  Flax keeps ``momentum`` of the old statistic) and ``eps=1e-5``; Flax updates the
  running variance with the biased batch variance where PyTorch uses the unbiased
  one, a factor n/(n-1) with n = batch*h*w pixels (under 0.1% for CIFAR batches);
* weights start from the same distributions: PyTorch's default layer init
  (``kaiming_uniform_(a=sqrt(5))``, i.e. U(+-1/sqrt(fan_in)) for weights and biases)
  unless the original overrides it (``KAIMING_OUT``, ``NORMAL_001``, ...).

Every model returns the same dict (see :func:`outputs`), with float32 values even
when the computation runs in bfloat16. Parameters and outputs are `wide`: float32, or float64
when the computation runs in float64 (the verification mode, under JAX's x64 switch).
"""
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxkd.models import _cpu_conv

__all__ = [
    "TORCH_WEIGHT", "KAIMING_OUT", "KAIMING_IN", "NORMAL_001", "ZEROS",
    "torch_bias", "conv", "batch_norm", "linear", "outputs", "check_image",
    "channel_shuffle", "avg_pool", "max_pool", "wide",
]

Initializer = Callable[..., jax.Array]

# PyTorch's default for Conv2d/Linear weights: kaiming_uniform_(a=sqrt(5)), which is
# U(-b, b) with b = 1/sqrt(fan_in), i.e. variance 1/(3 fan_in).
TORCH_WEIGHT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# kaiming_normal_(mode="fan_out", nonlinearity="relu"), and the equivalent
# normal_(0, sqrt(2 / (k*k*out_channels))) of the WRN/VGG/MobileNetV2 originals.
KAIMING_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# kaiming_normal_ with its default mode="fan_in" (ResNeXt's classifier).
KAIMING_IN = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# normal_(0, 0.01) (RepDistiller VGG and MobileNetV2 classifiers).
NORMAL_001 = nn.initializers.normal(0.01)
ZEROS = nn.initializers.zeros


def wide(dtype: Any) -> jnp.dtype:
  """The dtype of parameters, statistics and outputs for computation dtype ``dtype``: float32
  for float32 and the half types, float64 for float64."""
  return jnp.promote_types(dtype, jnp.float32)


def torch_bias(fan_in: int) -> Initializer:
  """PyTorch's default bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / float(fan_in) ** 0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def conv(x: jax.Array, features: int, kernel_size: int, *, dtype: Any, cpu_conv: str,
         strides: int = 1, padding: int = 0, groups: int = 1, bias: bool = False,
         kernel_init: Initializer = TORCH_WEIGHT,
         bias_init: Optional[Initializer] = None,
         name: Optional[str] = None) -> jax.Array:
  """``nn.Conv2d(in, features, kernel_size, strides, padding, groups, bias)`` on NHWC.

  Call from inside a ``@nn.compact`` method. ``bias_init=None`` means PyTorch's
  default, which depends on the fan-in. ``cpu_conv`` (``"xla"`` or ``"fast"``) is how the
  convolution runs on CPU, see ``_cpu_conv.py``.
  """
  fan_in = x.shape[-1] // groups * kernel_size * kernel_size
  layer = nn.Conv(
      features, (kernel_size, kernel_size), strides=(strides, strides),
      padding=((padding, padding), (padding, padding)),
      feature_group_count=groups, use_bias=bias, kernel_init=kernel_init,
      bias_init=torch_bias(fan_in) if bias_init is None else bias_init,
      dtype=dtype, param_dtype=wide(dtype), name=name,
      conv_general_dilated=_cpu_conv.conv_fn(cpu_conv))
  return layer(x)


def batch_norm(train: bool, dtype: Any, *, epsilon: float = 1e-5,
               name: Optional[str] = None) -> nn.BatchNorm:
  """``nn.BatchNorm2d`` with PyTorch defaults (momentum 0.1 == Flax 0.9, eps 1e-5).

  Statistics are reduced and kept in float32 (Flax's ``force_float32_reductions``), in float64
  for a float64 computation."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=epsilon,
                      dtype=dtype, param_dtype=wide(dtype), name=name,
                      force_float32_reductions=wide(dtype) == jnp.float32)


def linear(in_features: int, out_features: int, *, dtype: Any,
           kernel_init: Initializer = TORCH_WEIGHT,
           bias_init: Optional[Initializer] = None,
           use_bias: bool = True, name: Optional[str] = None) -> nn.Dense:
  """``nn.Linear(in_features, out_features)``; the module is returned so that a
  classifier can be applied to pooled and per-position features with one weight."""
  return nn.Dense(out_features, use_bias=use_bias, kernel_init=kernel_init,
                  bias_init=torch_bias(in_features) if bias_init is None else bias_init,
                  dtype=dtype, param_dtype=wide(dtype), name=name)


def outputs(feature_map: jax.Array, head: Callable[[jax.Array], jax.Array],
            features: Optional[jax.Array] = None,
            pooled_logits: Optional[jax.Array] = None) -> dict:
  """The output dict every model returns.

  Args:
    feature_map: ``[N, h, w, C]`` last feature map before global pooling.
    head: the classifier, applied to the pooled features and, for the Zipf's LS
      "dense votes", at every position of ``feature_map`` with the same weights.
    features: ``[N, C]`` penultimate features; default the global average of
      ``feature_map`` (every CIFAR original pools its last map down to 1x1).
    pooled_logits: logits when they differ from ``head(features)`` (dropout).

  Returns:
    ``{"logits": [N, K], "features": [N, C], "feature_map": [N, h, w, C],
    "dense_logits": [N, h, w, K]}``, all float32 (float64 for a float64 ``feature_map``).
  """
  out = wide(feature_map.dtype)
  if features is None:
    features = jnp.mean(feature_map.astype(out), axis=(1, 2)).astype(feature_map.dtype)
  logits = head(features) if pooled_logits is None else pooled_logits
  return {
      "logits": logits.astype(out),
      "features": features.astype(out),
      "feature_map": feature_map.astype(out),
      "dense_logits": head(feature_map).astype(out),
  }


def check_image(x: jax.Array, model: str) -> None:
  """Reject anything but an NHWC image batch before it reaches a convolution."""
  if x.ndim != 4:
    raise ValueError(f"{model}: input x must be an NHWC batch [N, H, W, C]; "
                     f"got shape {tuple(x.shape)}")


def channel_shuffle(x: jax.Array, groups: int) -> jax.Array:
  """ShuffleNet channel shuffle on NHWC: channels viewed as [groups, C/groups],
  transposed, flattened (the NCHW ``view/transpose`` of the originals)."""
  n, h, w, c = x.shape
  x = x.reshape(n, h, w, groups, c // groups)
  return jnp.swapaxes(x, 3, 4).reshape(n, h, w, c)


def avg_pool(x: jax.Array, window: int, strides: int, padding: int = 0) -> jax.Array:
  """``nn.AvgPool2d`` (padding zeros count in the mean, as PyTorch's default)."""
  pad = ((padding, padding), (padding, padding))
  return nn.avg_pool(x, (window, window), (strides, strides), pad,
                     count_include_pad=True)


def max_pool(x: jax.Array, window: int, strides: int, padding: int = 0) -> jax.Array:
  """``nn.MaxPool2d`` (padding never wins the max)."""
  pad = ((padding, padding), (padding, padding))
  return nn.max_pool(x, (window, window), (strides, strides), pad)

"""Models by name: ``get(name, num_classes=K, dtype=...)`` and ``names()``.

Names follow the configs of the papers' code: the Tf-KD zoo
(yuanli2333/Teacher-free-Knowledge-Distillation, ``main.py``), RepDistiller's
``models/__init__.py`` ``model_dict`` (``vgg8``/``vgg13`` are its BatchNorm
variants; ``shufflev1``/``shufflev2``/``mobilenetv2_half`` are ``ShuffleV1``,
``ShuffleV2``, ``mobile_half``), and PS-KD's ``CIFAR_ResNet18_preActBasic``.
"""
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxkd.models import _small

__all__ = ["get", "names"]

_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": _small.SmallCNN,
    "mlp": _small.MLP,
}


def names() -> tuple[str, ...]:
    """All model names, sorted."""
    return tuple(sorted(_FACTORIES))


def get(name: str, *, num_classes: int, dtype: Any = jnp.float32) -> nn.Module:
    """The Flax module called ``name``.

    Args:
      name: one of :func:`names`.
      num_classes: K, the classifier width (a positive int).
      dtype: computation dtype (float32, bfloat16 or float16); parameters and
        every output stay float32.

    Returns:
      A module whose ``init(rng, x, train=False)`` on an NHWC batch gives ``params``
      (and ``batch_stats`` for nets with BatchNorm) and whose ``apply`` returns
      ``{"logits", "features", "feature_map", "dense_logits"}``.
    """
    if name not in _FACTORIES:
        raise ValueError(f"model name={name!r} is unknown; allowed: {', '.join(names())}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive int")
    if jnp.dtype(dtype) not in (jnp.float32, jnp.bfloat16, jnp.float16):
        raise ValueError(f"dtype={dtype!r} is not allowed; allowed: float32, bfloat16, "
                         "float16")
    return _FACTORIES[name](num_classes=int(num_classes), dtype=jnp.dtype(dtype))

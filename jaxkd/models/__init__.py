"""Flax (linen) models by name, faithful to the papers' PyTorch CIFAR definitions.

``get(name, num_classes=K, dtype=...)`` returns a module; ``init(rng, x, train=False)``
on an NHWC batch gives ``{"params", "batch_stats"}``; ``apply`` returns a dict with
``logits`` [N, K], ``features`` [N, D] (classifier input), ``feature_map`` [N, h, w, C]
(last map before global pooling) and ``dense_logits`` [N, h, w, K] (the classifier at
every position, Zipf's LS dense votes), all float32. Parameter counts equal the
originals' for 3-channel inputs.
"""
from jaxkd.models._registry import get, names
from jaxkd.models._small import MLP, SmallCNN

__all__ = ["get", "names", "MLP", "SmallCNN"]

"""Analysis: calibration (ECE, NLL), accuracy, the stability metric, feature projections, plots.

The metric functions are pure ``jax.numpy`` and jit-able, so an evaluation step can compute
them on the device; they return additive sums that add up exactly over batches.
"""
from jaxkd.analysis._classification import accumulate_metrics
from jaxkd.analysis._classification import classification_metrics
from jaxkd.analysis._classification import ece_bin_statistics
from jaxkd.analysis._classification import expected_calibration_error
from jaxkd.analysis._classification import finalize_metrics

__all__ = [
    "accumulate_metrics",
    "classification_metrics",
    "ece_bin_statistics",
    "expected_calibration_error",
    "finalize_metrics",
]

"""Analysis: calibration (ECE, NLL), accuracy, Shen et al.'s stability, feature projections, plots.

The metric functions are pure ``jax.numpy`` and jit-able, so an evaluation step can compute
them on the device; they return additive sums that add up exactly over batches. Projections
and figures are host-side numpy and matplotlib (imported only when a figure is drawn).
"""
from jaxkd.analysis._classification import accumulate_metrics
from jaxkd.analysis._classification import classification_metrics
from jaxkd.analysis._classification import ece_bin_statistics
from jaxkd.analysis._classification import expected_calibration_error
from jaxkd.analysis._classification import finalize_metrics
from jaxkd.analysis._curves import load_metrics
from jaxkd.analysis._curves import metric_series
from jaxkd.analysis._plots import plot_projection
from jaxkd.analysis._plots import plot_training_curves
from jaxkd.analysis._plots import reliability_diagram
from jaxkd.analysis._projection import ThreeClassProjection
from jaxkd.analysis._projection import project_three_classes
from jaxkd.analysis._stability import feature_stability
from jaxkd.analysis._stability import feature_stability_statistics
from jaxkd.analysis._stability import finalize_intra_class_variance
from jaxkd.analysis._stability import finalize_stability
from jaxkd.analysis._stability import intra_class_variance
from jaxkd.analysis._stability import stability
from jaxkd.analysis._stability import stability_statistics

__all__ = [
    "ThreeClassProjection",
    "accumulate_metrics",
    "classification_metrics",
    "ece_bin_statistics",
    "expected_calibration_error",
    "feature_stability",
    "feature_stability_statistics",
    "finalize_intra_class_variance",
    "finalize_metrics",
    "finalize_stability",
    "intra_class_variance",
    "load_metrics",
    "metric_series",
    "plot_projection",
    "plot_training_curves",
    "project_three_classes",
    "reliability_diagram",
    "stability",
    "stability_statistics",
]

"""Evaluation on whole volumes and subjects (numpy/scipy/scikit-learn).

Segmentation metrics per label with distances in mm, tissue volumes in ml,
and regression / classification reports as pandas DataFrames. See
:mod:`brain_tf.evaluation.segmentation` for the empty-mask policy.
"""

from brain_tf.evaluation.reports import (
    ClassificationReport,
    classification_report,
    regression_report,
)
from brain_tf.evaluation.segmentation import (
    average_surface_distance,
    binary_metrics,
    confusion_counts,
    dice,
    hausdorff,
    hd95,
    segmentation_metrics,
    surface,
    surface_distances,
)
from brain_tf.evaluation.volumes import TISSUE_LABELS, tissue_volumes, volume_fractions

__all__ = [
    "TISSUE_LABELS", "ClassificationReport", "average_surface_distance", "binary_metrics",
    "classification_report", "confusion_counts", "dice", "hausdorff", "hd95",
    "regression_report", "segmentation_metrics", "surface", "surface_distances",
    "tissue_volumes", "volume_fractions",
]

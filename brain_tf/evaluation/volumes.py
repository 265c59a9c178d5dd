"""Structure volumes from label maps (system A's age features)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from brain_tf.errors import DataError

TISSUE_LABELS = {"csf": 1, "gm": 2, "wm": 3}
"""System A's tissue labels (0 is background)."""


def tissue_volumes(label_map, spacing, labels: Mapping[str, int] | Sequence[int] = TISSUE_LABELS,
                   ) -> dict[str, float]:
    """Volume in ml of each label: voxel count x voxel volume (``spacing`` in mm) / 1000.

    ``labels`` maps names to label values (default CSF 1, GM 2, WM 3) or is a
    sequence of values, then named by their string value.
    """
    label_map = np.asarray(label_map)
    spacing = tuple(float(s) for s in np.atleast_1d(spacing))
    if len(spacing) != label_map.ndim or min(spacing) <= 0:
        raise DataError(f"spacing {spacing} must give {label_map.ndim} positive voxel sizes "
                        f"for a label map of shape {label_map.shape}")
    if not isinstance(labels, Mapping):
        labels = {str(v): v for v in labels}
    values, counts = np.unique(label_map, return_counts=True)
    count_of = dict(zip(values.tolist(), counts.tolist()))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {str(name): count_of.get(int(value), 0) * voxel_ml for name, value in labels.items()}


def volume_fractions(volumes: Mapping[str, float]) -> dict[str, float]:
    """Each volume divided by their sum (system A's regression features); a
    sum of 0 raises DataError."""
    total = float(sum(volumes.values()))
    if total <= 0:
        raise DataError("all volumes are 0: the label map has none of the labels; "
                        "check the segmentation and the label values")
    return {name: float(v) / total for name, v in volumes.items()}

"""From per-voxel probabilities (..., k) to an integer label map (...).

softmax outputs (k mutually exclusive classes, background included): the
label is the most probable class, mapped to the dataset's label values.

sigmoid outputs (k independent channels, no background channel): each
channel is thresholded, then merged into one label map by one of two rules:

``"argmax"``
    The channels are mutually exclusive classes (e.g. the one-hot channels
    edema / non-enhancing / enhancing tumour with the background dropped).
    A voxel gets the value of its most probable channel among those above
    their threshold, and 0 when no channel is above threshold. Default
    values 1..k (the Decathlon labels for those three channels).

``"nested"``
    The channels are nested regions listed from the outermost to the
    innermost, e.g. whole tumour ⊃ tumour core ⊃ enhancing tumour. Channels
    are painted in order, so the innermost region above threshold wins: a
    voxel is the enhancing value wherever ET is above threshold, else the
    core value wherever TC is, else the edema value wherever WT is, else 0.
    Default values for three channels are the BraTS labels (2 edema, 1
    necrotic / non-enhancing core, 4 enhancing): :data:`BRATS_NESTED_VALUES`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from brain_tf.errors import ConfigError

BRATS_NESTED_VALUES = (2, 1, 4)
"""Label values painted for nested (whole tumour, tumour core, enhancing) channels."""

MERGE_RULES = ("argmax", "nested")


def _label_dtype(values: np.ndarray):
    lo, hi = int(min(values.min(initial=0), 0)), int(values.max(initial=0))
    for dtype in (np.uint8, np.int16, np.int32):
        if np.iinfo(dtype).min <= lo and hi <= np.iinfo(dtype).max:
            return dtype
    return np.int64


def _values(label_values, count: int, default: Sequence[int]) -> np.ndarray:
    values = np.asarray(default if label_values is None else label_values, dtype=np.int64)
    if values.ndim != 1 or values.size != count:
        raise ConfigError(f"label_values={list(values.ravel())}: need one value per output "
                          f"channel ({count})")
    return values


def _thresholds(threshold, count: int) -> np.ndarray:
    thresholds = np.asarray(threshold, dtype=np.float32)
    if thresholds.ndim == 0:
        thresholds = np.full(count, thresholds)
    if thresholds.shape != (count,):
        raise ConfigError(f"threshold={threshold}: give one value or one per channel ({count})")
    return thresholds


def labels_from_softmax(probabilities: np.ndarray, label_values=None) -> np.ndarray:
    """Argmax over the last axis, mapped to ``label_values`` (default 0..k-1)."""
    probabilities = np.asarray(probabilities)
    values = _values(label_values, probabilities.shape[-1], range(probabilities.shape[-1]))
    index = np.argmax(probabilities, axis=-1)
    return values.astype(_label_dtype(values))[index]


def labels_from_sigmoid(
    probabilities: np.ndarray,
    threshold=0.5,
    merge: str = "argmax",
    label_values=None,
) -> np.ndarray:
    """Threshold each channel (> threshold) and merge them (see the module docstring)."""
    probabilities = np.asarray(probabilities)
    count = probabilities.shape[-1]
    thresholds = _thresholds(threshold, count)
    if merge == "argmax":
        values = _values(label_values, count, range(1, count + 1))
        above = probabilities > thresholds
        best = np.argmax(np.where(above, probabilities, -np.inf), axis=-1)
        labels = np.where(above.any(axis=-1), values[best], 0)
        return labels.astype(_label_dtype(values))
    if merge == "nested":
        default = BRATS_NESTED_VALUES if count == 3 else range(1, count + 1)
        values = _values(label_values, count, default)
        labels = np.zeros(probabilities.shape[:-1], dtype=_label_dtype(values))
        for channel in range(count):
            labels[probabilities[..., channel] > thresholds[channel]] = values[channel]
        return labels
    raise ConfigError(f"merge={merge!r}: must be one of {MERGE_RULES}")


def to_label_map(
    probabilities: np.ndarray,
    activation: str = "softmax",
    label_values=None,
    threshold=0.5,
    merge: str = "argmax",
) -> np.ndarray:
    """Label map from probabilities of a ``"softmax"`` or ``"sigmoid"`` output."""
    if activation == "softmax":
        return labels_from_softmax(probabilities, label_values)
    if activation == "sigmoid":
        return labels_from_sigmoid(probabilities, threshold, merge, label_values)
    raise ConfigError(f"activation={activation!r}: must be 'softmax' or 'sigmoid'")


def largest_components(indices: np.ndarray, classes) -> np.ndarray:
    """``indices`` with every voxel of ``classes`` outside that class's largest
    face-connected component set to 0 (background)."""
    import scipy.ndimage as ndi

    out = np.array(indices, copy=True)
    for c in classes:
        components, count = ndi.label(out == c)
        if count > 1:
            sizes = np.bincount(components.ravel())[1:]
            out[(components > 0) & (components != np.argmax(sizes) + 1)] = 0
    return out

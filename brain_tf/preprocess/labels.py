"""Label maps: on-disk values to class indices 0..K-1 and back."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from brain_tf.errors import DataError


def values_to_indices(label: np.ndarray, values: Sequence[int] | None,
                      where: str = "label") -> np.ndarray:
    """Map label ``values`` (in class order) to indices 0..K-1 as uint8.

    ``values`` is the spec's ``[labels]`` table in order, e.g. ``[0, 255]``
    for 0/255 masks gives 0/1. With ``values=None`` the map must already hold
    indices (0..255). A value not in ``values`` raises :class:`DataError`.
    """
    label = np.asarray(label)
    if label.dtype.kind == "f":
        label = np.rint(label).astype(np.int64)
    if values is None:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise DataError(f"{where}: label values outside 0..255; give the label values "
                            "(the spec's [labels] table) to map them to classes")
        return label.astype(np.uint8)
    values = np.asarray([int(v) for v in values])
    if len(values) > 256 or len(set(values.tolist())) != len(values):
        raise DataError(f"{where}: label values {values.tolist()} must be distinct, at most 256")
    found = np.unique(label)
    extra = np.setdiff1d(found, values)
    if extra.size:
        raise DataError(f"{where}: label values {extra.tolist()} are not in the label set "
                        f"{values.tolist()}; fix the label file or the spec's [labels] table")
    if np.array_equal(values, np.arange(len(values))):
        return label.astype(np.uint8)
    order = np.argsort(values)
    positions = np.searchsorted(values[order], label)
    return order[positions].astype(np.uint8)


def indices_to_values(indices: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Class indices back to the on-disk label values (for writing predictions)."""
    values = np.asarray([int(v) for v in values])
    return values[np.asarray(indices, dtype=np.int64)]

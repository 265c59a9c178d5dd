"""Label maps: on-disk values to class indices 0..K-1 and back."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from brain_tf.errors import DataError


def values_to_indices(label: np.ndarray, values: Sequence[int | Sequence[int]] | None,
                      where: str = "label") -> np.ndarray:
    """Map label ``values`` (in class order) to indices 0..K-1 as uint8.

    ``values`` is the spec's ``[labels]`` table in order, e.g. ``[0, 255]``
    for 0/255 masks gives 0/1; an entry may be a list of values that form one class
    (``[[0, 7], [1, 2], [3]]``: a fine label map grouped into three classes). With
    ``values=None`` the map must already hold indices (0..255). A value not in
    ``values`` raises :class:`DataError`.
    """
    label = np.asarray(label)
    if label.dtype.kind == "f":
        label = np.rint(label).astype(np.int64)
    if values is None:
        if label.size and (label.min() < 0 or label.max() > 255):
            raise DataError(f"{where}: label values outside 0..255; give the label values "
                            "(the spec's [labels] table) to map them to classes")
        return label.astype(np.uint8)
    if any(isinstance(v, (list, tuple)) for v in values):
        return _grouped(label, [np.atleast_1d(v).astype(int).tolist() for v in values], where)
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


def _grouped(label: np.ndarray, groups: list[list[int]], where: str) -> np.ndarray:
    """Class indices of a label map whose values are grouped into classes."""
    flat = [v for group in groups for v in group]
    if len(flat) != len(set(flat)) or min(flat) < 0 or len(groups) > 256:
        raise DataError(f"{where}: label groups {groups} must be disjoint non-negative values, "
                        "at most 256 classes")
    table = np.full(max(flat) + 1, 255, np.uint8)
    for index, group in enumerate(groups):
        table[group] = index
    found = np.unique(label)
    known = (found >= 0) & (found < len(table))
    known[known] = table[found[known]] != 255
    if not known.all():
        raise DataError(f"{where}: label values {found[~known].tolist()} are in none of the "
                        f"class groups {groups}; fix the label file or the groups")
    return table[label]


def indices_to_values(indices: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Class indices back to the on-disk label values (for writing predictions)."""
    values = np.asarray([int(v) for v in values])
    return values[np.asarray(indices, dtype=np.int64)]

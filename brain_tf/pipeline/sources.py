"""Where a pipeline's subjects (or slices) come from: a list in memory or a loader.

A :class:`Source` turns either form into ``load(index) -> (image, label)``
with float32 channels-last images and uint8 label maps (or ``None``), so the
tf.data pipelines never care whether data sit in memory, on disk or in the
HDF5 cache. Arrays are handed to TF 64-byte aligned, which lets
``tf.numpy_function`` wrap them without a copy (an unaligned array is copied
once per load; :func:`brain_tf.preprocess.preprocess_subject` and the HDF5
cache already return aligned arrays).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from brain_tf.errors import DataError
from brain_tf.pipeline.errors import remembered
from brain_tf.preprocess.aligned import as_aligned
from brain_tf.preprocess.subject import Preprocessed


def _split(item: Any) -> tuple[Any, Any]:
    if isinstance(item, Preprocessed):
        return item.image, item.label
    if isinstance(item, dict):
        return item["image"], item.get("label")
    if isinstance(item, (tuple, list)):
        if not 1 <= len(item) <= 2:
            raise DataError(f"a subject item must be (image,) or (image, label), "
                            f"got {len(item)} parts")
        return item[0], item[1] if len(item) == 2 else None
    return item, None


class Source:
    """Subjects or slices by index.

    Args:
        items: a sequence of :class:`Preprocessed`, ``(image, label)`` tuples,
            ``{"image", "label"}`` dicts or bare image arrays; or
        loader: a callable ``loader(index)`` returning one of those, with
            ``length`` the number of items (``len(loader)`` when it has one).
        spatial_dims: 3 for volumes (x, y, z[, c]), 2 for slices (rows, cols[, c]).
        names: ids used in error messages (default: the index).
    """

    def __init__(self, items: Sequence | None = None, loader: Callable | None = None,
                 length: int | None = None, spatial_dims: int = 3,
                 names: Sequence[str] | None = None):
        if (items is None) == (loader is None):
            raise DataError("give either items (a list) or loader (a callable), not both")
        if loader is not None and length is None:
            try:
                length = len(loader)
            except TypeError:
                raise DataError("a loader callable needs length= (the number of subjects)"
                                ) from None
        self.items = items
        self.loader = loader
        self.length = len(items) if items is not None else int(length)
        if self.length == 0:
            raise DataError("no subjects to build a dataset from (empty list or manifest)")
        self.spatial_dims = spatial_dims
        self.names = list(names) if names is not None else None
        self._first: tuple | None = None

    @classmethod
    def wrap(cls, subjects, length: int | None = None, spatial_dims: int = 3) -> "Source":
        """A :class:`Source` from a Source, a list, an (N, ...) array or a loader callable."""
        if isinstance(subjects, Source):
            return subjects
        if callable(subjects) and not isinstance(subjects, (list, tuple, np.ndarray)):
            return cls(loader=subjects, length=length, spatial_dims=spatial_dims)
        return cls(items=subjects, spatial_dims=spatial_dims)

    def __len__(self) -> int:
        return self.length

    def name(self, index: int) -> str:
        if self.names is not None:
            return str(self.names[index])
        if self.items is None and hasattr(self.loader, "subject_id"):
            return str(self.loader.subject_id(index))
        return f"item {index}"

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """``(image float32 (..., c), label uint8 or None)`` of item ``index``."""
        index = int(index)
        item = self.items[index] if self.items is not None else self.loader(index)
        image, label = _split(item)
        image = as_aligned(image, np.float32)
        if image.ndim == self.spatial_dims:
            image = image[..., None]
        if image.ndim != self.spatial_dims + 1:
            raise DataError(f"{self.name(index)}: image has shape {image.shape}; expected "
                            f"{self.spatial_dims} spatial axes and optionally channels")
        if label is not None:
            label = np.asarray(label)
            if label.ndim == self.spatial_dims + 1 and label.shape[-1] == 1:
                label = label[..., 0]
            if label.shape != image.shape[:-1]:
                raise DataError(f"{self.name(index)}: label shape {label.shape} differs from "
                                f"image shape {image.shape[:-1]}")
            if label.dtype != np.uint8 and (label.dtype.kind == "f" or (
                    label.size and (label.min() < 0 or label.max() > 255))):
                raise DataError(f"{self.name(index)}: labels must be class indices 0..255 "
                                "(map values with brain_tf.preprocess.values_to_indices)")
            label = as_aligned(label, np.uint8)
        return image, label

    def first(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Item 0 (cached): tells channels, shape and whether labels exist."""
        if self._first is None:
            self._first = self.load(0)
        return self._first

    @property
    def channels(self) -> int:
        return int(self.first()[0].shape[-1])

    @property
    def has_labels(self) -> bool:
        return self.first()[1] is not None

    def tf_load(self, index, with_label: bool, spatial_shape: Sequence[int] | None = None):
        """TF op loading item ``index`` (via ``tf.numpy_function``), shapes set."""
        channels = self.channels
        expected = None if spatial_shape is None else tuple(int(n) for n in spatial_shape)

        def load(i):
            image, label = self.load(i)
            if expected is not None and image.shape[:-1] != expected:
                raise DataError(f"{self.name(int(i))}: shape {image.shape[:-1]} differs from "
                                f"{expected}; preprocess all subjects onto one grid")
            if image.shape[-1] != channels:
                raise DataError(f"{self.name(int(i))}: {image.shape[-1]} channels, expected "
                                f"{channels}")
            if with_label:
                if label is None:
                    raise DataError(f"{self.name(int(i))}: no label map; this dataset needs one")
                return image, label
            return (image,)

        dtypes = (tf.float32, tf.uint8) if with_label else (tf.float32,)
        # remembered: pipeline_errors() gives a brain_tf error raised here back as itself
        out = tf.numpy_function(remembered(load), [index], dtypes, stateful=False)
        spatial = list(expected) if expected is not None else [None] * self.spatial_dims
        out[0].set_shape(spatial + [channels])
        if with_label:
            out[1].set_shape(spatial)
            return out[0], out[1]
        return out[0], None

"""Load and preprocess the samples of a manifest by row index.

:class:`ManifestLoader` (volumes) and :class:`SliceLoader` (2D slices) are
the ``loader(index)`` callables the tf.data pipelines take, so large datasets
stream from disk (or from the HDF5 cache) one sample at a time instead of
living in memory.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import pandas as pd

from brain_tf.errors import DataError
from brain_tf.io import load_image, load_label, load_modalities, load_volume
from brain_tf.preprocess.cache import PreprocessCache
from brain_tf.preprocess.slices import preprocess_slice
from brain_tf.preprocess.subject import Preprocessed, preprocess_subject


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and pd.isna(value))


class ManifestLoader:
    """``loader(i)`` -> :class:`Preprocessed` for row ``i`` of a manifest.

    Args:
        manifest: a data spec manifest (columns ``sample``, ``image_<name>``,
            optionally ``label`` and ``mask``).
        config: the preprocessing config (see :mod:`brain_tf.preprocess.subject`).
        label_values: the spec's label values in class order (``spec.label_values``).
        cache: an HDF5 cache path or :class:`PreprocessCache` (optional).
        use_labels: load the ``label`` column when present.
        nonfinite: what :func:`load_volume` does with NaN/Inf voxels.
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        config: Mapping[str, Any] | None = None,
        label_values: Sequence[int] | None = None,
        cache: PreprocessCache | str | os.PathLike | None = None,
        use_labels: bool = True,
        nonfinite: str = "raise",
    ):
        if len(manifest) == 0:
            raise DataError("the manifest is empty; check the data spec's root and patterns")
        self.manifest = manifest.reset_index(drop=True)
        self.image_columns = [c for c in manifest.columns if c.startswith("image_")]
        if not self.image_columns:
            raise DataError("the manifest has no image_<name> columns; build it from a data spec")
        self.config = dict(config or {})
        self.label_values = None if label_values is None else list(label_values)
        if cache is not None and not isinstance(cache, PreprocessCache):
            cache = PreprocessCache(cache, self.config, self.label_values)
        self.cache = cache
        self.use_labels = use_labels and "label" in manifest.columns
        self.nonfinite = nonfinite

    @classmethod
    def from_spec(cls, spec, config: Mapping[str, Any] | None = None, cache=None,
                  manifest: pd.DataFrame | None = None, **kwargs) -> "ManifestLoader":
        """A loader over ``manifest`` (default: the spec's whole manifest) with its label values."""
        manifest = spec.manifest() if manifest is None else manifest
        return cls(manifest, config, spec.label_values or None, cache, **kwargs)

    def __len__(self) -> int:
        return len(self.manifest)

    def subject_id(self, index: int) -> str:
        return str(self.manifest.at[int(index), "sample"])

    def _compute(self, index: int) -> Preprocessed:
        row = self.manifest.iloc[int(index)]
        image = load_modalities([row[c] for c in self.image_columns], nonfinite=self.nonfinite)
        label = None
        if self.use_labels and _present(row.get("label")):
            label = load_label(row["label"], values=self.label_values, like=image)
        mask = None
        if "mask" in row and _present(row["mask"]):
            mask = load_volume(row["mask"], ndim=3)
        return preprocess_subject(image, label, mask, self.config, self.label_values,
                                  subject=str(row["sample"]))

    def __call__(self, index: int) -> Preprocessed:
        if self.cache is None:
            return self._compute(index)
        return self.cache.get_or_create(self.subject_id(index), lambda: self._compute(index))


class SliceLoader:
    """``loader(i)`` -> ``(image, mask)`` (or the image alone) for row ``i`` of a slice manifest.

    Reads the ``image_<name>`` file (2D .tif/.png/.jpg) and the ``label`` mask
    when present, then applies :func:`preprocess_slice` with ``config`` (mask
    values mapped to classes in the order of ``label_values``, e.g. 0/255 -> 0/1).
    """

    def __init__(self, manifest: pd.DataFrame, config: Mapping[str, Any] | None = None,
                 label_values: Sequence[int] | None = None, use_labels: bool = True):
        if len(manifest) == 0:
            raise DataError("the manifest is empty; check the data spec's root and patterns")
        self.manifest = manifest.reset_index(drop=True)
        columns = [c for c in manifest.columns if c.startswith("image_")]
        if len(columns) != 1:
            raise DataError(f"a slice manifest needs one image_<name> column, found {columns}")
        self.image_column = columns[0]
        self.config = dict(config or {})
        self.label_values = None if label_values is None else list(label_values)
        self.use_labels = use_labels and "label" in manifest.columns

    @classmethod
    def from_spec(cls, spec, config: Mapping[str, Any] | None = None,
                  manifest: pd.DataFrame | None = None, **kwargs) -> "SliceLoader":
        manifest = spec.manifest() if manifest is None else manifest
        return cls(manifest, config, spec.label_values or None, **kwargs)

    def __len__(self) -> int:
        return len(self.manifest)

    def subject_id(self, index: int) -> str:
        return str(self.manifest.at[int(index), "sample"])

    def __call__(self, index: int):
        row = self.manifest.iloc[int(index)]
        path = row[self.image_column]
        image = load_image(path)
        mask = None
        if self.use_labels and _present(row.get("label")):
            mask = load_image(row["label"])
        x, m = preprocess_slice(image, mask, self.config, self.label_values, where=str(path))
        return x if not self.use_labels else (x, m)

"""Preprocessing of 2D slices (systems D and E): pixel scale, resize, map labels.

Slices keep the 0-255 scale of 8-bit image files (16-bit and other integer images are
scaled to it), because the 2D models normalise their inputs themselves
(:class:`brain_tf.models.layers.ImageNormalization`): an exported model then takes an
image as read from disk.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import skimage.transform

from brain_tf.config import with_defaults
from brain_tf.errors import DataError
from brain_tf.preprocess.labels import values_to_indices
from brain_tf.schema import SlicePreprocess

SLICE_DEFAULTS: dict[str, Any] = SlicePreprocess().to_dict()


def to_pixel_scale(image: np.ndarray) -> np.ndarray:
    """float32 pixels on the 0-255 scale: 8-bit values as they are, other integer types
    scaled by 255 / their maximum, booleans 0/255, floats in [0, 1] times 255 (other
    floats as they are)."""
    image = np.asarray(image)
    if image.dtype == bool:
        return image.astype(np.float32) * np.float32(255)
    if image.dtype == np.uint8:
        return image.astype(np.float32)
    if image.dtype.kind in "ui":
        return image.astype(np.float32) * np.float32(255.0 / np.iinfo(image.dtype).max)
    image = image.astype(np.float32)
    return image * np.float32(255) if image.size and image.max() <= 1.0 else image


def preprocess_slice(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    config: Mapping[str, Any] | None = None,
    label_values: Sequence[int] | None = None,
    where: str = "slice",
) -> tuple[np.ndarray, np.ndarray | None]:
    """One 2D slice to float32 (rows, cols, c) and its mask to class indices (uint8).

    See :data:`SLICE_DEFAULTS` for the config keys.
    """
    cfg = with_defaults(config, SLICE_DEFAULTS, "slice preprocessing config")
    x = to_pixel_scale(image)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3:
        raise DataError(f"{where}: expected a 2D image (rows, cols[, c]), got shape {x.shape}")
    if x.shape[-1] == 4:
        x = x[..., :3]  # drop an alpha channel
    if cfg["rgb"] and x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    m = None if mask is None else np.asarray(mask)
    if m is not None and m.ndim == 3:
        m = m[..., 0]  # masks stored as RGB: all channels equal
    if m is not None and m.shape != x.shape[:2]:
        raise DataError(f"{where}: mask shape {m.shape} differs from image {x.shape[:2]}")
    if cfg["shape"] is not None:
        shape = tuple(int(s) for s in cfg["shape"])
        if shape != x.shape[:2]:
            x = skimage.transform.resize(x, shape + x.shape[2:], order=1, anti_aliasing=True,
                                         preserve_range=True).astype(np.float32)
            if m is not None:
                m = skimage.transform.resize(m, shape, order=0, anti_aliasing=False,
                                             preserve_range=True).astype(m.dtype)
    values = cfg["labels"] if cfg["labels"] is not None else label_values
    if m is not None:
        m = values_to_indices(m, values, where=where)
    return x.astype(np.float32), m

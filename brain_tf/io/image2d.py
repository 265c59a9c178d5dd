"""2D image slices (.tif, .png, .jpg) with the same error handling as NIfTI."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from brain_tf.errors import DataError
from brain_tf.io.atomic import atomic_path

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def load_image(path: str | os.PathLike, as_gray: bool = False, dtype=None) -> np.ndarray:
    """Read a 2D image as (rows, cols) or (rows, cols, channels).

    ``dtype=np.float32`` rescales integer images to [0, 1].
    """
    import skimage.io

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found; check the path (or the data spec's root)")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: not a 2D image file ({', '.join(IMAGE_SUFFIXES)})")
    try:
        array = skimage.io.imread(str(path), as_gray=as_gray)
    except Exception as exc:  # imageio raises many types for unreadable files
        raise DataError(
            f"{path}: unreadable or corrupt image ({type(exc).__name__}: {exc}); re-export it"
        ) from None
    if array.ndim not in (2, 3):
        raise DataError(f"{path}: has {array.ndim} dimensions {array.shape}, expected 2D")
    if dtype is not None and np.dtype(dtype).kind == "f" and array.dtype.kind in "ui":
        array = array.astype(dtype) / np.iinfo(array.dtype).max
    elif dtype is not None:
        array = array.astype(dtype)
    return array


def save_image(array: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a 2D image atomically; float arrays in [0, 1] are stored as 8-bit."""
    import skimage.io

    array = np.asarray(array)
    if array.dtype.kind == "f":
        array = np.clip(np.rint(array * 255), 0, 255).astype(np.uint8)
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    with atomic_path(path) as tmp:
        skimage.io.imsave(str(tmp), array, check_contrast=False)
    return Path(path)

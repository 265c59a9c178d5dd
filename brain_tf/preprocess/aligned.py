"""64-byte-aligned numpy arrays.

TensorFlow wraps an aligned numpy array as a tensor without copying it (for
example the result of ``tf.numpy_function``); an array that is not aligned is
copied, which for a 240x240x155x4 volume costs more than augmenting a patch.
Large numpy allocations are usually only 16-byte aligned, so loaders hand
their arrays through :func:`as_aligned`.
"""

from __future__ import annotations

import numpy as np

ALIGNMENT = 64


def aligned_empty(shape, dtype, align: int = ALIGNMENT) -> np.ndarray:
    """An uninitialised C-contiguous array whose data start on an ``align``-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buffer = np.empty(nbytes + align, np.uint8)
    start = (-buffer.ctypes.data) % align
    return buffer[start:start + nbytes].view(dtype).reshape(shape)


def is_aligned(array: np.ndarray, align: int = ALIGNMENT) -> bool:
    return array.flags.c_contiguous and array.ctypes.data % align == 0


def as_aligned(array: np.ndarray, dtype=None, align: int = ALIGNMENT) -> np.ndarray:
    """``array`` (cast to ``dtype``) itself when aligned and contiguous, else an aligned copy."""
    array = np.asarray(array)
    dtype = array.dtype if dtype is None else np.dtype(dtype)
    if array.dtype == dtype and is_aligned(array, align):
        return array
    out = aligned_empty(array.shape, dtype, align)
    out[...] = array
    return out

"""From the preprocessed grid back to the input file's own grid.

A model predicts per-class probabilities (x, y, z, K) on the preprocessed grid
(RAS+ voxel order, resampled, cropped or padded; its affine is
:attr:`Preprocessed.affine`). :func:`labels_on_grid` turns them into a label
map with exactly the input file's shape, affine and voxel order
(:class:`brain_tf.io.Grid`, kept by :func:`brain_tf.io.load_volume`):

* when every input voxel centre falls on a preprocessed voxel centre (the
  preprocessed grid is the input's reoriented to RAS+, possibly cropped or
  padded by whole voxels) the labels are taken on the preprocessed grid and
  moved by an exact axis permutation, flip and shift: no interpolation;
* otherwise each channel is resampled linearly at the input's voxel centres
  (the voxel-to-voxel matrix ``inv(A_pre) @ A_input`` also carries oblique
  affines and anisotropic spacing), slab by slab so that only a slab of K
  channels is held at a time, and the labels are taken per slab.

Input voxels outside the preprocessed field of view get the background
probabilities (1 for the background channel, 0 for the others), blended
linearly across the half voxel at its edge.

:func:`restrict_to_mask` then sets the labels outside a brain mask given on the
input's grid to background.
"""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import scipy.ndimage as ndi

from brain_tf.errors import DataError
from brain_tf.io import Grid, Volume
from brain_tf.preprocess.resample import window

#: Voxels (times channels) resampled at once: bounds the memory of one slab.
SLAB_VOXELS = 2**22


def argmax_labels(probabilities: np.ndarray) -> np.ndarray:
    """Class indices 0..K-1: the most probable class of each voxel (last axis)."""
    dtype = np.uint8 if probabilities.shape[-1] <= 256 else np.int16
    return np.argmax(probabilities, axis=-1).astype(dtype)


def voxel_map(affine: np.ndarray, grid: Grid) -> np.ndarray:
    """4x4 matrix from the file's voxel indices to the preprocessed grid's (``affine``)."""
    return np.linalg.inv(np.asarray(affine, dtype=float)) @ np.asarray(grid.affine, dtype=float)


def _axis_moves(matrix: np.ndarray):
    """(axes, steps, starts) when ``matrix`` only permutes, flips and shifts axes by whole
    voxels (preprocessed index along ``axes[j]`` = ``steps[j] * i_j + starts[j]`` for file
    axis ``j``), else None."""
    rotation, shift = matrix[:3, :3], matrix[:3, 3]
    whole = np.rint(rotation)
    if (np.abs(rotation - whole).max() > 1e-4 or np.abs(shift - np.rint(shift)).max() > 1e-3
            or not np.array_equal(np.sort(np.abs(whole), axis=0), [[0] * 3, [0] * 3, [1] * 3])
            or not np.array_equal(np.abs(whole).sum(axis=1), [1, 1, 1])):
        return None
    axes = np.argmax(np.abs(whole), axis=0)
    steps = whole[axes, range(3)].astype(int)
    starts = np.rint(shift[axes]).astype(int)
    return axes, steps, starts


def _moved_labels(labels: np.ndarray, moves, shape, fill) -> np.ndarray:
    """Labels on the preprocessed grid put on the file's grid by whole-voxel moves."""
    axes, steps, starts = moves
    moved = labels.transpose(tuple(axes) + tuple(range(3, labels.ndim)))
    flipped = steps < 0
    if flipped.any():
        moved = np.flip(moved, tuple(np.flatnonzero(flipped)))
    starts = np.where(flipped, np.asarray(moved.shape[:3]) - 1 - starts, starts)
    return window(moved, starts, shape, cval=fill)


def _labels_in_slabs(probabilities: np.ndarray, to_labels, slab_voxels: int) -> np.ndarray:
    """``to_labels`` applied to slabs along the first axis (bounded temporaries)."""
    rows = max(1, slab_voxels // int(np.prod(probabilities.shape[1:])))
    parts = [to_labels(probabilities[x0:x0 + rows])
             for x0 in range(0, probabilities.shape[0], rows)]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _source_box(matrix: np.ndarray, first, last, source_shape) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) of the preprocessed voxels that linear interpolation at the file voxels
    ``first..last`` (a box) can touch, clipped to the preprocessed grid."""
    corners = np.array(list(itertools.product(*zip(first, last))), dtype=float)
    points = corners @ matrix[:3, :3].T + matrix[:3, 3]
    lo = np.floor(points.min(axis=0)).astype(int) - 1
    hi = np.floor(points.max(axis=0)).astype(int) + 3
    return np.clip(lo, 0, source_shape), np.clip(hi, 0, source_shape)


def _resampled_labels(probabilities, matrix, shape, to_labels, background, slab_voxels):
    """Linear resampling of every channel at the file's voxel centres, slab by slab
    along the first file axis; labels taken per slab."""
    channels = probabilities.shape[-1]
    rows = max(1, slab_voxels // (channels * shape[1] * shape[2]))
    rotation = matrix[:3, :3]
    if np.array_equal(rotation, np.diag(np.diag(rotation))):
        rotation = np.diag(rotation)  # scipy's faster path for axis-aligned grids
    out = None
    for x0 in range(0, shape[0], rows):
        x1 = min(shape[0], x0 + rows)
        slab = np.empty((channels, x1 - x0) + tuple(shape[1:]), dtype=np.float32)
        lo, hi = _source_box(matrix, (x0, 0, 0), (x1 - 1, shape[1] - 1, shape[2] - 1),
                             probabilities.shape[:3])
        if np.any(hi <= lo):
            slab[:] = background[:, None, None, None]
        else:
            box = probabilities[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            offset = matrix[:3, 0] * x0 + matrix[:3, 3] - lo
            for c in range(channels):
                ndi.affine_transform(
                    np.ascontiguousarray(box[..., c], dtype=np.float32), rotation,
                    offset=offset, output=slab[c], order=1, mode="grid-constant",
                    cval=float(background[c]), prefilter=False)
        labels = to_labels(np.moveaxis(slab, 0, -1))
        if out is None:
            out = np.empty(tuple(shape) + labels.shape[3:], dtype=labels.dtype)
        out[x0:x1] = labels
    return out


def labels_on_grid(
    probabilities: np.ndarray,
    affine: np.ndarray,
    grid: Grid,
    to_labels: Callable[[np.ndarray], np.ndarray] = argmax_labels,
    background_channel: int | None = 0,
    slab_voxels: int = SLAB_VOXELS,
) -> np.ndarray:
    """The label map of ``probabilities`` on the input file's own grid.

    Args:
        probabilities: (x, y, z, K) on the preprocessed grid, e.g. a sliding-window
            prediction of :attr:`Preprocessed.image`.
        affine: that grid's affine (:attr:`Preprocessed.affine`).
        grid: the input file's grid (``volume.file_grid`` of the loaded input).
        to_labels: probabilities (..., K) -> labels (...); must work voxel by voxel
            (argmax, thresholds): it is applied slab by slab. Connected-component
            clean-up belongs after this function. Default: argmax class indices.
        background_channel: the channel that is 1 outside the preprocessed field of view
            (the others are 0); None for heads without one (sigmoid channels), where
            every channel is 0 outside.
        slab_voxels: at most this many voxels times channels are resampled at once.

    Returns the labels with shape ``grid.shape``, in the file's voxel order, so that
    they pair with ``grid.affine`` (write them with ``save_volume(labels, path,
    affine=grid.affine, header=grid.header)``).
    """
    probabilities = np.asarray(probabilities)
    shape = tuple(int(s) for s in grid.shape)
    if probabilities.ndim != 4 or len(shape) != 3:
        raise DataError(f"{grid.path or 'input'}: need probabilities (x, y, z, classes) and a "
                        f"3D grid, got {probabilities.shape} for grid {shape}")
    background = np.zeros(probabilities.shape[-1], dtype=np.float32)
    if background_channel is not None:
        background[background_channel] = 1.0
    matrix = voxel_map(affine, grid)
    moves = _axis_moves(matrix)
    if moves is None:
        return _resampled_labels(probabilities, matrix, shape, to_labels, background,
                                 slab_voxels)
    fill = to_labels(background[None, None, None])[0, 0, 0]
    labels = _labels_in_slabs(probabilities, to_labels, slab_voxels)
    return _moved_labels(labels, moves, shape, fill)


def probabilities_on_grid(probabilities: np.ndarray, affine: np.ndarray, grid: Grid,
                          background_channel: int | None = 0,
                          slab_voxels: int = SLAB_VOXELS) -> np.ndarray:
    """``probabilities`` (x, y, z, K) on the input file's own grid: (*grid.shape, K)
    float32, resampled as :func:`labels_on_grid` resamples them before taking labels."""
    return labels_on_grid(probabilities, affine, grid,
                          to_labels=lambda p: np.asarray(p, dtype=np.float32),
                          background_channel=background_channel, slab_voxels=slab_voxels)


def restrict_to_mask(labels: np.ndarray, mask: Volume, grid: Grid, background=0) -> np.ndarray:
    """``labels`` (on ``grid``, the input file's) with the voxels outside ``mask`` set to
    ``background``.

    ``mask`` is a loaded brain mask (:func:`brain_tf.io.load_volume`; nonzero =
    brain) whose file must be on the input's grid: same shape and affine, else
    :class:`DataError`.
    """
    mask_grid = mask.file_grid
    if not mask_grid.matches(grid):
        raise DataError(f"{mask.path or 'mask'}: brain mask is not on the grid of "
                        f"{grid.path or 'the input'} (mask {mask_grid.describe()}, input "
                        f"{grid.describe()}); give a mask on the input scan's own grid")
    labels = np.asarray(labels)
    if labels.shape != tuple(grid.shape):
        raise DataError(f"{grid.path or 'input'}: label map shape {labels.shape} is not the "
                        f"input's {tuple(grid.shape)}; map it with labels_on_grid first")
    inside = mask_grid.to_file(np.asarray(mask.array) > 0)
    return np.where(inside, labels, np.asarray(background, dtype=labels.dtype))

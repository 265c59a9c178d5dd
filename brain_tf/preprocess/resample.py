"""Resampling onto a new voxel grid and cropping/padding, with the affine kept.

All grids here share the input's axis directions (volumes are RAS+ after
loading); only voxel size, shape and origin change. The new grid's centre is
the old grid's centre, so resampling never shifts the anatomy.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.ndimage as ndi

from brain_tf.errors import ConfigError


def _triple(value, name: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    values = (value,) * 3 if np.isscalar(value) else tuple(value)
    if len(values) != 3 or any(v <= 0 for v in values):
        raise ConfigError(f"{name} must be a positive number or three of them, got {value!r}")
    return values


def target_grid(
    shape: Sequence[int],
    spacing: Sequence[float],
    target_spacing=None,
    target_shape=None,
) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """The (shape, spacing) of the grid to resample onto.

    * spacing only: keep the field of view, ``shape * spacing / target_spacing`` voxels;
    * shape only: keep the field of view, change the voxel size to fit ``shape``;
    * both: a fixed grid of ``target_shape`` voxels of ``target_spacing`` mm (systems A/B);
    * neither: the input grid.
    """
    shape = tuple(int(s) for s in shape[:3])
    spacing = tuple(float(s) for s in spacing[:3])
    tsp = _triple(target_spacing, "spacing")
    tsh = _triple(target_shape, "shape")
    if tsh is not None:
        tsh = tuple(int(s) for s in tsh)
    if tsp is None and tsh is None:
        return shape, spacing
    if tsh is None:
        tsh = tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, tsp))
    if tsp is None:
        tsp = tuple(n * s / m for n, s, m in zip(shape, spacing, tsh))
    return tsh, tuple(float(t) for t in tsp)


def resample(
    array: np.ndarray,
    affine: np.ndarray,
    shape: Sequence[int],
    spacing: Sequence[float],
    order: int = 3,
    cval: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``array`` (x, y, z[, c]) onto ``shape`` voxels of ``spacing`` mm.

    The grids' centres coincide. ``order`` is the spline order (0 nearest for
    labels and masks, 1 linear, 3 cubic for images). The input's field of view
    reaches half a voxel beyond its outer voxel centres: new voxels whose centre
    lies outside it get ``cval``, and those in the outer half voxel keep the
    edge's values (nearest) or blend them with ``cval`` (linear, cubic).
    Returns the new array and its affine.
    """
    affine = np.asarray(affine, dtype=float)
    old_shape = np.asarray(array.shape[:3], dtype=float)
    old_spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    shape = tuple(int(s) for s in shape)
    scale = np.asarray(spacing, dtype=float) / old_spacing
    offset = (old_shape - 1) / 2 - scale * (np.asarray(shape, dtype=float) - 1) / 2
    step = np.eye(4)
    step[:3, :3] = np.diag(scale)
    step[:3, 3] = offset
    new_affine = affine @ step
    if shape == array.shape[:3] and np.allclose(scale, 1) and np.allclose(offset, 0):
        return array.copy(), new_affine

    def one(channel):
        out_dtype = channel.dtype if order == 0 else np.float32
        return ndi.affine_transform(
            channel, scale, offset=offset, output_shape=shape, order=order,
            mode="grid-constant", cval=cval, output=out_dtype, prefilter=order > 1,
        )

    if array.ndim == 3:
        return one(array), new_affine
    return np.stack([one(array[..., c]) for c in range(array.shape[-1])], axis=-1), new_affine


def window(array: np.ndarray, start: Sequence[int], shape: Sequence[int], cval=0) -> np.ndarray:
    """The box ``[start, start + shape)`` of ``array``'s first axes; outside is ``cval``."""
    shape = tuple(int(s) for s in shape)
    out = np.full(shape + array.shape[len(shape):], cval, dtype=array.dtype)
    src, dst = [], []
    for s, n, size in zip(start, shape, array.shape):
        lo, hi = max(s, 0), min(s + n, size)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    out[tuple(dst)] = array[tuple(src)]
    return out


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(first, last) voxel indices of the nonzero region, or ``None`` if empty."""
    coords = np.nonzero(mask)
    if not coords[0].size:
        return None
    return (np.array([c.min() for c in coords]), np.array([c.max() for c in coords]))


def crop_start(in_shape, out_shape, mode: str = "center", mask=None) -> np.ndarray:
    """Start voxel of an ``out_shape`` window: centred on the image or on ``mask``'s box."""
    in_shape = np.asarray(in_shape[:3])
    out_shape = np.asarray(out_shape)
    if mode == "center":
        return (in_shape - out_shape) // 2
    if mode == "bbox":
        box = None if mask is None else bounding_box(mask)
        if box is None:
            return (in_shape - out_shape) // 2
        centre = (box[0] + box[1]) / 2.0
        return np.floor(centre - (out_shape - 1) / 2.0 + 0.5).astype(int)
    raise ConfigError(f"crop_mode must be 'center' or 'bbox', not {mode!r}")


def translate_affine(affine: np.ndarray, start: Sequence[int]) -> np.ndarray:
    """The affine of a window starting at voxel ``start``."""
    step = np.eye(4)
    step[:3, 3] = np.asarray(start, dtype=float)
    return np.asarray(affine, dtype=float) @ step

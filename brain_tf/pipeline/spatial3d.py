"""Deterministic 3D spatial transforms in TF ops (channels-last volumes).

The warp maps every output voxel ``p`` to a source position

    s(p) = matrix @ (p - c_out) + offset + displacement[p]

where ``c_out`` is the output grid's centre, ``offset`` the source position of
that centre and ``displacement`` an optional dense field (elastic). Images are
sampled trilinearly with one ``tf.gather`` per corner on the flattened
source and linear voxel indices (much faster on CPU than ``gather_nd``);
labels with nearest neighbour at the same positions; positions outside the
source read 0. A training patch is warped straight out of the whole subject
(``offset`` is the patch centre), so nothing is cut or padded first.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf


def rotation_matrix(angles_rad) -> tf.Tensor:
    """3x3 rotation R = Rz @ Ry @ Rx from angles (radians) about axes 0, 1, 2."""
    angles = tf.cast(angles_rad, tf.float32)
    c, s = tf.cos(angles), tf.sin(angles)
    one, zero = tf.ones_like(c[0]), tf.zeros_like(c[0])
    rx = tf.stack([one, zero, zero, zero, c[0], -s[0], zero, s[0], c[0]])
    ry = tf.stack([c[1], zero, s[1], zero, one, zero, -s[1], zero, c[1]])
    rz = tf.stack([c[2], -s[2], zero, s[2], c[2], zero, zero, zero, one])
    rx, ry, rz = (tf.reshape(m, (3, 3)) for m in (rx, ry, rz))
    return rz @ ry @ rx


def affine_matrix(angles_rad, scales, flips, spacing: Sequence[float]) -> tf.Tensor:
    """Output-to-source voxel matrix of a rotation/scaling about the centre, with flips.

    Rotation and scaling act in millimetres (``spacing`` converts), so they
    are true rotations on anisotropic grids. ``scales`` > 1 zooms in (the
    output shows a smaller region). ``flips`` (three booleans) mirror output
    axes.
    """
    sp = tf.constant(np.asarray(spacing, np.float32))
    rot = rotation_matrix(angles_rad)
    scale = tf.cast(scales, tf.float32)
    flip = tf.where(tf.cast(flips, tf.bool), -1.0, 1.0)
    # voxel -> mm, zoom, rotate, mm -> voxel; flips act on output voxel axes first
    m = (rot / scale[None, :]) * sp[None, :] / sp[:, None]
    return m * flip[None, :]


def flip3d(volume: tf.Tensor, flips) -> tf.Tensor:
    """Mirror ``volume`` (x, y, z[, c]) along the axes whose entry in ``flips`` is true."""
    flips = tf.cast(flips, tf.bool)
    for axis in range(3):
        volume = tf.cond(flips[axis], lambda v=volume, a=axis: tf.reverse(v, [a]),
                         lambda v=volume: v)
    return volume


def _axis_coords(n: int) -> tf.Tensor:
    return tf.range(n, dtype=tf.float32) - (n - 1) / 2.0


def source_positions(matrix, offset, out_shape: Sequence[int], displacement=None):
    """Source positions (three (X, Y, Z) tensors) of the output voxels."""
    axes = [_axis_coords(n) for n in out_shape]
    coords = []
    for r in range(3):
        c = (matrix[r, 0] * axes[0])[:, None, None] + (matrix[r, 1] * axes[1])[None, :, None]
        c = c + (matrix[r, 2] * axes[2] + offset[r])[None, None, :]
        if displacement is not None:
            c = c + displacement[..., r]
        coords.append(c)
    return coords


def _clipped_positions(size, matrix, offset, out_shape, displacement):
    """Source positions clipped into the source, and where they lie inside it (half a voxel)."""
    fx_max, fy_max, fz_max = (tf.cast(size[i] - 1, tf.float32) for i in range(3))
    cx, cy, cz = source_positions(tf.cast(matrix, tf.float32), tf.cast(offset, tf.float32),
                                  out_shape, displacement)
    inside = ((cx > -0.5) & (cx < fx_max + 0.5) & (cy > -0.5) & (cy < fy_max + 0.5)
              & (cz > -0.5) & (cz < fz_max + 0.5))
    cx = tf.clip_by_value(cx, 0.0, fx_max)
    cy = tf.clip_by_value(cy, 0.0, fy_max)
    cz = tf.clip_by_value(cz, 0.0, fz_max)
    return cx, cy, cz, inside


def _nearest(label, size, cx, cy, cz, inside):
    """``label`` read at the nearest voxel of clipped positions; 0 outside."""
    ny, nz = size[1], size[2]
    index = (tf.cast(tf.floor(cx + 0.5), tf.int32) * (ny * nz)
             + tf.cast(tf.floor(cy + 0.5), tf.int32) * nz
             + tf.cast(tf.floor(cz + 0.5), tf.int32))
    out = tf.gather(tf.reshape(label, (-1,)), index)
    return tf.where(inside, out, tf.zeros_like(out))


def warp3d(image, matrix, offset, out_shape: Sequence[int], label=None, displacement=None):
    """Resample ``image`` (X, Y, Z, C) and optionally ``label`` (X, Y, Z) onto ``out_shape``.

    See the module docstring for the mapping; returns ``(image, label)``
    (``label`` is ``None`` when not given). Trilinear for the image, nearest
    neighbour for the label, both at the same source positions. Positions
    more than half a voxel outside the source read 0 (image and label); the
    source's size may be unknown until run time.
    """
    out_shape = [int(n) for n in out_shape]
    size = tf.shape(image, out_type=tf.int32)
    nx, ny, nz = size[0], size[1], size[2]
    fx_max, fy_max, fz_max = (tf.cast(n - 1, tf.float32) for n in (nx, ny, nz))
    channels = int(image.shape[-1])
    cx, cy, cz, inside = _clipped_positions(size, matrix, offset, out_shape, displacement)
    # lower corner, kept one below the last index so the upper corner is valid
    x0 = tf.minimum(tf.floor(cx), tf.maximum(fx_max - 1.0, 0.0))
    y0 = tf.minimum(tf.floor(cy), tf.maximum(fy_max - 1.0, 0.0))
    z0 = tf.minimum(tf.floor(cz), tf.maximum(fz_max - 1.0, 0.0))
    fx, fy, fz = (cx - x0)[..., None], (cy - y0)[..., None], (cz - z0)[..., None]
    # index steps to the upper neighbours (0 along an axis of size 1)
    sx = ny * nz * tf.minimum(nx - 1, 1)
    sy = nz * tf.minimum(ny - 1, 1)
    sz = tf.minimum(nz - 1, 1)
    base = tf.cast(x0, tf.int32) * (ny * nz) + tf.cast(y0, tf.int32) * nz + tf.cast(z0, tf.int32)
    flat = tf.reshape(image, (-1, channels))

    gx, gy, gz = 1.0 - fx, 1.0 - fy, 1.0 - fz  # (1 - f) a + f b: exact at f = 0 and f = 1

    def lerp_z(step):
        return gz * tf.gather(flat, base + step) + fz * tf.gather(flat, base + step + sz)

    c00, c01, c10, c11 = lerp_z(0), lerp_z(sy), lerp_z(sx), lerp_z(sx + sy)
    c0 = gy * c00 + fy * c01
    c1 = gy * c10 + fy * c11
    warped = (gx * c0 + fx * c1) * tf.cast(inside, tf.float32)[..., None]
    warped_label = None if label is None else _nearest(label, size, cx, cy, cz, inside)
    return warped, warped_label


def warp_label3d(label, matrix, offset, out_shape: Sequence[int], displacement=None):
    """Nearest-neighbour resampling of ``label`` (X, Y, Z) alone, as :func:`warp3d` does it."""
    out_shape = [int(n) for n in out_shape]
    size = tf.shape(label, out_type=tf.int32)
    return _nearest(label, size, *_clipped_positions(size, matrix, offset, out_shape,
                                                     displacement))


def bspline_matrix(n_out: int, n_control: int) -> np.ndarray:
    """(n_out, n_control) cubic B-spline weights spreading control points over an axis.

    The interior control points span the axis evenly; one extra point on each
    side completes the spline. Rows sum to 1 and are non-negative, so the
    interpolated field never exceeds the control values.
    """
    if n_control < 4:
        raise ValueError("a cubic B-spline needs at least 4 control points")
    u = np.linspace(0.0, 1.0, n_out) * (n_control - 3) + 1.0
    t = np.abs(u[:, None] - np.arange(n_control)[None, :])
    w = np.where(t < 1, 2.0 / 3.0 - t**2 + t**3 / 2.0,
                 np.where(t < 2, (2.0 - t) ** 3 / 6.0, 0.0))
    return w.astype(np.float32)


def smooth_field(control, out_shape: Sequence[int]) -> tf.Tensor:
    """Upsample a coarse (a, b, c[, k]) control grid to ``out_shape`` with cubic B-splines."""
    control = tf.cast(control, tf.float32)
    squeeze = len(control.shape) == 3
    if squeeze:
        control = control[..., None]
    a, b, c = (int(n) for n in control.shape[:3])
    wx = tf.constant(bspline_matrix(out_shape[0], a))
    wy = tf.constant(bspline_matrix(out_shape[1], b))
    wz = tf.constant(bspline_matrix(out_shape[2], c))
    field = tf.einsum("ia,abck->ibck", wx, control)
    field = tf.einsum("jb,ibck->ijck", wy, field)
    field = tf.einsum("kc,ijcl->ijkl", wz, field)
    return field[..., 0] if squeeze else field


def elastic_displacement(control_mm, out_shape: Sequence[int], spacing: Sequence[float]):
    """Dense displacement in voxels (X, Y, Z, 3) from control displacements in mm (a, b, c, 3)."""
    sp = tf.constant(np.asarray(spacing, np.float32))
    return smooth_field(control_mm, out_shape) / sp

"""Grids, poses and orientations for the phantoms.

World coordinates are RAS+ millimetres: +x towards the subject's right, +y
anterior, +z superior. A grid is three coordinate vectors (one per array
axis), so a volume and a single plane are handled alike. The head frame is
the subject's own RAS frame centred on the intracranial cavity; a pose (small
rotation and shift) places it in the world, so subjects are not all perfectly
aligned with the grid, as in real scans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import nibabel as nib
import numpy as np


def rotation_matrix(degrees: Sequence[float]) -> np.ndarray:
    """Rotation about x, then y, then z (angles in degrees)."""
    ax, ay, az = np.deg2rad(np.asarray(degrees, float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def grid_axes(shape: Sequence[int], spacing: Sequence[float]) -> tuple[np.ndarray, ...]:
    """World coordinates of voxel centres, the grid centred on the world origin."""
    return tuple((np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing))


def affine_from_axes(axes: Sequence[np.ndarray], spacing: Sequence[float]) -> np.ndarray:
    """The RAS+ voxel-to-world affine of a grid made by :func:`grid_axes`."""
    affine = np.diag([float(s) for s in spacing] + [1.0])
    affine[:3, 3] = [float(a[0]) for a in axes]
    return affine


@dataclass
class Frame:
    """A grid (world axes) and the head pose: world = rotation @ head + origin."""

    axes: tuple[np.ndarray, np.ndarray, np.ndarray]
    rotation: np.ndarray
    origin: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(len(a) for a in self.axes)

    def sub(self, box: tuple[slice, slice, slice]) -> "Frame":
        """The same pose on a sub-box of the grid."""
        return Frame(tuple(a[s] for a, s in zip(self.axes, box)), self.rotation, self.origin)

    def local(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Head-frame coordinates (mm) of every grid point, one float32 array per axis."""
        rel = [(a - o).astype(np.float32) for a, o in zip(self.axes, self.origin)]
        x, y, z = rel[0][:, None, None], rel[1][None, :, None], rel[2][None, None, :]
        r = self.rotation.astype(np.float32)
        return tuple(r[0, i] * x + r[1, i] * y + r[2, i] * z for i in range(3))

    def box(self, centre: Sequence[float], radius: float) -> tuple[slice, slice, slice] | None:
        """Grid index ranges covering a head-frame sphere; None if it misses the grid."""
        world = self.rotation @ np.asarray(centre, float) + self.origin
        return self._index_box(world - radius, world + radius)

    def extent_box(self, lo: Sequence[float], hi: Sequence[float]
                   ) -> tuple[slice, slice, slice] | None:
        """Grid index ranges covering a head-frame box from corner ``lo`` to ``hi``."""
        corners = np.array([[(lo, hi)[k >> i & 1][i] for i in range(3)] for k in range(8)], float)
        world = corners @ self.rotation.T + self.origin
        return self._index_box(world.min(0), world.max(0))

    def _index_box(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
        out = []
        for a, low, high in zip(self.axes, lo, hi):
            start, stop = np.searchsorted(a, [low, high])
            if stop <= start:
                return None
            out.append(slice(int(start), int(stop)))
        return tuple(out)


def reorient(array: np.ndarray, affine: np.ndarray, codes: str) -> tuple[np.ndarray, np.ndarray]:
    """Store a RAS+ array in another voxel order, e.g. ``"PSR"``, keeping world positions."""
    start = nib.orientations.axcodes2ornt(nib.aff2axcodes(affine))
    transform = nib.orientations.ornt_transform(start, nib.orientations.axcodes2ornt(tuple(codes)))
    out = nib.orientations.apply_orientation(array, transform)
    return np.ascontiguousarray(out), affine @ nib.orientations.inv_ornt_aff(transform, array.shape)

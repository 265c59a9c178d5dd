"""Smooth random fields and MRI noise for the phantoms.

A :class:`Field` is a cubic lattice of independent standard-normal values laid
out in world coordinates (mm) and read anywhere on a separable grid (one
coordinate vector per axis) by cubic B-spline interpolation. The lattice step
sets the size of the features: 6 mm gives cortex-like folds, 50 mm a scanner's
bias field. Because a field lives in world space and not on a voxel grid, one
random draw renders the same subject on any grid: a full volume, a coarser
volume, or a single axial, coronal or sagittal plane.

Interpolation is three small matrix products (one per axis), so a 96^3 grid
costs a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

#: Half-width (mm) of the cube every field covers; coordinates beyond it clamp.
BOX_MM = 160.0

_CONTROLLER: list = []


def _one_blas_thread():
    """Context limiting BLAS to one thread: the interpolation is many small matrix
    products, for which waking a thread pool costs more than the work (10x on a
    loaded 2-core machine)."""
    if not _CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


def _bspline(f: np.ndarray) -> np.ndarray:
    """Cubic B-spline weights of the 4 lattice points around fraction ``f``."""
    f2, f3 = f * f, f * f * f
    return np.stack([(1 - f) ** 3, 3 * f3 - 6 * f2 + 4, -3 * f3 + 3 * f2 + 3 * f + 1, f3], -1) / 6


def _bspline_slope(f: np.ndarray) -> np.ndarray:
    """Derivatives (per lattice step) of the weights of :func:`_bspline`."""
    f2 = f * f
    return np.stack([-(1 - f) ** 2 / 2, (3 * f2 - 4 * f) / 2,
                     (-3 * f2 + 2 * f + 1) / 2, f2 / 2], -1)


def _mean_square_weight() -> float:
    """E[sum of squared weights] over a uniform fraction: the 1D variance factor."""
    f = (np.arange(1000) + 0.5) / 1000
    return float((_bspline(f) ** 2).sum(-1).mean())


# Variance of a B-spline-smoothed unit lattice in 3D; dividing by its root gives sd ~1.
_NORM = 1.0 / np.sqrt(_mean_square_weight() ** 3)


@dataclass(frozen=True)
class Field:
    """A smooth random field: lattice values, lattice step (mm), world start (mm)."""

    values: np.ndarray
    step: float
    start: float

    def _axis(self, coords: np.ndarray, n: int, slope: bool = False) -> tuple[np.ndarray, int]:
        """Weight matrix (len(coords), span) and the first lattice index it covers."""
        t = (np.asarray(coords, np.float64) - self.start) / self.step
        base = np.floor(t).astype(int)
        w = _bspline_slope(t - base) / self.step if slope else _bspline(t - base)
        idx = np.clip(base[:, None] + np.arange(-1, 3)[None, :], 0, n - 1)
        lo, hi = int(idx.min()), int(idx.max())
        mat = np.zeros((len(t), hi - lo + 1), np.float32)
        np.add.at(mat, (np.repeat(np.arange(len(t)), 4), (idx - lo).ravel()), w.ravel())
        return mat, lo

    def sample(self, axes: Sequence[np.ndarray], derivative: int | None = None) -> np.ndarray:
        """Field values on the grid ``axes`` (three world-coordinate vectors, mm), or
        with ``derivative=i`` its slope along world axis ``i`` (per mm)."""
        n = self.values.shape
        (wx, x0), (wy, y0), (wz, z0) = (self._axis(a, k, derivative == i)
                                        for i, (a, k) in enumerate(zip(axes, n)))
        v = self.values[x0:x0 + wx.shape[1], y0:y0 + wy.shape[1], z0:z0 + wz.shape[1]]
        with _one_blas_thread():
            out = np.matmul(wy[None], v @ wz.T)                           # (lx, ny, nz)
            out = wx @ out.reshape(len(out), -1)                          # (nx, ny * nz)
        return out.reshape(len(wx), len(wy), len(wz))


def random_field(rng: np.random.Generator, step: float, box: float = BOX_MM) -> Field:
    """A new field with lattice ``step`` (mm) whose values have sd ~1 everywhere."""
    n = int(np.ceil(2 * box / step)) + 4
    values = rng.standard_normal((n, n, n), dtype=np.float32) * np.float32(_NORM)
    return Field(values=values, step=float(step), start=-(n - 1) / 2 * float(step))


def rician(rng: np.random.Generator, image: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of ``image`` plus complex Gaussian noise of sd ``sigma`` (Rician)."""
    real = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    imag = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(sigma)
    return np.sqrt(real * real + imag * imag)


def blur(image: np.ndarray, sigma_mm: float | Sequence[float],
         spacing: Sequence[float]) -> np.ndarray:
    """Gaussian blur with a width in mm, skipping axes of length 1 (2D planes)."""
    sig = np.broadcast_to(np.asarray(sigma_mm, float), (3,))
    sigma = [s / sp if n > 1 else 0.0 for s, sp, n in zip(sig, spacing, image.shape)]
    if max(sigma) < 0.05:
        return image
    return ndimage.gaussian_filter(image, sigma=sigma, truncate=3.0, mode="nearest")

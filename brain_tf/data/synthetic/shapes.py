"""Signed-distance shapes the phantom anatomy is built from (mm; negative inside).

Coordinates are three float32 arrays ``u = (x, y, z)`` of one grid (or any
broadcastable arrays). Shapes combine as distances do: union ``min``,
intersection ``max``, and :func:`smooth_min` for a union without a crease.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def ellipsoid(u, centre, semi, rotation=None, normal: bool = False):
    """Approximate signed distance (mm) to an ellipsoid surface; negative inside.

    ``(r - 1) / |grad r|`` with ``r`` the normalised radius: exact on the
    surface and a close estimate within a few mm of it (at the centre, minus
    the shortest semi-axis). ``rotation`` turns the ellipsoid's axes into the
    frame of ``u`` (its columns are the axes). With ``normal=True`` also
    returns the unit outward normal (three arrays).
    """
    v = [u[i] - np.float32(centre[i]) for i in range(3)]
    r = None if rotation is None else np.asarray(rotation, np.float32)
    if r is not None:
        v = [r[0, i] * v[0] + r[1, i] * v[1] + r[2, i] * v[2] for i in range(3)]
    q = [v[i] * np.float32(1 / semi[i]) for i in range(3)]
    g = [q[i] * np.float32(1 / semi[i]) for i in range(3)]
    rad2 = q[0] * q[0] + q[1] * q[1] + q[2] * q[2]
    grad2 = g[0] * g[0] + g[1] * g[1] + g[2] * g[2]
    # r / |grad r| = rad / grad; the tiny terms give min(semi) at the centre
    tiny = np.float32(1e-12)
    dist = (np.sqrt(rad2) - 1) * np.sqrt((rad2 + tiny * np.float32(min(semi)) ** 2)
                                         / (grad2 + tiny))
    if not normal:
        return dist
    grad = np.sqrt(grad2 + tiny)
    n = [g[i] / grad for i in range(3)]
    if r is not None:
        n = [r[i, 0] * n[0] + r[i, 1] * n[1] + r[i, 2] * n[2] for i in range(3)]
    return dist, n


def tube(u, points: Sequence[Sequence[float]], radii: Sequence[float],
         squash: Sequence[float] = (1.0, 1.0, 1.0), radius_scale=1.0) -> np.ndarray:
    """Signed distance to a tube along a polyline whose radius changes linearly
    between its nodes (a chain of tapered capsules).

    ``squash`` scales the offset from the axis per coordinate before its
    length is taken: 0.5 along x makes the cross-section twice as wide in x.
    ``radius_scale`` (a number or an array like ``u[0]``) multiplies the radii.
    """
    p = np.asarray(points, np.float32)
    rad = np.asarray(radii, np.float32)
    k = [np.float32(s) for s in squash]
    scale = np.asarray(radius_scale, np.float32)
    best = None
    for a, b, ra, rb in zip(p[:-1], p[1:], rad[:-1], rad[1:]):
        ab = b - a
        length2 = np.float32(max(float(ab @ ab), 1e-9))
        v = [u[i] - a[i] for i in range(3)]
        t = np.clip((v[0] * ab[0] + v[1] * ab[1] + v[2] * ab[2]) / length2, 0, 1)
        off = [(v[i] - t * ab[i]) * k[i] for i in range(3)]
        d = (np.sqrt(off[0] * off[0] + off[1] * off[1] + off[2] * off[2])
             - (ra + t * (rb - ra)) * scale)
        best = d if best is None else np.minimum(best, d)
    return best


def smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Union of two shapes with the crease filled over about ``k`` mm."""
    h = np.maximum(np.float32(k) - np.abs(a - b), 0) / np.float32(k)
    return np.minimum(a, b) - h * h * np.float32(k / 4)


def cleft(sheet: np.ndarray, beyond: np.ndarray) -> np.ndarray:
    """Signed distance to a slab (``sheet < 0`` inside it) cut off where ``beyond``
    (a non-negative distance past the slab's end) is positive."""
    return np.where(sheet < 0, np.where(beyond > 0, beyond, sheet),
                    np.sqrt(np.maximum(sheet, 0) ** 2 + beyond * beyond))

"""Tile grids and blending weights for sliding-window prediction.

A volume is covered by a Cartesian grid of tiles: along each axis the tile
start positions are spread evenly from the first voxel to the last, with at
least the requested overlap between neighbours. An axis shorter than the tile
gets one tile centred on it (a negative start: the part outside the volume is
padding).

Blending weights are separable: a tile's importance map is the product of one
1D profile per axis (a Gaussian, or constant), and because the grid is a
Cartesian product the sum of all tiles' weights at a voxel is also a product
of 1D sums. :func:`axis_plan` therefore gives, for every tile start, the
tile's 1D weights already divided by that sum, so each tile's prediction can
be added into the output with its final weight and no full-size weight array
or final division is needed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Iterable, Sequence

import numpy as np

from brain_tf.errors import ConfigError

BLEND_MODES = ("gaussian", "constant")

# Smallest 1D Gaussian weight: keeps every voxel's weight sum positive even for
# a very narrow Gaussian, and does not change the default profile (whose
# smallest value, at a tile's edge with sigma = patch / 8, is exp(-8) = 3.4e-4).
MIN_WEIGHT = 1e-6


def check_overlap(overlap: float) -> float:
    """Return ``overlap`` as a float after checking 0 <= overlap < 1."""
    overlap = float(overlap)
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"overlap={overlap}: must be in [0, 1) (fraction of the tile shared "
                          "with its neighbour), e.g. 0.5")
    return overlap


def tile_starts(size: int, patch: int, overlap: float = 0.5) -> list[int]:
    """Start positions of the tiles covering ``size`` voxels with ``patch``-voxel tiles.

    Neighbouring tiles share at least ``overlap * patch`` voxels; the starts
    are spread evenly so that the first tile starts at 0 and the last ends at
    ``size``. When ``patch >= size`` there is one tile, centred: its start is
    ``-((patch - size) // 2)`` (zero or negative).

    >>> tile_starts(10, 4, 0.5)
    [0, 2, 4, 6]
    """
    overlap = check_overlap(overlap)
    size, patch = int(size), int(patch)
    if patch < 1 or size < 1:
        raise ConfigError(f"tile size {patch} and volume size {size} must be positive")
    if patch >= size:
        return [-((patch - size) // 2)]
    step = max(1, int(patch * (1.0 - overlap) + 1e-9))
    count = math.ceil((size - patch) / step) + 1
    span = size - patch
    return [math.floor(i * span / (count - 1) + 0.5) for i in range(count)]


def tile_grid(shape: Sequence[int], patch: Sequence[int], overlap: float = 0.5) -> list[tuple]:
    """All tile start tuples (Cartesian product of :func:`tile_starts` per axis)."""
    return list(itertools.product(*(tile_starts(s, p, overlap) for s, p in zip(shape, patch))))


def gaussian_profile(patch: int, sigma_scale: float = 0.125) -> np.ndarray:
    """1D Gaussian importance profile over a tile, 1 at its centre.

    ``sigma = sigma_scale * patch`` (1/8 of the tile by default, as in
    nnU-Net); values are floored at :data:`MIN_WEIGHT`.
    """
    if sigma_scale <= 0:
        raise ConfigError(f"sigma_scale={sigma_scale}: must be > 0 (e.g. 0.125)")
    centre = (patch - 1) / 2.0
    sigma = sigma_scale * patch
    profile = np.exp(-0.5 * ((np.arange(patch) - centre) / sigma) ** 2)
    return np.maximum(profile / profile.max(), MIN_WEIGHT)


def blend_profile(patch: int, mode: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """The 1D weight profile of one tile axis for a blending ``mode``."""
    if mode == "gaussian":
        return gaussian_profile(patch, sigma_scale)
    if mode == "constant":
        return np.ones(patch)
    raise ConfigError(f"mode={mode!r}: blending mode must be one of {BLEND_MODES}")


@dataclasses.dataclass(frozen=True)
class AxisTile:
    """Where one tile start falls on one axis, and its normalised weights.

    ``lo:hi`` is the part of the volume the tile covers, ``tile_lo:tile_hi``
    the same voxels in tile coordinates, ``weights`` (length ``hi - lo``) the
    tile's 1D weights divided by the sum over all tiles on this axis.
    """

    start: int
    lo: int
    hi: int
    tile_lo: int
    tile_hi: int
    weights: np.ndarray


def axis_plan(size: int, patch: int, starts: Iterable[int], profile: np.ndarray) -> dict:
    """Map each start to its :class:`AxisTile` for one axis of the grid.

    The weights of all tiles covering a voxel sum to 1 along this axis, so the
    product over axes sums to 1 over the whole grid.
    """
    starts = list(starts)
    total = np.zeros(size)
    spans = []
    for start in starts:
        lo, hi = max(start, 0), min(start + patch, size)
        spans.append((start, lo, hi))
        total[lo:hi] += profile[lo - start:hi - start]
    plan = {}
    for start, lo, hi in spans:
        weights = (profile[lo - start:hi - start] / total[lo:hi]).astype(np.float32)
        plan[start] = AxisTile(start, lo, hi, lo - start, hi - start, weights)
    return plan


def flip_sets(tta, axes: Sequence[int]) -> list[tuple[int, ...]]:
    """The flips of test-time augmentation as tuples of spatial axes.

    ``tta=False``: only the plain prediction ``()``. ``tta=True``: every
    combination of ``axes`` (2**len(axes) predictions). A sequence of axis
    tuples (e.g. ``[(0,), (0, 1)]``): the plain prediction plus those flips.
    """
    if tta is False or tta is None:
        return [()]
    axes = tuple(axes)
    if tta is True:
        return [c for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]
    chosen = [()]
    for combo in tta:
        combo = (combo,) if isinstance(combo, (int, np.integer)) else tuple(combo)
        bad = [a for a in combo if a not in (0, 1, 2)]
        if bad:
            raise ConfigError(f"tta flip {combo}: axes must be spatial axes 0, 1 or 2")
        combo = tuple(sorted(set(int(a) for a in combo)))
        if combo not in chosen:
            chosen.append(combo)
    return chosen

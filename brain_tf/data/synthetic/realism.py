"""Figures that compare a brain image with real adult anatomy, computed alike for a
phantom and for a real scan from a T1 image and its tissue map (0 background,
1 CSF, 2 GM, 3 WM):

- tissue fractions: CSF, GM and WM voxels over their sum;
- T1 ratios: the median T1 of the CSF and of the GM voxels over that of the WM
  voxels;
- cortical thickness: for each GM voxel the distance to the nearest WM voxel
  plus the distance to the nearest CSF or background voxel, less one voxel
  (a ribbon n voxels thick puts n + 1 voxel steps between its two sides);
  the mean over ribbon voxels, those with both kinds of neighbour within
  5 mm (deep grey nuclei far from CSF are left out).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

RIBBON_REACH_MM = 5.0


def tissue_fractions(tissue: np.ndarray) -> dict[str, float]:
    """CSF, GM and WM voxel counts over their sum."""
    counts = np.bincount(np.asarray(tissue).ravel(), minlength=4)[1:4].astype(float)
    return dict(zip(("csf", "gm", "wm"), counts / max(counts.sum(), 1.0)))


def t1_ratios(t1: np.ndarray, tissue: np.ndarray) -> dict[str, float]:
    """Median T1 of CSF and of GM voxels over the median T1 of WM voxels."""
    median = {k: float(np.median(t1[tissue == k])) for k in (1, 2, 3)}
    return {"csf_wm": median[1] / median[3], "gm_wm": median[2] / median[3]}


def cortical_thickness(tissue: np.ndarray, spacing: Sequence[float]) -> float:
    """Mean cortical thickness (mm) from distance transforms (see the module docstring)."""
    spacing = tuple(float(s) for s in spacing)
    gm = tissue == 2
    to_wm = ndimage.distance_transform_edt(tissue != 3, sampling=spacing)[gm]
    to_out = ndimage.distance_transform_edt(tissue >= 2, sampling=spacing)[gm]
    ribbon = (to_wm <= RIBBON_REACH_MM) & (to_out <= RIBBON_REACH_MM)
    return float((to_wm + to_out)[ribbon].mean() - np.mean(spacing))


def realism_figures(t1: np.ndarray, tissue: np.ndarray, spacing: Sequence[float]) -> dict:
    """All of the above in one dict: ``csf``, ``gm``, ``wm``, ``csf_wm``, ``gm_wm``,
    ``thickness``."""
    return {**tissue_fractions(tissue), **t1_ratios(t1, tissue),
            "thickness": cortical_thickness(tissue, spacing)}

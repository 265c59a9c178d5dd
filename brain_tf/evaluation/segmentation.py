"""Segmentation metrics on whole volumes (numpy/scipy), distances in millimetres.

Surfaces are the voxels of a mask that a face-connected erosion removes
(voxels touching the array border count as surface). Surface distances use
``scipy.ndimage.distance_transform_edt(..., sampling=spacing)``, so they are
in the units of ``spacing`` (mm for NIfTI).

Empty-mask policy, applied everywhere in brain_tf:

============================  ====  ============  ==================================
case                          Dice  HD95, ASD     sensitivity / specificity / precision
============================  ====  ============  ==================================
both masks empty              1     0             NaN where the ratio is 0/0
one mask empty                0     ``inf``       NaN where the ratio is 0/0
============================  ====  ============  ==================================

``inf`` (not NaN) marks a missed or hallucinated structure, so a mean over
subjects shows it instead of silently skipping it; summarise distances with
the median or report the count of infinite values. A 0/0 ratio (e.g.
sensitivity when the reference is empty) is undefined, NaN, and
``DataFrame.mean()`` leaves it out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from brain_tf.errors import DataError


def _as_mask(mask, what: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim < 1:
        raise DataError(f"{what} must be an array, got a scalar")
    return mask.astype(bool, copy=False)


def _pair(pred, ref) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = _as_mask(pred, "prediction"), _as_mask(ref, "reference")
    if pred.shape != ref.shape:
        raise DataError(f"prediction shape {pred.shape} differs from reference shape "
                        f"{ref.shape}; resample the prediction onto the reference grid")
    return pred, ref


def _spacing(spacing, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in np.atleast_1d(spacing))
    if len(spacing) == 1:
        spacing = spacing * ndim
    if len(spacing) != ndim or min(spacing) <= 0:
        raise DataError(f"spacing {spacing} must give {ndim} positive voxel sizes")
    return spacing


def safe_ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is 0 (an undefined ratio)."""
    return float(numerator) / float(denominator) if denominator else float("nan")


def confusion_counts(pred, ref) -> dict[str, int]:
    """Voxel counts ``tp``, ``fp``, ``fn``, ``tn`` of two binary masks."""
    pred, ref = _pair(pred, ref)
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(ref)) - tp
    return {"tp": tp, "fp": fp, "fn": fn, "tn": int(pred.size) - tp - fp - fn}


def dice_from_counts(counts: Mapping[str, int]) -> float:
    """Dice ``2 TP / (2 TP + FP + FN)`` from :func:`confusion_counts` (summed over any
    number of slices or subjects); 1 when both masks are empty."""
    denominator = 2 * counts["tp"] + counts["fp"] + counts["fn"]
    return 2.0 * counts["tp"] / denominator if denominator else 1.0


def dice(pred, ref) -> float:
    """Dice ``2|P & R| / (|P| + |R|)``; 1 when both masks are empty."""
    return dice_from_counts(confusion_counts(pred, ref))


def surface(mask) -> np.ndarray:
    """Boolean surface of a mask: voxels removed by a face-connected erosion."""
    mask = _as_mask(mask, "mask")
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def _crop_to_union(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks cropped to their joint bounding box plus one voxel (within the
    array), which changes neither the surfaces nor the distances between them."""
    box = ndimage.find_objects((pred | ref).astype(np.uint8))[0]
    box = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, pred.shape))
    return pred[box], ref[box]


def surface_distances(pred, ref, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """Distances (in ``spacing`` units) from each surface voxel of ``pred`` to the
    nearest surface voxel of ``ref``, and from ``ref``'s surface to ``pred``'s.
    Both masks must be non-empty."""
    pred, ref = _pair(pred, ref)
    sampling = _spacing(spacing, pred.ndim)
    if not pred.any() or not ref.any():
        raise DataError("surface distances need two non-empty masks")
    pred, ref = _crop_to_union(pred, ref)
    pred_surface, ref_surface = surface(pred), surface(ref)
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=sampling)
    return to_ref[pred_surface], to_pred[ref_surface]


def _empty_distance(pred, ref) -> float | None:
    """The policy value when a mask is empty, else None."""
    if not pred.any() and not ref.any():
        return 0.0
    if not pred.any() or not ref.any():
        return float("inf")
    return None


def _distance_metrics(pred, ref, spacing, percentile: float = 95.0) -> tuple[float, float]:
    """(percentile Hausdorff distance, average surface distance) with the
    empty-mask policy."""
    empty = _empty_distance(pred, ref)
    if empty is not None:
        return empty, empty
    pred_to_ref, ref_to_pred = surface_distances(pred, ref, spacing)
    hd = max(np.percentile(pred_to_ref, percentile), np.percentile(ref_to_pred, percentile))
    asd = np.concatenate([pred_to_ref, ref_to_pred]).mean()
    return float(hd), float(asd)


def hausdorff(pred, ref, spacing=None, percentile: float = 95.0) -> float:
    """Symmetric percentile Hausdorff distance: the larger of the two directed
    ``percentile``-th percentiles of surface distances (100 gives the classic
    Hausdorff distance). 0 when both masks are empty, inf when one is."""
    pred, ref = _pair(pred, ref)
    return _distance_metrics(pred, ref, spacing, percentile)[0]


def hd95(pred, ref, spacing=None) -> float:
    """95th-percentile Hausdorff distance in ``spacing`` units (see :func:`hausdorff`)."""
    return hausdorff(pred, ref, spacing, 95.0)


def average_surface_distance(pred, ref, spacing=None) -> float:
    """Average symmetric surface distance: the mean of all distances from each
    surface to the other. 0 when both masks are empty, inf when one is."""
    pred, ref = _pair(pred, ref)
    return _distance_metrics(pred, ref, spacing)[1]


def binary_metrics(pred, ref, spacing=None) -> dict[str, float]:
    """Dice, sensitivity, specificity, precision, HD95 and ASD of two masks,
    with the voxel counts of each mask and their volumes in ml (spacing in mm)."""
    pred, ref = _pair(pred, ref)
    sampling = _spacing(spacing, pred.ndim)
    c = confusion_counts(pred, ref)
    voxel_ml = float(np.prod(sampling)) / 1000.0
    hd, asd = _distance_metrics(pred, ref, sampling)
    return {
        "dice": dice_from_counts(c),
        "sensitivity": safe_ratio(c["tp"], c["tp"] + c["fn"]),
        "specificity": safe_ratio(c["tn"], c["tn"] + c["fp"]),
        "precision": safe_ratio(c["tp"], c["tp"] + c["fp"]),
        "hd95_mm": hd,
        "asd_mm": asd,
        "pred_voxels": c["tp"] + c["fp"],
        "ref_voxels": c["tp"] + c["fn"],
        "pred_ml": (c["tp"] + c["fp"]) * voxel_ml,
        "ref_ml": (c["tp"] + c["fn"]) * voxel_ml,
    }


def _label_sets(labels) -> dict[str, tuple[int, ...]]:
    """``labels`` as name -> label values (a region may join several labels)."""
    if isinstance(labels, Mapping):
        items = labels.items()
    else:
        items = ((str(label), label) for label in labels)
    out = {}
    for name, values in items:
        values = tuple(int(v) for v in np.atleast_1d(values))
        if not values:
            raise DataError(f"label {name!r} has no label values")
        out[str(name)] = values
    if not out:
        raise DataError("no labels to evaluate; pass label values, e.g. labels=[1, 2, 3]")
    return out


def segmentation_metrics(pred, ref, labels: Sequence[int] | Mapping[str, int | Sequence[int]],
                         spacing=None) -> pd.DataFrame:
    """Per-label metrics of two label maps: one row per label with columns
    ``label, dice, sensitivity, specificity, precision, hd95_mm, asd_mm,
    pred_voxels, ref_voxels, pred_ml, ref_ml``.

    ``labels`` is a sequence of label values (rows named by the value) or a
    mapping name -> value(s); several values form a region, e.g.
    ``{"whole_tumour": [1, 2, 3], "enhancing": 3}``. ``spacing`` is the voxel
    size in mm (e.g. ``Volume.spacing``); None means 1 mm. See the module
    docstring for the empty-mask policy.
    """
    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise DataError(f"prediction shape {pred.shape} differs from reference shape "
                        f"{ref.shape}; resample the prediction onto the reference grid")
    sampling = _spacing(spacing, pred.ndim)
    rows = []
    for name, values in _label_sets(labels).items():
        row = binary_metrics(np.isin(pred, values), np.isin(ref, values), sampling)
        rows.append({"label": name, **row})
    return pd.DataFrame(rows)

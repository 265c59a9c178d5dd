"""Whole-volume evaluation: overlap and surface metrics, volumes, reports."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from brain_tf.errors import DataError
from brain_tf.evaluation import (
    average_surface_distance,
    binary_metrics,
    classification_report,
    confusion_counts,
    dice,
    hausdorff,
    hd95,
    regression_report,
    segmentation_metrics,
    tissue_volumes,
    volume_fractions,
)


def _cube(shape, start, size):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def _surface_points(mask, spacing):
    """Surface voxels (a face neighbour outside the mask) in mm, computed with padding."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1, 1:-1]
    interior = inner.copy()
    for axis in range(3):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return np.argwhere(inner & ~interior) * np.asarray(spacing)


def _brute_force(pred, ref, spacing):
    distances = cdist(_surface_points(pred, spacing), _surface_points(ref, spacing))
    pred_to_ref, ref_to_pred = distances.min(axis=1), distances.min(axis=0)
    hd = max(np.percentile(pred_to_ref, 95), np.percentile(ref_to_pred, 95))
    return hd, np.concatenate([pred_to_ref, ref_to_pred]).mean()


def test_overlap_metrics_by_hand():
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    ref = np.array([0, 1, 1, 1, 1, 0, 0, 0], bool)
    assert confusion_counts(pred, ref) == {"tp": 2, "fp": 1, "fn": 2, "tn": 3}
    assert dice(pred, ref) == pytest.approx(4 / 7)
    row = binary_metrics(pred, ref, spacing=[2.0])
    assert row["sensitivity"] == pytest.approx(0.5)
    assert row["specificity"] == pytest.approx(0.75)
    assert row["precision"] == pytest.approx(2 / 3)
    assert row["pred_ml"] == pytest.approx(3 * 2.0 / 1000)


@pytest.mark.parametrize("axis,spacing", [(0, (2.0, 1.0, 1.5)), (1, (2.0, 0.7, 1.5)),
                                          (2, (1.0, 1.0, 3.0))])
def test_hd95_parallel_planes_anisotropic(axis, spacing):
    # two full planes k voxels apart: every surface distance is k * spacing[axis]
    shape, k = (12, 10, 8), 3
    pred, ref = np.zeros(shape, bool), np.zeros(shape, bool)
    index = [slice(None)] * 3
    index[axis] = 2
    pred[tuple(index)] = True
    index[axis] = 2 + k
    ref[tuple(index)] = True
    assert hd95(pred, ref, spacing) == pytest.approx(k * spacing[axis])
    assert average_surface_distance(pred, ref, spacing) == pytest.approx(k * spacing[axis])


def test_hd95_cubes_offset_by_k_voxels():
    spacing, k = (2.0, 1.0, 1.5), 3
    pred = _cube((20, 16, 16), (4, 5, 5), 6)
    ref = _cube((20, 16, 16), (4 + k, 5, 5), 6)
    # the cube faces normal to the offset are k voxels apart; all else is closer
    assert hd95(pred, ref, spacing) == pytest.approx(k * spacing[0])
    assert hausdorff(pred, ref, spacing, percentile=100) == pytest.approx(k * spacing[0])
    expected_hd, expected_asd = _brute_force(pred, ref, spacing)
    assert hd95(pred, ref, spacing) == pytest.approx(expected_hd)
    assert average_surface_distance(pred, ref, spacing) == pytest.approx(expected_asd)


def test_distances_match_brute_force_on_blobs(rng):
    spacing = (1.2, 0.8, 2.5)
    grid = np.indices((18, 16, 12)).astype(float)
    pred = ((grid[0] - 8) ** 2 + (grid[1] - 7) ** 2 + (grid[2] - 6) ** 2 * 2) < 30
    ref = ((grid[0] - 9) ** 2 / 1.5 + (grid[1] - 8) ** 2 + (grid[2] - 5) ** 2) < 25
    expected_hd, expected_asd = _brute_force(pred, ref, spacing)
    assert hd95(pred, ref, spacing) == pytest.approx(expected_hd)
    assert average_surface_distance(pred, ref, spacing) == pytest.approx(expected_asd)
    # a mask touching the array border has surface on the border
    border = np.zeros((6, 6, 6), bool)
    border[:3] = True
    assert hausdorff(border, _cube((6, 6, 6), (0, 0, 0), 6), percentile=100) == pytest.approx(3.0)


def test_empty_mask_policy():
    empty = np.zeros((5, 5, 5), bool)
    blob = _cube((5, 5, 5), (1, 1, 1), 2)
    both = binary_metrics(empty, empty, (1, 1, 1))
    assert both["dice"] == 1.0 and both["hd95_mm"] == 0.0 and both["asd_mm"] == 0.0
    assert math.isnan(both["sensitivity"]) and math.isnan(both["precision"])
    assert both["specificity"] == 1.0
    for pred, ref in ((empty, blob), (blob, empty)):
        one = binary_metrics(pred, ref, (1, 1, 1))
        assert one["dice"] == 0.0 and one["hd95_mm"] == math.inf and one["asd_mm"] == math.inf
    assert binary_metrics(empty, blob)["sensitivity"] == 0.0
    assert math.isnan(binary_metrics(blob, empty)["sensitivity"])


def test_segmentation_metrics_rows_per_label_and_regions():
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:5, 2:5, 2:5] = 1
    ref[6:9, 6:9, 6:9] = 2
    pred = ref.copy()
    pred[6:9, 6:9, 6:9] = 3  # label 2 predicted as 3
    table = segmentation_metrics(pred, ref, labels=[1, 2, 3], spacing=(1.0, 1.0, 2.0))
    assert list(table["label"]) == ["1", "2", "3"]
    assert list(table["dice"]) == [1.0, 0.0, 0.0]
    assert table.loc[0, "hd95_mm"] == 0.0 and table.loc[1, "hd95_mm"] == math.inf
    assert table.loc[0, "ref_ml"] == pytest.approx(27 * 2.0 / 1000)
    regions = segmentation_metrics(pred, ref, labels={"tumour": [2, 3], "core": 1})
    assert list(regions["label"]) == ["tumour", "core"]
    assert regions.loc[0, "dice"] == 1.0
    with pytest.raises(DataError, match="differs from reference shape"):
        segmentation_metrics(pred[:-1], ref, labels=[1])


def test_tissue_volumes_and_fractions():
    labels = np.zeros((4, 5, 6), np.uint8)
    labels[0] = 1            # 30 voxels CSF
    labels[1:3] = 2          # 60 voxels GM
    labels[3, :2] = 3        # 12 voxels WM
    volumes = tissue_volumes(labels, spacing=(1.5, 1.0, 2.0))
    assert volumes == pytest.approx({"csf": 30 * 3 / 1000, "gm": 60 * 3 / 1000,
                                     "wm": 12 * 3 / 1000})
    assert volume_fractions(volumes) == pytest.approx({"csf": 30 / 102, "gm": 60 / 102,
                                                       "wm": 12 / 102})
    assert tissue_volumes(labels, (1, 1, 1), labels=[3, 7]) == {"3": 0.012, "7": 0.0}
    with pytest.raises(DataError, match="spacing"):
        tissue_volumes(labels, (1, 1))


def test_regression_report_by_hand():
    report = regression_report([10, 20, 30, 40], [12, 18, 33, 40])
    row = report.iloc[0]
    assert row["n"] == 4
    assert row["mae"] == pytest.approx((2 + 2 + 3 + 0) / 4)
    assert row["rmse"] == pytest.approx(math.sqrt((4 + 4 + 9 + 0) / 4))
    assert row["r2"] == pytest.approx(1 - 17 / 500)
    assert row["mean_error"] == pytest.approx((2 - 2 + 3 + 0) / 4)
    assert row["pearson_r"] == pytest.approx(np.corrcoef([10, 20, 30, 40], [12, 18, 33, 40])[0, 1])
    with pytest.raises(DataError, match="equal lengths"):
        regression_report([1, 2], [1, 2, 3])


def test_classification_report_by_hand():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 2, 1])
    y_prob = np.eye(3)[y_pred] * 0.6 + 0.4 / 3
    report = classification_report(y_true, y_pred, y_prob, class_names=["AX", "COR", "SAG"])
    summary = report.summary.iloc[0]
    assert summary["accuracy"] == pytest.approx(5 / 8)
    assert summary["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1 / 2) / 3)
    expected_cm = [[3, 1, 0], [1, 1, 0], [0, 1, 1]]
    assert report.confusion_matrix.values.tolist() == expected_cm
    assert list(report.confusion_matrix.index) == ["AX", "COR", "SAG"]
    f1 = report.per_class.set_index("class")["f1"]
    assert f1["AX"] == pytest.approx(2 * 0.75 * 0.75 / 1.5)          # P 3/4, R 3/4
    assert f1["COR"] == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))  # P 1/3, R 1/2
    assert f1["SAG"] == pytest.approx(2 * 1 * 0.5 / 1.5)              # P 1, R 1/2
    # AUC of SAG: positives score [0.73, 0.13] vs negatives six 0.13 -> (6 + 6*0.5)/12
    auc = report.per_class.set_index("class")["roc_auc"]
    assert auc["SAG"] == pytest.approx((6 + 0.5 * 6) / 12)
    binary = classification_report([0, 1, 1, 0], [0, 1, 0, 0],
                                   [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    assert binary.summary.loc[0, "roc_auc"] == pytest.approx(1.0)
    with pytest.raises(DataError, match="class_names"):
        classification_report(y_true, y_pred, class_names=["a", "b"])

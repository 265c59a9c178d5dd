"""Hippocampus segmentation end to end on a tiny synthetic ADNI-layout dataset, and the
per-label summaries of segmentation runs (HD95 over the subjects where it is defined)."""

import math
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brain_tf.data.synthetic import synthesize
from brain_tf.evaluation.summaries import per_label_means, segmentation_lines
from brain_tf.evaluation.summaries import segmentation_summary
from brain_tf.inference.postprocess import largest_components
from brain_tf.tasks import TASKS

SIDES = ("right_hippocampus", "left_hippocampus")
TINY = {
    "sampler": {"patch_size": [16, 16, 16], "patches_per_subject": 2},
    "augment": {"elastic_p": 0.0},
    "model": {"filters": [4, 8, 16]},
    "training": {"epochs": 4, "stop_at_epoch": 2, "steps_per_epoch": 2, "batch_size": 2,
                 "val_patches": 2, "verbose": 0},
    "inference": {"patch_size": [16, 16, 16], "overlap": 0.0, "batch_size": 4},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("hippocampus")
    spec = synthesize("adni_hippocampus", root / "data", subjects=5, seed=3, shape=(48, 56, 48))
    task = TASKS["hippocampus-segmentation"]
    config = task.config("small", {**TINY, "data": {"spec": str(spec)}})
    run = task.train(config, run_dir=str(root / "run"))
    return root, run


def test_run_folder_and_metrics_per_side(trained):
    _, run = trained
    for name in ("model.keras", "saved_model/saved_model.pb", "config.toml", "splits.csv",
                 "history.csv", "metrics.json", "test_items.csv", "learning_curves.png",
                 "overlay.png"):
        assert (run / name).exists(), name
    history = run.history
    assert len(history) == 2
    assert {"val_dice", "val_dice_right", "val_dice_left"} <= set(history.columns)
    assert run.load_learned()["labels"] == {"background": 0, "right_hippocampus": 1,
                                            "left_hippocampus": 2}
    assert run.load_config()["loss"]["class_weights"] == [0.1, 0.45, 0.45]
    default = TASKS["hippocampus-segmentation"].config("default")
    assert default.training.reduce_lr == {"factor": 0.5, "patience": 3}
    assert default.sampler.patch_size == [144, 144, 144]
    assert TASKS["hippocampus-segmentation"].config("small").training.reduce_lr is None
    metrics = run.load_json("metrics.json")
    per_subject = pd.read_csv(run / "test_items.csv")
    assert list(per_subject["label"]) == list(SIDES)
    for side in SIDES:
        row = per_subject[per_subject["label"] == side].iloc[0]
        assert metrics[f"dice_{side}"] == pytest.approx(row["dice"])
        finite = math.isfinite(row["hd95_mm"])
        assert metrics[f"hd95_undefined_{side}"] == int(not finite)
        if finite:  # distances in mm on the 4 mm grid: at least one voxel apart or 0
            assert metrics[f"hd95_mm_{side}"] == pytest.approx(row["hd95_mm"])
            assert row["hd95_mm"] == 0 or row["hd95_mm"] >= 4.0 - 1e-6


def test_predict_from_saved_model_in_fresh_process(trained, tmp_path):
    root, run = trained
    scan = sorted((root / "data" / "images").glob("*_T1.nii.gz"))[0]
    out = subprocess.run(
        [sys.executable, "-m", "brain_tf.cli", "hippocampus-segmentation", "predict",
         "--model", str(run / "saved_model"), str(scan), "--out", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    written = tmp_path / "cli" / (scan.name.split(".nii")[0] + "_seg.nii.gz")
    img, source = nib.load(str(written)), nib.load(str(scan))
    np.testing.assert_allclose(img.affine, source.affine)
    labels = np.asarray(img.dataobj)
    assert img.shape == source.shape[:3] and set(np.unique(labels)) <= {0, 1, 2}
    again = TASKS["hippocampus-segmentation"].predict(run / "model.keras", [str(scan)],
                                                      tmp_path / "keras")
    np.testing.assert_array_equal(np.asarray(nib.load(str(again[0])).dataobj), labels)


def test_uncertainty_is_a_one_line_cli_error(trained, tmp_path):
    root, run = trained
    scan = sorted((root / "data" / "images").glob("*_T1.nii.gz"))[0]
    out = subprocess.run([sys.executable, "-m", "brain_tf.cli", "hippocampus-segmentation",
                          "predict", "--model", str(run.path), str(scan), "--out", str(tmp_path),
                          "--uncertainty"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "MC dropout" in out.stderr


def test_summary_averages_finite_hd95_and_counts_undefined():
    inf = float("inf")
    table = pd.DataFrame({
        "subject": ["a", "a", "b", "b", "c", "c"],
        "label": ["right", "left"] * 3,
        "dice": [0.8, 0.0, 0.6, 0.0, 0.7, 1.0],
        "sensitivity": [0.9, 0.0, 0.7, 0.0, 0.8, float("nan")],
        "specificity": [1.0] * 6,
        "hd95_mm": [2.0, inf, 4.0, inf, 9.0, 0.0],
        "asd_mm": [1.0, inf, 2.0, inf, 3.0, 0.0],
    })
    summary = per_label_means(table)
    assert list(summary.index) == ["right", "left"]
    right, left = summary.loc["right"], summary.loc["left"]
    assert right["hd95_mm"] == pytest.approx(5.0) and right["hd95_undefined"] == 0
    assert right["asd_mm"] == pytest.approx(2.0)
    assert left["hd95_mm"] == pytest.approx(0.0) and left["hd95_undefined"] == 2
    assert left["dice"] == pytest.approx(1 / 3)
    assert left["sensitivity"] == pytest.approx(0.0)  # NaN left out of the mean
    all_missing = per_label_means(table[table["label"] == "left"].iloc[:2])
    assert math.isnan(all_missing.loc["left", "hd95_mm"])
    assert all_missing.loc["left", "hd95_undefined"] == 2
    metrics = segmentation_summary(table, ["right", "left"])
    assert metrics["mean_dice"] == pytest.approx((0.7 + 1 / 3) / 2)
    assert metrics["hd95_mm_right"] == pytest.approx(5.0) and metrics["hd95_undefined_left"] == 2
    printed = "\n".join(segmentation_lines(metrics, 3))
    assert "HD95 5.0 mm\n" in printed
    assert "HD95 0.0 mm (undefined for 2 of 3 subjects)" in printed


def test_largest_component_keeps_one_blob_per_class():
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[0:2, 0:2, 0:2] = 1  # 8 voxels
    labels[4, 4, 4] = 1  # a stray voxel
    labels[0, 5, 5] = 2  # a stray voxel
    labels[3:5, 0:2, 0] = 2  # 4 voxels
    expected = labels.copy()
    expected[4, 4, 4] = expected[0, 5, 5] = 0
    np.testing.assert_array_equal(largest_components(labels, [1, 2]), expected)
    np.testing.assert_array_equal(largest_components(labels, [1]), np.where(
        (np.arange(216).reshape(6, 6, 6) == 4 * 36 + 4 * 6 + 4), 0, labels))

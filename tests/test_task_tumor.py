"""The tumour task end to end on a tiny synthetic BraTS-layout dataset."""

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brain_tf.data.synthetic import synthesize
from brain_tf.tasks import TASKS

TINY = {
    "sampler": {"patch_size": [16, 16, 8], "patches_per_subject": 2, "max_tries": 10},
    "model": {"depth": 3, "base_filters": 4},
    "training": {"epochs": 5, "stop_at_epoch": 2, "steps_per_epoch": 2, "batch_size": 2,
                 "val_patches": 2, "verbose": 0},
    "inference": {"patch_size": [16, 16, 8], "overlap": 0.25},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tumour")
    spec = synthesize("msd_brats", root / "data", subjects=5, seed=1, shape=(32, 32, 24))
    task = TASKS["tumor-segmentation"]
    config = task.config("small", {**TINY, "data": {"spec": str(spec)}})
    run = task.train(config, run_dir=str(root / "run"))
    return root, run


def test_run_folder_contents(trained):
    _, run = trained
    for name in ("model.keras", "saved_model/saved_model.pb", "config.toml", "learned.json",
                 "splits.csv", "history.csv", "metrics.json", "test_items.csv",
                 "learning_curves.png", "overlay.png", "complete.json"):
        assert (run / name).exists(), name
    splits = pd.read_csv(run / "splits.csv")
    assert splits.groupby("split")["subject"].nunique().to_dict() == {"test": 1, "train": 3,
                                                                      "val": 1}
    assert len(run.history) == 2  # stop-at-epoch 2 of 5
    metrics = run.load_json("metrics.json")
    assert metrics["subjects"] == 1 and metrics["items"] == 1 and metrics["split"] == "test"
    assert set(metrics["per_label"]) == {"edema", "non_enhancing", "enhancing", "whole_tumour",
                                         "tumour_core"}
    assert 0.0 <= metrics["mean_dice"] <= 1.0
    learned = run.load_learned()
    assert learned["labels"] == {"background": 0, "edema": 1, "non_enhancing": 2, "enhancing": 3}
    assert learned["channels"] == ["FLAIR", "T1w", "T1gd", "T2w"]
    assert not (run / "backup").exists()  # removed once the run was complete


def test_predict_from_saved_model_in_fresh_process(trained, tmp_path):
    root, run = trained
    scan = sorted((root / "data" / "imagesTr").glob("BRATS_*.nii.gz"))[0]
    out = subprocess.run(
        [sys.executable, "-m", "brain_tf.cli", "tumor-segmentation", "predict",
         "--model", str(run.path), str(scan), "--out", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    written = tmp_path / "cli" / (scan.name.split(".nii")[0] + "_seg.nii.gz")
    img = nib.load(str(written))
    source = nib.load(str(scan))
    np.testing.assert_allclose(img.affine, source.affine)
    assert img.shape == source.shape[:3]
    labels = np.asarray(img.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    # the same prediction in this process from model.keras
    again = TASKS["tumor-segmentation"].predict(run / "model.keras", [str(scan)], tmp_path / "k")
    np.testing.assert_array_equal(np.asarray(nib.load(str(again[0])).dataobj), labels)


def test_cli_errors_are_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "brain_tf.cli", "tumor-segmentation",
                          "evaluate", "--run", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "not a brain_tf run folder" in out.stderr


def test_wrong_channel_count_is_named_before_the_model_loads(trained, tmp_path):
    root, run = trained
    scan = sorted((root / "data" / "imagesTr").glob("BRATS_*.nii.gz"))[0]
    volume = nib.load(str(scan))
    three = tmp_path / "three.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(volume.dataobj)[..., :3], volume.affine), str(three))
    out = subprocess.run(
        [sys.executable, "-m", "brain_tf.cli", "tumor-segmentation", "predict",
         "--model", str(run.path), str(three), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f"error: {three}: 3 channel(s) found; this model expects 4 (FLAIR, T1w, T1gd, T2w): "
        "give one 4D file or 4 comma-separated 3D files in that order"]
    assert not (tmp_path / "out").exists()


def test_a_cohort_continues_with_skip_existing(trained, tmp_path):
    root, run = trained
    scans = [str(p) for p in sorted((root / "data" / "imagesTr").glob("BRATS_*.nii.gz"))[:3]]
    task = TASKS["tumor-segmentation"]
    first = task.predict(run.path, scans[:2], tmp_path)
    stamps = {p: p.stat().st_mtime_ns for p in first}
    first[0].unlink()  # as if the run had stopped before this scan was written
    again = task.predict(run.path, scans, tmp_path, skip_existing=True)
    assert [p.name for p in again] == [Path(s).name.replace(".nii.gz", "_seg.nii.gz")
                                       for s in scans]
    assert all(p.exists() for p in again)
    assert again[1].stat().st_mtime_ns == stamps[first[1]]  # left as it was
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written


def test_export_onnx_gives_the_keras_outputs(trained, tmp_path):
    pytest.importorskip("tf2onnx")
    pytest.importorskip("onnxruntime")
    from brain_tf.cli import main
    from brain_tf.inference.onnx_model import OnnxPredictor

    _, run = trained
    assert main(["export", str(run.path), "--onnx", str(tmp_path / "m.onnx")]) == 0
    model = run.load_model()
    tile = np.random.default_rng(1).normal(size=(1,) + model.input_shape[1:]).astype("float32")
    np.testing.assert_allclose(OnnxPredictor(tmp_path / "m.onnx")(tile),
                               model.predict_on_batch(tile), atol=1e-4)

"""Tissue segmentation and tissue volumes end to end on a tiny synthetic Cam-CAN-layout dataset."""

import json
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brain_tf.cli import main
from brain_tf.config import dump_toml, load_toml
from brain_tf.data import load_spec
from brain_tf.data.shards import subject_loader
from brain_tf.data.synthetic import synthesize
from brain_tf.errors import ConfigError, DataError
from brain_tf.evaluation.volumes import subject_name, tissue_volumes_table
from brain_tf.io import load_volume, save_volume
from brain_tf.preprocess.brain_mask import simple_brain_mask
from brain_tf.tasks import TASKS
from brain_tf.training.run import RunFolder

TINY = {
    "preprocess": {"spacing": [12.0, 12.0, 12.0], "shape": [16, 16, 16]},
    "sampler": {"patch_size": [16, 16, 16], "mode": "uniform", "patches_per_subject": 1},
    "augment": {"preset": "none"},
    "model": {"depth": 3, "base_filters": 4},
    "training": {"epochs": 4, "stop_at_epoch": 2, "steps_per_epoch": 2, "batch_size": 2,
                 "val_patches": 1, "verbose": 0},
    "inference": {"patch_size": [16, 16, 16], "overlap": 0.0, "batch_size": 1},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tissue")
    spec = synthesize("camcan", root / "data", subjects=5, seed=2, shape=(24, 28, 24))
    task = TASKS["tissue-segmentation"]
    config = task.config("small", {**TINY, "data": {"spec": str(spec)}})
    run = task.train(config, run_dir=str(root / "run"))
    return root, run


def test_run_folder_and_metrics(trained):
    _, run = trained
    for name in ("model.keras", "saved_model/saved_model.pb", "config.toml", "splits.csv",
                 "history.csv", "metrics.json", "test_items.csv",
                 "test_volumes.csv", "learning_curves.png", "overlay.png"):
        assert (run / name).exists(), name
    assert len(run.history) == 2  # stop-at-epoch 2 of 4
    assert {"val_dice", "val_dice_csf", "val_dice_gm", "val_dice_wm"} <= set(run.history.columns)
    metrics = run.load_json("metrics.json")
    per_subject = pd.read_csv(run / "test_items.csv")
    assert metrics["subjects"] == 1 and set(per_subject["label"]) == {"csf", "gm", "wm"}
    for name in ("csf", "gm", "wm"):
        row = per_subject[per_subject["label"] == name].iloc[0]
        assert metrics[f"dice_{name}"] == pytest.approx(row["dice"])
        undefined = int(not np.isfinite(row["hd95_mm"]))
        assert metrics[f"hd95_undefined_{name}"] == undefined
        assert ("hd95_mm" in metrics["per_label"][name]) == (not undefined)
    assert metrics["mean_dice"] == pytest.approx(np.mean(
        [metrics[f"dice_{n}"] for n in ("csf", "gm", "wm")]))


def test_evaluation_volumes_match_reference_counts(trained):
    root, run = trained
    volumes = pd.read_csv(run / "test_volumes.csv")
    splits = pd.read_csv(run / "splits.csv")
    test_id = splits.loc[splits["split"] == "test", "sample"].iloc[0]
    assert volumes["item"].tolist() == [test_id]
    # reference volumes: counts on the 16^3 grid of 12 mm voxels (1.728 ml each)
    config = TASKS["tissue-segmentation"].load_config(run)
    spec = load_spec(root / "data" / "spec.toml")
    rows = spec.manifest()
    rows = rows[rows["sample"] == test_id]
    subject = subject_loader(rows, config, spec.label_values)(0)
    counts = {n: int((subject.label == v).sum()) for n, v in (("csf", 1), ("gm", 2), ("wm", 3))}
    for name, count in counts.items():
        assert volumes.loc[0, f"{name}_ml_ref"] == pytest.approx(count * 1.728)
        assert volumes.loc[0, f"{name}_fraction_ref"] == pytest.approx(
            count / sum(counts.values()))
    metrics = run.load_json("metrics.json")
    for name in counts:
        error = abs(volumes.loc[0, f"{name}_ml_pred"] - volumes.loc[0, f"{name}_ml_ref"])
        assert metrics[f"volume_mae_ml_{name}"] == pytest.approx(error)


def test_predict_from_saved_model_in_fresh_process(trained, tmp_path):
    root, run = trained
    scan = sorted((root / "data" / "images").glob("sub-*_T1w_unbiased.nii.gz"))[0]
    mask = root / "data" / "masks" / scan.name.replace("_unbiased", "_brain_mask")
    out = subprocess.run(
        [sys.executable, "-m", "brain_tf.cli", "tissue-segmentation", "predict",
         "--model", str(run.path), str(scan), "--mask", str(mask), "--out", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    written = tmp_path / "cli" / (scan.name.split(".nii")[0] + "_seg.nii.gz")
    img, source = nib.load(str(written)), nib.load(str(scan))
    np.testing.assert_allclose(img.affine, source.affine)
    assert img.shape == source.shape[:3]
    labels = np.asarray(img.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    again = TASKS["tissue-segmentation"].predict(run / "model.keras", [str(scan)], tmp_path / "k",
                                                 masks=[str(mask)])
    np.testing.assert_array_equal(np.asarray(nib.load(str(again[0])).dataobj), labels)
    # the volumes of the predicted map, through the tissue-volumes command
    csv = tmp_path / "volumes.csv"
    assert main(["tissue-volumes", str(written), "--out", str(csv)]) == 0
    table = pd.read_csv(csv)
    voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000
    assert table.loc[0, "subject"] == scan.name.split(".nii")[0]
    assert table.loc[0, "gm_ml"] == pytest.approx((labels == 2).sum() * voxel_ml)


def test_predict_needs_a_mask_when_preprocessing_does(trained, tmp_path):
    root, run = trained
    given = tmp_path / "run_given_mask"
    shutil.copytree(run.path, given)
    config = load_toml(given / "config.toml")
    config["preprocess"]["mask"] = "given"
    config["preprocess"]["mask_model"] = ""  # no brain-extraction model to fall back on
    dump_toml(config, given / "config.toml")
    task = TASKS["tissue-segmentation"]
    scan = sorted((root / "data" / "images").glob("*.nii.gz"))[0]
    with pytest.raises(ConfigError, match="needs a brain mask"):
        task.predict(given, [str(scan)], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything ran
    mask_path = root / "data" / "masks" / scan.name.replace("_unbiased", "_brain_mask")
    written = task.predict(given, [str(scan)], tmp_path / "out", masks=[str(mask_path)])
    labels = np.asarray(nib.load(str(written[0])).dataobj)
    mask = np.asarray(nib.load(str(mask_path)).dataobj) > 0
    assert labels.shape == mask.shape and not labels[~mask].any()  # the mask restricts it


def test_tissue_volumes_hand_computed(tmp_path):
    labels = np.zeros((4, 5, 6), np.uint8)
    labels.flat[:10] = 1
    labels.flat[10:30] = 2
    labels.flat[30:60] = 3
    path = save_volume(labels, tmp_path / "sub-7_T1w_seg.nii.gz",
                       affine=np.diag([2.0, 1.0, 3.0, 1.0]))  # 6 mm^3 = 0.006 ml per voxel
    table = tissue_volumes_table([(subject_name(path), path)])
    assert subject_name(path) == "sub-7_T1w"
    row = table.iloc[0]
    assert row["subject"] == "sub-7_T1w"
    assert (row["csf_ml"], row["gm_ml"], row["wm_ml"]) == pytest.approx((0.06, 0.12, 0.18))
    assert (row["csf_fraction"], row["gm_fraction"], row["wm_fraction"]) == pytest.approx(
        (1 / 6, 2 / 6, 3 / 6))
    # other label names and values
    custom = tissue_volumes_table([("sub-7_T1w", path)], {"background": 0, "grey": 2})
    assert list(custom.columns) == ["subject", "path", "grey_ml", "grey_fraction"]
    assert custom.loc[0, "grey_ml"] == pytest.approx(0.12) and custom.loc[0, "grey_fraction"] == 1


def test_tissue_volumes_of_a_spec_and_errors(trained, tmp_path):
    root, _ = trained
    out = tmp_path / "ref.csv"
    assert main(["tissue-volumes", "--spec", str(root / "data" / "spec.toml"),
                 "--out", str(out)]) == 0
    table = pd.read_csv(out)
    assert len(table) == 5
    first = nib.load(table.loc[0, "path"])
    seg = np.asarray(first.dataobj)
    voxel_ml = float(np.prod(first.header.get_zooms()[:3])) / 1000
    assert table.loc[0, "wm_ml"] == pytest.approx((seg == 3).sum() * voxel_ml)
    assert table[["csf_fraction", "gm_fraction", "wm_fraction"]].sum(axis=1).to_numpy() == \
        pytest.approx(np.ones(5))
    empty = save_volume(np.zeros((3, 3, 3), np.uint8), tmp_path / "empty_seg.nii.gz",
                        affine=np.eye(4))
    with pytest.raises(DataError, match="empty_seg.nii.gz: the label map has none"):
        tissue_volumes_table([("empty", empty)])
    assert main(["tissue-volumes", "--spec", str(root / "data" / "spec.toml"), str(empty),
                 "--out", str(out)]) == 2


def test_cli_error_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "brain_tf.cli", "tissue-segmentation", "predict",
                          "--model", str(tmp_path), "x.nii.gz", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: ")


def test_predictions_keep_the_input_grid_in_any_voxel_order(trained, tmp_path):
    from nibabel.orientations import apply_orientation

    root, run = trained
    task = TASKS["tissue-segmentation"]
    scan = sorted((root / "data" / "images").glob("sub-*_T1w_unbiased.nii.gz"))[0]
    mask = root / "data" / "masks" / scan.name.replace("_unbiased", "_brain_mask")
    source, source_mask = nib.load(str(scan)), nib.load(str(mask))
    ras = np.asarray(nib.load(str(task.predict(run.path, [str(scan)], tmp_path / "ras",
                                               masks=[str(mask)])[0])).dataobj)
    # LAS (FSL's order) and a sagittal acquisition order (voxel axes y, z, x)
    for name, ornt in (("las", [[0, -1], [1, 1], [2, 1]]), ("sag", [[2, 1], [0, 1], [1, 1]])):
        moved = source.as_reoriented(np.array(ornt))
        path, moved_mask = tmp_path / f"{name}.nii.gz", tmp_path / f"{name}_mask.nii.gz"
        nib.save(moved, str(path))
        nib.save(source_mask.as_reoriented(np.array(ornt)), str(moved_mask))
        out = nib.load(str(task.predict(run.path, [str(path)], tmp_path / name,
                                        masks=[str(moved_mask)])[0]))
        assert out.shape == moved.shape
        np.testing.assert_allclose(out.affine, moved.affine)
        np.testing.assert_array_equal(np.asarray(out.dataobj),
                                      apply_orientation(ras, np.array(ornt)))


def test_predict_without_mask_agrees_with_evaluate(tmp_path, monkeypatch):
    """A small-preset run (preprocess.mask = "auto") trained and evaluated with the spec's
    brain masks predicts a scan given without --mask inside the same kind of mask (from
    preprocess.mask_model, here standing in with the subject's own mask file), not inside
    a threshold mask of the whole head. On a preprocessing grid equal to the scan's (8 mm,
    24 x 28 x 24) no resampling happens, so predict's tissue volumes equal evaluate's
    exactly (up to float rounding), and no voxel outside the brain is labelled."""
    spec = synthesize("camcan", tmp_path / "data", subjects=5, seed=2, shape=(24, 28, 24))
    task = TASKS["tissue-segmentation"]
    config = task.config("small", {
        **TINY, "data": {"spec": str(spec)},
        "preprocess": {"spacing": [8.0, 8.0, 8.0], "shape": [24, 28, 24]},
        "training": {**TINY["training"], "epochs": 1, "stop_at_epoch": None}})
    run = task.train(config, run_dir=str(tmp_path / "run"))
    evaluated = pd.read_csv(run / "test_volumes.csv").iloc[0]
    scan = tmp_path / "data" / "images" / f"sub-{evaluated['item']}_T1w_unbiased.nii.gz"
    mask_file = tmp_path / "data" / "masks" / f"sub-{evaluated['item']}_T1w_brain_mask.nii.gz"
    asked = []

    def brain_mask(volume, model):
        asked.append(model)
        return load_volume(mask_file, ndim=3)

    monkeypatch.setattr("brain_tf.tasks.segmentation.brain_mask", brain_mask)
    assert main(["tissue-segmentation", "predict", "--model", str(run.path), str(scan),
                 "--out", str(tmp_path / "pred")]) == 0
    seg = tmp_path / "pred" / f"sub-{evaluated['item']}_T1w_unbiased_seg.nii.gz"
    labels = np.asarray(nib.load(str(seg)).dataobj)
    brain = np.asarray(nib.load(str(mask_file)).dataobj) > 0
    assert labels.any() and not labels[~brain].any()
    assert main(["tissue-volumes", str(seg), "--out", str(tmp_path / "volumes.csv")]) == 0
    predicted = pd.read_csv(tmp_path / "volumes.csv").iloc[0]
    for name in ("csf", "gm", "wm"):
        assert predicted[f"{name}_ml"] == pytest.approx(evaluated[f"{name}_ml_pred"], rel=1e-9)
    assert asked == ["pretrained:brain"]
    # a run trained on data without mask files predicts inside the threshold mask that its
    # preprocessing computes from the scan (the mask it was trained with)
    unmasked = tmp_path / "run_without_mask_files"
    shutil.copytree(run.path, unmasked)
    learned = json.loads((unmasked / "learned.json").read_text())
    (unmasked / "learned.json").write_text(json.dumps({**learned, "mask_files": False}))
    out = task.predict(unmasked, [str(scan)], tmp_path / "pred_threshold")
    volume = load_volume(scan)
    head = volume.file_grid.to_file(simple_brain_mask(volume.array))
    labels = np.asarray(nib.load(str(out[0])).dataobj)
    assert asked == ["pretrained:brain"] and labels.any() and not labels[~head].any()


def test_training_starts_from_a_trained_runs_weights(trained, tmp_path):
    """--init-weights: with a learning rate of 1e-12 the new run ends where the old one was
    (trainable weights; not by chance: a fresh start differs); another network is refused
    before anything is written."""
    root, first = trained
    task = TASKS["tissue-segmentation"]
    spec = str(root / "data" / "spec.toml")
    still = {**TINY, "data": {"spec": spec}, "optimizer": {"learning_rate": 1e-12}}
    second = main(["tissue-segmentation", "train", "--preset", "small", "--spec", spec,
                   "--config", _toml(tmp_path / "still.toml", still), "--run-dir",
                   str(tmp_path / "second"), "--init-weights", str(first.path)])
    assert second == 0
    before = first.load_model(compile=False).trainable_weights
    after = RunFolder.open(tmp_path / "second").load_model(compile=False).trainable_weights
    for a, b in zip(before, after):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-6)
    fresh = task.train(task.config("small", still), run_dir=str(tmp_path / "fresh"))
    assert not np.allclose(np.asarray(fresh.load_model(compile=False).trainable_weights[0]),
                           np.asarray(before[0]))
    other = {**still, "model": {"depth": 3, "base_filters": 6},
             "training": {**TINY["training"], "init_weights": str(first.path)}}
    with pytest.raises(ConfigError, match="do not fit this run's network"):
        task.train(task.config("small", other), run_dir=str(tmp_path / "other"))
    assert not (tmp_path / "other").exists()


def _toml(path, table):
    return str(dump_toml(table, path))

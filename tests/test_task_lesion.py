"""The lesion task end to end on a tiny synthetic Kaggle-LGG-layout dataset."""

import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest

from brain_tf.data.synthetic import synthesize
from brain_tf.io import load_image
from brain_tf.models import build_model
from brain_tf.models.resnet_encoder import resnet34_backbone
from brain_tf.tasks import TASKS

TINY_MODEL = {"depth": 3, "encoder_width": 4, "encoder_blocks": [1, 1, 1, 1], "base_filters": 4}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lesion")
    spec = synthesize("kaggle_lgg", root / "data", subjects=5, seed=1, shape=(32, 32, 6))
    # a "pretrained" encoder file, so the frozen first stage runs
    encoder = resnet34_backbone(keras.Input((32, 32, 3)), width=4, blocks=(1, 1, 1, 1))
    weights = root / "encoder.weights.h5"
    encoder.save_weights(str(weights))
    stem = encoder.get_layer("conv1_conv").get_weights()[0]
    task = TASKS["lesion-segmentation"]
    config = task.config("small", {
        "data": {"spec": str(spec)}, "preprocess": {"shape": [32, 32]},
        "model": {**TINY_MODEL, "weights": str(weights)},
        "training": {"epochs": 3, "stop_at_epoch": 2, "freeze_epochs": 1, "batch_size": 4,
                     "verbose": 0},
        "inference": {"batch_size": 8, "overlay_slices": 2}})
    run = task.train(config, run_dir=str(root / "run"))
    return root, run, stem


def test_run_folder_and_two_stages(trained):
    _, run, stem = trained
    for name in ("model.keras", "saved_model/saved_model.pb", "config.toml", "splits.csv",
                 "history.csv", "metrics.json", "test_per_patient.csv", "test_items.csv",
                 "learning_curves.png", "overlay.png", "frozen/history.csv",
                 "frozen/model.weights.h5"):
        assert (run / name).exists(), name
    splits = pd.read_csv(run / "splits.csv")
    assert splits.groupby("subject")["split"].nunique().max() == 1  # split by patient
    assert splits.groupby("split")["subject"].nunique().to_dict() == {"test": 1, "train": 3,
                                                                      "val": 1}
    assert len(pd.read_csv(run / "frozen" / "history.csv")) == 1  # one frozen epoch
    assert len(run.history) == 2  # then stop-at-epoch 2 of 3
    # the frozen stage left the pretrained encoder untouched; the second stage trained it
    config = run.load_config()
    model_cfg = {k: v for k, v in config["model"].items() if k not in ("name", "weights")}
    assert model_cfg.pop("output_activation") == "softmax"
    frozen = build_model("unet2d_resnet", input_shape=(32, 32, 3), num_outputs=2,
                         output_activation="softmax", **model_cfg)
    frozen.load_weights(str(run / "frozen" / "model.weights.h5"))
    np.testing.assert_array_equal(frozen.get_layer("conv1_conv").get_weights()[0], stem)
    final = run.load_model()
    assert not np.allclose(final.get_layer("conv1_conv").get_weights()[0], stem)
    assert all(layer.trainable for layer in final.layers)


def test_dice_per_patient_and_overall(trained):
    root, run, _ = trained
    model = run.load_model()
    per_slice = pd.read_csv(run / "test_items.csv")
    splits = pd.read_csv(run / "splits.csv")
    test_subject = splits.loc[splits["split"] == "test", "subject"].unique()
    assert set(per_slice["subject"]) == set(test_subject)
    assert len(per_slice) == 6
    # recompute every slice's counts from the files and model.keras
    tp = fp = fn = 0
    for row in per_slice.itertuples():
        folder = root / "data" / "kaggle_3m" / row.subject
        image = load_image(folder / f"{row.item}.tif")  # the model takes the file's pixels
        ref = load_image(folder / f"{row.item}_mask.tif") > 0
        pred = np.argmax(model.predict_on_batch(image[None].astype(np.float32))[0], -1) > 0
        assert (row.tp, row.fp, row.fn) == (int((pred & ref).sum()), int((pred & ~ref).sum()),
                                            int((~pred & ref).sum()))
        assert row.reference_pixels == int(ref.sum())
        tp, fp, fn = tp + row.tp, fp + row.fp, fn + row.fn
    metrics = run.load_json("metrics.json")
    expected = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 1.0
    assert metrics["dice_overall"] == pytest.approx(expected)
    per_patient = pd.read_csv(run / "test_per_patient.csv")
    assert per_patient["slices"].tolist() == [6]
    # one test patient: its 3D Dice over all its slices is the pooled Dice
    assert per_patient["dice"].iloc[0] == pytest.approx(expected)
    assert metrics["dice_per_patient_mean"] == pytest.approx(expected)
    assert metrics["subjects"] == 1 and metrics["items"] == 6
    assert run.load_learned()["labels"] == {"background": 0, "abnormality": 255}


def test_predict_from_saved_model_in_fresh_process(trained, tmp_path):
    root, run, _ = trained
    splits = pd.read_csv(run / "splits.csv")
    patient = splits.loc[splits["split"] == "test", "subject"].iloc[0]
    folder = root / "data" / "kaggle_3m" / patient
    out = subprocess.run(
        [sys.executable, "-m", "brain_tf.cli", "lesion-segmentation", "predict",
         "--model", str(run.path), str(folder), "--out", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    written = sorted((tmp_path / "cli").glob("*_mask.tif"))
    assert [p.name for p in written] == sorted(f"{patient}_{k}_mask.tif" for k in range(1, 7))
    again = TASKS["lesion-segmentation"].predict(
        run / "model.keras", sorted(p for p in folder.glob("*.tif")
                                    if not p.stem.endswith("_mask")), tmp_path / "keras")
    assert len(again) == 6
    for path in again:
        mask = load_image(path)
        assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(load_image(tmp_path / "cli" / path.name), mask)


def test_cli_user_errors_are_one_line(trained, tmp_path):
    _, run, _ = trained
    out = subprocess.run([sys.executable, "-m", "brain_tf.cli", "lesion-segmentation",
                          "predict", "--model", str(run.path), str(tmp_path / "none.tif"),
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "none.tif: file not found" in out.stderr


def test_saved_model_takes_the_raw_image_and_matches_predict(trained, tmp_path):
    import tensorflow as tf

    root, run, _ = trained
    splits = pd.read_csv(run / "splits.csv")
    sample = splits.loc[splits["split"] == "test", "sample"].iloc[0]
    patient = splits.loc[splits["split"] == "test", "subject"].iloc[0]
    path = root / "data" / "kaggle_3m" / patient / f"{sample}.tif"
    raw = load_image(path)
    assert raw.dtype == np.uint8 and raw.shape == (32, 32, 3)
    loaded = tf.saved_model.load(str(run / "saved_model"))  # kept: it owns the variables
    served = loaded.serve(
        tf.constant(raw[None].astype(np.float32))).numpy()[0]
    expected = run.load_model().predict_on_batch(raw[None].astype(np.float32))[0]
    np.testing.assert_allclose(served, expected, atol=1e-5)
    written = TASKS["lesion-segmentation"].predict(run.path, [path], tmp_path)
    np.testing.assert_array_equal(load_image(written[0]) > 0, np.argmax(served, -1) > 0)

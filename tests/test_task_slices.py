"""The slice-classification task end to end on a tiny synthetic TCGA-GBM-layout dataset."""

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from brain_tf.config import dump_toml, load_toml
from brain_tf.data.synthetic import synthesize
from brain_tf.errors import ConfigError
from brain_tf.io import load_image
from brain_tf.models import build_model
from brain_tf.tasks import TASKS

TINY_MODEL = {"backbone": "resnet34", "width": 4, "blocks": [1, 1, 1, 1], "dropout": 0.2,
              "mc_dropout": False}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("slices")
    spec = synthesize("tcga_gbm_slices", root / "data", subjects=5, seed=1, shape=(32, 32))
    task = TASKS["slice-classification"]
    config = task.config("small", {
        "data": {"spec": str(spec)}, "preprocess": {"shape": [32, 32]}, "model": TINY_MODEL,
        "training": {"epochs": 3, "stop_at_epoch": 2, "batch_size": 16, "verbose": 0},
        "inference": {"gradcam_slices": 2}})
    run = task.train(config, run_dir=str(root / "run"))
    return root, run


def test_run_folder_contents(trained):
    _, run = trained
    for name in ("model.keras", "saved_model/saved_model.pb", "config.toml", "splits.csv",
                 "history.csv", "metrics.json", "test_items.csv", "learning_curves.png",
                 "confusion_perspective.png", "confusion_sequence.png"):
        assert (run / name).exists(), name
    assert len(list((run / "gradcam").glob("perspective_*.png"))) == 2
    assert len(list((run / "gradcam").glob("sequence_*.png"))) == 2
    splits = pd.read_csv(run / "splits.csv")
    assert splits.groupby("subject")["split"].nunique().max() == 1  # by patient, not image
    assert splits.groupby("split")["subject"].nunique().to_dict() == {"test": 1, "train": 3,
                                                                      "val": 1}
    assert len(run.history) == 2  # stop-at-epoch 2 of 3
    assert run.load_learned()["classes"] == {"perspective": ["AX", "COR", "SAG"],
                                             "sequence": ["DWI", "T1", "T1C", "T2"]}


def test_metrics_match_the_predictions(trained):
    _, run = trained
    table = pd.read_csv(run / "test_items.csv")
    # 1 test patient x 3 perspectives x 4 sequences x 2 slices, labels from the file names
    assert len(table) == 24
    assert (table["perspective_true"] == table["item"].str.split("_").str[0]).all()
    assert (table["sequence_true"] == table["item"].str.split("_").str[1]).all()
    metrics = run.load_json("metrics.json")
    assert metrics["items"] == 24 and metrics["subjects"] == 1
    # the baseline is the training split's majority class, scored on the test slices
    # (balanced classes here: any single class is right for 1/3 and 1/4 of them)
    assert metrics["perspective_baseline_accuracy"] == pytest.approx(1 / 3)
    assert metrics["sequence_baseline_accuracy"] == pytest.approx(1 / 4)
    for head, names in (("perspective", ["AX", "COR", "SAG"]),
                        ("sequence", ["DWI", "T1", "T1C", "T2"])):
        probs = table[[f"{head}_prob_{n}" for n in names]].to_numpy()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert (np.array(names)[probs.argmax(axis=1)] == table[f"{head}_pred"]).all()
        accuracy = (table[f"{head}_pred"] == table[f"{head}_true"]).mean()
        assert metrics[f"{head}_accuracy"] == pytest.approx(accuracy)
        assert len(metrics[f"{head}_per_class"]) == len(names)


def test_predict_from_saved_model_in_fresh_process(trained, tmp_path):
    root, run = trained
    files = sorted((root / "data").glob("*_Glioma_GBM_*.jpg"))[:5]
    out = subprocess.run(
        [sys.executable, "-m", "brain_tf.cli", "slice-classification", "predict",
         "--model", str(run.path), *map(str, files), "--out", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    cli = pd.read_csv(tmp_path / "cli" / "predictions.csv")
    again = pd.read_csv(TASKS["slice-classification"].predict(run / "model.keras", files,
                                                              tmp_path / "keras")[0])
    assert cli["file"].tolist() == [str(f) for f in files]
    assert list(cli.columns) == list(again.columns)
    assert "perspective_prob_SAG" in cli and "sequence_prob_T1C" in cli
    numeric = [c for c in cli.columns if "_prob_" in c]
    np.testing.assert_allclose(cli[numeric].to_numpy(), again[numeric].to_numpy(), atol=1e-5)
    assert (cli["perspective_pred"] == again["perspective_pred"]).all()


def test_uncertainty_needs_mc_dropout_one_line_error(trained, tmp_path):
    root, run = trained
    image = sorted((root / "data").glob("*.jpg"))[0]
    out = subprocess.run([sys.executable, "-m", "brain_tf.cli", "slice-classification",
                          "predict", "--model", str(run.path), str(image), "--out",
                          str(tmp_path), "--uncertainty"], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "MC dropout" in out.stderr


def test_mc_dropout_mean_and_std(trained, tmp_path):
    root, run = trained
    mc = tmp_path / "mc_run"
    shutil.copytree(run.path, mc)
    config = load_toml(mc / "config.toml")
    config["model"]["mc_dropout"] = True
    config["inference"]["mc_passes"] = 8
    dump_toml(config, mc / "config.toml")
    model = build_model("resnet_classifier", input_shape=(32, 32, 3),
                        num_outputs={"perspective": 3, "sequence": 4},
                        **{**TINY_MODEL, "mc_dropout": True, "dropout": 0.5})
    model.save(mc / "model.keras")
    files = sorted((root / "data").glob("*.jpg"))[:3]
    table = pd.read_csv(TASKS["slice-classification"].predict(
        mc / "model.keras", files, tmp_path / "out", uncertainty=True)[0])
    means = table[["sequence_mean_DWI", "sequence_mean_T1", "sequence_mean_T1C",
                   "sequence_mean_T2"]].to_numpy()
    stds = table[[f"sequence_std_{n}" for n in ("DWI", "T1", "T1C", "T2")]].to_numpy()
    np.testing.assert_allclose(means.sum(axis=1), 1.0, atol=1e-5)
    assert (stds >= 0).all() and (stds > 0).any()  # dropout stays on: the passes differ


def test_heads_choice():
    task = TASKS["slice-classification"]
    assert task.config("small").target.heads == "dual"
    assert task.config("small", {"target": {"heads": "sequence"}}).target.heads == "sequence"
    with pytest.raises(ConfigError, match="heads must be one of"):
        task.config("small", {"target": {"heads": "both"}})


def test_saved_model_takes_the_raw_image_and_matches_predict(trained, tmp_path):
    import tensorflow as tf

    root, run = trained
    path = sorted((root / "data").glob("*.jpg"))[0]
    raw = load_image(path)
    assert raw.dtype == np.uint8 and raw.shape[:2] == (32, 32)
    loaded = tf.saved_model.load(str(run / "saved_model"))  # kept: it owns the variables
    served = loaded.serve(
        tf.constant(raw[None].astype(np.float32)))
    table = pd.read_csv(TASKS["slice-classification"].predict(run.path, [path], tmp_path)[0])
    for head, names in (("perspective", ["AX", "COR", "SAG"]),
                        ("sequence", ["DWI", "T1", "T1C", "T2"])):
        np.testing.assert_allclose(table[[f"{head}_prob_{n}" for n in names]].to_numpy()[0],
                                   served[head].numpy()[0], atol=1e-5)


def test_mc_dropout_evaluation_is_the_same_every_time(tmp_path):
    """A finished run's evaluation does not change from call to call: the MC-dropout passes
    are seeded from data.seed, so evaluate gives what training's final evaluation wrote."""
    spec = synthesize("tcga_gbm_slices", tmp_path / "data", subjects=5, seed=1, shape=(32, 32))
    task = TASKS["slice-classification"]
    config = task.config("small", {
        "data": {"spec": str(spec)}, "preprocess": {"shape": [32, 32]},
        "model": {**TINY_MODEL, "mc_dropout": True, "dropout": 0.5},
        "training": {"epochs": 1, "steps_per_epoch": 1, "batch_size": 16, "verbose": 0},
        "inference": {"gradcam_slices": 0, "mc_passes": 4}})
    run = task.train(config, run_dir=str(tmp_path / "run"))
    trained = (run / "metrics.json").read_text()
    table = (run / "test_items.csv").read_text()
    assert '"mc_passes": 4' in trained
    for _ in range(2):
        task.evaluate(run.path)
        assert (run / "metrics.json").read_text() == trained
        assert (run / "test_items.csv").read_text() == table

"""The age-regression task end to end on tiny synthetic IXI and Cam-CAN datasets."""

import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import BayesianRidge, LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures

from brain_tf.cli import main
from brain_tf.data import load_spec
from brain_tf.data.synthetic import synthesize
from brain_tf.errors import ConfigError
from brain_tf.schema import Target
from brain_tf.tasks import TASKS, features, volume
from brain_tf.training.runner import open_run

TINY_CNN = {
    "preprocess": {"spacing": [8.0, 8.0, 8.0], "shape": [16, 16, 16]},
    "model": {"filters": [4, 4, 4, 4]},
    "training": {"epochs": 3, "stop_at_epoch": 2, "batch_size": 2, "verbose": 0},
}


def _splits(spec, path, order=("train",) * 4 + ("val",) * 2 + ("test",) * 2):
    manifest = load_spec(spec).manifest().sort_values("subject").reset_index(drop=True)
    manifest["split"] = list(order)
    manifest[["sample", "subject", "split"]].to_csv(path, index=False)
    return manifest


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("age")
    spec = synthesize("ixi", root / "data", subjects=8, seed=2, shape=(24, 32, 32))
    manifest = _splits(spec, root / "splits.csv")
    task = TASKS["age-regression"]
    config = task.config("small", {**TINY_CNN, "data": {"spec": str(spec),
                                                         "splits_csv": str(root / "splits.csv")}})
    run = task.train(config, run_dir=str(root / "run"))
    return root, run, manifest


def test_cnn_run_folder_and_metrics(cnn_run):
    _, run, manifest = cnn_run
    for name in ("model.keras", "saved_model/saved_model.pb", "config.toml", "splits.csv",
                 "history.csv", "metrics.json", "test_items.csv", "learning_curves.png",
                 "predicted_vs_true.png"):
        assert (run / name).exists(), name
    assert len(run.history) == 2  # stop-at-epoch 2 of 3
    train_ages = manifest.loc[manifest["split"] == "train", "age"].to_numpy(float)
    learned = run.load_learned()  # what the run learned stays out of config.toml
    assert learned["target_mean"] == pytest.approx(train_ages.mean())
    assert learned["target_std"] == pytest.approx(train_ages.std())
    assert "target_mean" not in (run / "config.toml").read_text()
    table = pd.read_csv(run / "test_items.csv")
    truth = manifest.loc[manifest["split"] == "test", "age"].to_numpy(float)
    np.testing.assert_allclose(table["age"], truth)
    np.testing.assert_allclose(table["error"], table["predicted_age"] - table["age"])
    metrics = run.load_json("metrics.json")
    assert metrics["subjects"] == 2
    assert metrics["mae"] == pytest.approx(np.abs(table["predicted_age"] - truth).mean())
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.square(table["predicted_age"] - truth)
                                                    .mean()))
    assert metrics["baseline_mae"] == pytest.approx(np.abs(truth - train_ages.mean()).mean())


def test_standardised_targets_are_converted_back():
    target, learned = Target(standardise=True), {"target_mean": 50.0, "target_std": 10.0}
    rows = pd.DataFrame({"subject": ["a", "b"], "age": [40.0, 65.0]})
    np.testing.assert_allclose(volume.targets(rows, target, learned), [-1.0, 1.5])
    np.testing.assert_allclose(volume.to_units(np.array([-1.0, 1.5]), target, learned), [40, 65])
    np.testing.assert_allclose(volume.to_units(np.array([0.5]), target, learned, spread=True), [5])


def test_cnn_predict_from_saved_model_in_fresh_process(cnn_run, tmp_path):
    root, run, manifest = cnn_run
    test_subject = manifest[manifest["split"] == "test"].iloc[0]
    scan = f"{test_subject['image_T1']},{test_subject['mask']}"  # small: brain-extracted
    out = subprocess.run(
        [sys.executable, "-m", "brain_tf.cli", "age-regression", "predict",
         "--model", str(run.path), scan, "--out", str(tmp_path / "cli")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    cli = pd.read_csv(tmp_path / "cli" / "predictions.csv")
    assert list(cli.columns) == ["subject", "input", "predicted_age"]
    assert cli["input"][0] == test_subject["image_T1"]
    keras = pd.read_csv(TASKS["age-regression"].predict(
        run / "model.keras", [scan], tmp_path / "keras.csv")[0])
    np.testing.assert_allclose(cli["predicted_age"], keras["predicted_age"], rtol=1e-4)
    # the same value that evaluate reported for this test subject
    table = pd.read_csv(run / "test_items.csv").set_index("subject")
    assert cli["predicted_age"][0] == pytest.approx(
        table.loc[test_subject["subject"], "predicted_age"], rel=1e-4)


def test_cli_uncertainty_without_mc_dropout_is_a_one_line_error(cnn_run, tmp_path, capsys):
    _, run, manifest = cnn_run
    code = main(["age-regression", "predict", "--model", str(run.path), manifest["image_T1"][0],
                 "--out", str(tmp_path), "--uncertainty"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "MC dropout" in err[0]


@pytest.fixture(scope="module")
def features_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("age_features")
    spec = synthesize("camcan", root / "data", subjects=8, seed=3, shape=(20, 24, 20))
    manifest = _splits(spec, root / "splits.csv",
                       order=("train",) * 5 + ("val",) + ("test",) * 2)
    task = TASKS["age-regression"]
    config = task.config("features", {"data": {"spec": str(spec),
                                               "splits_csv": str(root / "splits.csv")}})
    return root, task.train(config, run_dir=str(root / "run")), manifest


def test_features_are_tissue_fractions(features_run):
    _, run, manifest = features_run
    table = pd.read_csv(run / "train_features.csv").set_index("subject")
    row = manifest[manifest["split"] == "train"].iloc[0]
    labels = np.asarray(nib.load(row["label"]).dataobj)
    counts = np.array([(labels == v).sum() for v in (1, 2, 3)], float)
    np.testing.assert_allclose(
        table.loc[row["subject"], ["csf_fraction", "gm_fraction", "wm_fraction"]].to_numpy(float),
        counts / counts.sum())
    # train and val subjects form the cross-validation pool
    assert len(table) == 6


def test_features_cv_choice_and_test_metrics(features_run):
    _, run, _ = features_run
    cv = pd.read_csv(run / "cv_results.csv")
    assert list(cv["regressor"]) == ["linear", "bayesian_ridge", "poly3"]
    metrics = run.load_json("metrics.json")
    chosen = cv.loc[cv["cv_mae"].idxmin(), "regressor"]
    assert metrics["regressor"] == chosen
    # refit the chosen regressor by hand and check the reported test MAE
    train = pd.read_csv(run / "train_features.csv")
    test = pd.read_csv(run / "test_items.csv")
    columns = ["csf_fraction", "gm_fraction", "wm_fraction"]
    regressor = {"linear": LinearRegression(), "bayesian_ridge": BayesianRidge(),
                 "poly3": make_pipeline(PolynomialFeatures(3), LinearRegression())}[chosen]
    pred = regressor.fit(train[columns], train["age"]).predict(test[columns])
    np.testing.assert_allclose(test["predicted_age"], pred, rtol=1e-6)
    assert metrics["mae"] == pytest.approx(np.abs(pred - test["age"]).mean())
    for name in ("regressor.joblib", "predicted_vs_true.png", "config.toml", "splits.csv",
                 "complete.json"):
        assert (run / name).exists(), name
    assert run.load_learned()["regressor"] == chosen


def test_features_predict_from_label_maps_cli(features_run, tmp_path):
    _, run, manifest = features_run
    test_rows = manifest[manifest["split"] == "test"]
    assert main(["age-regression", "predict", "--model", str(run.path), *test_rows["label"],
                 "--out", str(tmp_path)]) == 0
    predicted = pd.read_csv(tmp_path / "predictions.csv")["predicted_age"].to_numpy()
    expected = pd.read_csv(run / "test_items.csv")["predicted_age"].to_numpy()
    np.testing.assert_allclose(predicted, expected, rtol=1e-6)


def test_features_uncertainty_needs_bayesian_ridge(features_run, tmp_path):
    _, run, manifest = features_run
    label = manifest["label"][0]
    if run.load_json("metrics.json")["regressor"] == "bayesian_ridge":
        out = TASKS["age-regression"].predict(run.path, [label], tmp_path, uncertainty=True)
        assert (pd.read_csv(out[0])["predicted_age_std"] > 0).all()
    else:
        with pytest.raises(ConfigError, match="bayesian_ridge"):
            TASKS["age-regression"].predict(run.path, [label], tmp_path, uncertainty=True)


def test_features_from_a_tissue_run(features_run, monkeypatch, tmp_path):
    _, run, manifest = features_run
    rows = manifest[manifest["split"] == "test"].reset_index(drop=True)
    calls = []

    def segment(tissue_run, images, out):  # stands in for the tissue run's predictions
        calls.append((tissue_run, images, out))
        return list(rows["label"])

    monkeypatch.setattr(features, "segment_images", segment)
    _, ctx = open_run(TASKS["age-regression"], run.path)
    ctx.config.features.tissue_run = "RUN"
    table = features.FAMILY._features(ctx, rows, tmp_path)
    assert calls == [("RUN", list(rows["image_T1"]), tmp_path / "tissue_maps")]
    expected = pd.read_csv(run / "test_items.csv")
    np.testing.assert_allclose(table["gm_fraction"], expected["gm_fraction"])

"""The sex-classification task end to end on a tiny synthetic IXI dataset."""

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from brain_tf.cli import main
from brain_tf.config import dump_toml, load_toml
from brain_tf.data import load_spec
from brain_tf.data.synthetic import synthesize
from brain_tf.errors import DataError
from brain_tf.models import build_model
from brain_tf.tasks import TASKS

TINY = {
    "preprocess": {"spacing": [8.0, 8.0, 8.0], "shape": [16, 16, 16]},
    "model": {"filters": [4, 4, 4, 4]},
    "training": {"epochs": 2, "batch_size": 2, "verbose": 0},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sex")
    spec = synthesize("ixi", root / "data", subjects=8, seed=4, shape=(24, 32, 32))
    manifest = load_spec(spec).manifest().sort_values(["sex", "subject"]).reset_index(drop=True)
    # 4 F then 4 M: train 2 + 2, val 1 + 1, test F and M
    manifest["split"] = ["train", "train", "val", "test"] * 2
    manifest[["sample", "subject", "split"]].to_csv(root / "splits.csv", index=False)
    task = TASKS["sex-classification"]
    config = task.config("small-brain-extracted",
                         {**TINY, "data": {"spec": str(spec),
                                           "splits_csv": str(root / "splits.csv")}})
    run = task.train(config, run_dir=str(root / "run"))
    return root, run, manifest


def test_run_folder_and_metrics(trained):
    _, run, manifest = trained
    for name in ("model.keras", "saved_model/saved_model.pb", "config.toml", "splits.csv",
                 "history.csv", "metrics.json", "test_items.csv", "learning_curves.png",
                 "confusion_matrix.png"):
        assert (run / name).exists(), name
    config = TASKS["sex-classification"].load_config(run)
    assert config.preprocess.apply_mask and config.augment["preset"] == "ixi_sex"
    table = pd.read_csv(run / "test_items.csv")
    assert list(table["sex"]) == ["F", "M"]
    np.testing.assert_allclose(table["p_M"] + table["p_F"], 1.0, atol=1e-5)
    predicted = np.where(table["p_M"] > table["p_F"], "M", "F")
    assert list(table["predicted_sex"]) == list(predicted)
    metrics = run.load_json("metrics.json")
    correct = predicted == table["sex"].to_numpy()
    assert metrics["accuracy"] == pytest.approx(correct.mean())
    assert metrics["balanced_accuracy"] == pytest.approx(correct.mean())  # one per class
    assert metrics["baseline_accuracy"] == pytest.approx(0.5)
    matrix = np.array(metrics["confusion_matrix"])  # rows true M, F; columns predicted
    assert matrix.sum() == 2 and np.trace(matrix) == correct.sum()
    assert matrix[0].sum() == 1 and matrix[1].sum() == 1


def test_predict_from_saved_model_in_fresh_process(trained, tmp_path):
    _, run, manifest = trained
    row = manifest[manifest["split"] == "test"].iloc[0]
    item = f"{row['image_T1']},{row['mask']}"
    out = subprocess.run(
        [sys.executable, "-m", "brain_tf.cli", "sex-classification", "predict",
         "--model", str(run / "saved_model"), item, "--out", str(tmp_path / "p.csv")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    cli = pd.read_csv(tmp_path / "p.csv")
    assert list(cli.columns) == ["subject", "input", "predicted_sex", "p_M", "p_F"]
    keras = pd.read_csv(TASKS["sex-classification"].predict(run / "model.keras", [item],
                                                            tmp_path / "k")[0])
    np.testing.assert_allclose(cli[["p_M", "p_F"]], keras[["p_M", "p_F"]], atol=1e-5)
    table = pd.read_csv(run / "test_items.csv").set_index("subject")
    assert cli["p_M"][0] == pytest.approx(table.loc[row["subject"], "p_M"], abs=1e-5)


def test_brain_extracted_model_needs_the_mask(trained, tmp_path, capsys):
    _, run, manifest = trained
    no_model = tmp_path / "run"
    shutil.copytree(run.path, no_model)
    config = load_toml(no_model / "config.toml")
    config["preprocess"]["mask_model"] = ""  # no brain-extraction model to fall back on
    dump_toml(config, no_model / "config.toml")
    code = main(["sex-classification", "predict", "--model", str(no_model),
                 manifest["image_T1"][0], "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "IMAGE,MASK" in err[0]
    with pytest.raises(DataError, match="comma-separated"):
        TASKS["sex-classification"].predict(run.path, ["a.nii.gz,b.nii.gz,c.nii.gz"], tmp_path)


def test_mc_dropout_uncertainty(trained, tmp_path):
    _, run, manifest = trained
    mc = tmp_path / "mc_run"
    shutil.copytree(run.path, mc)
    config = load_toml(mc / "config.toml")
    config["model"]["mc_dropout"] = True
    config["inference"]["mc_passes"] = 8
    dump_toml(config, mc / "config.toml")
    model = build_model("cnn3d", input_shape=(16, 16, 16, 1), num_outputs=2, filters=[4, 4, 4, 4],
                        output_activation="softmax", dropout=0.5, mc_dropout=True)
    model.save(mc / "model.keras")
    items = [f"{r.image_T1},{r.mask}" for r in manifest.iloc[:2].itertuples()]
    out = pd.read_csv(TASKS["sex-classification"].predict(mc / "model.keras", items, tmp_path,
                                                          uncertainty=True)[0])
    assert {"p_M", "p_F", "p_M_std", "p_F_std"} <= set(out.columns)
    np.testing.assert_allclose(out["p_M"] + out["p_F"], 1.0, atol=1e-5)
    np.testing.assert_allclose(out["p_M_std"], out["p_F_std"], atol=1e-5)  # two classes
    assert (out["p_M_std"] > 0).all()
    again = pd.read_csv(TASKS["sex-classification"].predict(mc / "model.keras", items,
                                                            tmp_path / "again",
                                                            uncertainty=True)[0])
    pd.testing.assert_frame_equal(again, out)  # seeded passes: the same every time

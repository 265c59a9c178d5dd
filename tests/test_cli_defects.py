"""Documented commands run as a user types them: the age-feature preset, skipped bad
subjects, TensorBoard, a relative --root, what train prints and where, light commands
that stay light, and bundles free of machine paths."""

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brain_tf.cli import main
from brain_tf.config import load_toml
from brain_tf.data import load_spec
from brain_tf.data.synthetic import synthesize
from brain_tf.training import callbacks

REPO = Path(__file__).resolve().parents[1]
TINY = """
[preprocess]
spacing = [8.0, 8.0, 8.0]
shape = [16, 16, 16]
[model]
filters = [4, 4, 4, 4]
[training]
batch_size = 2
"""


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def _strings(value):
    """Every string inside nested dicts and lists."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.fixture(scope="module")
def camcan(tmp_path_factory):
    root = tmp_path_factory.mktemp("camcan")
    return synthesize("camcan", root / "data", subjects=12, seed=3, shape=(20, 24, 20))


# ---------------------------------------------------------------- age features (item 1)
def test_age_features_preset_trains_from_the_command_line(camcan, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["age-regression", "train", "--preset", "features", "--spec", str(camcan),
                 "--run-dir", str(run)]) == 0
    assert (run / "complete.json").exists()
    out = capsys.readouterr().out.splitlines()
    assert f"run folder: {run}" in out
    assert sum(line.count("test split (") for line in out) == 1


def test_age_features_preset_from_its_script(camcan, tmp_path, monkeypatch):
    script = REPO / "scripts" / "train_age_regression.py"
    run = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", [str(script), "--preset", "features", "--spec",
                                      str(camcan), "--run-dir", str(run)])
    monkeypatch.syspath_prepend(str(script.parent))
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_info.value.code == 0
    assert (run / "complete.json").exists()


def test_training_flags_refused_by_the_feature_preset(camcan, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["age-regression", "train", "--preset", "features", "--spec", str(camcan),
                 "--epochs", "3", "--batch-size", "2", "--run-dir", str(run)]) == 2
    line = _error_line(capsys)
    assert "--epochs, --batch-size" in line and "'features'" in line
    assert not run.exists()


# ---------------------------------------------------------------- skip_bad (item 3)
def test_skip_bad_finishes_and_its_run_evaluates_and_reruns(tmp_path, capsys):
    spec = synthesize("camcan", tmp_path / "data", subjects=12, seed=4, shape=(20, 24, 20))
    manifest = load_spec(spec).manifest()
    bad = manifest.iloc[2]
    image = Path(bad["image_T1"])
    image.write_bytes(image.read_bytes()[:300])  # cut short: a corrupt gzip
    config = tmp_path / "skip.toml"
    config.write_text("[data]\nskip_bad = true\n")
    command = ["age-regression", "train", "--preset", "features", "--spec", str(spec),
               "--config", str(config)]
    run = tmp_path / "run"
    assert main(command + ["--run-dir", str(run)]) == 0
    assert (run / "complete.json").exists()
    splits = pd.read_csv(run / "splits.csv", dtype=str).set_index("sample")
    assert len(splits) == 12 and splits.loc[str(bad["sample"]), "split"] == "skipped"
    assert (splits["split"] == "skipped").sum() == 1
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["items"] == (splits["split"] == "test").sum()
    assert main(["age-regression", "evaluate", "--run", str(run)]) == 0
    # an unfinished run of it resumes and finishes
    (run / "complete.json").unlink()
    assert main(command + ["--run-dir", str(run)]) == 0
    assert (run / "complete.json").exists()
    # and its split file makes the same run again
    again = tmp_path / "again"
    assert main(command + ["--splits", str(run / "splits.csv"), "--run-dir", str(again)]) == 0
    assert pd.read_csv(again / "splits.csv", dtype=str).set_index("sample").equals(splits)
    capsys.readouterr()


# ---------------------------------------------------------------- relative --root (item 7)
def test_a_root_typed_on_the_command_line_is_relative_to_the_current_folder(
        camcan, tmp_path, monkeypatch, capsys):
    data = camcan.parent
    elsewhere = tmp_path / "specs" / "camcan.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(camcan.read_text())  # root = "." there: the specs folder
    monkeypatch.chdir(data.parent)
    assert load_spec(elsewhere, root=data.name).root == data
    assert main(["manifest", "--spec", str(elsewhere), "--root", data.name]) == 0
    assert str(data / "images") in capsys.readouterr().out


def test_a_root_written_in_a_spec_stays_relative_to_the_spec(camcan, tmp_path, monkeypatch,
                                                             capsys):
    data = camcan.parent
    folder = data.parent / "specs"
    folder.mkdir(exist_ok=True)
    spec = folder / "camcan.toml"
    spec.write_text(camcan.read_text().replace('root = "."', f'root = "../{data.name}"'))
    monkeypatch.chdir(tmp_path)
    assert load_spec(spec).root == data
    assert main(["manifest", "--spec", str(spec)]) == 0
    assert str(data / "images") in capsys.readouterr().out


# ---------------------------------------------------------------- light commands (item 10)
def test_synth_never_loads_tensorflow_and_shard_writes_no_start_up_lines(tmp_path):
    script = ("import sys\n"
              "from brain_tf.cli import main\n"
              f"assert main(['synth', 'camcan', '--out', {str(tmp_path / 'd')!r}, "
              "'--subjects', '2', '--shape', '16', '20', '16']) == 0\n"
              "print('tensorflow loaded:', 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
              f"assert main(['shard', '--spec', {str(tmp_path / 'd' / 'spec.toml')!r}, "
              f"'--task', 'age-regression', '--preset', 'small', '--out', "
              f"{str(tmp_path / 'sh')!r}]) == 0\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "tensorflow loaded: False False" in done.stdout
    assert done.stderr == ""
    for control in ("\x1b", "\r", "\b"):
        assert control not in done.stdout
    assert "wrote 2 subjects in 1 shards" in done.stdout


# ---------------------------------------------------------------- a Keras run (items 6, 10, 11)
@pytest.fixture(scope="module")
def small_run(camcan, tmp_path_factory):
    """age-regression small, tiny, one epoch, from the command line (with --tensorboard
    when TensorBoard is installed); its stdout as a file would hold it."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("small_run")
    (root / "tiny.toml").write_text(TINY)
    manifest = load_spec(camcan).manifest()
    manifest["split"] = ["train"] * 6 + ["val"] * 3 + ["test"] * 3
    manifest[["sample", "subject", "split"]].to_csv(root / "splits.csv", index=False)
    run = root / "run"
    argv = ["age-regression", "train", "--preset", "small", "--spec", str(camcan),
            "--config", str(root / "tiny.toml"), "--splits", str(root / "splits.csv"),
            "--epochs", "1", "--run-dir", str(run)]
    if callbacks.tensorboard_installed():
        argv.append("--tensorboard")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return run, out.getvalue()


def test_train_prints_its_run_folder_and_one_line_per_epoch(small_run):
    run, out = small_run
    lines = out.splitlines()
    assert f"run folder: {run}" in lines
    epochs = [line for line in lines if re.match(r"\d+/\d+ - \d+s - .*val_loss", line)]
    assert len(epochs) == 1  # the one epoch in one line (Keras verbose=2)
    for control in ("\x1b", "\r", "\b"):
        assert control not in out


def test_age_regression_test_line_has_one_prefix(small_run):
    _, out = small_run
    tested = [line for line in out.splitlines() if "test split (" in line]
    assert len(tested) == 1 and tested[0].count("test split (") == 1
    assert tested[0].startswith("test split (") and "MAE" in tested[0]


@pytest.mark.skipif(not callbacks.tensorboard_installed(), reason="TensorBoard not installed")
def test_tensorboard_run_writes_event_files(small_run):
    run, _ = small_run
    events = list((run / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)


def test_tensorboard_missing_is_a_one_line_error_before_anything_runs(camcan, tmp_path,
                                                                     monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    assert not callbacks.tensorboard_installed()
    run = tmp_path / "run"
    assert main(["age-regression", "train", "--preset", "small", "--spec", str(camcan),
                 "--epochs", "1", "--tensorboard", "--run-dir", str(run)]) == 2
    line = _error_line(capsys)
    assert "pip install 'brain_tf[tensorboard]'" in line and "--tensorboard" in line
    assert not run.exists()


# ---------------------------------------------------------------- bundles (item 11)
def test_export_writes_no_machine_path_into_a_bundle(small_run, tmp_path, camcan, capsys):
    run, _ = small_run
    bundle = tmp_path / "bundle"
    assert main(["export", str(run), "--pretrained", str(bundle)]) == 0
    root = str(camcan.parents[1])
    for path in bundle.iterdir():
        if path.suffix in (".toml", ".json", ".md"):
            assert root not in path.read_text() and str(tmp_path) not in path.read_text()
    config = load_toml(bundle / "config.toml")
    learned = json.loads((bundle / "learned.json").read_text())
    assert not [s for s in _strings([config, learned]) if os.path.isabs(s)]
    assert "spec" not in config["data"] and "splits_csv" not in config["data"]
    # the bundle predicts what its run predicts (float16 weights)
    image = str(load_spec(camcan).manifest()["image_T1"].iloc[0])
    mask = str(load_spec(camcan).manifest()["mask"].iloc[0])
    for model, out in ((run, tmp_path / "from_run"), (bundle, tmp_path / "from_bundle")):
        assert main(["age-regression", "predict", "--model", str(model), f"{image},{mask}",
                     "--out", str(out)]) == 0
    ages = [pd.read_csv(next(out.glob("*.csv")))["predicted_age"].to_numpy()
            for out in (tmp_path / "from_run", tmp_path / "from_bundle")]
    np.testing.assert_allclose(ages[0], ages[1], atol=0.05)


@pytest.mark.parametrize("name", ["brain", "tissue"])
def test_shipped_bundles_carry_no_machine_path(name):
    folder = REPO / "brain_tf" / "pretrained" / name
    config = load_toml(folder / "config.toml")
    learned = json.loads((folder / "learned.json").read_text())
    assert not [s for s in _strings([config, learned]) if os.path.isabs(s) or "/work/" in s]


def test_portable_config_keeps_shipped_names_and_refuses_other_paths(capsys):
    from brain_tf.errors import ModelError
    from brain_tf.training.bundle import portable

    config = {"task": "t", "data": {"spec": "camcan", "root": "/data/camcan", "seed": 1},
              "preprocess": {"mask_model": "models/brain-extraction/RUN"},
              "fewshot": {"classifier_run": "/runs/classifier"}}
    assert portable("config.toml", config) == {
        "task": "t", "data": {"spec": "camcan", "seed": 1}, "preprocess": {"mask_model": ""},
        "fewshot": {}}
    assert "--mask" in capsys.readouterr().out
    assert portable("config.toml", {"preprocess": {"mask_model": "pretrained:brain"}}) == {
        "preprocess": {"mask_model": "pretrained:brain"}}
    # the run a model was fine-tuned from is a path of this machine; a shipped model is not
    assert portable("config.toml", {"training": {"init_weights": "/runs/first", "epochs": 2}}
                    ) == {"training": {"epochs": 2}}
    assert portable("config.toml", {"training": {"init_weights": "pretrained:tissue"}}) == {
        "training": {"init_weights": "pretrained:tissue"}}
    with pytest.raises(ModelError, match=r"model.weights = '/home/me/w.h5'"):
        portable("config.toml", {"model": {"weights": "/home/me/w.h5"}})
    assert portable("learned.json", {"classifier": {"run": "/r", "accuracy": 0.5}}) == {
        "classifier": {"accuracy": 0.5}}

"""The one task runner and the typed configuration: unknown keys, checked values,
reproducible runs, finished and unfinished run folders, a light package import, and
data specs shipped inside the wheel."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from brain_tf.cli import main
from brain_tf.data.synthetic import synthesize
from brain_tf.errors import ConfigError, ModelError
from brain_tf.evaluation.summaries import classification_summary, regression_summary
from brain_tf.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "sampler": {"patch_size": [16, 16, 8], "patches_per_subject": 2, "max_tries": 10},
    "model": {"depth": 2, "base_filters": 2},
    "training": {"epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "val_patches": 1,
                 "patience": 2, "verbose": 0},
    "inference": {"patch_size": [16, 16, 8], "overlap": 0.0},
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner")
    return synthesize("msd_brats", root / "data", subjects=5, seed=3, shape=(24, 24, 16))


def _config(spec, **training):
    task = TASKS["tumor-segmentation"]
    return task.config("small", {**TINY, "data": {"spec": str(spec)},
                                 "training": {**TINY["training"], **training}})


def test_unknown_keys_name_the_key_section_and_nearest_key():
    task = TASKS["tissue-segmentation"]
    with pytest.raises(ConfigError, match=r"\[training\]: unknown key 'epoch'; did you mean "
                                          r"'epochs'\?"):
        task.config("small", {"training": {"epoch": 3}})
    with pytest.raises(ConfigError, match=r"unknown key 'trainng'; did you mean 'training'"):
        task.config("small", {"trainng": {"epochs": 3}})
    with pytest.raises(ConfigError, match=r"\[sampler\]: unknown key 'patchsize'"):
        task.config("small", {"sampler": {"patchsize": [8, 8, 8]}})
    with pytest.raises(ConfigError, match=r"\[augment\].*unknown keys \['gama'\]"):
        task.config("small", {"augment": {"gama": [0.5, 2.0]}})


def test_values_are_checked_and_defaults_live_in_one_place():
    task = TASKS["tissue-segmentation"]
    with pytest.raises(ConfigError, match=r"\[training\] epochs must be at least 1, not 0"):
        task.config("small", {"training": {"epochs": 0}})
    with pytest.raises(ConfigError, match=r"batch_size must be an integer, not 'two'"):
        task.config("small", {"training": {"batch_size": "two"}})
    with pytest.raises(ConfigError, match=r"fractions must add up to 1"):
        task.config("small", {"data": {"fractions": {"train": 0.5, "val": 0.1, "test": 0.1}}})
    with pytest.raises(ConfigError, match=r"stop_at_epoch 30 is after the last epoch \(12\)"):
        task.config("small", {"training": {"stop_at_epoch": 30}})
    # one default for every task: the MC passes and the inference batch of a preset
    # that does not set them
    assert TASKS["sex-classification"].config("default").inference.mc_passes == 20
    assert TASKS["age-regression"].config("resnext").inference.batch_size == 2


def test_command_line_values_are_checked_before_anything_runs(tmp_path, capsys):
    for flag, value in (("--epochs", "0"), ("--batch-size", "-1")):
        with pytest.raises(SystemExit) as code:
            main(["tumor-segmentation", "train", flag, value, "--run-dir", str(tmp_path / "r")])
        assert code.value.code == 2
        assert "must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    (tmp_path / "c.toml").write_text("[training]\nepoch = 3\n")
    assert main(["tumor-segmentation", "train", "--config", str(tmp_path / "c.toml"),
                 "--run-dir", str(tmp_path / "r")]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def two_runs(spec, tmp_path_factory):
    root = tmp_path_factory.mktemp("twice")
    task = TASKS["tumor-segmentation"]
    return [task.train(_config(spec), run_dir=str(root / name)) for name in ("a", "b")]


def test_the_same_command_gives_the_same_numbers(two_runs):
    a, b = two_runs
    assert (a / "history.csv").read_bytes() == (b / "history.csv").read_bytes()
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    assert len(a.history) == 2


def test_config_keeps_the_request_and_learned_json_the_data(two_runs):
    run = two_runs[0]
    text = (run / "config.toml").read_text()
    assert "[training]" in text and "edema" not in text  # labels come from the data
    learned = json.loads((run / "learned.json").read_text())
    assert learned["labels"]["edema"] == 1 and learned["channels"][0] == "FLAIR"
    assert "RAS" in learned["input"]["grid"] and learned["input"]["normalise"] == "zscore_slice"
    reloaded = TASKS["tumor-segmentation"].load_config(run)
    assert reloaded.to_dict() == TASKS["tumor-segmentation"].config(
        "small", {**TINY, "data": reloaded.data.to_dict()}).to_dict()


def test_a_finished_run_is_left_alone_and_force_starts_over(two_runs, spec, capsys):
    run = two_runs[0]
    history = (run / "history.csv").read_bytes()
    stamp = (run / "complete.json").stat().st_mtime_ns
    again = TASKS["tumor-segmentation"].train(_config(spec), run_dir=str(run.path))
    assert "holds a finished run" in capsys.readouterr().out
    assert (again / "history.csv").read_bytes() == history
    assert (run / "complete.json").stat().st_mtime_ns == stamp
    TASKS["tumor-segmentation"].train(_config(spec, epochs=3, patience=None),
                                      run_dir=str(run.path), force=True)
    assert list(run.history["epoch"]) == [0, 1, 2]  # trained afresh, no rows appended
    assert run.is_complete and not (run / "backup").exists()


def test_an_unfinished_run_is_refused_by_evaluate_and_predict(two_runs, tmp_path, spec):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(two_runs[1].path, unfinished)
    (unfinished / "complete.json").unlink()
    task = TASKS["tumor-segmentation"]
    with pytest.raises(ModelError, match="the run is not finished"):
        task.evaluate(unfinished)
    scan = sorted((Path(spec).parent / "imagesTr").glob("*.nii.gz"))[0]
    with pytest.raises(ModelError, match="the run is not finished"):
        task.predict(unfinished, [str(scan)], tmp_path / "out")
    with pytest.raises(ModelError, match="another configuration"):
        task.train(_config(spec, epochs=3), run_dir=str(unfinished))


def test_baselines_come_from_the_training_split():
    # training split mostly class 1, test split mostly class 0: the baseline predicts 1
    train = np.array([1, 1, 1, 0])
    truth = np.array([0, 0, 0, 1])
    probs = np.eye(2)[[0, 0, 1, 1]]
    metrics = classification_summary(truth, probs, ["a", "b"], train)
    assert metrics["baseline_class"] == "b"
    assert metrics["baseline_accuracy"] == pytest.approx(0.25)  # not the test majority's 0.75
    assert metrics["accuracy"] == pytest.approx(0.75)
    reg = regression_summary([10.0, 20.0], [12.0, 18.0], train_values=[30.0, 50.0])
    assert reg["baseline_mae"] == pytest.approx(25.0) and reg["mae"] == pytest.approx(2.0)


def test_importing_the_package_changes_nothing_and_help_is_light():
    code = ("import os, sys; before = dict(os.environ); import brain_tf, brain_tf.cli, "
            "brain_tf.tasks; brain_tf.cli.build_parser(only=''); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib', 'pandas') "
            "if m in sys.modules), dict(os.environ) == before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, env={k: v for k, v in os.environ.items()
                                           if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[]", "True"]
    version = subprocess.run([sys.executable, "-m", "brain_tf.cli", "--version"],
                             capture_output=True, text=True, timeout=120)
    assert version.stdout.strip().startswith("brain-tf 0.")


def test_a_wheel_ships_the_data_specs(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(tmp_path / "wheel"),
                            str(REPO)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("brain_tf-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "brain_tf/data_specs/msd_brats.toml" in names and "brain_tf/tasks/tumor.py" in names
    assert not any(n.startswith("tests/") for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("from brain_tf.data import load_spec, shipped_specs; "
             "print(sorted(shipped_specs())); print(load_spec('camcan').name)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split("\n")
    assert "'camcan'" in lines[0] and "'msd_brats'" in lines[0] and lines[1] == "camcan"
    assert str(site) in subprocess.run(
        [sys.executable, "-c", "import brain_tf; print(brain_tf.__file__)"], capture_output=True,
        text=True, timeout=60, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)}).stdout


def test_a_run_killed_while_saving_resumes_without_training_again(spec, tmp_path, monkeypatch):
    from brain_tf.tasks.segmentation import Segmentation

    task = TASKS["tumor-segmentation"]

    def killed(self, run, model):
        raise KeyboardInterrupt("killed while saving")

    with monkeypatch.context() as patch:
        patch.setattr(Segmentation, "save", killed)
        with pytest.raises(KeyboardInterrupt):
            task.train(_config(spec), run_dir=str(tmp_path / "run"))
    run = tmp_path / "run"
    assert (run / "backup").exists() and not (run / "complete.json").exists()
    history = (run / "history.csv").read_bytes()
    done = task.train(_config(spec), run_dir=str(run))
    assert (run / "history.csv").read_bytes() == history  # no epoch trained again
    assert done.is_complete and (run / "model.keras").exists()
    assert not (run / "backup").exists()


def test_bad_data_stops_training_before_the_run_folder_exists(spec, tmp_path):
    from brain_tf.errors import DataError

    data = tmp_path / "data"
    shutil.copytree(Path(spec).parent, data)
    label = sorted((data / "labelsTr").glob("*.nii.gz"))[2]
    label.write_bytes(label.read_bytes()[:200])  # truncated
    config = TASKS["tumor-segmentation"].config("small", {**TINY, "data": {
        "spec": str(data / "spec.toml")}})
    with pytest.raises(DataError, match=label.name):
        TASKS["tumor-segmentation"].train(config, run_dir=str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()

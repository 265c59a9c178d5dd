"""What every task shares: presets, data loading and splits, run folders, the CLI.

A task is a small configuration (presets: nested dicts that go to config.toml)
plus three functions: ``train(config, run)``, ``evaluate(run)`` and
``predict(run_or_model, inputs, out)``. The shared steps live here.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Callable

import pandas as pd

from brain_tf.data import apply_splits, load_spec, split_subjects
from brain_tf.errors import ConfigError, DataError
from brain_tf.preprocess.loader import ManifestLoader
from brain_tf.training.run import RunFolder, SavedModelPredictor, load_keras_model

REPO = Path(__file__).resolve().parents[2]


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of ``base`` with ``override``'s keys replacing (recursively)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclasses.dataclass
class Task:
    """A task: its presets and its train / evaluate / predict functions."""

    name: str
    description: str
    presets: dict[str, dict]
    train: Callable
    evaluate: Callable
    predict: Callable

    def config(self, preset: str = "default", overrides: dict | None = None) -> dict:
        if preset not in self.presets:
            raise ConfigError(f"task {self.name}: unknown preset {preset!r}; "
                              f"choose from {sorted(self.presets)}")
        base = self.presets["default"]
        merged = deep_merge(base, self.presets[preset]) if preset != "default" else base
        merged = deep_merge(merged, overrides or {})
        merged["task"] = self.name
        merged["preset"] = preset
        return merged


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


def spec_path(config: dict) -> Path:
    path = Path(config["data"]["spec"])
    if not path.is_absolute() and not path.exists() and (REPO / path).exists():
        path = REPO / path
    return path


def load_manifest(config: dict) -> tuple:
    """The data spec and the manifest with a ``split`` column (by subject)."""
    data = config["data"]
    spec = load_spec(spec_path(config), root=data.get("root"))
    manifest = spec.manifest()
    if data.get("splits_csv"):
        manifest = apply_splits(manifest, data["splits_csv"])
    else:
        manifest = split_subjects(manifest, data.get("fractions"), seed=data.get("seed", 0),
                                  stratify=data.get("stratify") or None)
    return spec, manifest


def subset(manifest: pd.DataFrame, split: str) -> pd.DataFrame:
    return manifest[manifest["split"] == split].reset_index(drop=True)


def new_run(config: dict, run_dir: str | None = None, base: str | None = None) -> RunFolder:
    """The run folder to write, after starting the config's distribution strategy.

    The strategy is created here because a multi-worker strategy must exist
    before TensorFlow runs any operation (datasets are built after this).
    Under ``training.strategy = "multiworker"`` only the chief (see
    :func:`brain_tf.distribute.is_chief`) gets the real folder; every other
    worker writes the same files to a temporary folder removed at exit.
    """
    from brain_tf.distribute import config_strategy, is_chief, strategy_name

    config_strategy(config)
    if strategy_name(config) == "multiworker" and not is_chief():
        return RunFolder(_worker_folder())
    if run_dir:
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return RunFolder(path)
    return RunFolder.create(config["task"], base=base or "models")


def subject_loader(rows: pd.DataFrame, config: dict, label_values=None):
    """The preprocessed subjects of some manifest rows (``len`` and ``loader(i)``).

    With ``data.shards`` set (a folder written by ``brain-tf shard``) the
    subjects are read from its TFRecord shards, after checking that they were
    preprocessed with this config; otherwise from the manifest's files.
    """
    shards = (config.get("data") or {}).get("shards")
    if shards:
        from brain_tf.data.shards import ShardLoader

        return ShardLoader.for_rows(shards, rows, config["preprocess"], label_values)
    return ManifestLoader(rows, config["preprocess"], label_values=label_values)


def _worker_folder() -> Path:
    """A temporary run folder for a non-chief worker, deleted when the process exits."""
    import atexit
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="brain_tf_worker_"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def load_predictor(model_path, config: dict | None = None):
    """``(model, config)`` from a run folder or its saved_model/ (the exported SavedModel,
    usable in a fresh process), or from a ``.keras`` file (config from its run folder)."""
    path = Path(model_path)
    if path.suffix == ".keras":
        if config is None:
            config = RunFolder.open(path.parent).load_config()
        return load_keras_model(path), config
    run_dir = path.parent if path.name == "saved_model" else path
    return SavedModelPredictor(path), config or RunFolder.open(run_dir).load_config()


def open_test_split(run_path, root: str | None = None):
    """``(run, config, spec, manifest)`` of a finished run, split as in training (the
    ``split`` column; a run without test subjects is an error).

    ``root`` points the data spec at a dataset that moved since training.
    """
    run = RunFolder.open(run_path)
    config = run.load_config()
    if root:
        config["data"]["root"] = root
    config["data"]["splits_csv"] = str(run / "splits.csv")
    spec, manifest = load_manifest(config)
    if not (manifest["split"] == "test").any():
        raise DataError(f"{run.path}: the test split is empty; nothing to evaluate")
    return run, config, spec, manifest

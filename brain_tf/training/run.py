"""Run folders: ``models/TASK/RUN_ID/`` with everything needed to reuse a run.

    config.toml      the configuration the user asked for (preset + overrides + defaults)
    learned.json     what the run learned from its data (labels, channels, target statistics,
                     the chosen regressor) and what the exported model expects as input
    splits.csv       sample, subject, split
    model.keras      full model (architecture, weights, optimizer) for fine-tuning
    saved_model/     TensorFlow SavedModel with a ``serve`` signature, for inference
    best.keras       best checkpoint by the validation metric
    history.csv      per-epoch losses and metrics
    metrics.json     test-split metrics
    test_items.csv   one row per test item
    *.png            plots
    complete.json    written last: the run is finished (evaluate and predict refuse a run
                     without it; train leaves a finished run alone)

Every file is written under a temporary name and renamed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from brain_tf.config import dump_toml, load_toml
from brain_tf.data.splits import save_splits
from brain_tf.errors import ModelError
from brain_tf.io.atomic import atomic_path, write_text

DEFAULT_BASE = Path("models")
COMPLETE = "complete.json"


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (pd.DataFrame,)):
        return _jsonable(value.to_dict(orient="records"))
    return value


class RunFolder:
    """A training run's folder and its files."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @classmethod
    def create(cls, task: str, run_id: str | None = None,
               base: str | os.PathLike = DEFAULT_BASE, create: bool = True) -> "RunFolder":
        """``base/task/run_id`` (default id: the time), made unless ``create=False``."""
        run_id = run_id or _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        run = cls(Path(base) / task / run_id)
        if create:
            run.path.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, path: str | os.PathLike) -> "RunFolder":
        run = cls(path)
        if not (run.path / "config.toml").exists():
            raise ModelError(f"{run.path}: not a brain_tf run folder (no config.toml); "
                             "pass a folder written by 'brain-tf TASK train'")
        return run

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ---------------------------------------------------------------- config
    def save_config(self, config: dict) -> Path:
        return dump_toml(config, self.path / "config.toml")

    def load_config(self) -> dict:
        return load_toml(self.path / "config.toml")

    def save_learned(self, learned: dict) -> Path:
        return self.save_json("learned.json", learned)

    def load_learned(self) -> dict:
        path = self.path / "learned.json"
        if not path.exists():
            raise ModelError(f"{self.path}: no learned.json; this run folder is incomplete "
                             "or from an older brain_tf: train it again")
        return json.loads(path.read_text())

    # ------------------------------------------------------------ completion
    @property
    def is_complete(self) -> bool:
        return (self.path / COMPLETE).exists()

    def require_complete(self) -> None:
        """ModelError unless training finished (``complete.json`` written)."""
        if not self.is_complete:
            raise ModelError(f"{self.path}: the run is not finished (no {COMPLETE}); rerun the "
                             "same train command with --run-dir to resume it")

    def mark_complete(self, summary: dict) -> Path:
        """Write ``complete.json`` (the last file of a run), then drop the resume backup."""
        path = self.save_json(COMPLETE, {
            "finished": _dt.datetime.now().isoformat(timespec="seconds"), **summary})
        shutil.rmtree(self.path / "backup", ignore_errors=True)
        return path

    def clear(self) -> None:
        """Remove every file of the run (``train --force``), keeping the folder."""
        for child in self.path.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()

    def save_splits(self, manifest: pd.DataFrame, skipped: pd.DataFrame | None = None) -> Path:
        return save_splits(manifest, self.path / "splits.csv", skipped)

    def save_json(self, name: str, data) -> Path:
        return write_text(self.path / name, json.dumps(_jsonable(data), indent=2) + "\n")

    def load_json(self, name: str):
        return json.loads((self.path / name).read_text())

    def save_table(self, name: str, table: pd.DataFrame) -> Path:
        with atomic_path(self.path / name) as tmp:
            table.to_csv(tmp, index=False)
        return self.path / name

    # ---------------------------------------------------------------- models
    def save_model(self, model, export: bool = True) -> Path:
        """Save ``model.keras`` and (by default) export ``saved_model/``."""
        with atomic_path(self.path / "model.keras") as tmp:
            model.save(str(tmp))
        if export:
            with atomic_path(self.path / "saved_model") as tmp:
                model.export(str(tmp), verbose=False)
        return self.path / "model.keras"

    def load_model(self, name: str = "model.keras", compile: bool = True):
        return load_keras_model(self.path / name, compile=compile)

    @property
    def history(self) -> pd.DataFrame:
        return pd.read_csv(self.path / "history.csv")


def load_keras_model(path: str | os.PathLike, compile: bool = True):
    """Load a ``.keras`` model saved by brain_tf (custom objects are registered)."""
    import keras

    import brain_tf.objects  # noqa: F401  (registers losses, metrics, layers, schedules)

    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    try:
        return keras.saving.load_model(str(path), compile=compile)
    except Exception as exc:
        raise ModelError(f"{path}: cannot load Keras model ({type(exc).__name__}: {exc})") from None


class SavedModelPredictor:
    """Callable wrapper of an exported SavedModel's ``serve`` signature.

    Maps a numpy batch to numpy outputs (a dict for multi-output models), so it
    can be passed wherever brain_tf expects a model callable.
    """

    def __init__(self, path: str | os.PathLike):
        import tensorflow as tf

        path = Path(path)
        if (path / "saved_model").is_dir():
            path = path / "saved_model"
        if not (path / "saved_model.pb").exists():
            raise ModelError(f"{path}: no SavedModel here (saved_model.pb missing); pass a run "
                             "folder or its saved_model/ folder")
        self.path = path
        self._loaded = tf.saved_model.load(str(path))
        specs = self._loaded.serve.concrete_functions[0].structured_input_signature[0]
        self.input_shape = tuple(specs[0].shape)

    @property
    def variables(self) -> list:
        """The model's variables (weights and the random layers' states)."""
        return list(getattr(self._loaded, "variables", ()))

    def __call__(self, batch):
        import tensorflow as tf

        out = self._loaded.serve(tf.convert_to_tensor(np.asarray(batch, np.float32)))
        if isinstance(out, dict):
            return {k: np.asarray(v) for k, v in out.items()}
        if isinstance(out, (list, tuple)):
            return [np.asarray(v) for v in out]
        return np.asarray(out)

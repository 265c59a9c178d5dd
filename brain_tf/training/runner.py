"""The task runner: train -> save -> evaluate -> a complete run folder, for every task.

A task is configuration (:class:`brain_tf.tasks.base.Task`: presets over the typed
sections of :mod:`brain_tf.schema`) plus a :class:`Family` of hooks that says what is
particular to a kind of task:

- :meth:`Family.learn`: what a run learns from its data (labels, channels, class names,
  target statistics), saved to ``learned.json``;
- :meth:`Family.prepare`: the datasets and the compiled model (everything that can fail
  on a bad config or bad data happens here, before the run folder is written);
- :meth:`Family.fit`, :meth:`Family.save`, :meth:`Family.load`: training and the model
  file (Keras by default; the age-feature regressors use scikit-learn);
- :meth:`Family.score`: the per-item table and metrics of the test split (through
  :mod:`brain_tf.evaluation.summaries`);
- :meth:`Family.inputs` and :meth:`Family.predict`: checking new inputs (before any model is
  loaded) and predicting them.

The runner owns the rest, once: seeding, the data spec and its patient-level split, the
run folder (resume, refuse a finished run, ``--force``), saving, learning curves,
evaluation on the test split only, and the completion marker.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from pathlib import Path
from typing import Any

import pandas as pd

from brain_tf.errors import ConfigError, DataError, ModelError
from brain_tf.schema import RunConfig
from brain_tf.training import bundle
from brain_tf.training.run import RunFolder, SavedModelPredictor, load_keras_model


@dataclasses.dataclass
class Context:
    """What the hooks see: the task, its config, the data spec and manifest (with a
    ``split`` column), and what the run learned from the data."""

    task: Any
    config: RunConfig
    spec: Any = None
    manifest: pd.DataFrame | None = None
    learned: dict = dataclasses.field(default_factory=dict)

    def rows(self, split: str) -> pd.DataFrame:
        return self.manifest[self.manifest["split"] == split].reset_index(drop=True)


@dataclasses.dataclass
class PredictOptions:
    """What ``predict`` was asked for besides the inputs: one brain mask per input,
    MC-dropout uncertainty, a labelled support set (few-shot families)."""

    masks: list | None = None
    uncertainty: bool = False
    support: str | None = None
    skip_existing: bool = False  # leave out inputs whose outputs exist (a cohort continued)
    write: tuple = ()            # segmentation outputs added to [inference] write


@dataclasses.dataclass
class Prepared:
    """What :meth:`Family.prepare` makes before training: datasets and the model."""

    model: Any
    train: Any = None
    val: Any = None
    steps_per_epoch: int | None = None
    freeze_layer: str | None = None
    metrics: Any = None


class Family(abc.ABC):
    """The hooks of one kind of task (see the module docstring); every family says how
    it prepares training, scores the test split and predicts new inputs."""

    per_item_csv = "test_items.csv"
    takes_support = False  # predict labels inputs from a support set (--support)

    def learn(self, ctx: Context) -> dict:
        return {}

    @abc.abstractmethod
    def prepare(self, ctx: Context) -> Prepared:
        """Datasets and the compiled model of a new run."""

    def fit(self, ctx: Context, prepared: Prepared, run: RunFolder):
        from brain_tf.pipeline.errors import pipeline_errors
        from brain_tf.training.fit import fit_stages

        with pipeline_errors():  # an error found inside tf.data comes back as itself
            return fit_stages(prepared.model, prepared.train, prepared.val, ctx.config, run,
                              prepared.steps_per_epoch, prepared.freeze_layer,
                              metrics=prepared.metrics)

    def save(self, run: RunFolder, model) -> None:
        run.save_model(model)

    def curves(self, run: RunFolder) -> None:
        from brain_tf.training import plots

        plots.learning_curves(plots.full_history(run), run / "learning_curves.png")

    def load(self, run: RunFolder):
        return run.load_model()

    def load_predictor(self, ctx: Context, path: Path):
        """The model of a run folder, its ``saved_model/``, a ``.keras`` file or a shipped
        bundle (rebuilt from its config, see :mod:`brain_tf.training.bundle`)."""
        if path.suffix == ".keras":
            return load_keras_model(path)
        if bundle.is_bundle(path):
            return bundle.load_bundle(path, lambda: build_model_of(ctx))
        return SavedModelPredictor(path)

    @abc.abstractmethod
    def score(self, ctx: Context, model, rows: pd.DataFrame, run: RunFolder
              ) -> tuple[pd.DataFrame, dict, list[str]]:
        """Per-item table, metrics.json entries and printable lines of the test split."""

    def inputs(self, ctx: Context, inputs, options: PredictOptions) -> list:
        return list(inputs)

    @abc.abstractmethod
    def predict(self, ctx: Context, model, items: list, out: Path, options: PredictOptions
                ) -> list[Path]:
        """Write the outputs of checked inputs into ``out``; the paths written."""


def build_model_of(ctx: Context):
    """A run's model rebuilt from its config and ``learned["model"]`` (untrained weights)."""
    from brain_tf.models import build_model

    options = dict(ctx.config.model)
    shape = ctx.learned["model"]
    return build_model(options.pop("name"), input_shape=tuple(shape["input_shape"]),
                       num_outputs=shape["num_outputs"], **options)


# ------------------------------------------------------------------------------ train
def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, numpy and TensorFlow (initialisers, dropout, tf.data) and, when asked,
    make TensorFlow's ops deterministic: the same command gives the same numbers on a CPU."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def load_manifest(config: RunConfig, root: str | None = None):
    """The data spec and its manifest with a ``split`` column (by patient; samples a
    splits file lists as skipped have the split :data:`brain_tf.data.splits.SKIPPED`)."""
    from brain_tf.data import apply_splits, load_spec, split_subjects

    data = config.data
    spec = load_spec(data.spec, root=root or data.root)
    manifest = spec.manifest()
    if data.images:
        unknown = sorted(set(data.images) - set(spec.images))
        if unknown or spec.channels:
            raise ConfigError(f"{spec.path}: data.images {data.images} must name image entries "
                              f"of the spec ({', '.join(spec.images)}), one file each")
        spec = dataclasses.replace(spec, images={k: spec.images[k] for k in data.images})
        others = [c for c in manifest.columns if not c.startswith("image_")]
        manifest = manifest[others + [f"image_{k}" for k in data.images]]
    if data.splits_csv:
        return spec, apply_splits(manifest, data.splits_csv)
    return spec, split_subjects(manifest, data.fractions, seed=data.seed,
                                stratify=data.stratify)


def checked(manifest: pd.DataFrame, spec, skip_bad: bool = False) -> pd.DataFrame:
    """The manifest after reading every file of every split once (readable to the last
    byte, grids that agree, label values in the spec's set, no NaN): all problems at once
    as one DataError, or with ``skip_bad`` the bad subjects left out and listed. Samples
    a splits file skipped are left out unread."""
    from brain_tf.data.check import check_manifest, default_cache_path
    from brain_tf.data.splits import SKIPPED

    manifest = manifest[manifest["split"] != SKIPPED].reset_index(drop=True)

    report = check_manifest(manifest, spec, on_error="skip" if skip_bad else "raise",
                            cache=default_cache_path())
    print(f"checked {report.files} files of {manifest['subject'].nunique()} subjects in "
          f"{report.seconds:.1f} s")
    if report.ok:
        return manifest
    print(report.text(str(spec.path)))
    return report.keep(manifest)


def _run_folder(config: RunConfig, run_dir, force: bool) -> tuple[RunFolder, str]:
    """The run folder to train in and its state: "new", "resume" (an unfinished run of
    the same config), "force" (to be emptied) or "finished" (to be left alone). Nothing
    is written here."""
    from brain_tf.distribute import get_strategy, is_chief, is_multi_worker

    if "training" in config and is_multi_worker(get_strategy(config.training.strategy)) \
            and not is_chief():
        return RunFolder(_worker_folder()), "new"
    if not run_dir:
        return RunFolder.create(config.task, create=False), "new"
    run = RunFolder(run_dir)
    if not run.path.exists() or not any(run.path.iterdir()):
        return run, "new"
    if force:
        return run, "force"
    if not (run / "config.toml").exists():
        raise ModelError(f"{run.path}: the folder is not empty and holds no brain_tf run; "
                         "choose another --run-dir")
    if run.is_complete:
        return run, "finished"
    from brain_tf.config import dumps_toml

    if (run / "config.toml").read_text() != dumps_toml(config.to_dict()):
        raise ModelError(f"{run.path}: holds an unfinished run with another configuration; "
                         "rerun its own command to resume it, or pass --force to start over")
    return run, "resume"


def _worker_folder() -> Path:
    """A temporary run folder for a non-chief worker, deleted when the process exits."""
    import atexit
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="brain_tf_worker_"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def train(task, config: RunConfig, run_dir: str | os.PathLike | None = None,
          force: bool = False) -> RunFolder:
    """Train ``task`` with ``config``, save and evaluate it; returns the complete run folder.

    A ``run_dir`` that holds a finished run is left alone (``force`` starts over in it);
    one that holds an unfinished run with the same config resumes at its last epoch.
    """
    from brain_tf.distribute import get_strategy, resolve_precision, training_precision

    family = task.family(config.preset)
    if "training" in config:  # a Keras model (the age-feature regressors have none)
        from brain_tf.training.callbacks import tensorboard_installed

        if config.training.tensorboard and not tensorboard_installed():
            raise ConfigError("--tensorboard (training.tensorboard) needs the tensorboard "
                              "package, which is not installed: pip install "
                              "'brain_tf[tensorboard]'")
        get_strategy(config.training.strategy)  # before any TensorFlow op (multi-worker)
        resolve_precision(training_precision(config.training),  # before anything runs
                          where="--precision (training.precision)")
        seed_everything(config.data.seed, config.training.deterministic)
    run, state = _run_folder(config, run_dir, force)
    if state == "finished":
        print(f"{run.path} holds a finished run; left as it is (pass --force to train it "
              "again from scratch)")
        return run
    spec, listed = load_manifest(config)
    manifest = checked(listed, spec, config.data.skip_bad)
    ctx = Context(task, config, spec, manifest)
    for split in ("train", "val", "test"):
        if len(ctx.rows(split)) == 0 and config.data.fractions.get(split, 0) > 0:
            raise DataError(f"{spec.path}: the {split} split is empty ({len(manifest)} "
                            "samples); add subjects or change data.fractions (with data.stratify each "
                            "stratum is split on its own)")
    ctx.learned = family.learn(ctx)
    prepared = family.prepare(ctx)
    if prepared.model is not None:
        ctx.learned["model"] = bundle.model_shape(prepared.model)
        if config.training.init_weights:
            start_from(prepared.model, config.training.init_weights)
    if state == "force":
        run.clear()
    run.path.mkdir(parents=True, exist_ok=True)  # the first write into the run folder
    run.save_config(config.to_dict())
    run.save_learned(ctx.learned)
    run.save_splits(manifest, skipped=listed[~listed["sample"].isin(manifest["sample"])])
    model = family.fit(ctx, prepared, run)
    run.save_learned(ctx.learned)  # a family may learn during fit (the chosen regressor)
    family.save(run, model)
    if (run / "history.csv").exists():
        family.curves(run)
    metrics = evaluate(task, run.path, model=model, _unfinished=True)
    run.mark_complete({"task": task.name, "preset": config.preset,
                       "test_items": metrics.get("items")})
    return run


def start_from(model, source: str) -> None:
    """Give ``model`` the weights of a trained model of the same network
    (``[training] init_weights``: a run folder, its ``model.keras`` or ``best.keras``, or
    ``pretrained:NAME``); the optimiser starts afresh."""
    run, path = model_run(source)
    if bundle.is_bundle(path):
        weights = bundle.stored_weights(path)
    else:
        keras_file = path if path.suffix == ".keras" else run.path / "model.keras"
        weights = load_keras_model(keras_file, compile=False).get_weights()
    first = bundle.mismatch(model, weights)
    if first is not None:
        raise ConfigError(
            f"--init-weights (training.init_weights) {source!r}: its weights do not fit this "
            f"run's network ({len(weights)} arrays against {len(model.get_weights())}; array "
            f"{first} differs); start from a model with the same [model] settings, input "
            "channels and classes")
    model.set_weights(weights)


# ------------------------------------------------------------------------------ evaluate
def open_run(task, run_path, root: str | None = None, unfinished: bool = False
             ) -> tuple[RunFolder, Context]:
    """A run folder and its context, split as in training (``root`` points the data spec
    at a dataset that moved since training)."""
    from brain_tf.data.splits import SKIPPED

    run = RunFolder.open(run_path)
    if not unfinished:
        run.require_complete()
    config = task.load_config(run)
    ctx = Context(task, config, learned=run.load_learned())
    config.data.splits_csv = str(run / "splits.csv")
    ctx.spec, manifest = load_manifest(config, root=root)
    ctx.manifest = manifest[manifest["split"] != SKIPPED].reset_index(drop=True)
    return run, ctx


def evaluate(task, run_path, model=None, root: str | None = None,
             _unfinished: bool = False) -> dict:
    """Score the test split of a run: ``metrics.json``, the per-item CSV and plots."""
    run, ctx = open_run(task, run_path, root, unfinished=_unfinished)
    rows = ctx.rows("test")
    if len(rows) == 0:
        raise DataError(f"{run.path}: the test split is empty; nothing to evaluate")
    family = task.family(ctx.config.preset)
    if model is None:
        from brain_tf.distribute.precision import runnable_here

        model = runnable_here(family.load(run))
    table, metrics, lines = family.score(ctx, model, rows, run)
    metrics = {"split": "test", "items": int(len(rows)),
               "subjects": int(rows["subject"].nunique()), **metrics}
    run.save_table(family.per_item_csv, table)
    run.save_json("metrics.json", metrics)
    print("\n".join(lines))
    return metrics


# ------------------------------------------------------------------------------ predict
def model_run(model_path) -> tuple[RunFolder, Path]:
    """The run folder of a model path (a run folder, its ``saved_model/``, or a model
    file inside it) and the model path itself; refuses an unfinished run."""
    path = bundle.resolve(model_path)
    if not path.exists():
        raise ModelError(f"{path}: not found; pass a run folder written by 'brain-tf TASK "
                         "train' (or its saved_model/ or model.keras), or pretrained:NAME")
    folder = path.parent if path.is_file() or path.name == "saved_model" else path
    run = RunFolder.open(folder)
    run.require_complete()
    return run, path


def predict(task, model_path, inputs, out, uncertainty: bool = False, masks=None,
            support=None, skip_existing: bool = False, precision: str | None = None,
            write=(), config_file: str | None = None) -> list[Path]:
    """Predict new files with a trained run, computing in ``precision`` (None: "auto",
    see :func:`brain_tf.distribute.resolve_precision`), writing the outputs of ``write``
    besides the model's own, with the ``[inference]`` settings of ``config_file`` over the
    run's. Inputs are checked before the model loads."""
    from brain_tf.distribute import resolve_precision

    precision = resolve_precision(precision, purpose="predict")
    run, path = model_run(model_path)
    config = task.load_config(run, inference=config_file)
    ctx = Context(task, config, learned=run.load_learned())
    family = task.family(config.preset)
    options = PredictOptions(masks=masks, uncertainty=uncertainty, support=support,
                             skip_existing=skip_existing, write=tuple(write or ()))
    if support is not None and not family.takes_support:
        raise ConfigError(f"{run.path}: --support needs a run of a few-shot preset (siamese); "
                          f"this run's preset is {config.preset!r}")
    if not inputs:
        raise DataError("no inputs to predict; give files (or folders of them)")
    items = family.inputs(ctx, list(inputs), options)
    model = predictor_in_precision(family, ctx, run, family.load_predictor(ctx, path),
                                   precision)
    return family.predict(ctx, model, items, Path(out), options)


def predictor_in_precision(family, ctx: Context, run: RunFolder, model, precision: str):
    """``model`` computing in ``precision``: a Keras model is rebuilt in it with the same
    weights; an exported SavedModel serves only the precision it was trained in, so for
    another the run's ``model.keras`` is loaded and rebuilt. Other predictors (the
    scikit-learn regressors) are returned as they are."""
    import keras

    from brain_tf.distribute import in_precision

    if isinstance(model, SavedModelPredictor):
        if ctx.learned.get("model", {}).get("precision", "float32") == precision:
            return model
        model = family.load(run)
    return in_precision(model, precision) if isinstance(model, keras.Model) else model

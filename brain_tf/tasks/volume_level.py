"""Whole-volume regression and classification (age, sex): train, evaluate, predict.

One prediction per subject from the whole preprocessed volume (systems A and
B). The config's ``[target]`` table says what is predicted::

    [target]
    column = "age"            # a manifest column
    kind = "regression"       # or "classification"
    standardise = true        # regression: train on (y - mean) / std of the train split
    classes = ["M", "F"]      # classification: column values in class-index order

With ``standardise`` the mean and standard deviation of the training targets
are saved in the run's config.toml and the network predicts standardised
values (the ``mae`` in history.csv is then in standard deviations); evaluate
and predict convert back to the column's units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brain_tf.errors import ConfigError, DataError
from brain_tf.evaluation import classification_report, regression_report
from brain_tf.inference import mc_dropout_predict
from brain_tf.inference.calling import predict_batch, select_output
from brain_tf.io import load_modalities, load_volume
from brain_tf.io.atomic import atomic_path
from brain_tf.pipeline import volume_dataset
from brain_tf.preprocess.subject import preprocess_subject
from brain_tf.tasks.base import (
    load_manifest, load_predictor, new_run, open_test_split, subject_loader, subset,
)
from brain_tf.tasks.compile import compiled_model, fit
from brain_tf.training import RunFolder, plots

#: Preprocessed training sets up to this size are loaded once and kept in memory.
IN_MEMORY_BYTES = 1 << 30


def is_classification(config: dict) -> bool:
    kind = config["target"].get("kind", "regression")
    if kind not in ("regression", "classification"):
        raise ConfigError(f"target.kind must be 'regression' or 'classification', not {kind!r}")
    return kind == "classification"


def targets(rows: pd.DataFrame, config: dict) -> np.ndarray:
    """The training targets of ``rows``: float values (standardised when configured),
    or class indices in the order of ``target.classes``."""
    target = config["target"]
    column = target["column"]
    if column not in rows.columns:
        raise DataError(f"the manifest has no {column!r} column; add it to the data spec's "
                        "[metadata] table")
    values = rows[column]
    missing = rows.loc[values.isna(), "subject"].tolist()
    if missing:
        raise DataError(f"subjects {missing[:5]} have no {column!r} value; fill it in the "
                        "metadata or leave those subjects out of the spec")
    if is_classification(config):
        classes = [str(c) for c in target["classes"]]
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(values.astype(str)) - set(classes))
        if unknown:
            raise DataError(f"column {column!r} has values {unknown} that are not in "
                            f"target.classes {classes}")
        return values.astype(str).map(index).to_numpy(np.int32)
    y = values.to_numpy(np.float64)
    if target.get("standardise"):
        y = (y - target["mean"]) / target["std"]
    return y.astype(np.float32)


def to_units(values: np.ndarray, config: dict) -> np.ndarray:
    """Network regression outputs back in the target column's units."""
    target = config["target"]
    values = np.asarray(values, np.float64)
    if target.get("standardise"):
        return values * target["std"] + target["mean"]
    return values


def _loader(rows: pd.DataFrame, config: dict):
    """The rows' preprocessed images (label maps are not read; masks only when used)."""
    unused = ["label"] + (["mask"] if config["preprocess"].get("mask") == "none" else [])
    return subject_loader(rows.drop(columns=unused, errors="ignore"), config)


def _subjects(rows: pd.DataFrame, config: dict):
    """A loader of the rows' preprocessed subjects, or a list of them when small enough."""
    loader = _loader(rows, config)
    shape = config["preprocess"].get("shape")
    channels = len(config.get("channels", [0]))
    if shape is not None and len(rows) * np.prod(shape) * channels * 4 <= IN_MEMORY_BYTES:
        return [loader(i) for i in range(len(loader))]
    return loader


def _with_target_stats(config: dict, train_rows: pd.DataFrame) -> dict:
    target = dict(config["target"])
    if not is_classification(config) and target.get("standardise"):
        raw = train_rows[target["column"]].astype(float)
        std = float(raw.std(ddof=0))
        target["mean"], target["std"] = float(raw.mean()), std if std > 0 else 1.0
    return {**config, "target": target}


def train(config: dict, run_dir: str | None = None) -> RunFolder:
    """Train a whole-volume model, save the run folder and evaluate on the test split."""
    spec, manifest = load_manifest(config)
    train_rows, val_rows = subset(manifest, "train"), subset(manifest, "val")
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise DataError(f"{spec.path}: the split has {len(train_rows)} training and "
                        f"{len(val_rows)} validation subjects; both need at least one")
    if config["preprocess"].get("shape") is None:
        raise ConfigError("whole-volume tasks need preprocess.shape (one grid for every subject)")
    run = new_run(config, run_dir)
    config = _with_target_stats({**config, "channels": spec.channel_names}, train_rows)
    y_train, y_val = targets(train_rows, config), targets(val_rows, config)
    run.save_config(config)
    run.save_splits(manifest)
    tr = config["training"]
    seed = config["data"].get("seed", 0)
    train_src = _subjects(train_rows, config)
    first = train_src[0] if isinstance(train_src, list) else train_src(0)
    steps = tr.get("steps_per_epoch")
    train_ds = volume_dataset(train_src, y_train, augment=config.get("augment"),
                              batch_size=tr["batch_size"], shuffle=True, seed=seed,
                              spacing=first.spacing, repeat=steps is not None)
    val_ds = volume_dataset(_subjects(val_rows, config), y_val, augment=None,
                            batch_size=tr["batch_size"], shuffle=False)
    outputs = len(config["target"]["classes"]) if is_classification(config) else 1
    per_epoch = steps or -(-len(train_rows) // tr["batch_size"])
    model = compiled_model(config, first.image.shape, outputs,
                           total_steps=per_epoch * tr["epochs"])
    fit(model, train_ds, val_ds, config, run)
    run.save_model(model)
    plots.learning_curves(run.history, run / "learning_curves.png")
    evaluate(run.path, model=model)
    return run


def _predict(model, image_of, n: int, config: dict, uncertainty: bool = False) -> dict:
    """Outputs for ``n`` preprocessed volumes ``image_of(i)``: ``{"mean": ..., "std": ...}``
    (std only with ``uncertainty``), regression values in the target's units. Volumes
    are loaded one batch at a time, so memory does not grow with ``n``."""
    inference = config.get("inference", {})
    batch_size = int(inference.get("batch_size", 4))
    kind = "classifier" if is_classification(config) else "regressor"
    means, stds = [], []
    for start in range(0, n, batch_size):
        batch = np.stack([image_of(i) for i in range(start, min(n, start + batch_size))])
        if uncertainty:
            stats = mc_dropout_predict(model, batch, passes=int(inference.get("mc_passes", 20)),
                                       batch_size=batch_size, kind=kind)
            means.append(np.asarray(stats["mean"]))
            stds.append(np.asarray(stats["std"]))
        else:
            means.append(select_output(predict_batch(model, batch)))
    mean, std = np.concatenate(means, axis=0), np.concatenate(stds, axis=0) if stds else None
    if not is_classification(config):
        mean = to_units(mean[:, 0], config)
        if std is not None:  # a spread scales with the standard deviation only
            std = std[:, 0] * (config["target"]["std"] if config["target"].get("standardise")
                               else 1.0)
    return {"mean": mean, "std": std}


def _prediction_table(subjects: list[str], out: dict, config: dict) -> pd.DataFrame:
    table = pd.DataFrame({"subject": subjects})
    column = config["target"]["column"]
    if is_classification(config):
        classes = [str(c) for c in config["target"]["classes"]]
        table[f"predicted_{column}"] = [classes[i] for i in out["mean"].argmax(axis=1)]
        for k, name in enumerate(classes):
            table[f"p_{name}"] = out["mean"][:, k]
            if out["std"] is not None:
                table[f"p_{name}_std"] = out["std"][:, k]
    else:
        table[f"predicted_{column}"] = out["mean"]
        if out["std"] is not None:
            table[f"predicted_{column}_std"] = out["std"]
    return table


def evaluate(run_path, model=None, root: str | None = None) -> dict:
    """Predict every test subject; write test_per_subject.csv, metrics.json and plots."""
    run, config, _, manifest = open_test_split(run_path, root)
    test_rows = subset(manifest, "test")
    model = model or run.load_model()
    loader = _loader(test_rows, config)
    out = _predict(model, lambda i: loader(i).image, len(loader), config)
    table = _prediction_table(test_rows["subject"].tolist(), out, config)
    column = config["target"]["column"]
    table.insert(1, column, test_rows[column].to_numpy())
    train_values = subset(manifest, "train")[column]
    if is_classification(config):
        metrics = _classification_metrics(run, table, out, test_rows, train_values, config)
    else:
        metrics = _regression_metrics(run, table, test_rows, train_values, config)
    run.save_table("test_per_subject.csv", table)
    run.save_json("metrics.json", metrics)
    return metrics


def _regression_metrics(run, table, test_rows, train_values, config) -> dict:
    column = config["target"]["column"]
    truth = test_rows[column].to_numpy(float)
    pred = table[f"predicted_{column}"].to_numpy(float)
    table["error"] = pred - truth
    report = regression_report(truth, pred).iloc[0].to_dict()
    baseline = float(np.abs(truth - float(train_values.astype(float).mean())).mean())
    metrics = {"subjects": int(report.pop("n")), **report, "baseline_mae_train_mean": baseline}
    plots.predicted_vs_true(truth, pred, run / "predicted_vs_true.png", label=column)
    print(f"test split ({metrics['subjects']} subjects): MAE {metrics['mae']:.2f}  "
          f"RMSE {metrics['rmse']:.2f}  R2 {metrics['r2']:.3f}  "
          f"(predicting the training mean: MAE {baseline:.2f})")
    return metrics


def _classification_metrics(run, table, out, test_rows, train_values, config) -> dict:
    column = config["target"]["column"]
    classes = [str(c) for c in config["target"]["classes"]]
    truth = targets(test_rows, config)
    pred = out["mean"].argmax(axis=1).astype(np.int64)
    table["correct"] = pred == truth
    report = classification_report(truth.astype(np.int64), pred, out["mean"], classes)
    summary = report.summary.iloc[0].to_dict()
    majority = train_values.astype(str).value_counts().idxmax()
    baseline = float((test_rows[column].astype(str) == majority).mean())
    metrics = {"subjects": int(summary.pop("n")), **summary,
               "baseline_accuracy_majority_class": baseline,
               "per_class": {row["class"]: {k: row[k] for k in ("precision", "recall", "f1",
                                                                 "support")}
                             for _, row in report.per_class.iterrows()},
               "confusion_matrix": report.confusion_matrix.to_numpy().tolist()}
    plots.confusion_matrix_plot(report.confusion_matrix.to_numpy(), classes,
                                run / "confusion_matrix.png", title=f"test split: {column}")
    print(f"test split ({metrics['subjects']} subjects): accuracy {metrics['accuracy']:.3f}  "
          f"balanced accuracy {metrics['balanced_accuracy']:.3f}  "
          f"(majority class {majority}: accuracy {baseline:.3f})")
    return metrics


def load_input(item: str, config: dict) -> tuple[str, np.ndarray]:
    """``(name, preprocessed image)`` of one input: ``IMAGE`` (one path per channel,
    comma-separated) optionally followed by ``,MASK`` (the brain mask)."""
    paths = item.split(",")
    channels = len(config.get("channels", [0]))
    if len(paths) not in (channels, channels + 1):
        raise DataError(f"{item}: give {channels} image path(s) (one per channel "
                        f"{config.get('channels')}) and optionally the brain mask, "
                        "comma-separated")
    volume = load_modalities(paths[:channels])
    mask = load_volume(paths[channels], ndim=3) if len(paths) > channels else None
    pre = config["preprocess"]
    if mask is None and pre.get("apply_mask") and pre.get("mask", "given") == "given":
        raise DataError(f"{paths[0]}: this model was trained on brain-extracted images; "
                        "give the brain mask too, as IMAGE,MASK")
    image = preprocess_subject(volume, None, mask, pre, subject=paths[0]).image
    return input_name(item), image


def input_name(item: str) -> str:
    """The name a prediction input is listed under: its first file without ``.nii*``."""
    return Path(item.split(",")[0]).name.split(".nii")[0]


def predict(model_path, inputs, out, uncertainty: bool = False, config=None) -> list[Path]:
    """Predict NIfTI scans with a trained run; writes ``predictions.csv`` in ``out``
    (or to ``out`` itself when it ends with ``.csv``).

    ``model_path`` is a run folder, its ``saved_model/`` or a ``.keras`` file.
    With ``uncertainty`` the model must have MC dropout (``model.mc_dropout``):
    the CSV then holds the mean and standard deviation over ``inference.mc_passes``.
    """
    model, config = load_predictor(model_path, config)
    if uncertainty and not config["model"].get("mc_dropout"):
        raise ConfigError(f"{model_path}: --uncertainty needs a model trained with MC dropout "
                          "(set model.mc_dropout = true in the config)")
    result = _predict(model, lambda i: load_input(inputs[i], config)[1], len(inputs), config,
                      uncertainty=uncertainty)
    table = _prediction_table([input_name(item) for item in inputs], result, config)
    table.insert(1, "input", [item.split(",")[0] for item in inputs])
    out = Path(out)
    path = out if out.suffix == ".csv" else out / "predictions.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    print(f"wrote {len(table)} predictions to {path}")
    return [path]

"""Age from tissue-volume features (system A): CSF/GM/WM fractions -> scikit-learn regressors.

Features are the voxel counts of each tissue label divided by their sum,
measured on the reference segmentations (the manifest's ``label`` column) or,
with ``features.tissue_run = RUN``, on label maps that a tissue-segmentation
run predicts from the T1 images. The candidate regressors (``linear``,
``bayesian_ridge``, ``poly3`` = degree-3 polynomial features + linear) are
compared by k-fold cross-validation (``features.cv_folds``, 2 as published)
on the training subjects (train and val splits: nothing else uses them here);
the one with the lowest CV MAE is refitted on all of them, saved as
``regressor.joblib`` and tested once on the test split.

Config::

    approach = "features"
    [features]
    regressors = ["linear", "bayesian_ridge", "poly3"]
    cv_folds = 2
    tissue_run = "models/tissue-segmentation/RUN"   # optional
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import BayesianRidge, LinearRegression
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures

from brain_tf.errors import ConfigError, DataError, ModelError
from brain_tf.evaluation import regression_report, tissue_volumes, volume_fractions
from brain_tf.io import load_label
from brain_tf.io.atomic import atomic_path
from brain_tf.tasks.base import load_manifest, new_run, open_test_split, subset
from brain_tf.training import RunFolder, plots

REGRESSOR_FILE = "regressor.joblib"

REGRESSORS = {
    "linear": lambda: LinearRegression(),
    "bayesian_ridge": lambda: BayesianRidge(),
    "poly3": lambda: make_pipeline(PolynomialFeatures(3), LinearRegression()),
}
"""Candidate regressors by name (new unfitted instances)."""


def tissue_labels(config: dict) -> dict[str, int]:
    """The tissue labels measured: the spec's labels except background (value 0)."""
    labels = {name: int(v) for name, v in config.get("labels", {}).items() if int(v) != 0}
    if not labels:
        raise ConfigError("age features need tissue labels; the data spec has no [labels] "
                          "table (e.g. csf = 1, gm = 2, wm = 3)")
    return labels


def label_map_features(path, labels: dict[str, int]) -> dict[str, float]:
    """Volumes (ml) and fractions of each tissue in the label map at ``path``."""
    volume = load_label(path)
    volumes = tissue_volumes(volume.array, volume.spacing, labels)
    try:
        fractions = volume_fractions(volumes)
    except DataError:
        raise DataError(f"{path}: the label map has none of the tissue labels "
                        f"{labels}; check the segmentation") from None
    return {**{f"{k}_ml": v for k, v in volumes.items()},
            **{f"{k}_fraction": v for k, v in fractions.items()}}


def feature_columns(labels: dict[str, int]) -> list[str]:
    return [f"{name}_fraction" for name in labels]


def segment_images(tissue_run, images: list[str], out: Path) -> list[Path]:
    """Label maps of ``images`` predicted by a tissue-segmentation run (NIfTI in ``out``)."""
    from brain_tf.tasks import segmentation3d

    if not Path(tissue_run).exists():
        raise ConfigError(f"{tissue_run}: features.tissue_run is not a run folder; train one "
                          "with 'brain-tf tissue-segmentation train'")
    return segmentation3d.predict(tissue_run, images, out)


def features_table(rows: pd.DataFrame, config: dict, work: Path) -> pd.DataFrame:
    """One row per subject: ``subject``, the label map used and its features."""
    tissue_run = config.get("features", {}).get("tissue_run")
    if tissue_run:
        image_columns = [c for c in rows.columns if c.startswith("image_")]
        inputs = [",".join(str(row[c]) for c in image_columns) for _, row in rows.iterrows()]
        maps = segment_images(tissue_run, inputs, work / "tissue_maps")
    else:
        if "label" not in rows.columns or rows["label"].isna().any():
            missing = rows["subject"].tolist() if "label" not in rows.columns else \
                rows.loc[rows["label"].isna(), "subject"].tolist()
            raise DataError(f"subjects {missing[:5]} have no reference segmentation; add the "
                            "label files or set features.tissue_run to a tissue-segmentation run")
        maps = rows["label"].tolist()
    labels = tissue_labels(config)
    table = pd.DataFrame([label_map_features(p, labels) for p in maps])
    table.insert(0, "label_map", [str(p) for p in maps])
    table.insert(0, "subject", rows["subject"].to_numpy())
    return table


def cross_validate(x: np.ndarray, y: np.ndarray, names, folds: int, seed: int = 0
                   ) -> pd.DataFrame:
    """CV MAE of each named regressor (k-fold, shuffled with ``seed``)."""
    unknown = sorted(set(names) - set(REGRESSORS))
    if unknown:
        raise ConfigError(f"unknown regressors {unknown}; choose from {sorted(REGRESSORS)}")
    if not 2 <= folds <= len(y):
        raise DataError(f"{folds}-fold cross-validation needs at least {folds} training "
                        f"subjects (and folds >= 2), got {len(y)}")
    split = KFold(n_splits=folds, shuffle=True, random_state=seed)
    rows = []
    for name in names:
        pred = cross_val_predict(REGRESSORS[name](), x, y, cv=split)
        rows.append({"regressor": name, "cv_mae": float(np.abs(pred - y).mean()),
                     "cv_rmse": float(np.sqrt(np.square(pred - y).mean()))})
    return pd.DataFrame(rows)


def _save_regressor(regressor, path: Path) -> Path:
    import joblib

    with atomic_path(path) as tmp:
        joblib.dump(regressor, tmp)
    return path


def load_regressor(path):
    import joblib

    path = Path(path)
    if path.is_dir():
        path = path / REGRESSOR_FILE
    if not path.exists():
        raise ModelError(f"{path}: no fitted regressor here; pass an age-regression run "
                         "trained with the features preset")
    return joblib.load(path)


def train(config: dict, run_dir: str | None = None) -> RunFolder:
    """Cross-validate the regressors on the training subjects, refit the best, test it."""
    spec, manifest = load_manifest(config)
    run = new_run(config, run_dir)
    config = {**config, "labels": spec.labels}
    labels = tissue_labels(config)
    run.save_config(config)
    run.save_splits(manifest)
    pool = manifest[manifest["split"].isin(["train", "val"])].reset_index(drop=True)
    if pool["age"].isna().any():
        raise DataError(f"subjects {pool.loc[pool['age'].isna(), 'subject'].tolist()[:5]} "
                        "have no age; fill it in the metadata")
    table = features_table(pool, config, run.path)
    table.insert(1, "age", pool["age"].to_numpy(float))
    run.save_table("train_features.csv", table)
    x, y = table[feature_columns(labels)].to_numpy(), table["age"].to_numpy(float)
    feats = config["features"]
    cv = cross_validate(x, y, feats.get("regressors", list(REGRESSORS)),
                        int(feats.get("cv_folds", 2)), seed=config["data"].get("seed", 0))
    run.save_table("cv_results.csv", cv)
    chosen = str(cv.loc[cv["cv_mae"].idxmin(), "regressor"])
    print("cross-validation MAE: " + ", ".join(f"{r.regressor} {r.cv_mae:.2f}"
                                                for r in cv.itertuples()) + f"; chosen {chosen}")
    regressor = REGRESSORS[chosen]().fit(x, y)
    _save_regressor(regressor, run / REGRESSOR_FILE)
    config["features"] = {**feats, "chosen": chosen}
    run.save_config(config)
    evaluate(run.path, model=regressor)
    return run


def evaluate(run_path, model=None, root: str | None = None) -> dict:
    """Test-split MAE, RMSE and R^2 of the chosen regressor; per-subject CSV and plot."""
    run, config, _, manifest = open_test_split(run_path, root)
    test_rows = subset(manifest, "test")
    regressor = model if model is not None else load_regressor(run.path)
    table = features_table(test_rows, config, run.path)
    truth = test_rows["age"].to_numpy(float)
    pred = regressor.predict(table[feature_columns(tissue_labels(config))].to_numpy())
    table.insert(1, "age", truth)
    table.insert(2, "predicted_age", pred)
    table.insert(3, "error", pred - truth)
    run.save_table("test_per_subject.csv", table)
    report = regression_report(truth, pred).iloc[0].to_dict()
    train_mean = float(subset(manifest, "train")["age"].astype(float).mean())
    cv = pd.read_csv(run / "cv_results.csv") if (run / "cv_results.csv").exists() else None
    metrics = {"subjects": int(report.pop("n")), **report,
               "baseline_mae_train_mean": float(np.abs(truth - train_mean).mean()),
               "regressor": config["features"].get("chosen"),
               "cv_mae": {} if cv is None else dict(zip(cv["regressor"], cv["cv_mae"]))}
    run.save_json("metrics.json", metrics)
    plots.predicted_vs_true(truth, pred, run / "predicted_vs_true.png")
    print(f"test split ({metrics['subjects']} subjects, {metrics['regressor']}): "
          f"MAE {metrics['mae']:.2f}  RMSE {metrics['rmse']:.2f}  R2 {metrics['r2']:.3f}  "
          f"(predicting the training mean: MAE {metrics['baseline_mae_train_mean']:.2f})")
    return metrics


def predict(model_path, inputs, out, uncertainty: bool = False, config=None) -> list[Path]:
    """Ages from label maps (or, for a run trained with ``features.tissue_run``, from T1
    images segmented by that run) to ``predictions.csv`` in ``out`` (or ``out`` itself
    when it ends with ``.csv``).

    ``uncertainty`` gives the predictive standard deviation of a Bayesian ridge
    regressor; the other regressors have none.
    """
    path = Path(model_path)
    run_dir = path.parent if path.suffix == ".joblib" else path
    config = config or RunFolder.open(run_dir).load_config()
    regressor = load_regressor(path)
    if uncertainty and not isinstance(regressor, BayesianRidge):
        raise ConfigError(f"{model_path}: --uncertainty needs the bayesian_ridge regressor; "
                          f"this run chose {config['features'].get('chosen')}")
    out = Path(out)
    target = out if out.suffix == ".csv" else out / "predictions.csv"
    rows = pd.DataFrame({"subject": [Path(i.split(",")[0]).name.split(".nii")[0]
                                     for i in inputs]})
    if config["features"].get("tissue_run"):
        maps = segment_images(config["features"]["tissue_run"], list(inputs),
                              target.parent / "tissue_maps")
    else:
        maps = list(inputs)
    labels = tissue_labels(config)
    table = pd.DataFrame([label_map_features(p, labels) for p in maps])
    x = table[feature_columns(labels)].to_numpy()
    if uncertainty:
        pred, std = regressor.predict(x, return_std=True)
        table.insert(0, "predicted_age_std", std)
    else:
        pred = regressor.predict(x)
    table.insert(0, "predicted_age", pred)
    table.insert(0, "input", list(inputs))
    table.insert(0, "subject", rows["subject"])
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        table.to_csv(tmp, index=False)
    print(f"wrote {len(table)} predictions to {target}")
    return [target]

"""The tissue-volume family: age from CSF/GM/WM fractions with scikit-learn (system A).

Features are each tissue's voxel count divided by their sum, measured on the reference
segmentations (the manifest's ``label`` column) or, with ``features.tissue_run``, on the
label maps a tissue-segmentation run predicts from the T1 images. The candidate
regressors (``linear``, ``bayesian_ridge``, ``poly3`` = degree-3 polynomial features +
linear) are compared by k-fold cross-validation on the training pool (train and val
splits); the best is refitted on the whole pool, saved as ``regressor.joblib`` (its name
goes to learned.json) and tested once on the test split.
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
from brain_tf.evaluation.summaries import regression_line, regression_summary
from brain_tf.evaluation.volumes import foreground_labels, volume_row
from brain_tf.io import atomic_path, load_label
from brain_tf.io.tables import input_name, write_predictions
from brain_tf.training import plots
from brain_tf.training.runner import Family, Prepared

REGRESSOR_FILE = "regressor.joblib"
REGRESSORS = {
    "linear": lambda: LinearRegression(),
    "bayesian_ridge": lambda: BayesianRidge(),
    "poly3": lambda: make_pipeline(PolynomialFeatures(3), LinearRegression()),
}
"""Candidate regressors by name (new unfitted instances)."""


def segment_images(tissue_run, images: list[str], out: Path) -> list[Path]:
    """Label maps of ``images`` predicted by a tissue-segmentation run (NIfTI in ``out``)."""
    from brain_tf.tasks import TASKS

    if not Path(tissue_run).exists():
        raise ConfigError(f"{tissue_run}: features.tissue_run is not a run folder; train one "
                          "with 'brain-tf tissue-segmentation train'")
    return TASKS["tissue-segmentation"].predict(tissue_run, images, out)


def features_table(maps, labels: dict[str, int]) -> pd.DataFrame:
    """Volumes (ml) and fractions of each tissue in each label map."""
    rows = []
    for path in maps:
        volume = load_label(path)
        rows.append({"label_map": str(path),
                     **volume_row(volume.array, volume.spacing, labels, where=str(path))})
    return pd.DataFrame(rows)


def cross_validate(x: np.ndarray, y: np.ndarray, names, folds: int, seed: int = 0
                   ) -> pd.DataFrame:
    """CV MAE and RMSE of each named regressor (k-fold, shuffled with ``seed``)."""
    unknown = sorted(set(names) - set(REGRESSORS))
    if unknown:
        raise ConfigError(f"unknown regressors {unknown}; choose from {sorted(REGRESSORS)}")
    if folds > len(y):
        raise DataError(f"{folds}-fold cross-validation needs at least {folds} training "
                        f"subjects, got {len(y)}")
    split = KFold(n_splits=folds, shuffle=True, random_state=seed)
    rows = []
    for name in names:
        pred = cross_val_predict(REGRESSORS[name](), x, y, cv=split)
        rows.append({"regressor": name, "cv_mae": float(np.abs(pred - y).mean()),
                     "cv_rmse": float(np.sqrt(np.square(pred - y).mean()))})
    return pd.DataFrame(rows)


class Features(Family):
    per_item_csv = "test_items.csv"

    def learn(self, ctx):
        labels = foreground_labels(ctx.spec.labels)
        if not labels:
            raise ConfigError(f"{ctx.spec.path}: age features need tissue labels; the spec has "
                              "no [labels] table (e.g. csf = 1, gm = 2, wm = 3)")
        return {"labels": labels}

    def _features(self, ctx, rows, work: Path) -> pd.DataFrame:
        tissue_run = ctx.config.features.tissue_run
        if tissue_run:
            columns = [c for c in rows.columns if c.startswith("image_")]
            maps = segment_images(tissue_run, [",".join(str(r[c]) for c in columns)
                                               for _, r in rows.iterrows()], work / "tissue_maps")
        else:
            missing = rows["subject"].tolist() if "label" not in rows else \
                rows.loc[rows["label"].isna(), "subject"].tolist()
            if missing:
                raise DataError(f"subjects {missing[:5]} have no reference segmentation; add "
                                "the label files or set features.tissue_run to a tissue run")
            maps = rows["label"].tolist()
        table = features_table(maps, ctx.learned["labels"])
        table.insert(0, "subject", rows["subject"].to_numpy())
        table.insert(0, "item", rows["sample"].astype(str).to_numpy())
        return table

    def _x(self, ctx, table) -> np.ndarray:
        return table[[f"{n}_fraction" for n in ctx.learned["labels"]]].to_numpy()

    def prepare(self, ctx):
        pool = ctx.manifest[ctx.manifest["split"].isin(["train", "val"])].reset_index(drop=True)
        missing = pool.loc[pool["age"].isna(), "subject"].tolist()
        if missing:
            raise DataError(f"subjects {missing[:5]} have no age; fill it in the metadata")
        return Prepared(model=None, train=pool)

    def fit(self, ctx, prepared, run):
        pool, feats = prepared.train, ctx.config.features
        table = self._features(ctx, pool, run.path)
        table.insert(2, "age", pool["age"].to_numpy(float))
        run.save_table("train_features.csv", table)
        x, y = self._x(ctx, table), table["age"].to_numpy(float)
        cv = cross_validate(x, y, feats.regressors, feats.cv_folds, seed=ctx.config.data.seed)
        run.save_table("cv_results.csv", cv)
        chosen = str(cv.loc[cv["cv_mae"].idxmin(), "regressor"])
        print("cross-validation MAE: " + ", ".join(
            f"{r.regressor} {r.cv_mae:.2f}" for r in cv.itertuples()) + f"; chosen {chosen}")
        ctx.learned.update(regressor=chosen, cv_mae=dict(zip(cv["regressor"], cv["cv_mae"])))
        return REGRESSORS[chosen]().fit(x, y)

    def save(self, run, model):
        import joblib

        with atomic_path(run / REGRESSOR_FILE) as tmp:
            joblib.dump(model, tmp)

    def load(self, run):
        return self.load_predictor(None, run.path)

    def load_predictor(self, ctx, path: Path):
        import joblib

        path = path / REGRESSOR_FILE if path.is_dir() else path
        if not path.exists():
            raise ModelError(f"{path}: no fitted regressor here; pass an age-regression run "
                             "trained with the features preset")
        return joblib.load(path)

    def score(self, ctx, model, rows, run):
        table = self._features(ctx, rows, run.path)
        truth = rows["age"].to_numpy(float)
        pred = model.predict(self._x(ctx, table))
        table.insert(2, "age", truth)
        table.insert(3, "predicted_age", pred)
        table.insert(4, "error", pred - truth)
        metrics = {**regression_summary(truth, pred, ctx.rows("train")["age"]),
                   "regressor": ctx.learned["regressor"], "cv_mae": ctx.learned["cv_mae"]}
        plots.predicted_vs_true(truth, pred, run / "predicted_vs_true.png")
        return table, metrics, [regression_line(metrics, len(rows),
                                                f", {ctx.learned['regressor']}")]

    def inputs(self, ctx, inputs, options):
        if options.uncertainty and ctx.learned["regressor"] != "bayesian_ridge":
            raise ConfigError(f"--uncertainty needs the bayesian_ridge regressor; this run "
                              f"chose {ctx.learned['regressor']}")
        return [str(i) for i in inputs]

    def predict(self, ctx, model, items, out, options):
        target = out if out.suffix == ".csv" else out / "predictions.csv"
        tissue_run = ctx.config.features.tissue_run
        maps = segment_images(tissue_run, items, target.parent / "tissue_maps") if tissue_run \
            else items
        table = features_table(maps, ctx.learned["labels"])
        x = self._x(ctx, table)
        if options.uncertainty:
            pred, std = model.predict(x, return_std=True)
            table.insert(0, "predicted_age_std", std)
        else:
            pred = model.predict(x)
        table.insert(0, "predicted_age", pred)
        table.insert(0, "input", items)
        table.insert(0, "subject", [input_name(i.split(",")[0]) for i in items])
        return [write_predictions(table, target)]


FAMILY = Features()

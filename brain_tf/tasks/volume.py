"""The whole-volume family: one prediction per subject (brain age, sex; systems A and B).

``[target]`` says what is predicted from which manifest column. A regression target with
``standardise`` trains on ``(y - mean) / std`` of the training split (the statistics go
to learned.json; the ``mae`` in history.csv is then in standard deviations); evaluation
and prediction report the column's units. ``model.mc_dropout = true`` builds the CNN
with MC dropout, so ``predict --uncertainty`` gives the spread over
``inference.mc_passes`` passes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from brain_tf.data.shards import subject_loader
from brain_tf.errors import ConfigError, DataError
from brain_tf.evaluation.summaries import (
    classification_line, classification_summary, regression_line, regression_summary,
)
from brain_tf.inference.batches import predict_in_batches
from brain_tf.io import load_modalities, load_volume, read_shape
from brain_tf.io.tables import input_name, write_predictions
from brain_tf.pipeline import volume_dataset
from brain_tf.preprocess.subject import preprocess_subject
from brain_tf.tasks.segmentation import brain_mask, check_mask_model
from brain_tf.training import plots
from brain_tf.training.fit import compiled_model
from brain_tf.training.runner import Family, Prepared

#: Preprocessed training sets up to this size are loaded once and kept in memory.
IN_MEMORY_BYTES = 1 << 30


def targets(rows: pd.DataFrame, target, learned: dict) -> np.ndarray:
    """Float targets (standardised with the learned statistics when configured), or class
    indices in the order of ``target.classes``."""
    column = target.column
    if column not in rows.columns:
        raise DataError(f"the manifest has no {column!r} column; add it to the data spec's "
                        "[metadata] table")
    missing = rows.loc[rows[column].isna(), "subject"].tolist()
    if missing:
        raise DataError(f"subjects {missing[:5]} have no {column!r} value; fill it in the "
                        "metadata or leave those subjects out of the spec")
    if target.kind == "classification":
        classes = [str(c) for c in target.classes]
        values = rows[column].astype(str)
        unknown = sorted(set(values) - set(classes))
        if unknown:
            raise DataError(f"column {column!r} has values {unknown} that are not in "
                            f"target.classes {classes}")
        return values.map({c: i for i, c in enumerate(classes)}).to_numpy(np.int32)
    y = rows[column].to_numpy(np.float64)
    if target.standardise:
        y = (y - learned["target_mean"]) / learned["target_std"]
    return y.astype(np.float32)


def to_units(values, target, learned: dict, spread: bool = False) -> np.ndarray:
    """Regression outputs (or, with ``spread``, their standard deviations) in the target
    column's units."""
    values = np.asarray(values, np.float64)
    if not target.standardise:
        return values
    return values * learned["target_std"] + (0.0 if spread else learned["target_mean"])


class Volume(Family):
    per_item_csv = "test_items.csv"

    def learn(self, ctx):
        learned = {"channels": list(ctx.spec.channel_names),
                   "input": {"layout": "(batch, x, y, z, channels) float32 whole volumes",
                             "grid": f"{ctx.config.preprocess.spacing} mm / "
                                     f"{ctx.config.preprocess.shape} voxels, RAS+",
                             "normalise": ctx.config.preprocess.normalise,
                             "brain_mask": "applied (zero outside)"
                             if ctx.config.preprocess.apply_mask else "not applied"}}
        target = ctx.config.target
        if target.kind == "regression" and target.standardise:
            raw = ctx.rows("train")[target.column].astype(float)
            std = float(raw.std(ddof=0))
            learned.update(target_mean=float(raw.mean()), target_std=std if std > 0 else 1.0)
        return learned

    def _loader(self, ctx, rows):
        unused = ["label"] + (["mask"] if ctx.config.preprocess.mask == "none" else [])
        return subject_loader(rows.drop(columns=unused, errors="ignore"), ctx.config,
                              use_labels=False)

    def _subjects(self, ctx, rows):
        """A loader of the rows' subjects, or a list of them when small enough."""
        loader = self._loader(ctx, rows)
        size = len(rows) * np.prod(ctx.config.preprocess.shape) * len(ctx.learned["channels"])
        return [loader(i) for i in range(len(loader))] if size * 4 <= IN_MEMORY_BYTES \
            else loader

    def prepare(self, ctx):
        cfg, tr = ctx.config, ctx.config.training
        if cfg.preprocess.shape is None:
            raise ConfigError("whole-volume tasks need preprocess.shape (one grid for every "
                              "subject)")
        train_rows, val_rows = ctx.rows("train"), ctx.rows("val")
        y_train = targets(train_rows, cfg.target, ctx.learned)
        y_val = targets(val_rows, cfg.target, ctx.learned)
        source = self._subjects(ctx, train_rows)
        first = source[0] if isinstance(source, list) else source(0)
        steps = tr.steps_per_epoch
        train = volume_dataset(source, y_train, augment=cfg.augment, batch_size=tr.batch_size,
                               shuffle=True, seed=cfg.data.seed, spacing=first.spacing,
                               repeat=steps is not None)
        val = volume_dataset(self._subjects(ctx, val_rows), y_val, augment=None,
                             batch_size=tr.val_batch_size or tr.batch_size, shuffle=False)
        outputs = len(cfg.target.classes) if cfg.target.kind == "classification" else 1
        per_epoch = steps or -(-len(train_rows) // tr.batch_size)
        model = compiled_model(cfg, first.image.shape, outputs, per_epoch * tr.epochs)
        return Prepared(model, train, val, steps)

    def _outputs(self, ctx, model, image_of, n: int, uncertainty: bool = False) -> dict:
        """``{"mean", "std"}`` for ``n`` preprocessed volumes ``image_of(i)``, a batch in
        memory at a time; regression values in the target's units."""
        cfg = ctx.config
        kind = cfg.target.kind
        mean, std = predict_in_batches(
            model, lambda indices: np.stack([image_of(i) for i in indices]), n,
            cfg.inference.batch_size, passes=cfg.inference.mc_passes if uncertainty else 0,
            kind="classifier" if kind == "classification" else "regressor", seed=cfg.data.seed)
        mean, std = mean[None], None if std is None else std[None]
        if kind == "regression":
            mean = to_units(mean[:, 0], cfg.target, ctx.learned)
            std = None if std is None else to_units(std[:, 0], cfg.target, ctx.learned,
                                                    spread=True)
        return {"mean": mean, "std": std}

    def _table(self, ctx, names, out) -> pd.DataFrame:
        target = ctx.config.target
        table = pd.DataFrame({"subject": names})
        if target.kind == "classification":
            classes = [str(c) for c in target.classes]
            table[f"predicted_{target.column}"] = [classes[i] for i in out["mean"].argmax(1)]
            for k, name in enumerate(classes):
                table[f"p_{name}"] = out["mean"][:, k]
                if out["std"] is not None:
                    table[f"p_{name}_std"] = out["std"][:, k]
        else:
            table[f"predicted_{target.column}"] = out["mean"]
            if out["std"] is not None:
                table[f"predicted_{target.column}_std"] = out["std"]
        return table

    def score(self, ctx, model, rows, run):
        target = ctx.config.target
        loader = self._loader(ctx, rows)
        out = self._outputs(ctx, model, lambda i: loader(i).image, len(loader))
        table = self._table(ctx, rows["subject"].tolist(), out)
        table.insert(0, "item", rows["sample"].astype(str).to_numpy())
        table.insert(2, target.column, rows[target.column].to_numpy())
        train = ctx.rows("train")
        if target.kind == "classification":
            truth = targets(rows, target, ctx.learned)
            metrics = classification_summary(truth, out["mean"], target.classes,
                                             targets(train, target, ctx.learned))
            table["correct"] = out["mean"].argmax(1) == truth
            plots.confusion_matrix_plot(np.array(metrics["confusion_matrix"]), target.classes,
                                        run / "confusion_matrix.png",
                                        title=f"test split: {target.column}")
            line = f"test split ({len(rows)} subjects): {classification_line(metrics)}"
        else:
            truth = rows[target.column].to_numpy(float)
            metrics = regression_summary(truth, out["mean"], train[target.column])
            table["error"] = out["mean"] - truth
            plots.predicted_vs_true(truth, out["mean"], run / "predicted_vs_true.png",
                                    label=target.column)
            line = regression_line(metrics, len(rows))  # "test split (N subjects): MAE ..."
        return table, metrics, [line]

    def inputs(self, ctx, inputs, options):
        if options.uncertainty and not ctx.config.model.get("mc_dropout"):
            raise ConfigError("--uncertainty needs a model trained with MC dropout "
                              "(set model.mc_dropout = true in the config)")
        channels = len(ctx.learned["channels"])
        pre = ctx.config.preprocess
        items = []
        for item in inputs:
            paths = str(item).split(",")
            if len(paths) not in (channels, channels + 1):
                raise DataError(f"{item}: give {channels} image path(s) (one per channel "
                                f"{ctx.learned['channels']}) and optionally the brain mask, "
                                "comma-separated")
            for path in paths:
                read_shape(path)
            if len(paths) == channels and pre.apply_mask and pre.mask == "given":
                check_mask_model(pre, f"{paths[0]} (a brain-extracted model: give IMAGE,MASK)")
            items.append(paths)
        return items

    def predict(self, ctx, model, items, out, options):
        channels, pre = len(ctx.learned["channels"]), ctx.config.preprocess

        def image_of(i):
            paths = items[i]
            volume = load_modalities(paths[:channels])
            mask = load_volume(paths[channels], ndim=3) if len(paths) > channels else None
            if mask is None and pre.apply_mask and pre.mask == "given":
                mask = brain_mask(volume, pre.mask_model)
            return preprocess_subject(volume, None, mask, pre.to_dict(), subject=paths[0]).image

        result = self._outputs(ctx, model, image_of, len(items), options.uncertainty)
        table = self._table(ctx, [input_name(p[0]) for p in items], result)
        table.insert(1, "input", [p[0] for p in items])
        return [write_predictions(table, out)]


FAMILY = Volume()

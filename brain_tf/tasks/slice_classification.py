"""slice-classification: system E (TCGA-GBM slices), perspective and/or sequence of a slice.

Default preset = the published settings: 224x224 RGB slices in [0, 1] with
ImageNet mean/std, augmentation preset ``tcga_gbm`` (rotation 15 deg, shift
0.1, shear, zoom 0.9-1.2, horizontal flip, brightness 0.8-1.2), a ResNet-50
backbone without top (``resnet_classifier``; ``model.weights`` unset = random
initialisation offline, ``"imagenet"`` or a local weights file to transfer;
``model.freeze = "all"`` keeps the backbone frozen), global average pooling,
dropout 0.2 and softmax heads chosen by ``heads``: ``"perspective"`` (AX, COR,
SAG), ``"sequence"`` (DWI, T1, T1C, T2) or ``"dual"`` (both heads, a dict
output, equal-weight cross-entropy). ``model.mc_dropout = true`` is the
Bayesian variant: dropout stays on at inference and every prediction is the
mean of ``inference.mc_passes`` (100) passes, with their standard deviation as
uncertainty. Adam 1e-4, batch 32. Split by patient, never by image.

``small`` preset: 64x64 slices, a ResNet-34 layout at width 16, Adam 2e-3,
12 epochs of one pass, MC dropout with 20 passes, dual heads -- a few
minutes on 2 CPU cores.

Evaluation (test patients only): accuracy, balanced accuracy and ROC-AUC
per head, per-class precision/recall/F1, a confusion matrix PNG per head,
``test_predictions.csv`` (one row per slice) and Grad-CAM overlays of a few
test slices in ``gradcam/``, on ``inference.gradcam_layer`` (default the
backbone's last layer, ``conv5_block3_out``). ``predict`` writes
``predictions.csv``: one row per input image with each head's predicted
class and class probabilities (and, with ``--uncertainty``, the MC-dropout
standard deviations).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd

from brain_tf.errors import ConfigError, DataError
from brain_tf.evaluation.reports import classification_report
from brain_tf.inference import grad_cam, mc_dropout_predict, save_cam_overlay
from brain_tf.io import atomic_path
from brain_tf.models.resnet_encoder import skip_layers
from brain_tf.tasks import slices2d
from brain_tf.tasks.base import (
    Task, load_manifest, load_predictor, new_run, open_test_split, register, subset,
)
from brain_tf.training import RunFolder
from brain_tf.training import plots

HEADS = {"perspective": ("perspective", "perspectives"), "sequence": ("sequence", "sequences")}
"""Head -> (manifest column, key of the class list in the spec's [defaults])."""
CHUNK = 256
"""Slices held in memory at once when evaluating or predicting."""

DEFAULT = {
    "data": {"spec": "data_specs/tcga_gbm_slices.toml", "seed": 0,
             "fractions": {"train": 0.7, "val": 0.15, "test": 0.15}},
    "heads": "dual",
    "preprocess": {"shape": [224, 224], "rgb": True},
    "pipeline": {"normalise": "imagenet"},
    "augment": {"preset": "tcga_gbm"},
    "model": {"name": "resnet_classifier", "backbone": "resnet50", "freeze": "none",
              "dropout": 0.2, "mc_dropout": False},
    "loss": "sparse_categorical_crossentropy",
    "optimizer": {"name": "adam", "learning_rate": 1e-4},
    "training": {"epochs": 20, "batch_size": 32, "patience": 5, "monitor": "val_loss",
                 "mode": "min"},
    "inference": {"batch_size": 32, "mc_passes": 100, "gradcam_slices": 4},
}

SMALL = {
    "data": {"fractions": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "preprocess": {"shape": [64, 64]},
    "model": {"backbone": "resnet34", "width": 16, "mc_dropout": True},
    "optimizer": {"learning_rate": 2e-3},
    "training": {"epochs": 12, "batch_size": 16, "patience": 4},
    "inference": {"mc_passes": 20},
}


def heads(config: dict) -> list[str]:
    """The model's heads from ``config["heads"]``."""
    choice = config.get("heads", "dual")
    if choice == "dual":
        return list(HEADS)
    if choice not in HEADS:
        raise ConfigError(f"heads = {choice!r}: choose 'perspective', 'sequence' or 'dual'")
    return [choice]


def _classes(spec, config: dict) -> dict[str, list[str]]:
    classes = {}
    for head in heads(config):
        column, key = HEADS[head]
        names = config.get("classes", {}).get(head) or spec.defaults.get(key)
        if not names:
            raise DataError(f"{spec.path}: [defaults] {key} must list the {head} classes")
        classes[head] = [str(n) for n in names]
    return classes


def _targets(rows: pd.DataFrame, classes: dict, where) -> dict[str, np.ndarray]:
    """Class indices per head from the manifest's columns."""
    out = {}
    for head, names in classes.items():
        column = HEADS[head][0]
        if column not in rows.columns:
            raise DataError(f"{where}: the manifest has no {column!r} column; the spec's file "
                            f"pattern must capture {{{column}}}")
        unknown = sorted(set(rows[column].astype(str)) - set(names))
        if unknown:
            raise DataError(f"{where}: {column} values {unknown} are not among the classes "
                            f"{names}; add them to [defaults] in the spec")
        index = {n: i for i, n in enumerate(names)}
        out[head] = rows[column].astype(str).map(index).to_numpy(np.int32)
    return out


def _backbone_output(config: dict) -> str:
    """The backbone's last layer (``conv5_block3_out`` for ResNet-50 and ResNet-34)."""
    model = config["model"]
    return skip_layers(model.get("backbone", "resnet50"), model.get("blocks"))[-1]


def _mc(config: dict) -> bool:
    return bool(config["model"].get("mc_dropout", False))


def train(config: dict, run_dir: str | None = None) -> RunFolder:
    """Train on the training patients, select on validation loss, evaluate the test ones."""
    spec, manifest = load_manifest(config)
    classes = _classes(spec, config)
    run = new_run(config, run_dir)
    config = {**config, "classes": classes,
              "metrics": {head: ["accuracy"] for head in classes}}
    run.save_config(config)
    run.save_splits(manifest)
    train_rows, val_rows = slices2d.split_rows(manifest, spec.path)
    train_src = slices2d.loader(train_rows, config, use_labels=False)
    val_src = slices2d.loader(val_rows, config, use_labels=False)
    targets = (_targets(train_rows, classes, spec.path), _targets(val_rows, classes, spec.path))
    train_ds, val_ds = slices2d.datasets(train_src, val_src, config, targets=targets)
    outputs = {head: len(names) for head, names in classes.items()}
    freeze = _backbone_output(config) if config["model"].get("freeze", "none") == "none" \
        else None
    model = slices2d.train_model(config, run, train_src(0).shape, outputs, train_ds, val_ds,
                                 len(train_rows), freeze_layer=freeze)
    run.save_model(model)
    slices2d.save_learning_curves(run)
    evaluate(run.path, model=model)
    return run


def probabilities(model, images: np.ndarray, config: dict, uncertainty: bool = False):
    """Per head, the class probabilities (n, K) and (MC models, ``uncertainty``) their std.

    A model with MC dropout always predicts the mean of ``inference.mc_passes`` passes.
    """
    if not _mc(config):
        if uncertainty:
            raise ConfigError("--uncertainty needs a model trained with MC dropout "
                              "(model.mc_dropout = true)")
        out = slices2d.predict_slices(model, images, config)
        return {head: (np.asarray(p), None) for head, p in _as_dict(out, config).items()}
    stats = mc_dropout_predict(model, slices2d.model_input(images, config),
                               passes=int(config["inference"].get("mc_passes", 100)),
                               batch_size=int(config["inference"].get("batch_size", 32)),
                               kind="classifier")
    return {head: (s["mean"], s["std"]) for head, s in _as_dict(stats, config).items()}


def _as_dict(out, config: dict) -> dict:
    if isinstance(out, dict):
        return {head: out[head] for head in heads(config)}
    return {heads(config)[0]: out}


def evaluate(run_path, model=None, root: str | None = None) -> dict:
    """Accuracy and classification report per head on the test patients, plus plots."""
    run, config, spec, manifest = open_test_split(run_path, root)
    rows = subset(manifest, "test")
    model = model or run.load_model()
    classes = config["classes"]
    truth = _targets(rows, classes, spec.path)
    source = slices2d.loader(rows, config, use_labels=False)
    probs = _chunked(lambda idx: probabilities(model, np.stack([source(i) for i in idx]),
                                               config), len(rows))
    table = rows[["sample", "subject"]].copy()
    metrics: dict = {"samples": int(len(rows)), "subjects": int(rows["subject"].nunique()),
                     "mc_passes": int(config["inference"]["mc_passes"]) if _mc(config) else 0}
    for head, names in classes.items():
        p, std = probs[head]
        pred = np.argmax(p, axis=1)
        report = classification_report(truth[head], pred, p, class_names=names)
        summary = report.summary.iloc[0]
        majority = np.bincount(truth[head], minlength=len(names)).max() / len(rows)
        metrics.update({f"{head}_accuracy": float(summary["accuracy"]),
                        f"{head}_balanced_accuracy": float(summary["balanced_accuracy"]),
                        f"{head}_roc_auc": float(summary["roc_auc"]),
                        f"{head}_majority_class_accuracy": float(majority)})
        metrics[f"{head}_per_class"] = report.per_class.to_dict(orient="records")
        plots.confusion_matrix_plot(report.confusion_matrix.to_numpy(), names,
                                    run / f"confusion_{head}.png", title=f"{head} (test)")
        table[f"{head}_true"] = [names[i] for i in truth[head]]
        table[f"{head}_pred"] = [names[i] for i in pred]
        for c, name in enumerate(names):
            table[f"{head}_prob_{name}"] = p[:, c]
            if std is not None:
                table[f"{head}_std_{name}"] = std[:, c]
    run.save_table("test_predictions.csv", table)
    run.save_json("metrics.json", metrics)
    if isinstance(model, keras.Model):
        _gradcam(run, model, source, table, config)
    print(f"test split ({metrics['subjects']} patients, {metrics['samples']} slices): "
          + ", ".join(f"{h} accuracy {metrics[f'{h}_accuracy']:.3f} (majority class "
                      f"{metrics[f'{h}_majority_class_accuracy']:.3f})" for h in classes))
    return metrics


def _chunked(fn, n: int, chunk: int = CHUNK) -> dict:
    """``fn(indices)`` -> {head: (probs, std)} over 0..n-1 in chunks, joined per head."""
    parts = [fn(list(range(i, min(i + chunk, n)))) for i in range(0, n, chunk)]
    return {head: (np.concatenate([p[head][0] for p in parts]),
                   None if parts[0][head][1] is None
                   else np.concatenate([p[head][1] for p in parts])) for head in parts[0]}


def _gradcam(run: RunFolder, model, source, table: pd.DataFrame, config: dict) -> list[Path]:
    """Grad-CAM overlays of a few test slices spread over the table (which is sorted by
    perspective and sequence, so they show several classes), per head."""
    n = min(int(config["inference"].get("gradcam_slices", 4)), len(table))
    if n <= 0:
        return []
    chosen = sorted({int(i) for i in np.linspace(0, len(table) - 1, n).round()})
    images = np.stack([source(i) for i in chosen])
    batch = slices2d.model_input(images, config)
    written = []
    for head in config["classes"]:
        layer = config["inference"].get("gradcam_layer") or _backbone_output(config)
        cams = grad_cam(model, batch, layer_name=layer, output=head)
        for k, (i, cam) in enumerate(zip(chosen, cams)):
            title = f"{head} {table.at[i, f'{head}_pred']} (true {table.at[i, f'{head}_true']})"
            target = run / "gradcam" / f"{head}_{table.at[i, 'sample']}.png"
            written.append(save_cam_overlay(slices2d.display_image(images[k]), cam, target,
                                            title=title))
    return written


def predict(model_path, inputs, out, uncertainty: bool = False, config=None) -> list[Path]:
    """Classify image files (or folders of them); writes ``out/predictions.csv``.

    One row per input: the file, and per head the predicted class and the
    probability of each class (with ``uncertainty``: MC-dropout mean and std).
    """
    paths = slices2d.expand_inputs(inputs)
    model, config = load_predictor(model_path, config)
    if uncertainty and not _mc(config):
        raise ConfigError("--uncertainty needs a model trained with MC dropout "
                          "(model.mc_dropout = true)")

    def chunk(indices):
        images, _ = slices2d.read_inputs([paths[i] for i in indices], config)
        slices2d.check_input_shape(model, images, paths[indices[0]])
        return probabilities(model, images, config, uncertainty=uncertainty)

    probs = _chunked(chunk, len(paths))
    table = pd.DataFrame({"file": [str(p) for p in paths]})
    for head, names in config["classes"].items():
        p, std = probs[head]
        table[f"{head}_pred"] = [names[i] for i in np.argmax(p, axis=1)]
        kind = "mean" if uncertainty else "prob"
        for c, name in enumerate(names):
            table[f"{head}_{kind}_{name}"] = p[:, c]
        if uncertainty:
            for c, name in enumerate(names):
                table[f"{head}_std_{name}"] = std[:, c]
    target = Path(out) / "predictions.csv"
    with atomic_path(target) as tmp:
        table.to_csv(tmp, index=False)
    print(f"{len(paths)} slices -> {target}")
    return [target]


TASK = register(Task(
    name="slice-classification",
    description="slice perspective and MR sequence classification, ResNet transfer learning "
                "(TCGA-GBM slices)",
    presets={"default": DEFAULT, "small": SMALL},
    train=train, evaluate=evaluate, predict=predict,
))

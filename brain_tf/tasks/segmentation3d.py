"""3D patch segmentation tasks: tumour (system C), tissue (A), hippocampus (B).

Train on patches sampled from preprocessed subjects, pick the best epoch on the
validation split, then predict every test subject whole with Gaussian-blended
sliding windows and report Dice, sensitivity, specificity and HD95 (mm) per
label. Metrics are computed on the preprocessed grid (for the tumour task that
is the original grid).

Summaries over subjects: distances (HD95, ASD) are infinite for a subject whose
prediction or reference of a label is empty (see
:mod:`brain_tf.evaluation.segmentation`); the summary averages the finite
values and reports how many subjects had none (``hd95_undefined``), so one
missed structure neither hides nor turns the mean into ``inf``. The
per-subject CSV keeps every value as computed.

Config sections used here: ``data``, ``preprocess``, ``sampler`` (a
:class:`PatchSampler` plus ``patch_size``), ``augment``, ``model``, ``loss``,
``metrics``, ``optimizer``, ``training`` (epochs, steps_per_epoch, batch_size,
val_patches, monitor, mode, patience, ...), ``inference`` (the sliding
window; ``largest_component`` keeps each class's largest connected
component), optional ``regions`` (name -> label indices evaluated together) and
optional ``evaluation.volumes_csv`` (a CSV of predicted and reference volumes
per subject, e.g. the tissue task's ``test_tissue_volumes.csv``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from brain_tf.errors import ConfigError, DataError
from brain_tf.evaluation.segmentation import segmentation_metrics
from brain_tf.inference import sliding_window_predict, to_label_map
from brain_tf.io import load_modalities, load_volume, save_volume
from brain_tf.pipeline.datasets import patch_dataset
from brain_tf.pipeline.sampling import PatchSampler
from brain_tf.preprocess.labels import indices_to_values
from brain_tf.preprocess.subject import preprocess_subject
from brain_tf.tasks.base import (
    load_manifest, load_predictor, new_run, open_test_split, subject_loader, subset,
)
from brain_tf.tasks.compile import compiled_model, fit
from brain_tf.training import RunFolder
from brain_tf.training import plots


def _loader(spec_labels: dict, rows: pd.DataFrame, config: dict):
    return subject_loader(rows, config, label_values=list(spec_labels.values()))


def _sigmoid(config) -> bool:
    return config["model"].get("output_activation", "softmax") == "sigmoid"


def _window(config) -> dict:
    inf = config["inference"]
    return {"patch_size": tuple(inf["patch_size"]), "overlap": inf.get("overlap", 0.5),
            "tta": inf.get("tta", False), "batch_size": inf.get("batch_size", 2)}


def _label_map(probs, config, num_classes: int) -> np.ndarray:
    """Class indices 0..K-1 from probabilities (``inference.largest_component``: keep
    only each class's largest connected component)."""
    if _sigmoid(config):
        indices = to_label_map(probs, "sigmoid", label_values=list(range(1, num_classes)),
                               threshold=config["inference"].get("threshold", 0.5),
                               merge=config["inference"].get("merge", "argmax"))
    else:
        indices = to_label_map(probs, "softmax", label_values=list(range(num_classes)))
    if config["inference"].get("largest_component", False):
        indices = largest_components(indices, range(1, num_classes))
    return indices


def largest_components(indices: np.ndarray, classes) -> np.ndarray:
    """``indices`` with every voxel of ``classes`` outside that class's largest
    face-connected component set to 0 (background)."""
    import scipy.ndimage as ndi

    out = np.array(indices, copy=True)
    for c in classes:
        components, count = ndi.label(out == c)
        if count > 1:
            sizes = np.bincount(components.ravel())[1:]
            out[(components > 0) & (components != np.argmax(sizes) + 1)] = 0
    return out


def train(config: dict, run_dir: str | None = None) -> RunFolder:
    spec, manifest = load_manifest(config)
    run = new_run(config, run_dir)
    config = {**config, "labels": spec.labels, "channels": spec.channel_names}
    run.save_config(config)
    run.save_splits(manifest)
    train_rows, val_rows = subset(manifest, "train"), subset(manifest, "val")
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise DataError(f"{spec.path}: the split has {len(train_rows)} training and "
                        f"{len(val_rows)} validation subjects; both need at least one")
    tr = config["training"]
    num_classes = len(spec.labels)
    sampler_cfg = dict(config["sampler"])
    patch = tuple(sampler_cfg.pop("patch_size"))
    train_loader = _loader(spec.labels, train_rows, config)
    first = train_loader(0)
    common = dict(num_classes=num_classes, drop_background=_sigmoid(config),
                  batch_size=tr["batch_size"], spacing=first.spacing)
    train_ds = patch_dataset(train_loader, PatchSampler(patch, **sampler_cfg),
                             augment=config.get("augment"), seed=config["data"].get("seed", 0),
                             repeat=True, **common)
    val_sampler = {k: v for k, v in sampler_cfg.items() if k != "patches_per_subject"}
    val_ds = patch_dataset(_loader(spec.labels, val_rows, config),
                           PatchSampler(patch, patches_per_subject=tr.get("val_patches", 4),
                                        **val_sampler),
                           augment=None, shuffle=False, seed=1234, **common).cache()
    channels = first.image.shape[-1]
    outputs = num_classes - 1 if _sigmoid(config) else num_classes
    steps = tr["steps_per_epoch"]
    model = compiled_model(config, patch + (channels,), outputs, total_steps=steps * tr["epochs"])
    fit(model, train_ds, val_ds, config, run)
    run.save_model(model)
    plots.learning_curves(run.history, run / "learning_curves.png")
    evaluate(run.path, model=model)
    return run


DISTANCES = ("hd95_mm", "asd_mm")


def summarise(per_subject: pd.DataFrame) -> pd.DataFrame:
    """Per-label means over subjects of a :func:`segmentation_metrics` table (with a
    ``subject`` column); distances are averaged over their finite values only and
    ``hd95_undefined`` counts the subjects whose HD95 was infinite or undefined."""
    rows = {}
    for name, group in per_subject.groupby("label", sort=False):
        values = group.drop(columns=["subject", "label"], errors="ignore")
        row = values.mean(numeric_only=True)
        for column in DISTANCES:
            if column in values:
                column_values = values[column].astype(float)
                finite = column_values[np.isfinite(column_values)]
                row[column] = finite.mean() if len(finite) else float("nan")
        if "hd95_mm" in values:
            row["hd95_undefined"] = int((~np.isfinite(values["hd95_mm"].astype(float))).sum())
        rows[name] = row
    return pd.DataFrame(rows).T


def _flat(summary: pd.DataFrame, keys=("dice", "sensitivity", "specificity", "hd95_mm",
                                         "hd95_undefined")) -> dict:
    """``{metric}_{label}`` entries (e.g. ``dice_csf``, ``hd95_mm_csf``) of a summary."""
    out = {}
    for name, row in summary.iterrows():
        for key in keys:
            if key in row and pd.notna(row[key]):
                value = row[key]
                out[f"{key}_{name}"] = int(value) if key == "hd95_undefined" else float(value)
    return out


def _volume_summary(volumes: pd.DataFrame, names) -> dict:
    """Mean absolute error of predicted vs reference volumes (ml) and fractions per label."""
    out = {}
    for name in names:
        for kind, unit in (("ml", "ml"), ("fraction", "fraction")):
            pred, ref = volumes[f"{name}_{kind}_pred"], volumes[f"{name}_{kind}_ref"]
            out[f"volume_mae_{unit}_{name}"] = float(np.nanmean(np.abs(pred - ref)))
        out[f"volume_ref_mean_ml_{name}"] = float(volumes[f"{name}_ml_ref"].mean())
    return out


def _volume_pair(subject, pred, class_names: dict) -> dict:
    """Predicted and reference volumes and fractions of one subject (preprocessed grid)."""
    from brain_tf.tasks.tissue_volumes import volume_row

    row = {"subject": subject.subject}
    predicted = volume_row(pred, subject.spacing, class_names)
    reference = volume_row(subject.label, subject.spacing, class_names)
    for key in predicted:
        row[f"{key}_pred"] = predicted[key]
        row[f"{key}_ref"] = reference[key]
    return row


def _print_summary(summary: pd.DataFrame, subjects: int, mean_dice: float) -> None:
    print(f"test split ({subjects} subjects): mean Dice {mean_dice:.3f}")
    for name, row in summary.iterrows():
        undefined = int(row.get("hd95_undefined", 0))
        note = f" (undefined for {undefined} of {subjects} subjects)" if undefined else ""
        print(f"  {name:>18}: Dice {row['dice']:.3f}  sensitivity {row['sensitivity']:.3f}  "
              f"specificity {row['specificity']:.4f}  HD95 {row['hd95_mm']:.1f} mm{note}")


def evaluate(run_path, model=None, root: str | None = None) -> dict:
    """Predict every test subject whole; write per-subject CSV, metrics.json and an overlay.

    metrics.json holds ``subjects``, ``mean_dice`` (over the labels other than
    background), ``per_label`` (the summary of :func:`summarise`), flat
    ``{metric}_{label}`` keys and, with ``evaluation.volumes_csv``, the volume
    errors ``volume_mae_ml_{label}``.
    """
    run, config, spec, manifest = open_test_split(run_path, root)
    test_rows = subset(manifest, "test")
    model = model or run.load_model()
    loader = _loader(spec.labels, test_rows, config)
    num_classes = len(spec.labels)
    class_names = {name: i for i, name in enumerate(spec.labels) if i > 0}
    regions = {**class_names, **config.get("regions", {})}
    volumes_csv = config.get("evaluation", {}).get("volumes_csv")
    tables, volume_rows = [], []
    for i in range(len(loader)):
        subject = loader(i)
        probs = sliding_window_predict(model, subject.image, **_window(config))
        pred = _label_map(probs, config, num_classes)
        table = segmentation_metrics(pred, subject.label, regions, spacing=subject.spacing)
        table.insert(0, "subject", subject.subject)
        tables.append(table)
        if volumes_csv:
            volume_rows.append(_volume_pair(subject, pred, class_names))
        if i == 0:
            plots.segmentation_overlay(subject.image[..., 0], pred, run / "overlay.png",
                                       reference=subject.label, title=subject.subject)
    per_subject = pd.concat(tables, ignore_index=True)
    run.save_table("test_per_subject.csv", per_subject)
    summary = summarise(per_subject)
    mean_dice = float(summary["dice"].mean())
    metrics = {"subjects": len(loader), "mean_dice": mean_dice, **_flat(summary),
               "per_label": {name: row.dropna().to_dict() for name, row in summary.iterrows()}}
    if volumes_csv:
        volumes = pd.DataFrame(volume_rows)
        run.save_table(volumes_csv, volumes)
        metrics.update(_volume_summary(volumes, class_names))
    run.save_json("metrics.json", metrics)
    _print_summary(summary, len(loader), mean_dice)
    if volumes_csv:
        print("  volume error (mean |predicted - reference|): " + ", ".join(
            f"{n} {metrics[f'volume_mae_ml_{n}']:.1f} ml" for n in class_names))
    return metrics


def predict(model_path, inputs, out, uncertainty: bool = False, config=None,
            masks=None) -> list[Path]:
    """Segment NIfTI scans with a trained run; labels keep the input's grid and affine.

    ``model_path`` is a run folder or its ``saved_model/`` (the exported SavedModel is
    used) or a ``.keras`` file. Each input is one 4D file or, for several modalities,
    a comma-separated list of 3D files in the order of the training spec's channels.
    ``masks`` gives a brain mask file per input (None entries allowed) for runs whose
    preprocessing uses one; without it, such runs compute a mask from the image when
    their preprocessing has ``mask = "auto"`` and raise ConfigError otherwise.
    """
    if uncertainty:
        raise ConfigError("--uncertainty needs a model with MC dropout; the segmentation "
                          "U-Nets have none (use --tta style averaging in the config instead)")
    masks = list(masks) if masks is not None else [None] * len(inputs)
    if len(masks) != len(inputs):
        raise ConfigError(f"got {len(masks)} masks for {len(inputs)} inputs; give one per input")
    model, config = load_predictor(model_path, config)
    label_values = list(config["labels"].values())
    out = Path(out)
    written = []
    for item, mask_path in zip(inputs, masks):
        paths = item.split(",")
        volume = load_modalities(paths)
        mask = _input_mask(mask_path, config["preprocess"], paths[0])
        pre = preprocess_subject(volume, None, mask, config["preprocess"], label_values,
                                 subject=paths[0])
        probs = sliding_window_predict(model, pre.image, **_window(config))
        indices = _label_map(probs, config, len(label_values))
        if indices.shape != volume.shape[:3] or not np.allclose(pre.affine, volume.affine):
            indices, _ = _back_to_input(indices, pre.affine, volume)
        labels = indices_to_values(indices, label_values)
        name = Path(paths[0]).name.split(".nii")[0]
        written.append(save_volume(labels, out / f"{name}_seg.nii.gz", affine=volume.affine,
                                   header=volume.header))
        print(f"{paths[0]} -> {written[-1]}")
    return written


def _input_mask(mask_path, preprocess: dict, where: str):
    """The brain mask of a prediction input, or None; ConfigError when one is needed."""
    if mask_path:
        return load_volume(mask_path, ndim=3)
    needs_mask = preprocess.get("apply_mask") or preprocess.get("normalise") == "zscore_mask"
    if needs_mask and preprocess.get("mask", "given") != "auto":
        raise ConfigError(f"{where}: this model's preprocessing needs a brain mask; pass one "
                          "per input (masks=...) or set preprocess.mask = \"auto\"")
    return None


def _back_to_input(indices, affine, volume):
    """Nearest-neighbour resampling of a label map onto the input volume's grid."""
    import scipy.ndimage as ndi

    matrix = np.linalg.inv(affine) @ volume.affine
    out = ndi.affine_transform(indices, matrix[:3, :3], offset=matrix[:3, 3],
                               output_shape=volume.shape[:3], order=0, mode="constant", cval=0)
    return out, volume.affine

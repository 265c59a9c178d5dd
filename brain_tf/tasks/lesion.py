"""lesion-segmentation: system D (TCGA lower-grade glioma, Kaggle kaggle_3m), 2D slices.

Default preset = the published recipe: 256x256 RGB slices (pre-contrast,
FLAIR, post-contrast) scaled to [0, 1] then ImageNet mean/std, augmentation
preset ``lgg`` (flip, rotation 10 deg, zoom 1-1.1, perspective warp 0.2,
lighting 0.2, reflection padding), a 2D U-Net with a ResNet-34 encoder
(``unet2d_resnet``) and a 2-class softmax head, cross-entropy, Adam with a
one-cycle schedule (max lr 2.5e-4, 30% warm-up), batch 16; one epoch with the
encoder frozen, then 6 epochs unfrozen, each stage with its own one-cycle
schedule. The frozen stage needs pretrained encoder weights: Keras ships no
ImageNet ResNet-34, so set ``model.weights`` to a local ResNet-34 weights file
(or ``model.backbone = "resnet50"`` with ``weights = "imagenet"``); with the
default ``weights`` unset the encoder trains from scratch for the 6 epochs
and the frozen stage is skipped. Split by patient (15 validation patients in
the original; here 70/15/15% of patients).

``small`` preset: 96x96 slices, a ResNet-34 layout at width 16 (16/32/64/128
filters) using 4 levels, decoder base 8, Adam one-cycle with max lr 3e-3
over 10 epochs of one pass each, batch 16 -- a few minutes on 2 CPU cores.

Evaluation (test patients only): Dice per patient (3D Dice over the patient's
slices), Dice over all test slices pooled, sensitivity and precision, in
``metrics.json``, ``test_per_patient.csv`` and ``test_per_slice.csv``, and
``overlay.png`` (the test slices with the largest abnormalities: prediction
filled, reference outlined). ``predict`` writes ``<name>_mask.<tif|png>``
(0/255, the input's size) for each input image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import skimage.transform

from brain_tf.errors import ConfigError, DataError
from brain_tf.evaluation.segmentation import confusion_counts
from brain_tf.io import save_image
from brain_tf.models.resnet_encoder import skip_layers
from brain_tf.tasks import slices2d
from brain_tf.tasks.base import (
    Task, load_manifest, load_predictor, new_run, open_test_split, register, subset,
)
from brain_tf.training import RunFolder

DEFAULT = {
    "data": {"spec": "data_specs/kaggle_lgg.toml", "seed": 0,
             "fractions": {"train": 0.7, "val": 0.15, "test": 0.15}},
    "preprocess": {"shape": [256, 256], "rgb": True},
    "pipeline": {"normalise": "imagenet"},
    "augment": {"preset": "lgg"},
    "model": {"name": "unet2d_resnet", "backbone": "resnet34", "depth": 5, "base_filters": 16,
              "output_activation": "softmax"},
    "loss": "categorical_crossentropy",
    "metrics": [{"class": "DiceCoefficient", "output_activation": "softmax",
                 "include_background": False, "name": "dice"}],
    "optimizer": {"name": "adam", "learning_rate": 2.5e-4,
                  "schedule": {"name": "OneCycle", "warmup_fraction": 0.3}},
    "training": {"epochs": 6, "freeze_epochs": 1, "batch_size": 16, "patience": 6,
                 "monitor": "val_dice", "mode": "max"},
    "inference": {"batch_size": 16, "overlay_slices": 4},
}

SMALL = {
    "data": {"fractions": {"train": 0.6, "val": 0.2, "test": 0.2}},
    "preprocess": {"shape": [96, 96]},
    "model": {"depth": 4, "encoder_width": 16, "base_filters": 8},
    "optimizer": {"learning_rate": 3e-3},
    "training": {"epochs": 10, "freeze_epochs": 0, "patience": 5},
}


def _labels(spec) -> list[int]:
    values = spec.label_values
    if len(values) != 2:
        raise DataError(f"{spec.path}: lesion segmentation needs two label values "
                        f"(background and abnormality), the spec has {spec.labels}")
    return values


def train(config: dict, run_dir: str | None = None) -> RunFolder:
    """Train on the training patients, pick the epoch by validation Dice, evaluate the test ones."""
    spec, manifest = load_manifest(config)
    labels = _labels(spec)
    run = new_run(config, run_dir)
    config = {**config, "labels": spec.labels, "channels": spec.channel_names}
    run.save_config(config)
    run.save_splits(manifest)
    train_rows, val_rows = slices2d.split_rows(manifest, spec.path)
    train_src = slices2d.loader(train_rows, config, labels)
    val_src = slices2d.loader(val_rows, config, labels)
    train_ds, val_ds = slices2d.datasets(train_src, val_src, config, num_classes=len(labels))
    image, _ = train_src(0)
    model_cfg = config["model"]
    freeze = skip_layers(model_cfg.get("backbone", "resnet34"),
                         model_cfg.get("encoder_blocks"))[model_cfg.get("depth", 5) - 1]
    model = slices2d.train_model(config, run, image.shape, len(labels), train_ds, val_ds,
                                 len(train_rows), freeze_layer=freeze)
    run.save_model(model)
    slices2d.save_learning_curves(run)
    evaluate(run.path, model=model)
    return run


def _masks(probs: np.ndarray) -> np.ndarray:
    return np.argmax(probs, axis=-1).astype(np.uint8)


def evaluate(run_path, model=None, root: str | None = None) -> dict:
    """Dice per test patient (over all its slices) and pooled over all test slices."""
    run, config, spec, manifest = open_test_split(run_path, root)
    rows = subset(manifest, "test")
    model = model or run.load_model()
    source = slices2d.loader(rows, config, _labels(spec))
    batch = int(config["inference"].get("batch_size", 16))
    counts = []
    for start in range(0, len(rows), batch):
        pairs = [source(i) for i in range(start, min(start + batch, len(rows)))]
        preds = _masks(slices2d.predict_slices(model, np.stack([p[0] for p in pairs]), config))
        counts += [confusion_counts(pred, ref) for pred, (_, ref) in zip(preds, pairs)]
    per_slice = pd.concat([rows[["sample", "subject"]], pd.DataFrame(counts)], axis=1)
    per_slice["reference_pixels"] = per_slice["tp"] + per_slice["fn"]
    per_slice["predicted_pixels"] = per_slice["tp"] + per_slice["fp"]
    per_slice["dice"] = [_dice(r) for r in per_slice.to_dict("records")]
    run.save_table("test_per_slice.csv", per_slice)
    sums = per_slice.groupby("subject", sort=True)[["tp", "fp", "fn", "tn"]].sum()
    per_patient = sums.reset_index()
    per_patient.insert(1, "slices", per_slice.groupby("subject", sort=True).size().values)
    per_patient["dice"] = [_dice(r) for r in per_patient.to_dict("records")]
    per_patient["sensitivity"] = [_ratio(r["tp"], r["tp"] + r["fn"])
                                  for r in per_patient.to_dict("records")]
    per_patient["precision"] = [_ratio(r["tp"], r["tp"] + r["fp"])
                                for r in per_patient.to_dict("records")]
    run.save_table("test_per_patient.csv", per_patient)
    total = per_slice[["tp", "fp", "fn", "tn"]].sum().to_dict()
    metrics = {
        "patients": int(len(per_patient)), "slices": int(len(per_slice)),
        "slices_with_abnormality": int((per_slice["reference_pixels"] > 0).sum()),
        "dice_overall": _dice(total),
        "sensitivity_overall": _ratio(total["tp"], total["tp"] + total["fn"]),
        "precision_overall": _ratio(total["tp"], total["tp"] + total["fp"]),
        "dice_per_patient_mean": float(per_patient["dice"].mean()),
        "dice_per_patient_median": float(per_patient["dice"].median()),
    }
    run.save_json("metrics.json", metrics)
    _overlay(run, model, per_slice, source, config)
    print(f"test split ({metrics['patients']} patients, {metrics['slices']} slices): "
          f"Dice overall {metrics['dice_overall']:.3f}, per patient mean "
          f"{metrics['dice_per_patient_mean']:.3f} (median "
          f"{metrics['dice_per_patient_median']:.3f}); sensitivity "
          f"{metrics['sensitivity_overall']:.3f}, precision {metrics['precision_overall']:.3f}")
    return metrics


def _ratio(numerator, denominator) -> float:
    return float(numerator) / float(denominator) if denominator else float("nan")


def _dice(c: dict) -> float:
    """2TP / (2TP + FP + FN); 1 when both the prediction and the reference are empty."""
    denominator = 2 * c["tp"] + c["fp"] + c["fn"]
    return 2.0 * c["tp"] / denominator if denominator else 1.0


def _overlay(run: RunFolder, model, per_slice: pd.DataFrame, source, config: dict) -> Path:
    """overlay.png: the test slices with the largest reference abnormalities."""
    n = int(config["inference"].get("overlay_slices", 4))
    chosen = per_slice.sort_values(["reference_pixels", "sample"],
                                   ascending=[False, True]).index[:n]
    pairs = [source(i) for i in chosen]
    images = np.stack([p[0] for p in pairs])
    preds = _masks(slices2d.predict_slices(model, images, config))
    titles = [f"{per_slice.at[i, 'sample']}  Dice {per_slice.at[i, 'dice']:.2f}" for i in chosen]
    return slices2d.slice_overlays(images, preds, run / "overlay.png",
                                   references=[p[1] for p in pairs], titles=titles)


def predict(model_path, inputs, out, uncertainty: bool = False, config=None) -> list[Path]:
    """Segment image files (or folders of them) with a trained run.

    Each input ``NAME.tif`` gets ``out/NAME_mask.tif`` (``.png`` inputs a PNG; other
    formats a PNG), 0/255 at the input's size like the dataset's masks.
    """
    if uncertainty:
        raise ConfigError("--uncertainty needs a model with MC dropout; the lesion U-Net "
                          "has none")
    paths = slices2d.expand_inputs(inputs)
    model, config = load_predictor(model_path, config)
    out = Path(out)
    written = []
    batch = int(config["inference"].get("batch_size", 16))
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        images, sizes = slices2d.read_inputs(chunk, config)
        slices2d.check_input_shape(model, images, chunk[0])
        masks = _masks(slices2d.predict_slices(model, images, config))
        for path, mask, size in zip(chunk, masks, sizes):
            if mask.shape != size:
                mask = skimage.transform.resize(mask, size, order=0, anti_aliasing=False,
                                                preserve_range=True).astype(np.uint8)
            suffix = path.suffix.lower() if path.suffix.lower() in (".tif", ".tiff", ".png") \
                else ".png"
            target = out / f"{path.stem}_mask{suffix}"
            written.append(save_image((mask > 0).astype(np.uint8) * 255, target))
            print(f"{path} -> {target}")
    return written


TASK = register(Task(
    name="lesion-segmentation",
    description="FLAIR abnormality segmentation on 2D slices, U-Net with a ResNet-34 encoder "
                "(TCGA LGG, Kaggle kaggle_3m)",
    presets={"default": DEFAULT, "small": SMALL},
    train=train, evaluate=evaluate, predict=predict,
))

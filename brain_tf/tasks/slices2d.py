"""Shared steps of the 2D slice tasks (lesion segmentation, slice classification).

Slices are read with :class:`~brain_tf.preprocess.loader.SliceLoader` (to
float in [0, 1], resized to ``preprocess.shape``), augmented and normalised
in the tf.data pipeline (:func:`~brain_tf.pipeline.slice_dataset`), and the
same preprocessing is applied to new files at prediction time. Training may
run in two stages: ``training.freeze_epochs`` epochs with the pretrained
encoder frozen, then ``training.epochs`` epochs with everything trainable,
each stage with its own one-cycle schedule (a fresh optimizer).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from brain_tf.distribute import config_strategy
from brain_tf.errors import ConfigError, DataError
from brain_tf.inference.calling import predict_batch
from brain_tf.io import atomic_path, load_image
from brain_tf.io.image2d import IMAGE_SUFFIXES
from brain_tf.models import freeze_up_to
from brain_tf.pipeline import slice_dataset
from brain_tf.preprocess.loader import SliceLoader
from brain_tf.preprocess.normalise import normalise
from brain_tf.preprocess.slices import preprocess_slice
from brain_tf.tasks.base import subset
from brain_tf.tasks.compile import compiled_model, fit, make_loss, make_metrics, make_optimizer
from brain_tf.training import RunFolder
from brain_tf.training import plots



def split_rows(manifest: pd.DataFrame, where) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training and validation rows; both must be non-empty."""
    train_rows, val_rows = subset(manifest, "train"), subset(manifest, "val")
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise DataError(f"{where}: the split has {len(train_rows)} training and {len(val_rows)} "
                        "validation slices; both need at least one patient")
    return train_rows, val_rows


def loader(rows: pd.DataFrame, config: dict, label_values=None, use_labels=True) -> SliceLoader:
    """Preprocessed slices of some manifest rows (``loader(i)``: image or (image, mask))."""
    return SliceLoader(rows, config["preprocess"], label_values=label_values,
                       use_labels=use_labels)


def steps_per_epoch(config: dict, n_train: int) -> int:
    """``training.steps_per_epoch``, or one pass over the training slices."""
    tr = config["training"]
    return int(tr.get("steps_per_epoch") or math.ceil(n_train / tr["batch_size"]))


def datasets(train_source, val_source, config: dict, **kwargs):
    """Training (augmented, shuffled, repeated) and validation slice datasets.

    ``kwargs`` go to both: ``num_classes`` for masks, or ``targets`` as a pair
    ``(train_targets, val_targets)`` for classification.
    """
    tr = config["training"]
    norm = config.get("pipeline", {}).get("normalise")
    targets = kwargs.pop("targets", (None, None))
    seed = config["data"].get("seed", 0)
    train_ds = slice_dataset(train_source, targets=targets[0], augment=config.get("augment"),
                             normalise=norm, batch_size=tr["batch_size"], shuffle=True,
                             seed=seed, repeat=True, **kwargs)
    val_ds = slice_dataset(val_source, targets=targets[1], augment=None, normalise=norm,
                           batch_size=tr.get("val_batch_size", tr["batch_size"]),
                           shuffle=False, seed=seed, **kwargs)
    return train_ds, val_ds


def _stage_config(config: dict, steps: int, epochs: int, **training) -> dict:
    return {**config, "training": {**config["training"], "steps_per_epoch": steps,
                                   "epochs": epochs, **training}}


def recompile(model, config: dict, total_steps: int) -> None:
    """Compile ``model`` again after its trainable layers changed (Keras needs it): a
    fresh optimizer (and one-cycle schedule over ``total_steps``), the config's loss
    and metrics, in the strategy's scope as :func:`compiled_model` does."""
    with config_strategy(config).scope():
        model.compile(optimizer=make_optimizer(config["optimizer"], total_steps),
                      loss=make_loss(config["loss"]),
                      metrics=make_metrics(config.get("metrics", [])),
                      jit_compile=bool(config["training"].get("jit_compile", False)))


def train_model(config: dict, run: RunFolder, input_shape, outputs, train_ds, val_ds,
                n_train: int, freeze_layer: str | None = None):
    """Build, compile and fit (through :mod:`brain_tf.tasks.compile`), in up to two stages.

    With ``training.freeze_epochs > 0``, pretrained encoder weights
    (``model.weights`` set) and a ``freeze_layer``, the layers up to
    ``freeze_layer`` are first trained frozen for ``freeze_epochs`` epochs (their
    history, checkpoint and backup in ``run/frozen/``), then unfrozen,
    recompiled with a new one-cycle schedule, and trained for
    ``training.epochs`` epochs in the run folder (early stopping, stop-at-epoch
    and resume apply there). A run resumed after the frozen stage reloads its
    weights instead of repeating it. A randomly initialised encoder is never
    frozen (its features carry nothing to keep).
    """
    tr = config["training"]
    steps = steps_per_epoch(config, n_train)
    frozen_epochs = int(tr.get("freeze_epochs", 0) or 0)
    pretrained = config["model"].get("weights") is not None
    if frozen_epochs and not pretrained:
        print("training.freeze_epochs skipped: the encoder has no pretrained weights")
    stage1 = frozen_epochs > 0 and pretrained and freeze_layer is not None
    model = compiled_model(config, input_shape, outputs,
                           total_steps=steps * (frozen_epochs if stage1 else tr["epochs"]))
    if stage1:
        done = run / "frozen" / "model.weights.h5"
        freeze_up_to(model, freeze_layer)
        recompile(model, config, steps * frozen_epochs)
        if done.exists():
            model.load_weights(str(done))
        else:
            folder = RunFolder(run / "frozen")
            folder.path.mkdir(parents=True, exist_ok=True)
            fit(model, train_ds, val_ds,
                _stage_config(config, steps, frozen_epochs, stop_at_epoch=None, patience=None),
                folder)
            with atomic_path(done) as tmp:
                model.save_weights(str(tmp))
        freeze_up_to(model, None)
        recompile(model, config, steps * tr["epochs"])
    fit(model, train_ds, val_ds, _stage_config(config, steps, tr["epochs"]), run)
    return model


def history(run: RunFolder) -> pd.DataFrame:
    """The run's per-epoch history, the frozen stage's epochs first when there was one."""
    parts = [pd.read_csv(p) for p in (run / "frozen" / "history.csv", run / "history.csv")
             if p.exists()]
    table = pd.concat(parts, ignore_index=True)
    table["epoch"] = np.arange(len(table))
    return table


def save_learning_curves(run: RunFolder) -> Path:
    return plots.learning_curves(history(run), run / "learning_curves.png")


def model_input(images: np.ndarray, config: dict) -> np.ndarray:
    """A batch of preprocessed [0, 1] slices with the pipeline's normalisation."""
    norm = config.get("pipeline", {}).get("normalise")
    if norm is None:
        return np.asarray(images, np.float32)
    return normalise(np.asarray(images, np.float32), norm)


def predict_slices(model, images: np.ndarray, config: dict):
    """Model outputs (array, or dict per head) for preprocessed slices, in batches."""
    batch = int(config["inference"].get("batch_size", 16))
    parts = [predict_batch(model, model_input(images[i:i + batch], config))
             for i in range(0, len(images), batch)]
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def expand_inputs(inputs) -> list[Path]:
    """Image files from files and folders (a folder's images, ``*_mask`` files left out)."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                           and not p.stem.endswith("_mask"))
            if not found:
                raise DataError(f"{path}: folder holds no image files "
                                f"({', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif not path.exists():
            raise DataError(f"{path}: file not found; give image files or folders of them")
        else:
            files.append(path)
    if not files:
        raise DataError("no input images given")
    return files


def read_inputs(paths, config: dict) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """New image files preprocessed like the training slices; also their original sizes."""
    images, sizes = [], []
    for path in paths:
        raw = load_image(path)
        x, _ = preprocess_slice(raw, None, config["preprocess"], where=str(path))
        if images and x.shape != images[0].shape:
            raise DataError(f"{path}: preprocessed to {x.shape}, the first input to "
                            f"{images[0].shape}; set preprocess.shape in the run's config")
        images.append(x)
        sizes.append(tuple(raw.shape[:2]))
    return np.stack(images), sizes


def check_input_shape(model, images: np.ndarray, where) -> None:
    """Raise a one-line error when the slices do not fit the model's input."""
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(expected[1:]) != tuple(images.shape[1:]) and \
            None not in tuple(expected[1:]):
        raise DataError(f"{where}: slices of shape {images.shape[1:]} do not fit the model's "
                        f"input {tuple(expected[1:])}; check the run's preprocess config")


def display_image(image: np.ndarray) -> np.ndarray:
    """A [0, 1] image for plotting: RGB as is, otherwise its first channel."""
    image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
    return image if image.ndim == 3 and image.shape[-1] == 3 else image[..., 0] \
        if image.ndim == 3 else image


def slice_overlays(images, predictions, path, references=None, titles=None) -> Path:
    """A row of slices with the predicted mask filled and the reference outlined (PNG)."""
    from matplotlib.figure import Figure

    n = len(images)
    if n == 0:
        raise ConfigError(f"{path}: no slices to plot")
    fig = Figure(figsize=(3.2 * n, 3.5))
    for i in range(n):
        ax = fig.add_subplot(1, n, i + 1)
        ax.imshow(display_image(images[i]), cmap="gray")
        pred = np.ma.masked_equal(np.asarray(predictions[i]), 0)
        ax.imshow(pred, cmap="autumn", alpha=0.45, vmin=0, vmax=1, interpolation="nearest")
        if references is not None and np.any(references[i]):
            ax.contour(np.asarray(references[i]) > 0, levels=[0.5], colors="cyan",
                       linewidths=0.8)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)

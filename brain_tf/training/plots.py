"""PNG plots of a run (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from brain_tf.io.atomic import atomic_path


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt, plt.subplots(*args, **kwargs)


def _save(plt, fig, path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def learning_curves(history: pd.DataFrame, path: str | os.PathLike) -> Path:
    """One panel per quantity (loss, each metric), training and validation."""
    names = [c for c in history.columns if c != "epoch" and not c.startswith("val_")
             and c not in ("learning_rate", "lr")]
    plt, (fig, axes) = _figure(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    epochs = history["epoch"] + 1 if "epoch" in history else np.arange(1, len(history) + 1)
    for ax, name in zip(axes[0], names):
        ax.plot(epochs, history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    return _save(plt, fig, path)


def predicted_vs_true(y_true, y_pred, path, label: str = "age (years)") -> Path:
    plt, (fig, ax) = _figure(figsize=(4.5, 4.5))
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.scatter(y_true, y_pred, s=14)
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel(f"predicted {label}")
    mae = float(np.mean(np.abs(y_true - y_pred)))
    ax.set_title(f"MAE {mae:.2f}")
    return _save(plt, fig, path)


def confusion_matrix_plot(matrix, class_names, path, title: str = "") -> Path:
    matrix = np.asarray(matrix)
    plt, (fig, ax) = _figure(figsize=(1.2 * len(class_names) + 2, 1.2 * len(class_names) + 1.5))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > matrix.max() / 2 else "black")
    ax.set_title(title)
    return _save(plt, fig, path)


def segmentation_overlay(image, labels, path, reference=None, title: str = "") -> Path:
    """The three mid-planes of ``image`` (x, y, z) with predicted (and reference) labels.

    Predicted labels are filled colours; reference labels are drawn as contours.
    """
    image = np.asarray(image, float)
    labels = np.asarray(labels)
    centre = [s // 2 for s in image.shape[:3]]
    if labels.any():  # centre the planes on the labelled region
        centre = [int(np.round(c.mean())) for c in np.nonzero(labels)]
    planes = [(lambda a: a[centre[0]], "sagittal"), (lambda a: a[:, centre[1]], "coronal"),
              (lambda a: a[:, :, centre[2]], "axial")]
    plt, (fig, axes) = _figure(1, 3, figsize=(12, 4))
    vmax = max(int(labels.max()), 1)
    for ax, (cut, name) in zip(axes, planes):
        ax.imshow(cut(image).T, cmap="gray", origin="lower")
        lab = np.ma.masked_equal(cut(labels).T, 0)
        ax.imshow(lab, cmap="autumn", alpha=0.45, vmin=1, vmax=vmax, origin="lower",
                  interpolation="nearest")
        if reference is not None:
            ax.contour((cut(np.asarray(reference)) > 0).T.astype(float), levels=[0.5],
                       colors="cyan", linewidths=0.8, origin="lower")
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)

"""PNG plots of a run, drawn with matplotlib's object API on an Agg canvas: no display,
no pyplot, and no change to the process's matplotlib backend."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from brain_tf.io.atomic import atomic_path


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    return Path(path)


def full_history(run) -> pd.DataFrame:
    """A run's per-epoch history: a frozen first stage's epochs, then the main ones."""
    parts = [pd.read_csv(p) for p in (run / "frozen" / "history.csv", run / "history.csv")
             if p.exists()]
    table = pd.concat(parts, ignore_index=True)
    table["epoch"] = np.arange(len(table))
    return table


def learning_curves(history: pd.DataFrame, path: str | os.PathLike, columns: int = 3) -> Path:
    """One panel per quantity (loss, each metric; training and validation), in a grid of
    ``columns`` panels per row."""
    names = [c for c in history.columns if c != "epoch" and not c.startswith("val_")
             and c not in ("learning_rate", "lr")]
    rows = max(1, math.ceil(len(names) / columns))
    cols = min(columns, max(1, len(names)))
    fig = _figure((4.2 * cols, 3.2 * rows))
    epochs = history["epoch"] + 1 if "epoch" in history else np.arange(1, len(history) + 1)
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.plot(epochs, history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def predicted_vs_true(y_true, y_pred, path, label: str = "age (years)") -> Path:
    fig = _figure((4.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.scatter(y_true, y_pred, s=14)
    ax.set_xlabel(f"true {label}")
    ax.set_ylabel(f"predicted {label}")
    ax.set_title(f"MAE {float(np.mean(np.abs(y_true - y_pred))):.2f}")
    return _save(fig, path)


def confusion_matrix_plot(matrix, class_names, path, title: str = "") -> Path:
    matrix = np.asarray(matrix)
    size = 1.2 * len(class_names)
    fig = _figure((size + 2, size + 1.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center",
                color="white" if v > matrix.max() / 2 else "black")
    ax.set_title(title)
    return _save(fig, path)


def segmentation_overlay(image, labels, path, reference=None, title: str = "") -> Path:
    """The three mid-planes of ``image`` (x, y, z) with predicted (and reference) labels:
    predicted labels filled, reference labels outlined."""
    image, labels = np.asarray(image, float), np.asarray(labels)
    centre = [s // 2 for s in image.shape[:3]]
    if labels.any():  # centre the planes on the labelled region
        centre = [int(np.round(c.mean())) for c in np.nonzero(labels)]
    planes = [(lambda a: a[centre[0]], "sagittal"), (lambda a: a[:, centre[1]], "coronal"),
              (lambda a: a[:, :, centre[2]], "axial")]
    fig = _figure((12, 4))
    vmax = max(int(labels.max()), 1)
    for k, (cut, name) in enumerate(planes):
        ax = fig.add_subplot(1, 3, k + 1)
        ax.imshow(cut(image).T, cmap="gray", origin="lower")
        ax.imshow(np.ma.masked_equal(cut(labels).T, 0), cmap="autumn", alpha=0.45, vmin=1,
                  vmax=vmax, origin="lower", interpolation="nearest")
        if reference is not None:
            ax.contour((cut(np.asarray(reference)) > 0).T.astype(float), levels=[0.5],
                       colors="cyan", linewidths=0.8, origin="lower")
        ax.set_title(name)
        ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def slice_overlays(images, predictions, path, references=None, titles=None) -> Path:
    """A row of [0, 1] slices with the predicted mask filled and the reference outlined."""
    n = len(images)
    fig = _figure((3.2 * n, 3.5))
    for i in range(n):
        ax = fig.add_subplot(1, n, i + 1)
        ax.imshow(images[i], cmap="gray", vmin=0, vmax=1)
        ax.imshow(np.ma.masked_equal(np.asarray(predictions[i]), 0), cmap="autumn", alpha=0.45,
                  vmin=0, vmax=1, interpolation="nearest")
        if references is not None and np.any(references[i]):
            ax.contour(np.asarray(references[i]) > 0, levels=[0.5], colors="cyan",
                       linewidths=0.8)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


def embedding_scatter(points, labels, class_names, path, held_out=(), title: str = "") -> Path:
    """A 2D projection of embeddings (``points`` (n, 2)), one colour per class; classes in
    ``held_out`` (never trained on) are drawn as crosses and marked in the legend."""
    points, labels = np.asarray(points, float), np.asarray(labels)
    fig = _figure((5.5, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    colours = [f"C{i % 10}" for i in range(len(class_names))]
    for c, name in enumerate(class_names):
        chosen = labels == c
        if not chosen.any():
            continue
        unseen = name in held_out
        ax.scatter(points[chosen, 0], points[chosen, 1], s=18 if unseen else 12,
                   c=colours[c], marker="x" if unseen else "o", alpha=0.8,
                   label=f"{name} (held out)" if unseen else name)
    ax.set_xlabel("principal axis 1")
    ax.set_ylabel("principal axis 2")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title)
    return _save(fig, path)

"""Test-split summaries, one per kind of task, and the schema of ``metrics.json``.

Every task's ``metrics.json`` holds flat keys: ``split`` ("test"), ``items`` (test items:
subjects for 3D tasks, slices for 2D ones), ``subjects`` (patients), the summary's
metrics, and a baseline computed from the *training* split, never from the test split:

- segmentation (:func:`segmentation_summary`): per label ``dice_L``, ``sensitivity_L``,
  ``specificity_L``, ``hd95_mm_L`` (mean over the subjects where it is finite) and
  ``hd95_undefined_L`` (the others), ``mean_dice`` over the labels and ``per_label``;
  a constant all-background prediction scores Dice 0 on every label;
- regression (:func:`regression_summary`): ``mae``, ``rmse``, ``r2``, ``pearson_r``,
  ``mean_error`` and ``baseline_mae`` (predicting the training split's mean);
- classification (:func:`classification_summary`): ``accuracy``, ``balanced_accuracy``,
  ``roc_auc``, ``per_class``, ``confusion_matrix`` and ``baseline_accuracy`` (predicting
  the training split's most frequent class); multi-head models prefix each key with the
  head's name (``perspective_accuracy``).

The per-item table (``test_items.csv``) starts with ``item`` and ``subject``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from brain_tf.evaluation.reports import classification_report, regression_report

DISTANCES = ("hd95_mm", "asd_mm")
FLAT_SEGMENTATION = ("dice", "sensitivity", "specificity", "hd95_mm", "hd95_undefined")


def per_label_means(per_item: pd.DataFrame) -> pd.DataFrame:
    """Per-label means over subjects of a :func:`segmentation_metrics` table (columns
    ``item``/``subject``, ``label``, metrics); distances are averaged over their finite
    values and ``hd95_undefined`` counts the subjects whose HD95 was not finite."""
    rows = {}
    for name, group in per_item.groupby("label", sort=False):
        values = group.drop(columns=["item", "subject", "label"], errors="ignore")
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


def segmentation_summary(per_item: pd.DataFrame, labels: Sequence[str]) -> dict:
    """metrics.json entries of a segmentation: flat per-label keys, ``mean_dice`` over
    ``labels`` (the classes, not the regions) and ``per_label``."""
    summary = per_label_means(per_item)
    out: dict = {"mean_dice": float(summary.loc[list(labels), "dice"].mean())}
    for name, row in summary.iterrows():
        for key in FLAT_SEGMENTATION:
            if key in row and pd.notna(row[key]):
                value = row[key]
                out[f"{key}_{name}"] = int(value) if key == "hd95_undefined" else float(value)
    out["per_label"] = {name: row.dropna().to_dict() for name, row in summary.iterrows()}
    return out


def segmentation_lines(metrics: Mapping, subjects: int) -> list[str]:
    """Printable lines: the mean Dice, then one line per label or region."""
    lines = [f"test split ({subjects} subjects): mean Dice {metrics['mean_dice']:.3f}"]
    for name, row in metrics["per_label"].items():
        undefined = int(row.get("hd95_undefined", 0))
        note = f" (undefined for {undefined} of {subjects} subjects)" if undefined else ""
        hd95 = row.get("hd95_mm", float("nan"))
        lines.append(f"  {name:>18}: Dice {row['dice']:.3f}  sensitivity "
                     f"{row.get('sensitivity', float('nan')):.3f}  specificity "
                     f"{row.get('specificity', float('nan')):.4f}  HD95 {hd95:.1f} mm{note}")
    return lines


def regression_summary(truth, pred, train_values) -> dict:
    """MAE, RMSE, R^2, Pearson r and bias of ``pred``, and ``baseline_mae``: the MAE of
    predicting the mean of ``train_values`` (the training split's targets)."""
    truth = np.asarray(truth, float)
    report = regression_report(truth, np.asarray(pred, float)).iloc[0].to_dict()
    report.pop("n")
    baseline = float(np.abs(truth - float(np.mean(np.asarray(train_values, float)))).mean())
    return {**report, "baseline_mae": baseline}


def regression_line(metrics: Mapping, items: int, what: str = "") -> str:
    return (f"test split ({items} subjects{what}): MAE {metrics['mae']:.2f}  RMSE "
            f"{metrics['rmse']:.2f}  R2 {metrics['r2']:.3f}  (predicting the training mean: "
            f"MAE {metrics['baseline_mae']:.2f})")


def classification_summary(truth, probs, classes: Sequence[str], train_truth,
                           prefix: str = "") -> dict:
    """Accuracy, balanced accuracy, ROC-AUC, per-class report and confusion matrix of the
    class probabilities ``probs`` (n, K) against class indices ``truth``, and
    ``baseline_accuracy``: the accuracy of always predicting the most frequent class of
    ``train_truth`` (the training split's class indices). Keys get ``prefix``."""
    truth = np.asarray(truth, np.int64)
    probs = np.asarray(probs, float)
    pred = probs.argmax(axis=1).astype(np.int64)
    report = classification_report(truth, pred, probs, class_names=list(classes))
    summary = report.summary.iloc[0]
    majority = int(np.bincount(np.asarray(train_truth, np.int64), minlength=len(classes))
                   .argmax())
    out = {"accuracy": float(summary["accuracy"]),
           "balanced_accuracy": float(summary["balanced_accuracy"]),
           "roc_auc": float(summary["roc_auc"]),
           "baseline_accuracy": float((truth == majority).mean()),
           "baseline_class": str(classes[majority]),
           "per_class": report.per_class.to_dict(orient="records"),
           "confusion_matrix": report.confusion_matrix.to_numpy().tolist()}
    return {f"{prefix}{k}": v for k, v in out.items()}


def classification_line(metrics: Mapping, prefix: str = "") -> str:
    return (f"{prefix.rstrip('_') or 'accuracy'}: accuracy {metrics[prefix + 'accuracy']:.3f}  "
            f"balanced {metrics[prefix + 'balanced_accuracy']:.3f}  (training majority class "
            f"{metrics[prefix + 'baseline_class']}: {metrics[prefix + 'baseline_accuracy']:.3f})")

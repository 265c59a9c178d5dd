"""Regression and classification reports as pandas DataFrames."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

from brain_tf.errors import DataError


def _same_length(y_true, y_pred, what: str) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape:
        raise DataError(f"{what}: y_true and y_pred must be 1D with equal lengths, got shapes "
                        f"{y_true.shape} and {y_pred.shape}")
    if y_true.size == 0:
        raise DataError(f"{what}: no samples to evaluate")
    return y_true, y_pred


def regression_report(y_true, y_pred) -> pd.DataFrame:
    """One-row DataFrame with ``n, mae, rmse, r2, pearson_r, mean_error``
    (``mean_error`` = mean of prediction - truth, the bias). R2 and r are NaN
    when undefined (fewer than 2 samples or a constant input)."""
    y_true, y_pred = _same_length(y_true, y_pred, "regression_report")
    y_true, y_pred = y_true.astype(float), y_pred.astype(float)
    if not (np.isfinite(y_true).all() and np.isfinite(y_pred).all()):
        raise DataError("regression_report: y_true and y_pred must be finite (found NaN/inf)")
    error = y_pred - y_true
    varied = y_true.size > 1 and np.ptp(y_true) > 0
    r = (float(stats.pearsonr(y_true, y_pred)[0])
         if varied and np.ptp(y_pred) > 0 else float("nan"))
    return pd.DataFrame([{
        "n": int(y_true.size),
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt(np.square(error).mean())),
        "r2": float(skm.r2_score(y_true, y_pred)) if varied else float("nan"),
        "pearson_r": r,
        "mean_error": float(error.mean()),
    }])


@dataclass
class ClassificationReport:
    """``summary``: one row (n, accuracy, balanced_accuracy, roc_auc macro
    one-vs-rest); ``per_class``: one row per class (precision, recall, f1,
    support, roc_auc one-vs-rest); ``confusion_matrix``: counts, rows = true
    class, columns = predicted class."""

    summary: pd.DataFrame
    per_class: pd.DataFrame
    confusion_matrix: pd.DataFrame


def _auc(binary_truth: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC, NaN when only one class is present."""
    if binary_truth.all() or not binary_truth.any():
        return float("nan")
    return float(skm.roc_auc_score(binary_truth, score))


def classification_report(y_true, y_pred, y_prob=None,
                          class_names: Sequence[str] | None = None) -> ClassificationReport:
    """Accuracy, balanced accuracy, per-class precision/recall/F1, confusion
    matrix and (with ``y_prob``) ROC-AUC.

    ``y_true`` and ``y_pred`` hold class indices 0..K-1; ``y_prob`` is an
    (n, K) array of class probabilities. ``class_names`` names the K classes
    (default: the indices). ROC-AUC of a class absent from ``y_true`` is NaN
    and left out of the macro mean.
    """
    y_true, y_pred = _same_length(y_true, y_pred, "classification_report")
    if not (np.issubdtype(y_true.dtype, np.integer) and np.issubdtype(y_pred.dtype, np.integer)):
        raise DataError("classification_report: y_true and y_pred must be integer class "
                        "indices; map class names to indices first")
    if y_true.min() < 0 or y_pred.min() < 0:
        raise DataError("classification_report: class indices must be >= 0")
    k = int(max(y_true.max(), y_pred.max())) + 1
    if y_prob is not None:
        y_prob = np.asarray(y_prob, dtype=float)
        if y_prob.ndim != 2 or y_prob.shape[0] != y_true.size:
            raise DataError(f"classification_report: y_prob must be (n, classes) with n = "
                            f"{y_true.size}, got {y_prob.shape}")
        k = max(k, y_prob.shape[1])
    if class_names is not None:
        if len(class_names) < k:
            raise DataError(f"classification_report: {len(class_names)} class_names for "
                            f"{k} classes; give one name per class index")
        k = len(class_names)
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(k)]
    indices = list(range(k))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=indices, zero_division=np.nan)
    aucs = [float("nan")] * k
    if y_prob is not None:
        if y_prob.shape[1] != k:
            raise DataError(f"classification_report: y_prob has {y_prob.shape[1]} columns "
                            f"for {k} classes")
        aucs = [_auc(y_true == c, y_prob[:, c]) for c in indices]
    per_class = pd.DataFrame({"class": names, "precision": precision, "recall": recall,
                              "f1": f1, "support": support.astype(int), "roc_auc": aucs})
    present = [a for a in aucs if not np.isnan(a)]
    summary = pd.DataFrame([{
        "n": int(y_true.size),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(np.nanmean(np.where(support > 0, recall, np.nan))),
        "roc_auc": float(np.mean(present)) if present else float("nan"),
    }])
    confusion = pd.DataFrame(skm.confusion_matrix(y_true, y_pred, labels=indices),
                             index=pd.Index(names, name="true"),
                             columns=pd.Index(names, name="predicted"))
    return ClassificationReport(summary, per_class, confusion)

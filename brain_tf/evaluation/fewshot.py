"""Few-shot scoring of an embedding: nearest-centroid labels from a few labelled slices.

A *draw* splits the test patients at random into *support* patients and *query*
patients (never both). For each ``k`` of ``shots``, ``k`` slices of each class are taken
at random from the support patients (all of them when a class has fewer), each class's
centroid is the mean of their embeddings, and every slice of the query patients gets the
class of its nearest centroid (Euclidean distance). Accuracies are averaged over
``draws`` seeded draws.

``metrics.json`` keys of :func:`fewshot_summary` (flat, as in
:mod:`brain_tf.evaluation.summaries`), for each ``k``:

- ``k{k}_accuracy`` (mean over draws of the draw's accuracy over its query slices) and
  ``k{k}_accuracy_std`` (standard deviation over draws);
- ``k{k}_seen_accuracy`` and ``k{k}_held_out_accuracy``: the same over the query slices
  of the classes the embedding was trained on, and of those it never saw (every class's
  centroid is a candidate for every query slice);
- ``k{k}_per_class``: accuracy per true class over all draws;

and ``baseline_accuracy``: chance, ``1 / classes`` (a support set defines the classes,
so no training-split majority class exists); ``classifier_accuracy`` when a classifier's
test accuracy is given.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from brain_tf.errors import DataError


def centroids(embeddings, labels, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(centroids (classes, dim), present (classes,) bool)``: the mean embedding of each
    class id ``0..classes-1`` among ``labels`` (NaN rows for absent classes)."""
    embeddings = np.asarray(embeddings, np.float64)
    labels = np.asarray(labels, np.int64)
    out = np.full((classes, embeddings.shape[1]), np.nan)
    present = np.zeros(classes, bool)
    for c in np.unique(labels):
        out[c] = embeddings[labels == c].mean(axis=0)
        present[c] = True
    return out, present


def nearest(embeddings, centres) -> tuple[np.ndarray, np.ndarray]:
    """``(order, distances)``: for each embedding, the rows of ``centres`` from the nearest
    to the farthest, and the Euclidean distances in that order (both ``(n, centres)``)."""
    embeddings = np.asarray(embeddings, np.float64)
    centres = np.asarray(centres, np.float64)
    d = np.sqrt(np.maximum(((embeddings[:, None, :] - centres[None, :, :]) ** 2).sum(-1), 0))
    order = np.argsort(d, axis=1, kind="stable")
    return order, np.take_along_axis(d, order, axis=1)


def split_patients(patients: Sequence[str], support_fraction: float,
                   rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """A random split of ``patients`` into support and query patients (both non-empty)."""
    patients = sorted(set(patients))
    if len(patients) < 2:
        raise DataError(f"few-shot scoring needs at least two test patients (support and "
                        f"query), the test split has {len(patients)}; add subjects or raise "
                        "data.fractions.test")
    order = [patients[i] for i in rng.permutation(len(patients))]
    n = int(np.clip(round(support_fraction * len(patients)), 1, len(patients) - 1))
    return sorted(order[:n]), sorted(order[n:])


def fewshot_draws(embeddings, labels, subjects, classes: int, shots: Sequence[int] = (1, 5),
                  draws: int = 20, support_fraction: float = 0.5, seed: int = 0
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Nearest-centroid labels of query slices from ``k``-shot support sets.

    ``embeddings`` (n, dim), ``labels`` (class ids 0..classes-1) and ``subjects`` (patient
    of each slice) describe the scored slices. Returns ``(draws, predictions)``: one row
    per draw and ``k`` (``draw``, ``k``, ``support_patients``, ``query_patients``,
    ``queries``, ``accuracy``), and one row per labelled query slice (``draw``, ``k``,
    ``index`` into the inputs, ``true``, ``predicted``). Query slices of a class without
    support slices in that draw are not labelled (their count is ``unlabelled``).
    """
    embeddings = np.asarray(embeddings, np.float64)
    labels = np.asarray(labels, np.int64)
    subjects = np.asarray(subjects).astype(str)
    rng = np.random.default_rng(seed)
    summary, predictions = [], []
    for draw in range(int(draws)):
        support, query = split_patients(subjects, support_fraction, rng)
        in_support, in_query = np.isin(subjects, support), np.isin(subjects, query)
        for k in shots:
            chosen = []
            for c in range(classes):
                pool = np.flatnonzero(in_support & (labels == c))
                if len(pool):
                    chosen += list(rng.choice(pool, size=min(int(k), len(pool)), replace=False))
            chosen = np.array(sorted(chosen), np.int64)
            centres, present = centroids(embeddings[chosen], labels[chosen], classes)
            candidates = np.flatnonzero(present)
            queries = np.flatnonzero(in_query & present[labels])
            order, _ = nearest(embeddings[queries], centres[candidates])
            predicted = candidates[order[:, 0]]
            correct = predicted == labels[queries]
            summary.append({"draw": draw, "k": int(k), "support_patients": ";".join(support),
                            "query_patients": ";".join(query), "queries": len(queries),
                            "unlabelled": int((in_query & ~present[labels]).sum()),
                            "accuracy": float(correct.mean()) if len(queries) else np.nan})
            predictions.append(pd.DataFrame({"draw": draw, "k": int(k), "index": queries,
                                             "true": labels[queries], "predicted": predicted}))
    return pd.DataFrame(summary), pd.concat(predictions, ignore_index=True)


def _mean_over_draws(predictions: pd.DataFrame, rows) -> tuple[float, float]:
    chosen = predictions[rows]
    if not len(chosen):
        return float("nan"), float("nan")
    per_draw = (chosen["true"] == chosen["predicted"]).groupby(chosen["draw"]).mean()
    return float(per_draw.mean()), float(per_draw.std(ddof=0))


def fewshot_summary(predictions: pd.DataFrame, classes: Sequence[str],
                    held_out: Sequence[str] = (), classifier_accuracy: float | None = None
                    ) -> dict:
    """The metrics.json entries (see the module docstring) of :func:`fewshot_draws`'
    ``predictions``; ``classes`` names the class ids, ``held_out`` those never trained on."""
    classes = [str(c) for c in classes]
    unseen = np.isin(np.array(classes), [str(h) for h in held_out])
    out: dict = {"classes": classes, "held_out_classes": [c for c in classes if c in held_out],
                 "shots": sorted(int(k) for k in predictions["k"].unique()),
                 "draws": int(predictions["draw"].nunique()),
                 "baseline_accuracy": 1.0 / len(classes)}
    for k in out["shots"]:
        rows = predictions["k"] == k
        held = unseen[predictions["true"].to_numpy()]
        out[f"k{k}_accuracy"], out[f"k{k}_accuracy_std"] = _mean_over_draws(predictions, rows)
        out[f"k{k}_seen_accuracy"], _ = _mean_over_draws(predictions, rows & ~held)
        if unseen.any():
            out[f"k{k}_held_out_accuracy"], _ = _mean_over_draws(predictions, rows & held)
        chosen = predictions[rows]
        hits = (chosen["true"] == chosen["predicted"]).groupby(chosen["true"]).mean()
        out[f"k{k}_per_class"] = {classes[c]: float(v) for c, v in hits.items()}
    if classifier_accuracy is not None:
        out["classifier_accuracy"] = float(classifier_accuracy)
    return out


def fewshot_lines(metrics: dict) -> list[str]:
    """Printable lines: per ``k``, the accuracy (seen / held-out classes) beside chance."""
    lines = []
    for k in metrics["shots"]:
        line = (f"{k}-shot nearest centroid: accuracy {metrics[f'k{k}_accuracy']:.3f} "
                f"(+- {metrics[f'k{k}_accuracy_std']:.3f} over {metrics['draws']} draws)")
        if f"k{k}_held_out_accuracy" in metrics:
            line += (f"; seen classes {metrics[f'k{k}_seen_accuracy']:.3f}, held-out "
                     f"{'/'.join(metrics['held_out_classes'])} "
                     f"{metrics[f'k{k}_held_out_accuracy']:.3f}")
        lines.append(line)
    extra = (f", classifier {metrics['classifier_accuracy']:.3f}"
             if "classifier_accuracy" in metrics else "")
    lines.append(f"chance {metrics['baseline_accuracy']:.3f} ({len(metrics['classes'])} "
                 f"classes){extra}")
    return lines


def pca_2d(embeddings) -> np.ndarray:
    """The embeddings' coordinates ``(n, 2)`` on their first two principal axes (each axis
    signed so that its largest loading is positive)."""
    x = np.asarray(embeddings, np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    axes = vt[:2]
    if len(axes) < 2:
        axes = np.vstack([axes, np.zeros((2 - len(axes), x.shape[1]))])
    signs = np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])
    return x @ (axes * np.where(signs == 0, 1.0, signs)[:, None]).T

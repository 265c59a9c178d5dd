"""Predicting many items a batch at a time, optionally with MC-dropout statistics."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from brain_tf.inference.calling import predict_batch, select_output
from brain_tf.inference.mc_dropout import mc_dropout_predict, seed_random_layers


def predict_in_batches(model, load: Callable[[Sequence[int]], np.ndarray], n: int,
                       batch_size: int, passes: int = 0, kind: str = "classifier",
                       seed: int | None = None) -> tuple[dict, dict | None]:
    """Outputs of ``model`` for items ``0..n-1``, where ``load(indices)`` returns their
    input batch; inputs are loaded one batch at a time, so memory does not grow with ``n``.

    Returns ``(mean, std)``: dicts head name -> array (the key ``None`` for a
    single-output model). Without ``passes`` ``mean`` is the model's output and ``std`` is
    None; with ``passes`` (a model with MC dropout) they are the mean and standard
    deviation over that many stochastic passes (see :func:`mc_dropout_predict`).
    With ``seed`` the model's random layers (MC dropout) are seeded once before the first
    batch (:func:`seed_random_layers`), so the same items give the same outputs every time.
    """
    if seed is not None:
        seed_random_layers(model, seed)
    means, stds = [], []
    for start in range(0, n, batch_size):
        batch = load(range(start, min(n, start + batch_size)))
        if passes:
            stats = mc_dropout_predict(model, batch, passes=passes, batch_size=batch_size,
                                       kind=kind)
            heads = stats if isinstance(next(iter(stats.values())), dict) else {None: stats}
            means.append({k: v["mean"] for k, v in heads.items()})
            stds.append({k: v["std"] for k, v in heads.items()})
        else:
            out = predict_batch(model, batch)
            means.append(out if isinstance(out, dict) else {None: select_output(out)})

    def join(parts):
        return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]}

    return join(means), join(stds) if stds else None

"""Monte Carlo dropout: repeated stochastic predictions as an uncertainty estimate.

A model built with :class:`brain_tf.models.layers.MCDropout` samples a new
dropout mask on every call, while everything else (BatchNorm included) stays
in inference mode. :func:`mc_dropout_predict` runs ``passes`` such
predictions and summarises them per sample:

classifiers (softmax outputs, or a single sigmoid with ``kind="classifier"``)
    ``mean`` and ``std`` of each class probability over the passes,
    ``entropy`` -- the predictive entropy H(mean) in nats -- and
    ``mutual_information`` -- H(mean) minus the mean entropy of the single
    passes, the part of the uncertainty due to the model (BALD).
regressors
    ``mean`` and ``std`` of each output.

``std`` is the population standard deviation over the passes (ddof = 0). The
statistics are merged pass group by pass group (Chan's parallel algorithm)
in float64, so no pass is kept unless ``keep_samples=True``, and identical
passes (dropout rate 0) give a standard deviation of exactly 0.

The dropout masks come from each layer's random state, a variable saved with the model
and advanced by every call. :func:`seed_random_layers` sets those states from a seed, so
that the passes after it are the same in every process, for a model in memory or loaded
from its file: the tasks seed them from the run's ``data.seed`` before they predict, which
makes evaluating a finished run (and predicting) give the same numbers every time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from brain_tf.errors import ConfigError, DataError
from brain_tf.inference.calling import predict_batch

KINDS = ("auto", "classifier", "regressor")


def seed_random_layers(model, seed: int) -> int:
    """Set the random state of every random layer of ``model`` (a Keras model, or anything
    with ``variables`` such as a loaded SavedModel) from ``seed``, each layer its own;
    returns how many states were set (0 for a model without random layers)."""
    states = [v for v in getattr(model, "variables", None) or ()
              if "seed_generator_state" in str(getattr(v, "path", None) or v.name)]
    for i, state in enumerate(states):
        start = int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0])
        state.assign([start, 0])
    return len(states)


def _leaves(tree) -> list[np.ndarray]:
    if isinstance(tree, dict):
        return [np.asarray(v) for v in tree.values()]
    if isinstance(tree, (list, tuple)):
        return [np.asarray(v) for v in tree]
    return [np.asarray(tree)]


def _map(fn, tree):
    if isinstance(tree, dict):
        return {k: fn(np.asarray(v)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [fn(np.asarray(v)) for v in tree]
    return fn(np.asarray(tree))


def _heads(result) -> list[tuple[Any, np.ndarray]]:
    if isinstance(result, dict):
        return list(result.items())
    if isinstance(result, list):
        return list(enumerate(result))
    return [(None, result)]


def _predict_heads(model, batch) -> tuple[str, list[tuple[Any, np.ndarray]]]:
    """Predict one batch: the result's form ("dict", "list", "array") and its heads."""
    result = predict_batch(model, batch)
    form = "dict" if isinstance(result, dict) else "list" if isinstance(result, list) else "array"
    return form, _heads(result)


def _entropy(p: np.ndarray, binary: bool, eps: float = 1e-12) -> np.ndarray:
    """Entropy in nats over the last axis (a single channel: a Bernoulli probability)."""
    p = np.clip(p, eps, 1.0)
    if binary:
        q = np.clip(1.0 - p, eps, 1.0)
        return -(p * np.log(p) + q * np.log(q))[..., 0]
    return -(p * np.log(p)).sum(axis=-1)


def _is_distribution(values: np.ndarray) -> bool:
    return (values.ndim >= 2 and values.shape[-1] > 1 and bool(np.all(values >= 0))
            and bool(np.allclose(values.sum(axis=-1), 1.0, atol=1e-3)))


class _RunningStats:
    """Mean, M2 (and for classifiers the mean entropy) merged over pass groups."""

    def __init__(self, kind: str, keep_samples: bool):
        self.kind, self.keep = kind, keep_samples
        self.count = 0
        self.mean = self.m2 = self.entropy_sum = None
        self.samples = []

    def update(self, values: np.ndarray) -> None:
        """Add a group of passes: ``values`` is (passes, samples, ...)."""
        values = values.astype(np.float64)
        group = values.shape[0]
        group_mean = values.mean(axis=0)
        group_m2 = ((values - group_mean) ** 2).sum(axis=0)
        if self.count == 0:
            self.mean, self.m2 = group_mean, group_m2
            self.entropy_sum = np.zeros(values.shape[1:-1]) if self.kind == "classifier" else None
        else:
            total = self.count + group
            delta = group_mean - self.mean
            self.mean = self.mean + delta * (group / total)
            self.m2 = self.m2 + group_m2 + delta ** 2 * (self.count * group / total)
        self.count += group
        if self.entropy_sum is not None:
            binary = values.shape[-1] == 1
            self.entropy_sum += _entropy(values, binary).sum(axis=0)
        if self.keep:
            self.samples.append(values.astype(np.float32))

    def summary(self) -> dict[str, np.ndarray]:
        out = {"mean": self.mean.astype(np.float32),
               "std": np.sqrt(self.m2 / self.count).astype(np.float32)}
        if self.kind == "classifier":
            entropy = _entropy(self.mean, self.mean.shape[-1] == 1)
            out["entropy"] = entropy.astype(np.float32)
            out["mutual_information"] = np.maximum(
                entropy - self.entropy_sum / self.count, 0.0).astype(np.float32)
        if self.keep:
            out["samples"] = np.concatenate(self.samples, axis=0)
        return out


def _kind_for(kind, key, values: np.ndarray) -> str:
    chosen = kind.get(key, "auto") if isinstance(kind, dict) else kind
    if chosen not in KINDS:
        raise ConfigError(f"kind={chosen!r}: must be one of {KINDS}")
    if chosen == "auto":
        return "classifier" if _is_distribution(values) else "regressor"
    return chosen


def mc_dropout_predict(
    model,
    inputs,
    passes: int = 20,
    batch_size: int = 32,
    kind="auto",
    keep_samples: bool = False,
    seed: int | None = None,
):
    """Run ``passes`` stochastic predictions and summarise them per sample.

    Args:
        model: a Keras model with MCDropout layers (or any callable whose
            output varies from call to call). It is called in inference mode.
        inputs: a batch (n, ...) -- an array, or a dict/list of arrays for a
            multi-input model.
        passes: number of stochastic passes T.
        batch_size: most rows per model call. When n < batch_size, several
            passes go into one call (the inputs repeated, each row with its
            own dropout mask; the number of passes per call divides ``passes``).
        kind: ``"auto"`` (classifier when an output is a probability
            distribution over its last axis, else regressor),
            ``"classifier"``, ``"regressor"``, or a dict per output head.
        keep_samples: also return every pass (``samples``, (T, n, ...)).
        seed: when given, the model's random layers are seeded with it first
            (:func:`seed_random_layers`): the same call gives the same numbers.

    Returns:
        For a single-output model, a dict of arrays (see the module
        docstring); for a dict/list-output model, one such dict per head in
        the same structure.
    """
    if int(passes) < 1:
        raise ConfigError(f"passes={passes}: need at least one pass")
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size}: must be at least 1")
    passes, batch_size = int(passes), int(batch_size)
    lengths = {len(leaf) for leaf in _leaves(inputs)}
    if len(lengths) != 1 or 0 in lengths:
        raise DataError(f"inputs have batch sizes {sorted(lengths)}; give one non-empty batch "
                        "(n, ...) per model input, all with the same n")
    n = lengths.pop()
    if seed is not None:
        seed_random_layers(model, seed)

    per_call, repeated = 1, None
    if n <= batch_size:
        # passes per call: a divisor of ``passes``, so every call has the same
        # shape (one graph, and the same arithmetic in every pass)
        per_call = max(d for d in range(1, min(batch_size // n, passes) + 1) if passes % d == 0)
        repeated = _map(lambda x: np.concatenate([x] * per_call, axis=0), inputs)
    stats: dict | None = None
    form = "array"
    done = 0
    while done < passes:
        if repeated is not None:
            group = per_call
            form, heads = _predict_heads(model, repeated)
            heads = [(k, v.reshape(group, n, *v.shape[1:])) for k, v in heads]
        else:
            group = 1
            parts = [_predict_heads(model, _map(lambda x: x[i:i + batch_size], inputs))
                     for i in range(0, n, batch_size)]
            form = parts[0][0]
            heads = [(key, np.concatenate([p[1][h][1] for p in parts], axis=0)[None])
                     for h, (key, _) in enumerate(parts[0][1])]
        if stats is None:
            stats = {key: _RunningStats(_kind_for(kind, key, values[0]), keep_samples)
                     for key, values in heads}
        for key, values in heads:
            stats[key].update(values)
        done += group

    summaries = {key: s.summary() for key, s in stats.items()}
    if form == "dict":
        return summaries
    if form == "list":
        return [summaries[i] for i in range(len(summaries))]
    return summaries[None]

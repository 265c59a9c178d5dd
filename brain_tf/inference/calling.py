"""Calling a Keras model or a plain callable on a numpy batch.

Keras models go through ``predict_on_batch`` (a compiled graph, inference
mode: BatchNorm uses its moving statistics; MCDropout layers stay active by
design). Any other callable is called directly and its result converted to
numpy. Multi-output results are reduced to one output with ``output`` (a
dict key, a list index, or the name of an output layer).
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import numpy as np

from brain_tf.errors import ModelError


def to_numpy(value) -> np.ndarray:
    """A numpy array from a numpy array, a tensor or anything array-like."""
    if isinstance(value, np.ndarray):
        return value
    return np.asarray(keras.ops.convert_to_numpy(value))


def predict_batch(model, batch):
    """Run ``model`` on one batch; numpy out, structure (dict/list) kept."""
    if isinstance(model, keras.Model):
        result = model.predict_on_batch(batch)
    elif callable(model):
        result = model(batch)
    else:
        raise ModelError(f"{type(model).__name__}: not a Keras model or a callable; pass a "
                         "model that maps a batch of inputs to a batch of outputs")
    if isinstance(result, dict):
        return {k: to_numpy(v) for k, v in result.items()}
    if isinstance(result, (list, tuple)):
        return [to_numpy(v) for v in result]
    return to_numpy(result)


def select_output(result, output: Any = None, model=None) -> np.ndarray:
    """One array (or tensor) out of a model result: ``output`` picks a head of a
    multi-output result (a dict or a list)."""
    if not isinstance(result, (dict, list, tuple)):
        return result
    if isinstance(result, dict):
        if output is None and len(result) == 1:
            return next(iter(result.values()))
        if output in result:
            return result[output]
        raise ModelError(f"model outputs {sorted(result)}: pass output= one of these names")
    if output is None and len(result) == 1:
        return result[0]
    if isinstance(output, (int, np.integer)) and -len(result) <= output < len(result):
        return result[output]
    names = list(getattr(model, "output_names", None) or [])
    if isinstance(output, str) and output in names and len(names) == len(result):
        return result[names.index(output)]
    raise ModelError(f"model has {len(result)} outputs {names or ''}: pass output= an index "
                     "or output name")


def make_predictor(model, output=None) -> Callable[[np.ndarray], np.ndarray]:
    """A function batch -> one numpy array, for single-output prediction loops."""

    def predictor(batch: np.ndarray) -> np.ndarray:
        return select_output(predict_batch(model, batch), output, model)

    return predictor

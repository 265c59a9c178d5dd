"""Streaming segmentation metrics (registered Keras objects, 2D or 3D, channels-last).

``y_true`` is one-hot with the shape of ``y_pred`` (see :mod:`brain_tf.losses`).
Predictions are binarised by an explicit ``output_activation``:

- ``"sigmoid"``: each channel is its own mask, ``p >= threshold`` (0.5);
- ``"softmax"``: the argmax over channels gives one class per voxel.

The metrics accumulate per-class voxel counts over every batch since the
last ``reset_state()`` (so an epoch's value is computed on all its voxels,
not averaged over batches) and report one class (``class_id``) or the mean
over classes. The class count is read from the first batch, so every option
has a default and :func:`get` can build a metric from its registered name
alone (``get("brain_tf>DiceCoefficient")``). Empty cases: Dice is 1 when a class is
absent from both prediction and reference (as in :mod:`brain_tf.evaluation`);
sensitivity with no reference positives, or specificity with no reference
negatives, is undefined: that class is left out of the mean, and a metric
with nothing defined reports NaN.
"""

from __future__ import annotations

import keras
from keras import ops

from brain_tf.config import from_registry
from brain_tf.errors import ConfigError


class _ConfusionMetric(keras.metrics.Metric):
    """Per-class true/false positive/negative counts accumulated over batches.

    Subclasses define ``per_class()``: the metric for every class as a tensor
    of shape (num_classes,), NaN where it is undefined.
    """

    def __init__(self, class_id: int | None = None, output_activation: str = "sigmoid",
                 threshold: float = 0.5, include_background: bool = True,
                 name: str | None = None, dtype=None):
        super().__init__(name=name, dtype=dtype or "float32")
        if output_activation not in ("sigmoid", "softmax"):
            raise ConfigError(f"{self.name}: output_activation must be 'sigmoid' or 'softmax', "
                              f"got {output_activation!r}")
        if not 0.0 < float(threshold) < 1.0:
            raise ConfigError(f"{self.name}: threshold must be in (0, 1), got {threshold}")
        if class_id is not None and int(class_id) < 0:
            raise ConfigError(f"{self.name}: class_id must be >= 0, got {class_id}")
        self.class_id = None if class_id is None else int(class_id)
        self.output_activation = output_activation
        self.threshold = float(threshold)
        self.include_background = bool(include_background)
        self._counts_built = False

    def _build_counts(self, channels):
        if channels is None:
            raise ConfigError(f"{self.name}: the channel count of y_pred must be known")
        if self.class_id is not None and self.class_id >= channels:
            raise ConfigError(f"{self.name}: class_id={self.class_id} but y_pred has only "
                              f"{channels} channels")
        self.num_classes = int(channels)
        for count in ("tp", "fp", "fn", "tn"):
            setattr(self, count, self.add_variable(shape=(channels,), initializer="zeros",
                                                   dtype=self.dtype, name=count))
        self._counts_built = True

    def _binarize(self, y_true, y_pred):
        if self.output_activation == "softmax":
            channels = y_pred.shape[-1]
            pred = ops.one_hot(ops.argmax(y_pred, axis=-1), channels, dtype=self.dtype)
            true = ops.one_hot(ops.argmax(y_true, axis=-1), channels, dtype=self.dtype)
            return true, pred
        pred = ops.cast(y_pred >= self.threshold, self.dtype)
        true = ops.cast(y_true >= 0.5, self.dtype)
        return true, pred

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        if not self._counts_built:
            self._build_counts(y_pred.shape[-1])
        true, pred = self._binarize(y_true, y_pred)
        if sample_weight is not None:
            weight = ops.cast(sample_weight, self.dtype)
            while len(weight.shape) < len(pred.shape):
                weight = ops.expand_dims(weight, -1)
        else:
            weight = ops.ones_like(pred[..., :1])
        axes = list(range(len(pred.shape) - 1))
        self.tp.assign_add(ops.sum(weight * true * pred, axis=axes))
        self.fp.assign_add(ops.sum(weight * (1.0 - true) * pred, axis=axes))
        self.fn.assign_add(ops.sum(weight * true * (1.0 - pred), axis=axes))
        self.tn.assign_add(ops.sum(weight * (1.0 - true) * (1.0 - pred), axis=axes))

    def reset_state(self):
        if self._counts_built:
            for count in (self.tp, self.fp, self.fn, self.tn):
                count.assign(ops.zeros_like(count))

    def result(self):
        if not self._counts_built:
            return ops.convert_to_tensor(float("nan"), self.dtype)
        values = self.per_class()
        if self.class_id is not None:
            return values[self.class_id]
        if not self.include_background:
            values = values[1:]
        defined = ops.logical_not(ops.isnan(values))
        total = ops.sum(ops.where(defined, values, 0.0))
        return total / ops.sum(ops.cast(defined, self.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(class_id=self.class_id, output_activation=self.output_activation,
                      threshold=self.threshold, include_background=self.include_background)
        return config


def _ratio(numerator, denominator):
    """numerator / denominator, NaN where the denominator is 0."""
    safe = ops.where(denominator > 0, denominator, 1.0)
    return ops.where(denominator > 0, numerator / safe, float("nan"))


@keras.saving.register_keras_serializable(package="brain_tf")
class DiceCoefficient(_ConfusionMetric):
    """Dice ``2 TP / (2 TP + FP + FN)`` per class (1 when the class is absent
    from prediction and reference), for one ``class_id`` or averaged over
    classes (``include_background=False`` leaves channel 0 out of the mean)."""

    def __init__(self, class_id=None, output_activation="sigmoid", threshold=0.5,
                 include_background=True, name="dice", dtype=None):
        super().__init__(class_id, output_activation, threshold, include_background, name, dtype)

    def per_class(self):
        denominator = 2.0 * self.tp + self.fp + self.fn
        return ops.where(denominator > 0, _ratio(2.0 * self.tp, denominator), 1.0)


@keras.saving.register_keras_serializable(package="brain_tf")
class Sensitivity(_ConfusionMetric):
    """Sensitivity (recall) ``TP / (TP + FN)`` per class or averaged over classes."""

    def __init__(self, class_id=None, output_activation="sigmoid", threshold=0.5,
                 include_background=True, name="sensitivity", dtype=None):
        super().__init__(class_id, output_activation, threshold, include_background, name, dtype)

    def per_class(self):
        return _ratio(self.tp, self.tp + self.fn)


@keras.saving.register_keras_serializable(package="brain_tf")
class Specificity(_ConfusionMetric):
    """Specificity ``TN / (TN + FP)`` per class or averaged over classes."""

    def __init__(self, class_id=None, output_activation="sigmoid", threshold=0.5,
                 include_background=True, name="specificity", dtype=None):
        super().__init__(class_id, output_activation, threshold, include_background, name, dtype)

    def per_class(self):
        return _ratio(self.tn, self.tn + self.fp)


METRICS = {cls.__name__: cls for cls in (DiceCoefficient, Sensitivity, Specificity)}


def get(identifier, **config) -> keras.metrics.Metric:
    """A brain_tf metric from its registered name and options, for ``compile``.

    Keras resolves only its built-in metrics from strings, so
    ``compile(metrics=[get("DiceCoefficient", class_id=0)])`` (or the name
    ``"brain_tf>DiceCoefficient"``) is how a configuration picks one by name.
    A dict ``{"class_name": ..., "config": {...}}`` and a Metric instance
    (returned unchanged) are accepted too.
    """
    return from_registry(METRICS, keras.metrics.Metric, "metric", identifier, config)

"""Segmentation and metric-learning losses (registered Keras objects).

``y_true`` is a one-hot (or soft) float tensor with the shape of ``y_pred``,
``(batch, *spatial, channels)``; ``y_pred`` holds probabilities (the output
of a sigmoid or softmax head). For softmax heads channel 0 is background;
sigmoid heads (system C) have no background channel.

- :class:`SoftDiceLoss`: MONAI-style flags. System C's loss
  ``1 - mean_c (2 sum(p q) + 1e-5) / (sum p^2 + sum q^2 + 1e-5)`` with sums
  over the spatial axes is ``SoftDiceLoss(squared_pred=True)`` with the
  default smoothing, ``include_background=True`` and ``batch_dice=False``.
- :class:`WeightedCrossEntropy`: cross-entropy with per-class weights.
- :class:`DiceCELoss`: ``dice_weight * Dice + ce_weight * CE`` (system B:
  ``DiceCELoss(class_weights=[0.1, 0.45, 0.45])`` with the defaults
  0.5/0.5 and Dice over the foreground classes).

Metric-learning losses (system E's Siamese embedding) take ``y_true`` = class ids
``(batch,)`` and ``y_pred`` = embeddings ``(batch, dim)``; they compare every pair of the
batch, so a batch needs several samples of each class
(:func:`brain_tf.pipeline.balanced.class_balanced_dataset`):

- :class:`ContrastiveLoss`: pairs, ``d^2`` for a pair of one class and
  ``max(0, margin - d)^2`` for a pair of two classes, averaged over the batch's pairs;
- :class:`TripletSemiHardLoss`: triplets ``max(0, margin + d(a, p) - d(a, n))`` over the
  batch's anchor-positive pairs, each with its semi-hard negative
  (:func:`semi_hard_negatives`).

Distances are Euclidean (``d``, not ``d^2``).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from brain_tf.config import from_registry
from brain_tf.errors import ConfigError

_EPSILON = 1e-7
_ACTIVATIONS = ("softmax", "sigmoid")


def _check_activation(output_activation: str) -> str:
    if output_activation not in _ACTIVATIONS:
        raise ConfigError(f"output_activation must be 'softmax' or 'sigmoid', "
                          f"got {output_activation!r}")
    return output_activation


def _spatial_axes(y) -> list[int]:
    return list(range(1, len(y.shape) - 1))


@keras.saving.register_keras_serializable(package="brain_tf")
class SoftDiceLoss(keras.losses.Loss):
    """Soft Dice loss ``1 - mean_c (2 I_c + smooth_nr) / (D_c + smooth_dr)``.

    ``I_c = sum(p q)`` and ``D_c = sum(p) + sum(q)``, or ``sum(p^2) + sum(q^2)``
    with ``squared_pred=True``, summed over the spatial axes of each sample
    (``batch_dice=False``: one loss per sample, then the Keras reduction
    averages them) or over the batch as well (``batch_dice=True``: one loss
    for the batch, returned for every sample). ``include_background=False``
    drops channel 0 (softmax outputs). With ``smooth_dr > 0`` the loss and its
    gradient are finite everywhere, empty masks included: an empty class
    predicted empty scores a Dice of ``smooth_nr / smooth_dr`` (1 by default).
    """

    def __init__(self, include_background: bool = True, squared_pred: bool = False,
                 smooth_nr: float = 1e-5, smooth_dr: float = 1e-5, batch_dice: bool = False,
                 name: str = "soft_dice_loss", reduction: str = "sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if smooth_nr < 0 or smooth_dr < 0:
            raise ConfigError(f"smooth_nr and smooth_dr must be >= 0, got {smooth_nr}, "
                              f"{smooth_dr}")
        self.include_background = bool(include_background)
        self.squared_pred = bool(squared_pred)
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.batch_dice = bool(batch_dice)

    def dice_per_class(self, y_true, y_pred):
        """Soft Dice per class: shape (batch, C') or (1, C') with ``batch_dice``."""
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.cast(y_pred, "float32")
        if not self.include_background:
            if y_pred.shape[-1] is not None and y_pred.shape[-1] < 2:
                raise ConfigError("include_background=False needs at least two channels "
                                  f"(channel 0 is background), y_pred has {y_pred.shape[-1]}")
            y_true, y_pred = y_true[..., 1:], y_pred[..., 1:]
        axes = _spatial_axes(y_pred)
        if self.batch_dice:
            axes = [0] + axes
        intersection = ops.sum(y_true * y_pred, axis=axes, keepdims=False)
        if self.squared_pred:
            denominator = ops.sum(ops.square(y_true), axis=axes) + ops.sum(ops.square(y_pred),
                                                                            axis=axes)
        else:
            denominator = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
        dice = (2.0 * intersection + self.smooth_nr) / (denominator + self.smooth_dr)
        return ops.reshape(dice, (-1, dice.shape[-1])) if self.batch_dice else dice

    def call(self, y_true, y_pred):
        loss = 1.0 - ops.mean(self.dice_per_class(y_true, y_pred), axis=-1)
        if self.batch_dice:
            loss = ops.broadcast_to(loss, ops.shape(y_pred)[:1])
        return loss

    def get_config(self):
        config = super().get_config()
        config.update(include_background=self.include_background, squared_pred=self.squared_pred,
                      smooth_nr=self.smooth_nr, smooth_dr=self.smooth_dr,
                      batch_dice=self.batch_dice)
        return config


@keras.saving.register_keras_serializable(package="brain_tf")
class WeightedCrossEntropy(keras.losses.Loss):
    """Cross-entropy with per-class weights, one value per sample.

    ``output_activation="softmax"`` (channels are exclusive classes): the
    weighted mean over voxels ``sum_v w(v) CE(v) / sum_v w(v)`` with
    ``CE(v) = -sum_c q_c log p_c`` and ``w(v) = sum_c w_c q_c`` (the weight of
    the voxel's true class), as PyTorch's weighted ``CrossEntropyLoss`` computes
    per sample. ``output_activation="sigmoid"`` (independent channels): the
    mean over voxels of ``sum_c w_c BCE_c / sum_c w_c``. Without
    ``class_weights`` every class weighs 1 (plain mean cross-entropy).
    Probabilities are clipped to ``[1e-7, 1 - 1e-7]``.
    """

    def __init__(self, class_weights: Sequence[float] | None = None,
                 output_activation: str = "softmax", name: str = "weighted_cross_entropy",
                 reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.output_activation = _check_activation(output_activation)
        if class_weights is not None:
            class_weights = [float(w) for w in class_weights]
            if not class_weights or min(class_weights) < 0 or sum(class_weights) == 0:
                raise ConfigError(f"class_weights must be non-negative and not all 0, "
                                  f"got {class_weights}")
        self.class_weights = class_weights

    def _weights(self, channels):
        if self.class_weights is None:
            return ops.ones((channels,), "float32")
        if channels is not None and channels != len(self.class_weights):
            raise ConfigError(f"class_weights has {len(self.class_weights)} values but the "
                              f"output has {channels} channels; give one weight per channel")
        return ops.convert_to_tensor(self.class_weights, "float32")

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.clip(ops.cast(y_pred, "float32"), _EPSILON, 1.0 - _EPSILON)
        weights = self._weights(y_pred.shape[-1])
        axes = _spatial_axes(y_pred)
        if self.output_activation == "softmax":
            voxel_weight = ops.sum(y_true * weights, axis=-1)
            voxel_ce = -ops.sum(y_true * ops.log(y_pred), axis=-1)
            return (ops.sum(voxel_weight * voxel_ce, axis=axes)
                    / ops.maximum(ops.sum(voxel_weight, axis=axes), _EPSILON))
        bce = -(y_true * ops.log(y_pred) + (1.0 - y_true) * ops.log(1.0 - y_pred))
        voxel = ops.sum(bce * weights, axis=-1) / ops.sum(weights)
        return ops.mean(voxel, axis=axes)

    def get_config(self):
        config = super().get_config()
        config.update(class_weights=self.class_weights, output_activation=self.output_activation)
        return config


@keras.saving.register_keras_serializable(package="brain_tf")
class DiceCELoss(keras.losses.Loss):
    """``dice_weight * SoftDiceLoss + ce_weight * WeightedCrossEntropy``.

    The Dice part takes ``include_background`` (default False: Dice over the
    foreground classes of a softmax output), ``squared_pred``, ``smooth_nr``,
    ``smooth_dr`` and ``batch_dice``; the cross-entropy part ``class_weights``
    and ``output_activation``. Use ``include_background=True`` for sigmoid
    heads, which have no background channel.
    """

    def __init__(self, dice_weight: float = 0.5, ce_weight: float = 0.5,
                 class_weights: Sequence[float] | None = None,
                 output_activation: str = "softmax", include_background: bool = False,
                 squared_pred: bool = False, smooth_nr: float = 1e-5, smooth_dr: float = 1e-5,
                 batch_dice: bool = False, name: str = "dice_ce_loss",
                 reduction: str = "sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if dice_weight < 0 or ce_weight < 0:
            raise ConfigError(f"dice_weight and ce_weight must be >= 0, got {dice_weight}, "
                              f"{ce_weight}")
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)
        self.dice = SoftDiceLoss(include_background=include_background, squared_pred=squared_pred,
                                 smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch_dice=batch_dice,
                                 reduction=None)
        self.cross_entropy = WeightedCrossEntropy(class_weights=class_weights,
                                                  output_activation=output_activation,
                                                  reduction=None)

    def call(self, y_true, y_pred):
        return (self.dice_weight * self.dice.call(y_true, y_pred)
                + self.ce_weight * self.cross_entropy.call(y_true, y_pred))

    def get_config(self):
        config = super().get_config()
        dice = self.dice.get_config()
        config.update(dice_weight=self.dice_weight, ce_weight=self.ce_weight,
                      class_weights=self.cross_entropy.class_weights,
                      output_activation=self.cross_entropy.output_activation,
                      **{k: dice[k] for k in ("include_background", "squared_pred", "smooth_nr",
                                              "smooth_dr", "batch_dice")})
        return config


def pairwise_distances(embeddings):
    """Euclidean distances ``(batch, batch)`` between the rows of ``embeddings``; 0 on the
    diagonal, and a zero gradient where two rows coincide."""
    e = ops.cast(embeddings, "float32")
    squared = ops.sum(ops.square(e), axis=1)
    d2 = ops.maximum(squared[:, None] - 2.0 * ops.matmul(e, ops.transpose(e))
                     + squared[None, :], 0.0)
    off_diagonal = 1.0 - ops.eye(ops.shape(e)[0], dtype="float32")
    return ops.sqrt(ops.maximum(d2, 1e-12)) * off_diagonal


def _pair_masks(labels, n):
    """``(same, different)`` float masks of the pairs of a batch (the diagonal in neither)."""
    labels = ops.reshape(labels, (-1,))
    equal = ops.cast(ops.equal(labels[:, None], labels[None, :]), "float32")
    return equal * (1.0 - ops.eye(n, dtype="float32")), 1.0 - equal


def semi_hard_negatives(distances, labels):
    """For every anchor ``a`` and positive ``p`` (same class, ``p != a``), the index of
    its semi-hard negative: of the samples of another class farther from ``a`` than ``p``
    is, the closest; when no negative is farther, the farthest negative. ``-1`` where
    ``(a, p)`` is no anchor-positive pair or ``a`` has no negative. Returns ``(batch, batch)``
    int32 indices."""
    d = ops.cast(distances, "float32")
    n = ops.shape(d)[0]
    same, different = _pair_masks(labels, n)
    negative = ops.cast(different[:, None, :], "bool")                   # [a, ., n]
    farther = ops.logical_and(negative, d[:, None, :] > d[:, :, None])   # [a, p, n]
    beyond = ops.max(d) + 1.0
    closest_farther = ops.argmin(ops.where(farther, d[:, None, :], beyond), axis=2)
    farthest = ops.argmax(ops.where(ops.cast(different, "bool"), d, -1.0), axis=1)
    chosen = ops.where(ops.any(farther, axis=2), closest_farther, farthest[:, None])
    valid = ops.logical_and(ops.cast(same, "bool"), ops.any(negative, axis=2))
    return ops.where(valid, ops.cast(chosen, "int32"), -1)


def _broadcast_to_batch(value, y_pred):
    return ops.broadcast_to(value, ops.shape(y_pred)[:1])


class _MarginLoss(keras.losses.Loss):
    """A metric-learning loss with a positive ``margin`` (kept in its config)."""

    def __init__(self, margin: float, name: str, reduction: str = "sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if margin <= 0:
            raise ConfigError(f"{type(self).__name__} margin must be positive, got {margin}")
        self.margin = float(margin)

    def get_config(self):
        return {**super().get_config(), "margin": self.margin}


@keras.saving.register_keras_serializable(package="brain_tf")
class ContrastiveLoss(_MarginLoss):
    """Contrastive loss over every pair of a batch: ``d^2`` for two samples of one class,
    ``max(0, margin - d)^2`` for two of different classes (``d`` the Euclidean distance
    of their embeddings), averaged over the ``batch (batch - 1) / 2`` pairs. The batch's
    loss is returned for every sample (the reduction then gives it back unchanged).

    ``margin``: how far apart two classes are pushed (on L2-normalised embeddings,
    distances lie in [0, 2]).
    """

    def __init__(self, margin: float = 1.0, name: str = "contrastive_loss", **kwargs):
        super().__init__(margin, name=name, **kwargs)

    def call(self, y_true, y_pred):
        d = pairwise_distances(y_pred)
        same, different = _pair_masks(y_true, ops.shape(d)[0])
        per_pair = same * ops.square(d) + different * ops.square(ops.relu(self.margin - d))
        pairs = ops.sum(same + different)
        return _broadcast_to_batch(ops.sum(per_pair) / ops.maximum(pairs, 1.0), y_pred)


@keras.saving.register_keras_serializable(package="brain_tf")
class TripletSemiHardLoss(_MarginLoss):
    """Triplet loss with semi-hard negatives mined inside the batch (FaceNet's rule):
    ``max(0, margin + d(a, p) - d(a, n))`` for every anchor-positive pair ``(a, p)`` of
    the batch, ``n`` its negative from :func:`semi_hard_negatives`, averaged over those
    pairs (0 for a batch without any). The batch's loss is returned for every sample.
    """

    def __init__(self, margin: float = 0.2, name: str = "triplet_semi_hard_loss", **kwargs):
        super().__init__(margin, name=name, **kwargs)

    def call(self, y_true, y_pred):
        d = pairwise_distances(y_pred)
        negatives = semi_hard_negatives(ops.stop_gradient(d), y_true)
        valid = ops.cast(negatives >= 0, "float32")
        d_an = ops.take_along_axis(d, ops.maximum(negatives, 0), axis=1)
        per_triplet = ops.relu(self.margin + d - d_an) * valid
        loss = ops.sum(per_triplet) / ops.maximum(ops.sum(valid), 1.0)
        return _broadcast_to_batch(loss, y_pred)


LOSSES = {cls.__name__: cls for cls in (SoftDiceLoss, WeightedCrossEntropy, DiceCELoss,
                                        ContrastiveLoss, TripletSemiHardLoss)}


def get(identifier, **config) -> keras.losses.Loss:
    """A brain_tf loss from its registered name and options, for ``compile``.

    Keras resolves only its built-in losses from strings, so
    ``compile(loss=get("SoftDiceLoss", squared_pred=True))`` (or the name
    ``"brain_tf>SoftDiceLoss"``) is how a configuration picks one by name. A
    dict ``{"class_name": ..., "config": {...}}`` and a Loss instance
    (returned unchanged) are accepted too.
    """
    return from_registry(LOSSES, keras.losses.Loss, "loss", identifier, config)

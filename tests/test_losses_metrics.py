"""Losses, metrics and schedules against hand-computed values."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import brain_tf
from brain_tf.errors import ConfigError
from brain_tf.losses import DiceCELoss, SoftDiceLoss, WeightedCrossEntropy
from brain_tf.metrics import DiceCoefficient, Sensitivity, Specificity
from brain_tf.schedules import OneCycle, StepDecay


def _t(values):
    return np.asarray(values, dtype="float32")


# ---------------------------------------------------------------- Soft Dice

def test_soft_dice_plain_and_squared_by_hand():
    # one sample, 4 voxels, 1 channel: I = 1.5, sum p = 2, sum q = 2, sum p^2 = 1.5
    p = _t([0.5, 0.5, 0.0, 1.0]).reshape(1, 4, 1)
    q = _t([1, 0, 0, 1]).reshape(1, 4, 1)
    plain = SoftDiceLoss(smooth_nr=0.0, smooth_dr=0.0)
    assert float(plain(q, p)) == pytest.approx(1 - 3.0 / 4.0)
    squared = SoftDiceLoss(squared_pred=True, smooth_nr=0.0, smooth_dr=0.0)
    assert float(squared(q, p)) == pytest.approx(1 - 3.0 / 3.5)
    smoothed = SoftDiceLoss(squared_pred=True)
    assert float(smoothed(q, p)) == pytest.approx(1 - (3.0 + 1e-5) / (3.5 + 1e-5))


def test_soft_dice_per_sample_versus_batch_by_hand():
    p = _t([[1, 1], [0, 0]]).reshape(2, 2, 1)
    q = _t([[1, 0], [0, 1]]).reshape(2, 2, 1)
    # sample 0: 2*1/(2+1) = 2/3; sample 1: 0/(0+1) = 0 -> losses 1/3 and 1
    per_sample = SoftDiceLoss(smooth_nr=0.0, smooth_dr=0.0)
    assert float(per_sample(q, p)) == pytest.approx((1 / 3 + 1) / 2)
    # batch: 2*1/(2+2) = 0.5
    batch = SoftDiceLoss(smooth_nr=0.0, smooth_dr=0.0, batch_dice=True)
    assert float(batch(q, p)) == pytest.approx(0.5)


def test_soft_dice_system_c_formula(rng):
    p = rng.random((2, 6, 5, 4, 3)).astype("float32")
    q = (rng.random((2, 6, 5, 4, 3)) > 0.6).astype("float32")
    axes = (1, 2, 3)
    dice = (2 * (p * q).sum(axes) + 1e-5) / ((p ** 2).sum(axes) + (q ** 2).sum(axes) + 1e-5)
    expected = 1 - dice.mean()  # mean over classes, then over the batch
    loss = SoftDiceLoss(squared_pred=True, smooth_nr=1e-5, smooth_dr=1e-5,
                        include_background=True, batch_dice=False)
    assert float(loss(q, p)) == pytest.approx(expected, rel=1e-5)


def test_soft_dice_background_dropped():
    # channel 0 is a perfect match, channel 1 has Dice 2*1/(1+2) = 2/3
    q = _t([[1, 0], [0, 1], [0, 1]]).reshape(1, 3, 2)
    p = _t([[1, 0], [0, 1], [0, 0]]).reshape(1, 3, 2)
    with_bg = SoftDiceLoss(smooth_nr=0.0, smooth_dr=0.0)
    assert float(with_bg(q, p)) == pytest.approx(1 - (1 + 2 / 3) / 2)
    foreground = SoftDiceLoss(include_background=False, smooth_nr=0.0, smooth_dr=0.0)
    assert float(foreground(q, p)) == pytest.approx(1 - 2 / 3)
    with pytest.raises(ConfigError, match="two channels"):
        foreground(q[..., :1], p[..., :1])


@pytest.mark.parametrize("squared", [False, True])
def test_soft_dice_empty_masks_and_finite_gradient(squared):
    empty = np.zeros((2, 4, 4, 4, 2), "float32")
    loss = SoftDiceLoss(squared_pred=squared)
    assert float(loss(empty, empty)) == pytest.approx(0.0)  # both empty: Dice 1
    full = np.ones_like(empty)
    assert float(loss(full, empty)) == pytest.approx(1.0, abs=1e-4)
    for y_true in (empty, full):
        for y_pred in (empty, full, np.full_like(empty, 0.5)):
            pred = tf.Variable(y_pred)
            with tf.GradientTape() as tape:
                value = loss(y_true, pred)
            grad = tape.gradient(value, pred).numpy()
            assert np.isfinite(value.numpy()) and np.isfinite(grad).all()


# ------------------------------------------------------------ cross-entropy

def test_weighted_cross_entropy_softmax_by_hand():
    q = _t([[1, 0], [0, 1]]).reshape(1, 2, 2)
    p = _t([[0.8, 0.2], [0.4, 0.6]]).reshape(1, 2, 2)
    weighted = WeightedCrossEntropy(class_weights=[1.0, 3.0])
    expected = (-math.log(0.8) - 3 * math.log(0.6)) / (1 + 3)
    assert float(weighted(q, p)) == pytest.approx(expected, rel=1e-5)
    plain = WeightedCrossEntropy()
    assert float(plain(q, p)) == pytest.approx((-math.log(0.8) - math.log(0.6)) / 2, rel=1e-5)


def test_weighted_cross_entropy_sigmoid_by_hand():
    q = _t([1, 0]).reshape(1, 1, 2)
    p = _t([0.8, 0.4]).reshape(1, 1, 2)
    loss = WeightedCrossEntropy(class_weights=[1.0, 3.0], output_activation="sigmoid")
    expected = (-math.log(0.8) - 3 * math.log(0.6)) / 4
    assert float(loss(q, p)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ConfigError, match="one weight per channel"):
        WeightedCrossEntropy(class_weights=[1.0, 2.0, 3.0])(q, p)


def test_dice_ce_is_weighted_sum_system_b(rng):
    logits = rng.normal(size=(2, 5, 4, 3, 3))
    p = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")
    q = np.eye(3, dtype="float32")[rng.integers(0, 3, size=(2, 5, 4, 3))]
    loss = DiceCELoss(class_weights=[0.1, 0.45, 0.45])
    dice = SoftDiceLoss(include_background=False)(q, p)
    ce = WeightedCrossEntropy(class_weights=[0.1, 0.45, 0.45])(q, p)
    assert float(loss(q, p)) == pytest.approx(0.5 * float(dice) + 0.5 * float(ce), rel=1e-5)
    config = loss.get_config()
    assert config["class_weights"] == [0.1, 0.45, 0.45] and config["include_background"] is False
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(clone, DiceCELoss)
    assert float(clone(q, p)) == pytest.approx(float(loss(q, p)))


def test_losses_get_by_name():
    loss = brain_tf.losses.get("brain_tf>SoftDiceLoss", squared_pred=True)
    assert isinstance(loss, SoftDiceLoss) and loss.squared_pred
    assert isinstance(brain_tf.losses.get({"class_name": "DiceCELoss", "config": {}}), DiceCELoss)
    with pytest.raises(ConfigError, match="unknown loss"):
        brain_tf.losses.get("DiceLos")


# ------------------------------------------------------------------ metrics

def test_sigmoid_metrics_threshold_and_streaming():
    q1 = _t([1, 0, 1, 0]).reshape(1, 4, 1)
    p1 = _t([0.9, 0.6, 0.4, 0.1]).reshape(1, 4, 1)  # TP 1, FP 1, FN 1, TN 1
    dice, sens, spec = DiceCoefficient(), Sensitivity(), Specificity()
    for metric in (dice, sens, spec):
        metric.update_state(q1, p1)
        assert float(metric.result()) == pytest.approx(0.5)
    low = DiceCoefficient(threshold=0.3)  # TP 2, FP 1, FN 0 -> 4/5
    low.update_state(q1, p1)
    assert float(low.result()) == pytest.approx(0.8)
    q2 = _t([1, 1, 0, 0]).reshape(1, 4, 1)
    p2 = _t([0.9, 0.9, 0.1, 0.1]).reshape(1, 4, 1)  # TP 2, TN 2
    for metric in (dice, sens, spec):
        metric.update_state(q2, p2)  # totals TP 3, FP 1, FN 1, TN 3
        assert float(metric.result()) == pytest.approx(0.75)
        metric.reset_state()
        metric.update_state(q2, p2)
        assert float(metric.result()) == pytest.approx(1.0)


def test_softmax_metrics_argmax_per_class_and_mean():
    q = np.eye(3, dtype="float32")[[0, 1, 2]].reshape(1, 3, 3)
    p = _t([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3]]).reshape(1, 3, 3)  # argmax 0, 1, 1

    def value(metric):
        metric.update_state(q, p)
        return float(metric.result())

    assert value(DiceCoefficient(output_activation="softmax")) == pytest.approx((1 + 2 / 3) / 3)
    assert value(DiceCoefficient(output_activation="softmax", include_background=False)) == \
        pytest.approx(1 / 3)
    assert value(DiceCoefficient(class_id=1, output_activation="softmax")) == pytest.approx(2 / 3)
    assert value(Sensitivity(output_activation="softmax")) == pytest.approx(2 / 3)
    assert value(Specificity(output_activation="softmax")) == pytest.approx((1 + 0.5 + 1) / 3)
    assert value(Specificity(class_id=1, output_activation="softmax")) == pytest.approx(0.5)


def test_metric_empty_classes():
    q = np.zeros((1, 4, 2), "float32")
    q[0, :2, 0] = 1  # channel 1 has no positives in the reference
    p = q.copy()
    dice = DiceCoefficient()
    dice.update_state(q, p)
    assert float(dice.result()) == pytest.approx(1.0)  # channel 1 empty in both: Dice 1
    sens_missing = Sensitivity(class_id=1)
    sens_missing.update_state(q, p)
    assert np.isnan(float(sens_missing.result()))
    sens = Sensitivity()  # mean over the defined class only
    sens.update_state(q, p)
    assert float(sens.result()) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="class_id=5"):
        Sensitivity(class_id=5).update_state(q, p)


def test_metric_config_round_trip_and_get():
    metric = Sensitivity(class_id=2, output_activation="softmax", threshold=0.4, name="sens_et")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert isinstance(clone, Sensitivity)
    assert clone.get_config() == metric.get_config()
    assert isinstance(brain_tf.metrics.get("brain_tf>Specificity"), Specificity)
    assert brain_tf.metrics.get("DiceCoefficient", class_id=0).class_id == 0


def test_compile_by_name_matches_numpy(rng):
    model = keras.Sequential([keras.Input((6, 6, 4, 1)),
                              keras.layers.Conv3D(2, 1, activation="sigmoid", name="head")])
    model.compile(optimizer="adam", loss=brain_tf.losses.get("SoftDiceLoss"),
                  metrics=[brain_tf.metrics.get("DiceCoefficient"),
                           brain_tf.metrics.get("Sensitivity", class_id=1, name="sens1")],
                  jit_compile=False)
    x = rng.normal(size=(4, 6, 6, 4, 1)).astype("float32")
    y = (rng.random((4, 6, 6, 4, 2)) > 0.5).astype("float32")
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    logs = model.evaluate(x, y, batch_size=3, verbose=0, return_dict=True)
    pred = model.predict(x, verbose=0) >= 0.5
    truth = y.astype(bool)
    tp = (pred & truth).sum(axis=(0, 1, 2, 3))
    dice = 2 * tp / (pred.sum(axis=(0, 1, 2, 3)) + truth.sum(axis=(0, 1, 2, 3)))
    assert logs["dice"] == pytest.approx(dice.mean(), rel=1e-5)
    assert logs["sens1"] == pytest.approx(tp[1] / truth[..., 1].sum(), rel=1e-5)


# ---------------------------------------------------------------- schedules

def test_one_cycle_values():
    schedule = OneCycle(max_learning_rate=1.0, total_steps=100, warmup_fraction=0.3)
    start, low = 1.0 / 25, 1.0 / 25 / 1e4
    expected = {0: start, 15: (start + 1.0) / 2, 30: 1.0, 65: (1.0 + low) / 2, 100: low,
                500: low}
    for step, rate in expected.items():
        assert float(schedule(step)) == pytest.approx(rate, rel=1e-5), step
    rates = [float(schedule(s)) for s in range(101)]
    assert np.all(np.diff(rates[:31]) > 0) and np.all(np.diff(rates[30:]) < 0)


def test_step_decay_values_and_serialization():
    schedule = StepDecay(0.1, step_size=10, drop=0.5, min_learning_rate=0.02)
    for step, rate in {0: 0.1, 9: 0.1, 10: 0.05, 25: 0.025, 30: 0.02, 90: 0.02}.items():
        assert float(schedule(step)) == pytest.approx(rate), step
    for original in (schedule, OneCycle(2.5e-4, 700)):
        clone = keras.saving.deserialize_keras_object(
            keras.saving.serialize_keras_object(original))
        assert type(clone) is type(original) and clone.get_config() == original.get_config()
    with pytest.raises(ConfigError):
        OneCycle(1e-3, 100, warmup_fraction=1.5)

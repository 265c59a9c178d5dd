"""Plain 3D CNN for whole-brain regression and classification (system B: age, sex)."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from brain_tf.errors import ConfigError
from brain_tf.models.blocks import check_input_shape, conv_norm_act, dense_head, max_pool
from brain_tf.models.layers import MCDropout


def last_conv_layer_name(filters: Sequence[int] = (16, 32, 64, 128)) -> str:
    """Name of cnn3d's last convolution (the Grad-CAM layer): ``block{N}_conv``."""
    return f"block{len(filters)}_conv"


def dropout_layer(rate: float, *, mc: bool, name: str):
    """Dropout, or MCDropout (active at inference) when ``mc`` is true."""
    if not 0.0 <= rate < 1.0:
        raise ConfigError(f"dropout rate for {name} must be in [0, 1), got {rate}")
    if mc and rate == 0:
        raise ConfigError(f"mc_dropout needs a dropout rate > 0 for layer {name}")
    return (MCDropout if mc else keras.layers.Dropout)(rate, name=name)


def cnn3d(input_shape=(128, 128, 128, 1), num_outputs: int = 1, *,
          filters: Sequence[int] = (16, 32, 64, 128), norm: str = "instance",
          dropout: float = 0.3, hidden_units: int | None = None, hidden_dropout: float = 0.2,
          mc_dropout: bool = False, output_activation: str = "linear",
          name: str = "cnn3d") -> keras.Model:
    """``len(filters)`` x (conv 3^3 -> norm -> ReLU -> maxpool 2), global average
    pool, dropout and a dense head.

    Defaults are system B's age model: 16/32/64/128 filters, instance norm
    (``GroupNormalization(groups=-1)``), dropout 0.3 and one linear output.
    The sex model is ``num_outputs=2, output_activation="softmax"``; the
    extended age head is ``hidden_units=64`` (dense 64 -> ReLU -> dropout
    ``hidden_dropout`` -> dense). ``mc_dropout=True`` keeps the dropouts
    active at inference (:class:`~brain_tf.models.layers.MCDropout`).

    Layer names: ``block{i}_conv``, ``block{i}_norm``, ``block{i}_relu``,
    ``block{i}_pool`` for i = 1..N; the last convolution, for Grad-CAM, is
    ``block{N}_conv`` (``block4_conv`` by default, see
    :func:`last_conv_layer_name`); then ``avg_pool``, ``dropout``,
    ``head_dense``, ``head_dropout`` (extended head) and ``head``.
    """
    shape = check_input_shape(input_shape, 3, model=name)
    filters = [int(f) for f in filters]
    if not filters or min(filters) < 1:
        raise ConfigError(f"{name}: filters must be positive counts, got {filters}")
    smallest = 2 ** len(filters)
    if any(s is not None and s < smallest for s in shape[:-1]):
        raise ConfigError(f"{name}: input_shape {shape} is too small for {len(filters)} "
                          f"pooling steps; every spatial size must be at least {smallest}")
    inputs = keras.Input(shape, name="input")
    x = inputs
    for i, f in enumerate(filters, start=1):
        x = conv_norm_act(x, f, norm=norm, name=f"block{i}")
        x = max_pool(x, 2, name=f"block{i}_pool")
    x = keras.layers.GlobalAveragePooling3D(name="avg_pool")(x)
    if dropout > 0 or mc_dropout:
        x = dropout_layer(dropout, mc=mc_dropout, name="dropout")(x)
    if hidden_units:
        x = keras.layers.Dense(int(hidden_units), activation="relu", name="head_dense")(x)
        if hidden_dropout > 0 or mc_dropout:
            x = dropout_layer(hidden_dropout, mc=mc_dropout, name="head_dropout")(x)
    outputs = dense_head(x, num_outputs, output_activation)
    return keras.Model(inputs, outputs, name=name)

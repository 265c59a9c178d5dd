"""Small building blocks shared by the model builders (2D and 3D, channels-last).

Every function takes the tensor, the sizes it needs and a ``name`` prefix, and
names each layer it creates ``{name}_{role}`` so that models built with the
same configuration always have the same layer names (for Grad-CAM, transfer
learning and weight loading by name).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from brain_tf.errors import ConfigError

NORMALIZATIONS = ("none", "batch", "instance", "group")
"""Accepted ``norm`` values: no normalisation, BatchNorm, instance norm
(``GroupNormalization(groups=-1)``, one group per channel) and group norm."""


def _conv_class(ndim: int):
    return {2: keras.layers.Conv2D, 3: keras.layers.Conv3D}[ndim]


def conv(x, filters: int, kernel_size=3, *, strides=1, groups: int = 1,
         use_bias: bool = True, activation=None, name: str, dtype=None):
    """A same-padded 2D or 3D convolution (dimension read from ``x``)."""
    ndim = len(x.shape) - 2
    kwargs = {"dtype": dtype} if dtype is not None else {}
    return _conv_class(ndim)(
        filters, kernel_size, strides=strides, padding="same", groups=groups,
        use_bias=use_bias, activation=activation, kernel_initializer="he_normal",
        name=name, **kwargs)(x)


def check_norm(norm: str) -> str:
    """Return ``norm`` if it is a known normalisation, else raise ConfigError."""
    if norm not in NORMALIZATIONS:
        raise ConfigError(
            f"unknown normalisation norm={norm!r}; use one of {', '.join(NORMALIZATIONS)}")
    return norm


def normalize(x, norm: str, *, name: str, groups: int = 8):
    """Apply the normalisation named by ``norm`` (see NORMALIZATIONS)."""
    check_norm(norm)
    if norm == "none":
        return x
    if norm == "batch":
        return keras.layers.BatchNormalization(epsilon=1e-5, name=name)(x)
    channels = x.shape[-1]
    if norm == "instance":
        groups = -1
    elif channels % groups:
        raise ConfigError(
            f"group norm with groups={groups} needs a channel count divisible by it, "
            f"layer {name} has {channels}; change norm_groups or the filters")
    return keras.layers.GroupNormalization(groups=groups, epsilon=1e-5, name=name)(x)


def conv_norm_act(x, filters: int, *, kernel_size=3, strides=1, norm: str = "batch",
                  norm_groups: int = 8, activation: str | None = "relu", name: str,
                  suffix: str = ""):
    """Convolution -> normalisation -> activation.

    Layers are named ``{name}_conv{suffix}``, ``{name}_norm{suffix}`` and
    ``{name}_{activation}{suffix}``. The convolution has no bias when a
    normalisation follows (the norm's offset replaces it).
    """
    x = conv(x, filters, kernel_size, strides=strides, use_bias=(norm == "none"),
             name=f"{name}_conv{suffix}")
    x = normalize(x, norm, name=f"{name}_norm{suffix}", groups=norm_groups)
    if activation:
        x = keras.layers.Activation(activation, name=f"{name}_{activation}{suffix}")(x)
    return x


def double_conv_block(x, filters: Sequence[int], *, name: str, norm: str = "batch",
                      norm_groups: int = 8, dropout: float = 0.0):
    """Two ``conv 3 -> norm -> ReLU`` units (filters ``filters[0]``, ``filters[1]``).

    With ``dropout > 0`` a Dropout layer (``{name}_dropout``) sits between them.
    """
    x = conv_norm_act(x, filters[0], norm=norm, norm_groups=norm_groups, name=name, suffix="1")
    if dropout > 0:
        x = keras.layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return conv_norm_act(x, filters[1], norm=norm, norm_groups=norm_groups, name=name, suffix="2")


def residual_block(x, filters: Sequence[int], *, name: str, norm: str = "batch",
                   norm_groups: int = 8, dropout: float = 0.0):
    """Two ``conv 3 -> norm -> ReLU`` units plus a bias-free 1x1(x1) convolution
    of the block input (``{name}_shortcut``) added to their output (``{name}_add``)."""
    shortcut = conv(x, filters[1], 1, use_bias=False, name=f"{name}_shortcut")
    x = double_conv_block(x, filters, name=name, norm=norm, norm_groups=norm_groups,
                          dropout=dropout)
    return keras.layers.Add(name=f"{name}_add")([x, shortcut])


def max_pool(x, pool_size, *, name: str):
    """2D or 3D max-pooling with stride equal to the pool size."""
    ndim = len(x.shape) - 2
    cls = {2: keras.layers.MaxPooling2D, 3: keras.layers.MaxPooling3D}[ndim]
    return cls(pool_size, name=name)(x)


def upsample(x, filters: int, size, *, mode: str, name: str, norm: str = "batch",
             norm_groups: int = 8):
    """Upsample by ``size``: ``"transpose"`` is a transposed convolution with
    kernel and stride ``size`` (``{name}``); ``"upsample"`` is nearest-neighbour
    UpSampling (``{name}``) followed by ``conv 3 -> norm -> ReLU`` (``{name}_conv`` ...)."""
    ndim = len(x.shape) - 2
    if mode == "transpose":
        cls = {2: keras.layers.Conv2DTranspose, 3: keras.layers.Conv3DTranspose}[ndim]
        return cls(filters, size, strides=size, padding="same",
                   kernel_initializer="he_normal", name=name)(x)
    if mode == "upsample":
        cls = {2: keras.layers.UpSampling2D, 3: keras.layers.UpSampling3D}[ndim]
        x = cls(size, name=name)(x)
        return conv_norm_act(x, filters, norm=norm, norm_groups=norm_groups, name=name)
    raise ConfigError(f"unknown upsampling={mode!r}; use 'transpose' or 'upsample'")


def output_head(x, num_outputs: int, activation: str | None, *, name: str = "head"):
    """A 1x1(x1) convolution to ``num_outputs`` channels with ``activation``
    (float32 output, so mixed precision keeps probabilities exact)."""
    activation = check_activation(activation, num_outputs)
    return conv(x, num_outputs, 1, activation=activation, name=name, dtype="float32")


def dense_head(x, num_outputs: int, activation: str | None, *, name: str = "head"):
    """A Dense layer to ``num_outputs`` units with ``activation`` (float32 output)."""
    activation = check_activation(activation, num_outputs)
    return keras.layers.Dense(num_outputs, activation=activation, name=name, dtype="float32")(x)


OUTPUT_ACTIVATIONS = ("sigmoid", "softmax", "linear")


def check_activation(activation: str | None, num_outputs: int) -> str:
    """Validate an output activation (None means linear) and the output count."""
    activation = activation or "linear"
    if activation not in OUTPUT_ACTIVATIONS:
        raise ConfigError(f"unknown output_activation={activation!r}; "
                          f"use one of {', '.join(OUTPUT_ACTIVATIONS)}")
    if not isinstance(num_outputs, int) or num_outputs < 1:
        raise ConfigError(f"num_outputs must be a positive integer, got {num_outputs!r}")
    if activation == "softmax" and num_outputs < 2:
        raise ConfigError("a softmax head needs num_outputs >= 2 (one per class, "
                          "background included); use output_activation='sigmoid' for one channel")
    return activation


def check_input_shape(input_shape, ndim: int, *, model: str) -> tuple:
    """Return ``input_shape`` as a tuple after checking it is (spatial..., channels)."""
    try:
        shape = tuple(None if s is None else int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ConfigError(f"{model}: input_shape must be a sequence of sizes, got {input_shape!r}")
    if len(shape) != ndim + 1 or shape[-1] is None or any(s is not None and s < 1 for s in shape):
        raise ConfigError(
            f"{model}: input_shape {shape} must have {ndim} spatial sizes and a channel "
            f"count (channels last), e.g. {(32,) * ndim + (1,)}")
    return shape


def check_divisible(shape: tuple, factors: Sequence[int], *, model: str, depth: int) -> None:
    """Raise ConfigError unless every known spatial size is divisible by its factor."""
    for axis, (size, factor) in enumerate(zip(shape[:-1], factors)):
        if size is not None and size % factor:
            raise ConfigError(
                f"{model}: input size {size} on spatial axis {axis} (input_shape {shape}) is not "
                f"divisible by {factor}, the total pooling of depth={depth}; "
                f"crop or pad the input to a multiple of {factor} or lower the depth")

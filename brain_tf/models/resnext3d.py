"""3D ResNeXt (system A's age regressor): bottleneck blocks with grouped 3^3 convolutions.

Built like ``keras.applications.resnet``: a block function, a stack function
and one generic builder, with thin named presets. Layer names follow Keras'
ResNet: ``conv1_conv``/``conv1_bn``/``conv1_relu`` for the stem, then
``conv{s}_block{b}_{i}_conv|bn|relu`` (i = 0 shortcut, 1 reduce, 2 grouped,
3 expand), ``conv{s}_block{b}_add`` and ``conv{s}_block{b}_out`` for stage
s = 2..5, then ``avg_pool``, ``dropout`` and ``head``.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from brain_tf.errors import ConfigError
from brain_tf.models.blocks import check_input_shape, conv, dense_head
from brain_tf.models.cnn3d import dropout_layer
from brain_tf.models.layers import GroupedConv3D


def _bn(x, name: str):
    return keras.layers.BatchNormalization(epsilon=1e-5, name=name)(x)


def grouped_conv(x, filters: int, *, groups: int, strides, split_groups: bool, name: str):
    """A bias-free 3^3 grouped convolution: :class:`GroupedConv3D` (one convolution
    per group) when ``split_groups``, else Keras' ``Conv3D(groups=...)``."""
    if not split_groups:
        return conv(x, filters, 3, strides=strides, groups=groups, use_bias=False, name=name)
    return GroupedConv3D(filters, 3, strides=strides, padding="same", groups=groups,
                         use_bias=False, kernel_initializer="he_normal", name=name)(x)


def resnext_block(x, width: int, *, cardinality: int, expansion: int, strides=1,
                  split_groups: bool = True, name: str):
    """ResNeXt bottleneck: 1^3 conv to ``width`` -> grouped 3^3 conv (``cardinality``
    groups, ``strides``) -> 1^3 conv to ``width * expansion``, each with BatchNorm,
    plus a projection shortcut (1^3 conv + BN) when the shape changes."""
    out_channels = width * expansion
    needs_projection = x.shape[-1] != out_channels or strides not in (1, (1, 1, 1))
    if needs_projection:
        shortcut = _bn(conv(x, out_channels, 1, strides=strides, use_bias=False,
                            name=f"{name}_0_conv"), f"{name}_0_bn")
    else:
        shortcut = x
    x = conv(x, width, 1, use_bias=False, name=f"{name}_1_conv")
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(_bn(x, f"{name}_1_bn"))
    x = grouped_conv(x, width, groups=cardinality, strides=strides, split_groups=split_groups,
                     name=f"{name}_2_conv")
    x = keras.layers.Activation("relu", name=f"{name}_2_relu")(_bn(x, f"{name}_2_bn"))
    x = _bn(conv(x, out_channels, 1, use_bias=False, name=f"{name}_3_conv"), f"{name}_3_bn")
    x = keras.layers.Add(name=f"{name}_add")([shortcut, x])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def resnext_stack(x, width: int, blocks: int, *, cardinality: int, expansion: int,
                  strides, split_groups: bool = True, name: str):
    """``blocks`` ResNeXt blocks; the first one applies ``strides``."""
    for b in range(1, blocks + 1):
        x = resnext_block(x, width, cardinality=cardinality, expansion=expansion,
                          strides=strides if b == 1 else 1, split_groups=split_groups,
                          name=f"{name}_block{b}")
    return x


def resnext3d(input_shape=(64, 64, 64, 1), num_outputs: int = 1, *,
              blocks: Sequence[int] = (1, 1, 1, 1), widths: Sequence[int] = (16, 32, 64, 128),
              cardinality: int = 4, expansion: int = 2, stem_filters: int = 16,
              stem_kernel: int = 7, stem_strides=(2, 2, 2), stem_pool: bool = True,
              dropout: float = 0.0, output_activation: str = "linear",
              split_groups: bool = True, name: str = "resnext3d") -> keras.Model:
    """Generic 3D ResNeXt; the defaults are a small preset that trains on a CPU:
    one block per stage, widths 16/32/64/128, cardinality 4 and a stride-2
    stem followed by max-pooling (about 1.2 s per training step for a batch
    of four 64^3 volumes on 2 CPU cores, against 7.7 s with system A's
    stem; see :func:`resnext3d_50` for system A's layout).

    Args:
        input_shape: ``(x, y, z, channels)``.
        num_outputs: 1 linear output for regression (age), or the class count
            with ``output_activation="softmax"`` for classification.
        blocks, widths: blocks per stage and the grouped-convolution width of
            each stage; a stage outputs ``width * expansion`` channels. Stages
            after the first halve the resolution (stride 2 in their first block).
        cardinality: groups of the 3^3 convolutions (must divide every width).
        stem_filters, stem_kernel, stem_strides: the stem convolution. System
            A's stride ``(1, 2, 2)`` is in SimpleITK's ``(z, y, x)`` array order,
            that is ``(2, 2, 1)`` in brain_tf's ``(x, y, z)`` order.
        stem_pool: a 3^3 stride-2 max-pool after the stem (on in the small
            preset, off in system A).
        dropout: Dropout rate before the head.
        split_groups: run each grouped convolution as one convolution per
            group (:class:`~brain_tf.models.layers.GroupedConv3D`, same weights
            and results); False uses Keras' ``Conv3D(groups=...)``, which
            TensorFlow compiles with XLA and which is several times slower to
            train on CPU.
    """
    shape = check_input_shape(input_shape, 3, model=name)
    blocks = [int(b) for b in blocks]
    widths = [int(w) for w in widths]
    if len(blocks) != len(widths) or not blocks or min(blocks) < 1:
        raise ConfigError(f"{name}: blocks {blocks} and widths {widths} need one positive "
                          "block count per stage width")
    bad = [w for w in widths if w % cardinality]
    if bad:
        raise ConfigError(f"{name}: widths {bad} are not divisible by cardinality={cardinality}")
    inputs = keras.Input(shape, name="input")
    x = conv(inputs, stem_filters, stem_kernel, strides=tuple(stem_strides), use_bias=False,
             name="conv1_conv")
    x = keras.layers.Activation("relu", name="conv1_relu")(_bn(x, "conv1_bn"))
    if stem_pool:
        x = keras.layers.MaxPooling3D(3, strides=2, padding="same", name="pool1_pool")(x)
    for stage, (width, count) in enumerate(zip(widths, blocks), start=2):
        x = resnext_stack(x, width, count, cardinality=cardinality, expansion=expansion,
                          strides=1 if stage == 2 else 2, split_groups=split_groups,
                          name=f"conv{stage}")
    x = keras.layers.GlobalAveragePooling3D(name="avg_pool")(x)
    if dropout > 0:
        x = dropout_layer(dropout, mc=False, name="dropout")(x)
    outputs = dense_head(x, num_outputs, output_activation)
    return keras.Model(inputs, outputs, name=name)


def resnext3d_small(input_shape=(64, 64, 64, 1), num_outputs: int = 1, **config) -> keras.Model:
    """Small CPU preset (the defaults of :func:`resnext3d`): one block per stage,
    widths 16-128, cardinality 4, stride-2 stem with max-pooling."""
    config.setdefault("name", "resnext3d_small")
    return resnext3d(input_shape, num_outputs, **config)


def resnext3d_50(input_shape=(64, 64, 64, 1), num_outputs: int = 1, **config) -> keras.Model:
    """ResNeXt-50 (32x4d) layout of system A: blocks [3, 4, 6, 3], cardinality 32,
    widths 128/256/512/1024, expansion 2, a 64-filter 7^3 stem with in-plane
    stride and no max-pool. Any argument of :func:`resnext3d` can override."""
    preset = {"blocks": (3, 4, 6, 3), "widths": (128, 256, 512, 1024), "cardinality": 32,
              "expansion": 2, "stem_filters": 64, "stem_kernel": 7, "stem_strides": (2, 2, 1),
              "stem_pool": False, "name": "resnext3d_50"}
    preset.update(config)
    return resnext3d(input_shape, num_outputs, **preset)

"""Generic U-Net: an encoder/decoder with skip connections, built from a block function.

``unet3d`` and ``resunet3d`` are thin constructors over :func:`unet`; the
decoder (:func:`decoder`) is shared with ``unet2d_resnet``.

Layer names (level ``k`` counts from 1 at full resolution):

- encoder level k: block ``enc{k}_...`` (e.g. ``enc1_conv1``, ``enc1_norm1``,
  ``enc1_relu1``, ``enc1_conv2``), then ``enc{k}_pool``;
- deepest level: ``bottleneck_...`` (e.g. ``bottleneck_conv2``);
- decoder level k (joins the output of ``enc{k}``): ``dec{k}_up``,
  ``dec{k}_concat``, block ``dec{k}_...``;
- output: ``head`` (1x1 convolution with the output activation).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

from brain_tf.errors import ConfigError
from brain_tf.models.blocks import (
    check_activation,
    check_divisible,
    check_input_shape,
    check_norm,
    max_pool,
    output_head,
    upsample,
)

BlockFn = Callable[..., object]


def pool_tuple(pool_size, ndim: int, *, model: str) -> tuple[int, ...]:
    """``pool_size`` as one positive int per spatial axis."""
    if isinstance(pool_size, int):
        pool_size = (pool_size,) * ndim
    pool_size = tuple(int(p) for p in pool_size)
    if len(pool_size) != ndim or min(pool_size) < 1:
        raise ConfigError(f"{model}: pool_size {pool_size} needs {ndim} positive sizes")
    return pool_size


def level_filters(depth: int | None, base_filters: int, filters: Sequence[int] | None,
                  *, model: str, default_depth: int) -> list[int]:
    """Per-level filter counts: ``filters`` if given, else ``base_filters * 2**k``
    for ``depth`` levels (``default_depth`` when both are None)."""
    if filters is None and depth is None:
        depth = default_depth
    if filters is not None:
        filters = [int(f) for f in filters]
        if depth is not None and len(filters) != depth:
            raise ConfigError(f"{model}: filters {filters} has {len(filters)} levels "
                              f"but depth={depth}; give one count per level")
        depth = len(filters)
    if depth is None or depth < 2:
        raise ConfigError(f"{model}: depth must be at least 2, got {depth}")
    if filters is None:
        filters = [int(base_filters) * 2 ** k for k in range(depth)]
    if min(filters) < 1:
        raise ConfigError(f"{model}: filter counts must be positive, got {filters}")
    return filters


def decoder(x, stages, *, block_fn: BlockFn, up_size, upsampling: str, norm: str,
            norm_groups: int = 8, dropout: float = 0.0):
    """Decoder: for each ``(level, skip, filters)`` in ``stages`` (deepest first),
    upsample by ``up_size`` (``dec{level}_up``), concatenate ``skip`` when it is
    not None (``dec{level}_concat``) and apply ``block_fn`` (``dec{level}_...``)."""
    for level, skip, filters in stages:
        x = upsample(x, filters, up_size, mode=upsampling, name=f"dec{level}_up",
                     norm=norm, norm_groups=norm_groups)
        if skip is not None:
            x = keras.layers.Concatenate(name=f"dec{level}_concat")([x, skip])
        x = block_fn(x, (filters, filters), name=f"dec{level}", norm=norm,
                     norm_groups=norm_groups, dropout=dropout)
    return x


def unet(input_shape, num_outputs: int, *, block_fn: BlockFn, filters: Sequence[int],
         second_conv_factor: int = 1, pool_size=2, upsampling: str = "transpose",
         norm: str = "batch", norm_groups: int = 8, dropout: float = 0.0,
         output_activation: str | None = "softmax", name: str = "unet") -> keras.Model:
    """Build a 2D or 3D U-Net (dimension from ``input_shape``, channels last).

    Args:
        input_shape: spatial sizes and channels, e.g. ``(160, 160, 16, 4)``;
            spatial sizes may be None (fully convolutional), known sizes must
            be divisible by ``pool_size ** (len(filters) - 1)``.
        num_outputs: output channels (classes for softmax).
        block_fn: ``block_fn(x, (f1, f2), name=..., norm=..., norm_groups=...,
            dropout=...)``, e.g. :func:`~brain_tf.models.blocks.double_conv_block`.
        filters: first-convolution filters per level, bottleneck last.
        second_conv_factor: the second convolution of encoder level k has
            ``factor * filters[k]`` filters, and so has decoder level k
            (1: classic U-Net; 2: the 3D U-Net of Cicek et al., 32->64, ..., 256->512).
        pool_size: max-pooling (and upsampling) size, int or one per axis.
        upsampling: ``"transpose"`` or ``"upsample"`` (see blocks.upsample).
        norm: ``"none" | "batch" | "instance" | "group"``.
        dropout: rate of a Dropout between the two convolutions of each block.
        output_activation: ``"sigmoid" | "softmax" | "linear"``.
    """
    shape = check_input_shape(input_shape, len(tuple(input_shape)) - 1, model=name)
    ndim = len(shape) - 1
    if ndim not in (2, 3):
        raise ConfigError(f"{name}: input_shape {shape} must be 2D or 3D plus channels")
    check_norm(norm)
    check_activation(output_activation, num_outputs)
    if second_conv_factor not in (1, 2):
        raise ConfigError(f"{name}: second_conv_factor must be 1 or 2, got {second_conv_factor}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"{name}: dropout must be in [0, 1), got {dropout}")
    pool = pool_tuple(pool_size, ndim, model=name)
    depth = len(filters)
    check_divisible(shape, [p ** (depth - 1) for p in pool], model=name, depth=depth)

    common = {"norm": norm, "norm_groups": norm_groups, "dropout": dropout}
    inputs = keras.Input(shape, name="input")
    x = inputs
    skips = []
    for level in range(1, depth):
        f = filters[level - 1]
        x = block_fn(x, (f, f * second_conv_factor), name=f"enc{level}", **common)
        skips.append(x)
        x = max_pool(x, pool, name=f"enc{level}_pool")
    x = block_fn(x, (filters[-1], filters[-1] * second_conv_factor), name="bottleneck", **common)
    stages = [(level, skips[level - 1], filters[level - 1] * second_conv_factor)
              for level in range(depth - 1, 0, -1)]
    x = decoder(x, stages, block_fn=block_fn, up_size=pool, upsampling=upsampling, **common)
    outputs = output_head(x, num_outputs, output_activation)
    return keras.Model(inputs, outputs, name=name)

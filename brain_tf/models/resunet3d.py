"""3D residual U-Net (system A) as a thin constructor over :func:`brain_tf.models.unet.unet`."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from brain_tf.models.blocks import residual_block
from brain_tf.models.unet import level_filters, unet


def resunet3d(input_shape=(64, 64, 64, 1), num_outputs: int = 4, *, depth: int | None = None,
              base_filters: int = 32, filters: Sequence[int] | None = None,
              norm: str = "batch", norm_groups: int = 8, pool_size=(2, 2, 2),
              upsampling: str = "transpose", dropout: float = 0.0,
              output_activation: str = "softmax", name: str = "resunet3d") -> keras.Model:
    """A 3D U-Net with residual blocks: ``2 x (conv 3^3 -> norm -> ReLU)`` plus
    a bias-free 1x1x1 convolution of the block input added to the result.

    Defaults are the tissue model (system A): one T1 channel on a 64^3 grid,
    5 levels with 32/64/128/256/512 filters, BatchNorm, 2x2x2 pooling,
    transposed-convolution upsampling, concatenated skips and a 1x1x1 softmax
    head over 4 classes (background, CSF, GM, WM).

    ``pool_size`` may pool in-plane only. System A's ``(1, 2, 2)`` is given in
    SimpleITK's ``(z, y, x)`` array order; in brain_tf's ``(x, y, z)`` order
    the same pooling is ``(2, 2, 1)``. Known input sizes must be divisible by
    ``pool_size[axis] ** (depth - 1)`` on each axis.

    ``depth`` (default 5, or the length of ``filters``), ``base_filters``,
    ``filters``, ``norm``, ``upsampling`` and ``dropout`` mean what they mean
    for :func:`~brain_tf.models.unet3d.unet3d`.

    Layer names: see :mod:`brain_tf.models.unet`; each block also has
    ``{block}_shortcut`` and ``{block}_add`` (e.g. ``enc1_shortcut``).
    """
    return unet(input_shape, num_outputs, block_fn=residual_block,
                filters=level_filters(depth, base_filters, filters, model=name,
                                      default_depth=5),
                second_conv_factor=1, pool_size=pool_size, upsampling=upsampling, norm=norm,
                norm_groups=norm_groups, dropout=dropout,
                output_activation=output_activation, name=name)

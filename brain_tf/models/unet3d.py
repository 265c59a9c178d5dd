"""3D U-Net (systems C and B) as a thin constructor over :func:`brain_tf.models.unet.unet`."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from brain_tf.models.blocks import double_conv_block
from brain_tf.models.unet import level_filters, unet


def unet3d(input_shape=(160, 160, 16, 4), num_outputs: int = 3, *, depth: int | None = None,
           base_filters: int = 32, filters: Sequence[int] | None = None,
           second_conv_factor: int = 2, norm: str = "none", norm_groups: int = 8,
           upsampling: str = "transpose", pool_size=2, dropout: float = 0.0,
           output_activation: str = "sigmoid", name: str = "unet3d") -> keras.Model:
    """A 3D U-Net whose blocks are two ``conv 3^3 -> norm -> ReLU`` units.

    The defaults are the brain-tumour model (system C): 4 input modalities,
    depth 4 with encoder convolutions 32->64, 64->128, 128->256, 256->512,
    2x2x2 max-pooling, decoder blocks at 256, 128 and 64 filters and a 1x1x1
    head with 3 sigmoid channels (edema, non-enhancing, enhancing). The
    hippocampus model (system B) is ``second_conv_factor=1`` (32/64/128 and a
    256 bottleneck), ``num_outputs=3, output_activation="softmax"`` and a norm.

    Args:
        input_shape: ``(x, y, z, channels)``; known spatial sizes must be
            divisible by ``pool_size ** (depth - 1)`` (None sizes are allowed).
        num_outputs: output channels.
        depth: number of levels including the bottleneck (default 4, or
            the length of ``filters``).
        base_filters: first-level filters; level k has ``base_filters * 2**k``.
        filters: explicit first-convolution filters per level (overrides
            ``base_filters``; its length is the depth).
        second_conv_factor: 2 doubles the channels in each block's second
            convolution (Cicek et al.), 1 keeps them.
        norm: ``"none" | "batch" | "instance" | "group"`` (instance norm is
            ``GroupNormalization(groups=-1)``).
        upsampling: ``"transpose"`` (transposed convolution) or ``"upsample"``
            (UpSampling3D followed by a convolution).
        dropout: Dropout rate between the two convolutions of every block.
        output_activation: ``"sigmoid"`` (independent channels) or ``"softmax"``.

    Layer names: see :mod:`brain_tf.models.unet` (``enc1_conv1`` ... ``head``).
    """
    return unet(input_shape, num_outputs, block_fn=double_conv_block,
                filters=level_filters(depth, base_filters, filters, model=name,
                                      default_depth=4),
                second_conv_factor=second_conv_factor, pool_size=pool_size,
                upsampling=upsampling, norm=norm, norm_groups=norm_groups, dropout=dropout,
                output_activation=output_activation, name=name)

"""2D U-Net with a ResNet encoder (system D: FLAIR abnormality on RGB slices)."""

from __future__ import annotations

import os

import keras

from brain_tf.errors import ConfigError
from brain_tf.models.blocks import (
    check_activation,
    check_divisible,
    check_input_shape,
    check_norm,
    double_conv_block,
    output_head,
)
from brain_tf.models.freezing import freeze_up_to
from brain_tf.models.resnet_encoder import BACKBONES, build_backbone, skip_layers
from brain_tf.models.unet import decoder


def unet2d_resnet(input_shape=(256, 256, 3), num_outputs: int = 2, *,
                  backbone: str = "resnet34", weights: str | os.PathLike | None = None,
                  encoder_width: int = 64, encoder_blocks=None,
                  depth: int = 5, base_filters: int = 16, norm: str = "batch",
                  upsampling: str = "transpose", dropout: float = 0.0,
                  freeze_encoder: bool = False, output_activation: str = "softmax",
                  input_normalization: str | None = "backbone",
                  name: str = "unet2d_resnet") -> keras.Model:
    """A 2D U-Net whose encoder is a ResNet, with a skip from each stage.

    The encoder is ResNet-34 built from brain_tf blocks (default) or
    ResNet-50 from ``keras.applications`` (``backbone="resnet50"``, which
    also accepts ``weights="imagenet"``). ``depth`` encoder levels are used:
    level k works at 1/2**(k-1) of the input size, its skip is the stage
    output listed in ``resnet_encoder.SKIP_LAYERS`` (``conv1_relu``,
    ``conv2_block3_out``, ...), and the deepest one is the bottleneck. The
    decoder level k (``dec{k}_up``, ``dec{k}_concat``, ``dec{k}_conv1`` ...)
    has ``base_filters * 2**(k-1)`` filters (16, 32, 64, 128, 256 by
    default); ``dec1`` restores the full resolution without a skip, then a
    1x1 ``head`` gives ``num_outputs`` channels.

    Args:
        input_shape: ``(rows, cols, channels)``, sizes divisible by 2**depth.
        weights: None, a weights file of the chosen backbone, or ``"imagenet"``
            (ResNet-50 only; needs internet, else ModelError).
        encoder_width: first-stage filters of a ResNet-34 encoder (64; smaller
            for small inputs and CPUs, see ``resnet34_backbone``).
        encoder_blocks: basic blocks per stage of a ResNet-34 encoder (default
            [3, 4, 6, 3]; [2, 2, 2, 2] is ResNet-18).
        depth: encoder levels used, 2..5.
        freeze_encoder: make the encoder layers non-trainable (a frozen first
            epoch, as in system D); unfreeze later with
            ``freeze_up_to(model, None)``.
        input_normalization: the encoder's input normalisation (see
            :func:`brain_tf.models.resnet_encoder.build_backbone`); by default the model
            takes 0-255 pixel values.
    """
    shape = check_input_shape(input_shape, 2, model=name)
    if backbone not in BACKBONES:
        raise ConfigError(f"{name}: unknown backbone {backbone!r}; use one of "
                          f"{', '.join(BACKBONES)}")
    if not 2 <= depth <= 5:
        raise ConfigError(f"{name}: depth must be 2..5 (ResNet levels), got {depth}")
    check_norm(norm)
    check_activation(output_activation, num_outputs)
    check_divisible(shape, [2 ** depth] * 2, model=name, depth=depth)
    inputs = keras.Input(shape, name="input")
    encoder = build_backbone(backbone, inputs, weights, width=encoder_width,
                             blocks=encoder_blocks, normalization=input_normalization)
    names = skip_layers(backbone, encoder_blocks)[:depth]
    features = [encoder.get_layer(n).output for n in names]
    stages = [(level, features[level - 2] if level >= 2 else None,
               int(base_filters) * 2 ** (level - 1)) for level in range(depth, 0, -1)]
    x = decoder(features[-1], stages, block_fn=double_conv_block, up_size=2,
                upsampling=upsampling, norm=norm, dropout=dropout)
    outputs = output_head(x, num_outputs, output_activation)
    model = keras.Model(inputs, outputs, name=name)
    if freeze_encoder:
        freeze_up_to(model, names[-1])
    return model

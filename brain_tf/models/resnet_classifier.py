"""2D image classifier on a ResNet-50 backbone (system E: slice perspective and sequence)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras

from brain_tf.errors import ConfigError
from brain_tf.models.blocks import check_input_shape, dense_head
from brain_tf.models.cnn3d import dropout_layer
from brain_tf.models.freezing import freeze_up_to
from brain_tf.models.resnet_encoder import build_backbone

BACKBONE_OUTPUT = "conv5_block3_out"
"""Last layer of the ResNet-50 backbone (frozen with ``freeze="all"``; Grad-CAM layer)."""


def resnet_classifier(input_shape=(224, 224, 3), num_outputs: int | Mapping[str, int] = 3, *,
                      weights: str | os.PathLike | None = None, backbone: str = "resnet50",
                      width: int = 64, blocks=None, freeze: str = "none",
                      dropout: float = 0.0, mc_dropout: bool = False,
                      input_normalization: str | None = "backbone",
                      name: str = "resnet_classifier") -> keras.Model:
    """ResNet-50 without top -> global average pool -> dropout -> softmax head(s).

    ``backbone="resnet34"`` with a small ``width`` (e.g. 16) gives the same
    layout (and layer names, ``conv5_block3_out`` included) at a fraction of
    the cost, for small inputs and CPUs.

    Args:
        input_shape: ``(rows, cols, channels)``; 3 channels for ImageNet weights.
        num_outputs: the class count of a single head named ``head`` (the model
            returns one tensor), or a mapping head name -> class count, e.g.
            ``{"perspective": 3, "sequence": 4}``: the model then returns a dict
            keyed by head name and each output layer carries that name.
        weights: None, ``"imagenet"`` (downloads Keras' weights; offline this
            raises ModelError asking for a local file) or a path to a weights
            file saved from ``keras.applications.ResNet50(include_top=False)``
            (or from the chosen ResNet-34 backbone).
        backbone: ``"resnet50"`` (default) or ``"resnet34"``.
        width: first-stage filters of a ResNet-34 backbone (64 is ResNet-34).
        blocks: basic blocks per stage of a ResNet-34 backbone ([2, 2, 2, 2]
            is ResNet-18); the backbone's last layer is then
            ``conv5_block{blocks[3]}_out``.
        freeze: ``"none"``, ``"all"`` (the whole backbone, up to
            ``conv5_block3_out``) or a layer name to freeze up to.
        dropout: Dropout rate before the heads (layer ``dropout``).
        mc_dropout: keep that dropout active at inference (MCDropout) for
            Monte Carlo uncertainty; needs ``dropout > 0``.
        input_normalization: ``"backbone"`` (the backbone's own: caffe for ResNet-50,
            ImageNet mean/std for ResNet-34), ``"caffe"``, ``"torch"``, ``"unit"`` or None
            (see :class:`brain_tf.models.layers.ImageNormalization`): the model takes pixel
            values as read from 8-bit files (0-255).

    Grad-CAM layer: ``conv5_block3_out``.
    """
    shape = check_input_shape(input_shape, 2, model=name)
    if isinstance(num_outputs, Mapping):
        heads = {str(k): v for k, v in num_outputs.items()}
        if not heads:
            raise ConfigError(f"{name}: num_outputs mapping is empty; give head name -> classes")
    else:
        heads = {"head": num_outputs}
    inputs = keras.Input(shape, name="input")
    encoder = build_backbone(backbone, inputs, weights, width=width, blocks=blocks,
                             normalization=input_normalization)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(encoder.output)
    if dropout > 0 or mc_dropout:
        x = dropout_layer(dropout, mc=mc_dropout, name="dropout")(x)
    outputs = {head: dense_head(x, classes, "softmax", name=head)
               for head, classes in heads.items()}
    if not isinstance(num_outputs, Mapping):
        outputs = outputs["head"]
    model = keras.Model(inputs, outputs, name=name)
    if freeze == "all":
        freeze_up_to(model, encoder.layers[-1].name)
    elif freeze != "none":
        freeze_up_to(model, freeze)
    return model

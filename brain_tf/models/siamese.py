"""The Siamese embedding of 2D slices (system E): one shared backbone to a unit vector.

"Siamese" means that every slice goes through the same network with the same weights;
training compares the embeddings of the slices of a batch (pairs or triplets, see
:mod:`brain_tf.losses`), so one model serves every branch.
"""

from __future__ import annotations

import os

import keras

from brain_tf.errors import ConfigError
from brain_tf.models.blocks import check_input_shape, dense_head
from brain_tf.models.freezing import freeze_up_to
from brain_tf.models.resnet_encoder import build_backbone


def siamese_embedding(input_shape=(224, 224, 3), num_outputs: int = 128, *,
                      weights: str | os.PathLike | None = None, backbone: str = "resnet50",
                      width: int = 64, blocks=None, freeze: str = "none",
                      input_normalization: str | None = "backbone", bn_momentum: float = 0.9,
                      name: str = "siamese_embedding") -> keras.Model:
    """Backbone without top -> global average pool -> Dense(``num_outputs``) -> L2 norm.

    The output (layer ``embedding``) is a float32 unit vector of ``num_outputs``
    dimensions per slice, so Euclidean distances between slices lie in [0, 2].

    Args:
        input_shape: ``(rows, cols, channels)``; 3 channels for ImageNet weights.
        num_outputs: the embedding's dimension.
        weights, backbone, width, blocks, input_normalization: the backbone, as in
            :func:`brain_tf.models.resnet_classifier.resnet_classifier` (ResNet-50 by
            default, ``"resnet34"`` with a small ``width`` for CPUs); the model takes
            0-255 pixels.
        freeze: ``"none"``, ``"all"`` (the whole backbone) or a layer name to freeze up to.
        bn_momentum: momentum of the backbone's BatchNormalization moving statistics
            (PyTorch's default, 0.9, rather than Keras' 0.99). Inference uses those
            statistics; after a short training at a high learning rate Keras' slower
            averages still describe earlier weights, and the embeddings of every slice
            then collapse onto almost one point (measured on the synthetic TCGA-GBM twin:
            test 1-NN sequence accuracy 0.44 with the stale statistics, 0.63 with
            statistics recomputed on training slices, same weights).
    """
    shape = check_input_shape(input_shape, 2, model=name)
    inputs = keras.Input(shape, name="input")
    encoder = build_backbone(backbone, inputs, weights, width=width, blocks=blocks,
                             normalization=input_normalization)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(encoder.output)
    x = dense_head(x, num_outputs, None, name="projection")
    outputs = keras.layers.UnitNormalization(axis=-1, name="embedding", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name=name)
    if not 0.0 <= bn_momentum < 1.0:
        raise ConfigError(f"{name}: bn_momentum must be in [0, 1), not {bn_momentum}")
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(bn_momentum)
    if freeze == "all":
        freeze_up_to(model, encoder.layers[-1].name)
    elif freeze != "none":
        freeze_up_to(model, freeze)
    return model

"""Freezing the first layers of a model (transfer learning by layer name)."""

from __future__ import annotations

import keras

from brain_tf.errors import ConfigError


def freeze_up_to(model: keras.Model, layer_name: str | None) -> keras.Model:
    """Make every layer up to and including ``layer_name`` (in the model's
    topological order) non-trainable and every later layer trainable.

    ``None`` makes all layers trainable. Frozen BatchNormalization layers run
    in inference mode (Keras 3), as fine-tuning needs. Recompile the model
    after changing what is trainable. Returns ``model``.
    """
    names = [layer.name for layer in model.layers]
    if layer_name is not None and layer_name not in names:
        raise ConfigError(f"model {model.name} has no layer {layer_name!r} to freeze up to; "
                          "use 'all', 'none' or a layer name from model.summary()")
    frozen = layer_name is not None
    for layer in model.layers:
        layer.trainable = not frozen
        if layer.name == layer_name:
            frozen = False
    return model

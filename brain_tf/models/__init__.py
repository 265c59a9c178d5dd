"""Keras model builders (functional API, channels-last) and a registry by name.

>>> from brain_tf.models import build_model
>>> model = build_model("unet3d", input_shape=(32, 32, 16, 4), base_filters=8)
"""

from __future__ import annotations

import inspect

import keras

from brain_tf.errors import ConfigError
from brain_tf.models.cnn3d import cnn3d, last_conv_layer_name
from brain_tf.models.freezing import freeze_up_to
from brain_tf.models.layers import MCDropout
from brain_tf.models.resnet_classifier import resnet_classifier
from brain_tf.models.resnet_encoder import resnet34_backbone, resnet50_backbone
from brain_tf.models.resnext3d import resnext3d, resnext3d_50, resnext3d_small
from brain_tf.models.resunet3d import resunet3d
from brain_tf.models.siamese import siamese_embedding
from brain_tf.models.unet import unet
from brain_tf.models.unet2d_resnet import unet2d_resnet
from brain_tf.models.unet3d import unet3d

BUILDERS = {
    "unet3d": unet3d,
    "resunet3d": resunet3d,
    "resnext3d": resnext3d,
    "resnext3d_small": resnext3d_small,
    "resnext3d_50": resnext3d_50,
    "cnn3d": cnn3d,
    "resnet_classifier": resnet_classifier,
    "unet2d_resnet": unet2d_resnet,
    "siamese_embedding": siamese_embedding,
}
"""Model name -> builder; every builder accepts ``input_shape`` and ``num_outputs`` (the
embedding's dimension for ``siamese_embedding``)."""


def _options(builder) -> set[str] | None:
    """Keyword options a builder accepts (None when it forwards ``**config``)."""
    params = inspect.signature(builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def build_model(name: str, **config) -> keras.Model:
    """Build the model registered as ``name`` with the builder's keyword options.

    Raises ConfigError for an unknown name or option, or an invalid value.
    """
    try:
        builder = BUILDERS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(BUILDERS)}") from None
    options = _options(builder)
    if options is None and name.startswith("resnext3d_"):
        options = _options(resnext3d)
    unknown = sorted(set(config) - options) if options is not None else []
    if unknown:
        raise ConfigError(f"model {name!r} has no option {', '.join(unknown)}; "
                          f"its options are {', '.join(sorted(options))}")
    try:
        return builder(**config)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"model {name!r} cannot be built with {config}: {err}") from err


__all__ = [
    "BUILDERS", "MCDropout", "build_model", "cnn3d", "freeze_up_to", "last_conv_layer_name",
    "resnet34_backbone", "resnet50_backbone", "resnet_classifier", "resnext3d",
    "resnext3d_50", "resnext3d_small", "resunet3d", "siamese_embedding", "unet", "unet2d_resnet",
    "unet3d",
]

"""2D ResNet backbones: ResNet-34 built from brain_tf blocks (Keras ships none)
and ResNet-50 from ``keras.applications``, with offline-friendly weight loading.

Both use Keras' ResNet layer names, so the stage outputs are
``conv1_relu`` (1/2 resolution), ``conv2_block{n}_out`` (1/4),
``conv3_block{n}_out`` (1/8), ``conv4_block{n}_out`` (1/16) and
``conv5_block{n}_out`` (1/32), the last one being ResNet-50's
``conv5_block3_out`` used for Grad-CAM.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from brain_tf.errors import ConfigError, ModelError
from brain_tf.models.layers import NORMALIZATIONS, ImageNormalization

RESNET50_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
RESNET50_NOTOP_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
                      + RESNET50_NOTOP_FILE)
RESNET50_NOTOP_HASH = "4d473c1dd8becc155b73f8504c6f6626"

RESNET34_BLOCKS = (3, 4, 6, 3)
RESNET34_FILTERS = (64, 128, 256, 512)

SKIP_LAYERS = {
    "resnet34": ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
                 "conv5_block3_out"),
    "resnet50": ("conv1_relu", "conv2_block3_out", "conv3_block4_out", "conv4_block6_out",
                 "conv5_block3_out"),
}
"""Per backbone, the layers at 1/2, 1/4, 1/8, 1/16 and 1/32 of the input size."""


def imagenet_weights_path() -> str:
    """Local path of Keras' ImageNet ResNet-50 (no top) weights, downloading them
    into the Keras cache if needed. Raises ModelError when that is impossible."""
    try:
        return keras.utils.get_file(RESNET50_NOTOP_FILE, RESNET50_NOTOP_URL,
                                    cache_subdir="models", file_hash=RESNET50_NOTOP_HASH)
    except Exception as err:  # any download failure: offline, proxy, bad hash
        raise ModelError(
            f"could not download the ImageNet ResNet-50 weights ({err.__class__.__name__}); "
            f"without internet pass weights='/path/to/{RESNET50_NOTOP_FILE}' (a local "
            "weights file) or weights=None") from err


def check_weights_file(weights: str | os.PathLike) -> str:
    """Return ``weights`` as a string path if it names an existing file."""
    path = Path(weights)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist; pass an existing weights "
                         "file, weights='imagenet' (needs internet) or weights=None")
    return str(path)


#: Each backbone's own input normalisation (see :class:`ImageNormalization`).
NATIVE_NORMALIZATION = {"resnet34": "torch", "resnet50": "caffe"}


def _normalized(inputs, normalization: str | None):
    """``inputs`` through the backbone's input normalisation (layer ``input_normalization``)."""
    if normalization is None:
        return inputs
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"input normalization must be one of {NORMALIZATIONS}, "
                          f"'backbone' or None, not {normalization!r}")
    return ImageNormalization(normalization, name="input_normalization")(inputs)


def resnet50_backbone(inputs, weights: str | os.PathLike | None = None,
                      normalization: str | None = "caffe") -> keras.Model:
    """``keras.applications.ResNet50`` without top on the tensor ``inputs``.

    ``weights``: None (random), ``"imagenet"`` (Keras' ImageNet weights, for 3 channels)
    or a path to a weights file of this backbone. ``normalization``: the input
    normalisation layer put first ("caffe", what Keras' ImageNet weights expect, takes
    0-255 RGB pixels; None leaves the input as it is).
    """
    if weights == "imagenet":
        if inputs.shape[-1] != 3:
            raise ModelError(f"ImageNet weights need 3 input channels, the input has "
                             f"{inputs.shape[-1]}; use weights=None or a matching file")
        path = imagenet_weights_path()
    elif weights is not None:
        path = check_weights_file(weights)
    else:
        path = None
    backbone = keras.applications.ResNet50(include_top=False, weights=None,
                                           input_tensor=_normalized(inputs, normalization))
    if path is not None:
        _load(backbone, path)
    return backbone


def _bn(x, name: str):
    return keras.layers.BatchNormalization(epsilon=1e-5, name=name)(x)


def basic_block(x, filters: int, *, strides: int = 1, name: str):
    """ResNet basic block: two 3x3 conv -> BN (ReLU between), projection
    shortcut (1x1 conv + BN) when the shape changes, add, ReLU."""
    if strides != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                                       name=f"{name}_0_conv")(x)
        shortcut = _bn(shortcut, f"{name}_0_bn")
    else:
        shortcut = x
    x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                            name=f"{name}_1_conv")(x)
    x = keras.layers.Activation("relu", name=f"{name}_1_relu")(_bn(x, f"{name}_1_bn"))
    x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False,
                            name=f"{name}_2_conv")(x)
    x = keras.layers.Add(name=f"{name}_add")([shortcut, _bn(x, f"{name}_2_bn")])
    return keras.layers.Activation("relu", name=f"{name}_out")(x)


def resnet34_backbone(inputs, weights: str | os.PathLike | None = None,
                      width: int = 64, blocks=RESNET34_BLOCKS,
                      normalization: str | None = "torch") -> keras.Model:
    """ResNet-34 without top on the tensor ``inputs`` (7x7/2 stem, 3x3/2
    max-pool, basic blocks [3, 4, 6, 3] with 64/128/256/512 filters).

    ``width`` scales the filters (stem and stages ``width * (1, 2, 4, 8)``);
    64 is ResNet-34, smaller widths give the same layout for small inputs and
    CPUs (16 costs about 1/16 of the computation). ``blocks`` are the basic
    blocks per stage ([2, 2, 2, 2] is the ResNet-18 layout); the stage
    outputs are then named after each stage's last block (see :func:`skip_layers`).

    ``weights``: None or a path to a weights file saved from this backbone
    (``backbone.save_weights("x.weights.h5")``). Keras has no ImageNet
    ResNet-34, so ``"imagenet"`` raises ModelError. ``normalization``: the input
    normalisation layer put first ("torch", ImageNet mean/std as torchvision's ResNets
    expect, takes 0-255 RGB pixels; None leaves the input as it is).
    """
    if weights == "imagenet":
        raise ModelError("Keras ships no ImageNet ResNet-34 weights; pass a local ResNet-34 "
                         "weights file, weights=None, or backbone='resnet50' for ImageNet")
    if int(width) < 1:
        raise ConfigError(f"resnet34 width must be a positive number of filters, got {width}")
    blocks = _check_blocks(blocks)
    filters = [int(width) * f // RESNET34_FILTERS[0] for f in RESNET34_FILTERS]
    x = keras.layers.Conv2D(filters[0], 7, strides=2, padding="same", use_bias=False,
                            name="conv1_conv")(_normalized(inputs, normalization))
    x = keras.layers.Activation("relu", name="conv1_relu")(_bn(x, "conv1_bn"))
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    for stage, (stage_filters, count) in enumerate(zip(filters, blocks), start=2):
        for b in range(1, count + 1):
            x = basic_block(x, stage_filters, strides=2 if (b == 1 and stage > 2) else 1,
                            name=f"conv{stage}_block{b}")
    backbone = keras.Model(inputs, x, name="resnet34")
    if weights is not None:
        _load(backbone, check_weights_file(weights))
    return backbone


def _check_blocks(blocks) -> tuple[int, ...]:
    blocks = tuple(int(b) for b in blocks)
    if len(blocks) != 4 or min(blocks) < 1:
        raise ConfigError(f"resnet34 blocks must be 4 positive counts (one per stage), "
                          f"got {blocks}")
    return blocks


def skip_layers(backbone: str, blocks=None) -> tuple[str, ...]:
    """The layers at 1/2 ... 1/32 of the input size of ``backbone`` (ResNet-34 with
    ``blocks`` per stage, default [3, 4, 6, 3])."""
    if backbone == "resnet34" and blocks is not None:
        blocks = _check_blocks(blocks)
        return ("conv1_relu",) + tuple(f"conv{stage}_block{n}_out"
                                       for stage, n in enumerate(blocks, start=2))
    if backbone not in SKIP_LAYERS:
        raise ConfigError(f"unknown backbone {backbone!r}; use one of {', '.join(SKIP_LAYERS)}")
    return SKIP_LAYERS[backbone]


def _load(model: keras.Model, path: str) -> None:
    try:
        model.load_weights(path)
    except Exception as err:
        raise ModelError(f"weights file {path} does not fit the {model.name} backbone "
                         f"({err.__class__.__name__}: {str(err).splitlines()[0][:200]}); "
                         "pass weights saved from the same backbone") from err


BACKBONES = {"resnet34": resnet34_backbone, "resnet50": resnet50_backbone}


def build_backbone(name: str, inputs, weights: str | os.PathLike | None = None,
                   width: int = 64, blocks=None, normalization: str | None = "backbone"
                   ) -> keras.Model:
    """The backbone ``name`` ("resnet34" or "resnet50") on ``inputs``; ``width``
    (filters of the first stage) and ``blocks`` (per stage) are adjustable for
    ResNet-34 only. ``normalization="backbone"`` puts the backbone's own input
    normalisation first (:data:`NATIVE_NORMALIZATION`), so the model takes 0-255 pixels."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; use one of {', '.join(BACKBONES)}")
    if normalization == "backbone":
        normalization = NATIVE_NORMALIZATION[name]
    if name == "resnet34":
        return resnet34_backbone(inputs, weights, width=width,
                                 blocks=RESNET34_BLOCKS if blocks is None else blocks,
                                 normalization=normalization)
    if int(width) != 64 or blocks is not None:
        raise ConfigError(f"{name} has a fixed layout; width and blocks need "
                          "backbone='resnet34'")
    return BACKBONES[name](inputs, weights, normalization=normalization)

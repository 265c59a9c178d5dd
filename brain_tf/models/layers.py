"""Custom layers shared by the model builders (registered for .keras saving)."""

from __future__ import annotations

import keras

from brain_tf.preprocess.normalise import IMAGENET_MEAN, IMAGENET_STD


@keras.saving.register_keras_serializable(package="brain_tf")
class MCDropout(keras.layers.Dropout):
    """Dropout that stays active at inference (Monte Carlo dropout).

    Each call samples a new mask, so repeated predictions of one input differ
    and their spread estimates the model's uncertainty. With ``rate=0`` it is
    the identity.
    """

    def call(self, inputs, training=None):
        return super().call(inputs, training=True)


@keras.saving.register_keras_serializable(package="brain_tf")
class GroupedConv3D(keras.layers.Conv3D):
    """Conv3D with ``groups > 1`` computed as one convolution per group.

    Same weights (kernel shape ``(k, k, k, in_channels // groups, filters)``)
    and same results as ``keras.layers.Conv3D(groups=groups)``, but the input
    and kernel are split into the groups, convolved separately and
    concatenated. Keras runs grouped convolutions on TensorFlow through XLA,
    which on CPU was measured 5-8x slower for a training step than this split
    (128 channels, 32 groups, 16^3 and 32^3 volumes). Channels-last only.
    """

    def convolution_op(self, inputs, kernel):
        if self.groups == 1:
            return super().convolution_op(inputs, kernel)
        if self.data_format != "channels_last":
            raise ValueError("GroupedConv3D supports channels_last data only")
        pieces = zip(keras.ops.split(inputs, self.groups, axis=-1),
                     keras.ops.split(kernel, self.groups, axis=-1))
        return keras.ops.concatenate(
            [keras.ops.conv(x, k, strides=list(self.strides), padding=self.padding,
                            dilation_rate=self.dilation_rate, data_format=self.data_format)
             for x, k in pieces], axis=-1)


NORMALIZATIONS = ("caffe", "torch", "unit")


@keras.saving.register_keras_serializable(package="brain_tf")
class ImageNormalization(keras.layers.Layer):
    """An image backbone's own input normalisation, inside the model.

    The model then takes pixel values as read from an 8-bit file (0-255, RGB), so an
    exported SavedModel needs no preprocessing code of brain_tf's:

    - ``"caffe"``: RGB -> BGR, minus the ImageNet mean on the 0-255 scale (what
      ``keras.applications.resnet50.preprocess_input`` does; Keras' ResNet-50 weights);
    - ``"torch"``: ``(x / 255 - mean) / std`` with the ImageNet RGB mean and std
      (torchvision's ResNets, e.g. a ResNet-34 encoder);
    - ``"unit"``: ``x / 255``.
    """

    def __init__(self, mode: str = "torch", **kwargs):
        super().__init__(**kwargs)
        if mode not in NORMALIZATIONS:
            raise ValueError(f"image normalization must be one of {NORMALIZATIONS}, not {mode!r}")
        self.mode = mode

    def call(self, inputs):
        x = keras.ops.cast(inputs, "float32")
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "caffe":
            mean = keras.ops.convert_to_tensor([255.0 * m for m in IMAGENET_MEAN[::-1]])
            return keras.ops.flip(x, axis=-1) - mean
        mean = keras.ops.convert_to_tensor(IMAGENET_MEAN)
        std = keras.ops.convert_to_tensor(IMAGENET_STD)
        return (x / 255.0 - mean) / std

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}

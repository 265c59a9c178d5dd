"""A Keras twin of MONAI's ``UNet(spatial_dims=3, in_channels=4, out_channels=3,
channels=(16, 32, 64, 128), strides=(2, 2, 2))`` (no residual units): the fast
network the sliding-window bench times against MONAI.

Per level: a 3x3x3 convolution with stride 2, instance normalisation without
affine parameters, PReLU with one shared parameter. At the bottom a 3x3x3
stride-1 convolution to 128 channels with the same norm and activation. On the
way up, each level concatenates its input with the output of the level below,
``[x, sub(x)]``, and applies a transposed 3x3x3 stride-2 convolution with norm
and activation, except the last one (convolution only). 488,457 parameters.

Usage: python bench/monai_twin.py  (prints the parameter count and the layer list)
"""

from __future__ import annotations

import keras
from keras import layers

PARAMETERS = 488_457


def _norm_act(x, name: str):
    x = layers.GroupNormalization(groups=-1, center=False, scale=False, epsilon=1e-5,
                                  name=f"{name}_norm")(x)
    return layers.PReLU(alpha_initializer=keras.initializers.Constant(0.25),
                        shared_axes=[1, 2, 3, 4], name=f"{name}_prelu")(x)


def _down(x, filters: int, strides: int, name: str):
    x = layers.Conv3D(filters, 3, strides=strides, padding="same", name=f"{name}_conv")(x)
    return _norm_act(x, name)


def _up(x, filters: int, name: str, last: bool):
    x = layers.Conv3DTranspose(filters, 3, strides=2, padding="same", name=f"{name}_conv")(x)
    return x if last else _norm_act(x, name)


def monai_unet_twin(in_channels: int = 4, out_channels: int = 3,
                    channels=(16, 32, 64, 128)) -> keras.Model:
    """The Keras twin of MONAI's strided 3D UNet (random weights, linear output)."""
    inputs = keras.Input((None, None, None, in_channels), name="image")

    def level(x, depth: int, out: int):
        if depth == len(channels) - 1:
            return _down(x, channels[depth], 1, "bottom")
        down = _down(x, channels[depth], 2, f"down{depth + 1}")
        below = level(down, depth + 1, channels[depth])
        joined = layers.Concatenate(name=f"skip{depth + 1}")([down, below])
        return _up(joined, out, f"up{depth + 1}", last=depth == 0)

    outputs = level(inputs, 0, out_channels)
    return keras.Model(inputs, outputs, name="monai_unet_twin")


if __name__ == "__main__":
    model = monai_unet_twin()
    model.summary()
    print(f"{model.count_params():,} parameters (MONAI's UNet: {PARAMETERS:,})")

"""Grad-CAM heat maps for 2D and 3D CNNs (classifiers, regressors) and PNG overlays.

For a target layer with activations A (spatial..., channels) and a score y
(a class probability, a regression output, or for a segmentation output
the spatial mean of one channel):

    weights_c = mean over the spatial axes of dy/dA_c
    CAM       = ReLU(sum_c weights_c * A_c)

The CAM is upsampled to the input grid (linear interpolation, cell centres
aligned) and divided by its maximum, so it lies in [0, 1] (all zeros when
nothing contributes positively). The score is taken after the model's output
activation; a saturated softmax gives weak gradients, so explain the class
the model is unsure about, or a model whose head is linear. The model runs
in inference mode; MCDropout layers stay active, so such a model's CAM is one
random draw.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import scipy.ndimage
import tensorflow as tf

from brain_tf.errors import DataError, ModelError
from brain_tf.io import atomic_path

CONV_LAYERS = (
    keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose, keras.layers.SeparableConv2D, keras.layers.DepthwiseConv2D,
)


def _nested_owner(model, name: str) -> str | None:
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            try:
                layer.get_layer(name)
                return layer.name
            except ValueError:
                owner = _nested_owner(layer, name)
                if owner:
                    return f"{layer.name}/{owner}"
    return None


def find_last_conv_layer(model) -> str:
    """Name of the model's last convolution layer with a spatial output."""
    for layer in reversed(model.layers):
        if isinstance(layer, CONV_LAYERS) and len(layer.output.shape) >= 4:
            return layer.name
    raise ModelError(f"model {model.name!r}: no Conv2D/Conv3D layer at its top level; pass "
                     "layer_name= the layer to explain")


def _target_layer(model, layer_name: str | None):
    name = layer_name or find_last_conv_layer(model)
    try:
        return model.get_layer(name)
    except ValueError:
        owner = _nested_owner(model, name)
        where = (f"inside the nested model {owner!r}; build that backbone on the model's own "
                 "input (e.g. input_tensor=) so its layers are part of the model") if owner \
            else "not found; check model.summary() for layer names"
        raise ModelError(f"model {model.name!r}: layer {name!r} {where}") from None


def _target_output(model, output):
    outputs = list(model.outputs)
    if output is None:
        if len(outputs) != 1:
            raise ModelError(f"model {model.name!r} has {len(outputs)} outputs: pass output= "
                             "an index or output layer name")
        return outputs[0]
    if isinstance(output, (int, np.integer)):
        return outputs[output]
    names = list(getattr(model, "output_names", None) or [])
    if output in names:
        return outputs[names.index(output)]
    try:
        return model.get_layer(output).output
    except ValueError:
        raise ModelError(f"model {model.name!r}: no output {output!r}; outputs are "
                         f"{names}") from None


def _upsample(cam: np.ndarray, shape: tuple) -> np.ndarray:
    if cam.shape == shape:
        return cam
    factors = [t / s for t, s in zip(shape, cam.shape)]
    out = scipy.ndimage.zoom(cam, factors, order=1, mode="nearest", grid_mode=True)
    if out.shape != shape:
        raise ModelError(f"could not upsample a CAM of shape {cam.shape} to {shape}")
    return out


def grad_cam(model, inputs, layer_name: str | None = None, class_index=None,
             output=None) -> np.ndarray:
    """Grad-CAM heat maps on the input grid, in [0, 1].

    Args:
        model: a functional Keras model (2D or 3D, channels-last).
        inputs: one sample (x, y[, z], c) or a batch (n, x, y[, z], c); a
            list/dict of batches for a multi-input model (the first input's
            grid is the CAM's grid).
        layer_name: target layer (e.g. ``"conv5_block3_out"``); default the
            last Conv2D/Conv3D layer.
        class_index: the output channel to explain: an int, one per sample,
            or ``None`` for each sample's most probable class (channel 0 for
            a single-output regressor).
        output: which output of a multi-output model (index or output name).

    Returns:
        float32 (x, y[, z]) for one sample, (n, x, y[, z]) for a batch.
    """
    layer = _target_layer(model, layer_name)
    target = _target_output(model, output)
    first = inputs[0] if isinstance(inputs, (list, tuple)) else \
        next(iter(inputs.values())) if isinstance(inputs, dict) else inputs
    first = np.asarray(first)
    single = not isinstance(inputs, (list, tuple, dict)) and \
        first.ndim == len(model.inputs[0].shape) - 1
    if single:
        inputs = first[None]
        first = inputs
    spatial = tuple(first.shape[1:-1])
    if len(layer.output.shape) - 2 != len(spatial):
        raise ModelError(f"layer {layer.name!r} output {tuple(layer.output.shape)} has no "
                         f"{len(spatial)}D spatial grid; choose a convolutional layer")

    explainer = keras.Model(model.inputs, [layer.output, target])
    x = tf.nest.map_structure(lambda a: tf.convert_to_tensor(np.asarray(a), tf.float32), inputs)
    with tf.GradientTape() as tape:
        activations, predictions = explainer(x, training=False)
        scores = predictions
        if len(scores.shape) > 2:
            scores = tf.reduce_mean(scores, axis=list(range(1, len(scores.shape) - 1)))
        if class_index is None:
            index = tf.argmax(scores, axis=-1) if scores.shape[-1] > 1 else \
                tf.zeros(tf.shape(scores)[:1], tf.int64)
        else:
            index = tf.broadcast_to(tf.constant(class_index, tf.int64), tf.shape(scores)[:1])
        score = tf.reduce_sum(tf.gather(scores, index, axis=1, batch_dims=1))
    grads = tape.gradient(score, activations)
    if grads is None:
        raise ModelError(f"layer {layer.name!r} does not influence the explained output")
    axes = tuple(range(1, len(activations.shape) - 1))
    weights = tf.reduce_mean(grads, axis=axes, keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1)).numpy()

    result = np.empty((cams.shape[0], *spatial), np.float32)
    for i, cam in enumerate(cams):
        cam = np.maximum(_upsample(cam.astype(np.float64), spatial), 0.0)
        peak = cam.max()
        result[i] = cam / peak if peak > 0 else 0.0
    return result[0] if single else result


def _display(image: np.ndarray, rgb: bool) -> np.ndarray:
    image = image.astype(np.float64)
    lo, hi = np.percentile(image, [1, 99]) if not rgb else (image.min(), image.max())
    if hi <= lo:
        return np.zeros_like(image)
    return np.clip((image - lo) / (hi - lo), 0.0, 1.0)


def save_cam_overlay(image, cam, path: str | os.PathLike, alpha: float = 0.4,
                     cmap: str = "jet", centre=None, title: str | None = None,
                     spacing=None, dpi: int = 100) -> Path:
    """Write a PNG of ``cam`` over ``image`` (matplotlib Agg, atomic write).

    2D: ``image`` (h, w) or (h, w, c) (3 channels are shown as RGB, otherwise
    channel 0), ``cam`` (h, w). 3D: ``image`` (x, y, z) or (x, y, z, c) and
    ``cam`` (x, y, z); three panels, the sagittal, coronal and axial planes
    through ``centre`` (a voxel index; default the middle of the volume).
    ``spacing`` (voxel size per axis, e.g. ``Volume.spacing``) keeps the
    aspect ratio of anisotropic voxels.
    """
    from matplotlib.figure import Figure

    image, cam = np.asarray(image), np.asarray(cam, dtype=np.float32)
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"{path}: overlay must be a .png file")
    if cam.ndim not in (2, 3) or image.shape[:cam.ndim] != cam.shape \
            or image.ndim not in (cam.ndim, cam.ndim + 1):
        raise DataError(f"{path}: image {image.shape} and CAM {cam.shape} do not share a "
                        "2D or 3D grid; pass the image the CAM was computed on")
    rgb = cam.ndim == 2 and image.ndim == 3 and image.shape[-1] == 3
    if image.ndim > cam.ndim and not rgb:
        image = image[..., 0]
    sp = [1.0] * cam.ndim if spacing is None else [float(v) for v in spacing]
    if cam.ndim == 2:  # (rows, columns) as stored
        panels = [("", image, cam, sp[0] / sp[1])]
    else:  # voxel axes (x, y, z): the first remaining axis across, the second up
        c = [s // 2 for s in cam.shape] if centre is None else [int(v) for v in centre]
        panels = [("sagittal", image[c[0]], cam[c[0]], sp[2] / sp[1]),
                  ("coronal", image[:, c[1]], cam[:, c[1]], sp[2] / sp[0]),
                  ("axial", image[:, :, c[2]], cam[:, :, c[2]], sp[1] / sp[0])]
    fig = Figure(figsize=(3.2 * len(panels), 3.4 if title else 3.2), dpi=dpi)
    for i, (name, img, heat, aspect) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        if cam.ndim == 3:
            img, heat = np.swapaxes(img, 0, 1), heat.T
        origin = "lower" if cam.ndim == 3 else "upper"
        ax.imshow(_display(img, rgb), cmap=None if rgb else "gray", origin=origin,
                  aspect=aspect)
        ax.imshow(heat, cmap=cmap, alpha=alpha, vmin=0.0, vmax=1.0, origin=origin,
                  aspect=aspect)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path

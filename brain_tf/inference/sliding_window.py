"""Whole-volume prediction with a patch model: tile, predict in batches, blend.

Keras models are predicted by one compiled TensorFlow function
(:mod:`brain_tf.inference.compiled_window`); any other callable (a SavedModel
signature, an ONNX Runtime session wrapper, a plain function) by the numpy
loop below. Both use the same tiles and weights and give the same results.

In the numpy loop, memory stays bounded: besides the volume itself, only the
output array (one value per voxel and output channel), one batch of input
tiles and one batch of output tiles are held. Tile weights are separable (see
:mod:`brain_tf.inference.tiling`), so no full-size weight array and no final
division are needed: each tile is added into the output with its final weight.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from brain_tf.errors import ConfigError, DataError, ModelError
from brain_tf.inference.calling import make_predictor
from brain_tf.inference.compiled_window import compiled_window
from brain_tf.inference.tiling import (
    axis_plan,
    blend_profile,
    check_overlap,
    flip_sets,
    tile_starts,
)
from brain_tf.io import Volume

OUTPUT_DTYPES = ("float32", "float16")


def as_channels_last(volume, name: str = "volume") -> np.ndarray:
    """The (x, y, z, c) array of a :class:`Volume` or array; (x, y, z) gets c = 1."""
    if isinstance(volume, Volume):
        name = volume.path or name
        volume = volume.array
    array = np.asarray(volume)
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4:
        raise DataError(f"{name}: shape {array.shape}; expected (x, y, z, channels) or (x, y, z)")
    return array


def resolve_patch(patch_size, spatial: Sequence[int], slice_axis: int | None) -> tuple[int, ...]:
    """The 3D tile shape from ``patch_size`` (None entries: the whole axis).

    With ``slice_axis`` the tile is one voxel thick along that axis and
    ``patch_size`` may give just the two in-plane sizes.
    """
    spatial = tuple(int(s) for s in spatial)
    if slice_axis is not None and slice_axis not in (0, 1, 2):
        raise ConfigError(f"slice_axis={slice_axis}: must be 0, 1, 2 or None")
    ndim = 3 if slice_axis is None else 2
    if patch_size is None or isinstance(patch_size, (int, np.integer)):
        patch = [patch_size] * ndim
    else:
        patch = list(patch_size)
    if slice_axis is not None and len(patch) == 3:
        if patch[slice_axis] not in (1, None):
            raise ConfigError(f"patch_size={tuple(patch_size)}: with slice_axis={slice_axis} the "
                              "tile is one slice thick; give the two in-plane sizes")
        patch = [p for i, p in enumerate(patch) if i != slice_axis]
    if len(patch) != ndim:
        raise ConfigError(f"patch_size={patch_size}: expected {ndim} sizes "
                          f"({'x, y, z' if ndim == 3 else 'the two in-plane axes'})")
    if slice_axis is not None:
        patch.insert(slice_axis, 1)
    out = []
    for p, s in zip(patch, spatial):
        if p is None:
            p = s
        if int(p) < 1:
            raise ConfigError(f"patch_size={patch_size}: sizes must be positive")
        out.append(int(p))
    return tuple(out)


def _output_dtype(value) -> np.dtype:
    try:
        dtype = np.dtype(value)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in OUTPUT_DTYPES:
        raise ConfigError(f"output_dtype={value!r}: use 'float32' or 'float16'")
    return dtype


def _slice_predictor(predict, slice_axis: int):
    """Wrap a 2D model so it takes tiles (n, ..., 1 at slice_axis, ..., c)."""
    batch_axis = slice_axis + 1

    def predictor(tiles: np.ndarray) -> np.ndarray:
        pred = predict(np.squeeze(tiles, axis=batch_axis))
        if pred.ndim == 3:
            pred = pred[..., None]
        if pred.ndim != 4:
            raise ModelError(f"2D model output has shape {pred.shape}; expected "
                             "(batch, height, width, channels)")
        return np.expand_dims(pred, batch_axis)

    return predictor


def _check_prediction(pred: np.ndarray, n: int, patch: tuple) -> np.ndarray:
    if pred.ndim == 4:
        pred = pred[..., None]
    if pred.shape[:4] != (n, *patch) or pred.ndim != 5:
        raise ModelError(
            f"model output shape {pred.shape} does not match its tiles {(n, *patch)} + "
            "(channels,); the model must keep the spatial size of its input (padding='same')"
        )
    return pred


def _fill_tile(dst: np.ndarray, array: np.ndarray, tiles, pad_value: float) -> None:
    """Copy the volume part of one tile into ``dst``, padding the rest."""
    src = tuple(slice(t.lo, t.hi) for t in tiles)
    inner = tuple(slice(t.tile_lo, t.tile_hi) for t in tiles)
    if any(t.tile_lo != 0 or t.tile_hi != n for t, n in zip(tiles, dst.shape[:3])):
        dst.fill(pad_value)
    dst[inner] = array[src]


class _Blender:
    """Predicts batches of tiles (with their flips) and adds them into the output.

    Holds the only large buffers: one batch of input tiles, one batch of
    output tiles and the output array (allocated at the first prediction,
    when the number of output channels is known).
    """

    def __init__(self, predict, spatial, patch, batch_size, channels, flips, output_dtype):
        self.predict, self.spatial, self.patch = predict, tuple(spatial), tuple(patch)
        self.flips, self.output_dtype = flips, output_dtype
        self.share = np.float32(1.0 / len(flips))
        self.tiles_in = np.empty((batch_size, *patch, channels), np.float32)
        self.tiles_out = None
        self.result = None

    def _allocate(self, channels: int) -> None:
        if self.result is None:
            self.result = np.zeros((*self.spatial, channels), dtype=self.output_dtype)
            self.tiles_out = np.empty((len(self.tiles_in), *self.patch, channels), np.float32)
        elif channels != self.result.shape[-1]:
            raise ModelError(f"model output has {channels} channels, earlier tiles had "
                             f"{self.result.shape[-1]}")

    def _predict_flips(self, n: int) -> np.ndarray:
        """Sum over the flips of the (flipped back) predictions of the first n tiles."""
        tiles = self.tiles_in[:n]
        for k, axes in enumerate(self.flips):
            flip_axes = tuple(a + 1 for a in axes)
            x = np.ascontiguousarray(np.flip(tiles, flip_axes)) if axes else tiles
            pred = _check_prediction(self.predict(x), n, self.patch)
            if axes:
                pred = np.flip(pred, flip_axes)
            self._allocate(pred.shape[-1])
            out = self.tiles_out[:n]
            if k == 0:
                np.copyto(out, pred, casting="same_kind")
            else:
                np.add(out, pred, out=out, casting="same_kind")
            del x, pred  # free this flip's tiles before the next flip is made
        return self.tiles_out[:n]

    def add(self, batch) -> None:
        """Predict the tiles filled into ``tiles_in`` and add them with their weights."""
        summed = self._predict_flips(len(batch))
        for part, (tx, ty, tz) in zip(summed, batch):
            weight = np.multiply.outer(np.multiply.outer(tx.weights * self.share, ty.weights),
                                       tz.weights)
            part = part[tx.tile_lo:tx.tile_hi, ty.tile_lo:ty.tile_hi, tz.tile_lo:tz.tile_hi]
            np.multiply(part, weight[..., None], out=part)
            target = self.result[tx.lo:tx.hi, ty.lo:ty.hi, tz.lo:tz.hi]
            np.add(target, part, out=target, casting="unsafe")


def sliding_window_predict(
    model,
    volume,
    patch_size=None,
    overlap: float = 0.5,
    mode: str = "gaussian",
    tta=False,
    batch_size: int | None = None,
    *,
    slice_axis: int | None = None,
    sigma_scale: float = 0.125,
    pad_value: float = 0.0,
    output_dtype: str = "float32",
    output=None,
    progress: bool = False,
    compiled: bool | None = None,
) -> np.ndarray:
    """Predict a whole volume with a model trained on patches.

    The volume is covered by overlapping tiles (:func:`tiling.tile_starts`
    per axis; an axis shorter than the tile is padded with ``pad_value`` on
    both sides), tiles are predicted ``batch_size`` at a time, and each
    voxel's output is the weighted mean of the tiles covering it.

    Args:
        model: a Keras model or any callable mapping a batch (n, x, y, z, c)
            to (n, x, y, z, k) (numpy or tensor). With ``slice_axis`` it is a
            2D model mapping (n, h, w, c) to (n, h, w, k).
        volume: (x, y, z, c) array, (x, y, z) array, or a :class:`brain_tf.io.Volume`.
        patch_size: tile size: one int, or one per axis (``None`` entries or
            ``patch_size=None``: the whole axis). With ``slice_axis``, the two
            in-plane sizes.
        overlap: fraction of a tile shared with its neighbour, in [0, 1).
        mode: ``"gaussian"`` (weights fall off from the tile centre, sigma =
            ``sigma_scale`` x tile size) or ``"constant"`` (plain mean).
        tta: flip test-time augmentation: ``False``; ``True`` for every
            combination of the spatial axes that are tiled (8 predictions in
            3D, 4 slice by slice); or a list of axis tuples such as
            ``[(0,), (1, 2)]`` (the plain prediction is always included). Each
            tile is flipped, predicted and flipped back; the results are averaged.
        batch_size: tiles per model call (default 2 for 3D tiles, 16 for slices).
        slice_axis: predict slice by slice along this axis with a 2D model.
        pad_value: value of the padding outside the volume.
        output_dtype: ``"float32"``, or ``"float16"`` to halve the output
            array (tiles are added into it directly; about 1e-3 relative error).
        output: which output of a multi-output model to use (key or index).
        progress: show a ``keras.utils.Progbar`` over the tiles (the compiled
            path reports once, when the volume is done).
        compiled: ``None`` (default): the compiled TensorFlow function for Keras
            models, the numpy loop for other callables; ``False``: the numpy
            loop; ``True``: the compiled function (needs a Keras model).

    Returns:
        array (x, y, z, k) of ``output_dtype`` (float32 by default).
    """
    array = as_channels_last(volume)
    spatial = array.shape[:3]
    patch = resolve_patch(patch_size, spatial, slice_axis)
    overlap = check_overlap(overlap)
    output_dtype = _output_dtype(output_dtype)
    if batch_size is None:
        batch_size = 2 if slice_axis is None else 16
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size={batch_size}: must be at least 1")
    batch_size = int(batch_size)

    is_keras = isinstance(model, keras.Model)
    if compiled and not is_keras:
        raise ModelError(f"compiled=True needs a Keras model, got {type(model).__name__}; "
                         "leave compiled=None to predict other callables with the numpy loop")
    flips = flip_sets(tta, [a for a in range(3) if patch[a] > 1])

    plans = []
    for size, p in zip(spatial, patch):
        starts = tile_starts(size, p, overlap)
        plans.append(axis_plan(size, p, starts, blend_profile(p, mode, sigma_scale)))
    grid = [(a, b, c) for a in plans[0].values() for b in plans[1].values()
            for c in plans[2].values()]

    bar = keras.utils.Progbar(len(grid), unit_name="tile") if progress else None
    if is_keras and compiled is not False:
        window = compiled_window(model, patch, min(batch_size, len(grid)), array.shape[3], flips,
                                 output, slice_axis, output_dtype)
        result = window(array, grid, pad_value)
        if bar is not None:
            bar.update(len(grid))
        return result

    predict = make_predictor(model, output)
    if slice_axis is not None:
        predict = _slice_predictor(predict, slice_axis)
    blender = _Blender(predict, spatial, patch, min(batch_size, len(grid)), array.shape[3],
                       flips, output_dtype)
    for first in range(0, len(grid), batch_size):
        batch = grid[first:first + batch_size]
        for j, tile in enumerate(batch):
            _fill_tile(blender.tiles_in[j], array, tile, pad_value)
        blender.add(batch)
        if bar is not None:
            bar.update(first + len(batch))
    return blender.result

"""Sliding-window prediction of a Keras model as one compiled TensorFlow function.

:func:`brain_tf.inference.sliding_window_predict` uses this path for Keras
models (the numpy path in :mod:`brain_tf.inference.sliding_window` serves any
other callable). The tile grid and the blending weights are the same
(:mod:`brain_tf.inference.tiling`: separable Gaussian or constant weights,
already divided by their sum over the grid), so the results are the same up
to float rounding.

One ``tf.function`` (traced once per model and tile configuration, whatever
the volume's size) takes the volume, pads it where a tile sticks out, and
runs a ``tf.while_loop`` over batches of tiles. Each iteration

1. cuts ``batch_size`` tiles out of the padded volume (an XLA-compiled
   function of dynamic slices: one copy per tile),
2. runs the model on them, once per flip of test-time augmentation (flipped
   in, flipped back out), with a fixed tile shape; the last batch may be
   shorter, and its missing rows are filled with zeros of weight zero,
3. adds ``prediction x weight`` into an accumulator (an XLA-compiled
   function of dynamic slices and dynamic-update slices on a
   ``tf.Variable``, which XLA updates in place: one pass over each tile).

The model computes in its own precision (a model built or rebuilt in bfloat16 or
float16, :func:`brain_tf.distribute.in_precision`, casts the float32 tiles itself); its
outputs are cast to float32 before blending, so the weights, the accumulator and the
result are float32 in every precision.

The model itself runs in TensorFlow's graph executor, not in XLA (XLA's 3D
convolutions on CPU are many times slower than oneDNN's). Plain TensorFlow
has no fast in-place "add into a sub-box" on CPU (``tensor_scatter_nd_add``
and ``TensorStridedSliceUpdate`` copied the whole accumulator or ran ten
times slower than numpy); XLA's dynamic-update slice on a variable does it
in one fused pass. After the loop the accumulator is cropped to the volume
and returned. As the weights of all tiles covering a voxel already sum to
one, no weight volume and no final division are needed.

On a GPU every step above runs on the device: the volume is copied to it
once before the loop, the tiles, the model's outputs and the accumulator
never leave it, and the probabilities come back once, after the loop; the
only traffic per batch is the launch of the kernels. On a CPU the same
function saves the per-batch Python work of the numpy path (Keras
``predict_on_batch``, tile copies, numpy blending).

Memory: TensorFlow copies every numpy array it is given, except through
DLPack, which shares a C-contiguous array whose data is aligned to 64 bytes.
The volume is handed over that way; an array that is not aligned (numpy's
own allocations usually are not), not native-order float32, or read-only
(DLPack cannot say so, and numpy refuses to export it) is first copied into
one that is (one copy, as TensorFlow would make). Arrays made with
:func:`aligned_empty` are shared without a copy. Besides the input, a call
holds the accumulator (the size of the output), one batch of tiles and the
model's activations, and at the end the output array itself.

The accumulator is a variable held by the compiled function, so one compiled
function serves one call at a time (a lock guards it); its memory is freed
after each call.
"""

from __future__ import annotations

import threading
import weakref

import keras
import numpy as np
import tensorflow as tf

# XLA's dynamic slice and dynamic-update slice (slices whose start is a tensor). The
# same module backs keras.ops.slice_update in Keras's TensorFlow backend.
from tensorflow.compiler.tf2xla.python.xla import dynamic_slice, dynamic_update_slice

from brain_tf.errors import ModelError
from brain_tf.inference.calling import select_output

# The compiled functions of each model, by tile configuration; an entry goes
# when its model is garbage-collected (the functions hold the model weakly).
_CACHE: "weakref.WeakKeyDictionary[keras.Model, dict]" = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


ALIGNMENT = 64  # bytes; TensorFlow shares (does not copy) buffers aligned to this


def aligned_empty(shape, dtype="float32") -> np.ndarray:
    """An uninitialised C-contiguous array whose data TensorFlow can share without a copy."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % ALIGNMENT
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


def shareable(array: np.ndarray) -> bool:
    """Whether TensorFlow can take ``array`` through DLPack without a copy: native-order
    float32, C-contiguous, aligned and writable (DLPack cannot mark a buffer read-only, so
    numpy refuses to export a read-only array: a read-only memory map, ``np.frombuffer`` of
    bytes, an array with ``setflags(write=False)``)."""
    return (array.dtype == np.float32 and array.dtype.isnative and array.flags.c_contiguous
            and array.flags.writeable and array.ctypes.data % ALIGNMENT == 0)


def _shared_tensor(array: np.ndarray) -> tf.Tensor:
    """``array`` as a float32 tensor, sharing its memory where :func:`shareable`, else from
    an aligned float32 copy."""
    if not shareable(array):
        copy = aligned_empty(array.shape, np.float32)
        np.copyto(copy, array, casting="unsafe")
        array = copy
    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def _output_channels(model, tile_shape: tuple, channels: int, output, slice_axis) -> int:
    """Number of output channels of ``model`` on tiles of ``tile_shape`` (no computation)."""
    shape = tile_shape if slice_axis is None else tuple(
        s for i, s in enumerate(tile_shape) if i != slice_axis)
    spec = model.compute_output_spec(keras.KerasTensor((1, *shape, channels), dtype="float32"))
    spec = select_output(spec, output, model)
    spatial_rank = 3 if slice_axis is None else 2
    if len(spec.shape) == spatial_rank + 1:
        return 1
    if len(spec.shape) != spatial_rank + 2 or spec.shape[-1] is None:
        raise ModelError(f"model output shape {tuple(spec.shape)} for tiles "
                         f"{(1, *shape, channels)}: "
                         f"expected (batch, {'x, y, z' if slice_axis is None else 'h, w'}, "
                         "channels)")
    return int(spec.shape[-1])


class CompiledWindow:
    """The compiled sliding-window function of one model and tile configuration.

    ``patch`` is the 3D tile (1 along ``slice_axis`` for a 2D model),
    ``flips`` the TTA flips as tuples of spatial axes (``()`` is the plain
    prediction), ``output`` picks one output of a multi-output model.
    """

    def __init__(self, model, patch, batch_size: int, channels: int, flips, output,
                 slice_axis, output_dtype):
        self._model = weakref.ref(model)
        self.patch, self.batch_size, self.channels = tuple(patch), int(batch_size), channels
        self.flips, self.output, self.slice_axis = [tuple(f) for f in flips], output, slice_axis
        self.dtype = tf.as_dtype(np.dtype(output_dtype).name)
        self.classes = _output_channels(model, self.patch, channels, output, slice_axis)
        self._lock = threading.Lock()
        with tf.init_scope():
            self._acc = tf.Variable(tf.zeros((0, 0, 0, self.classes), self.dtype),
                                    shape=tf.TensorShape(None), trainable=False,
                                    name="sliding_window_sum")
        self._extract = tf.function(self._extract_tiles, jit_compile=True, autograph=False)
        self._blend = tf.function(self._blend_tiles, jit_compile=True, autograph=False)
        p = self.patch
        self._run = tf.function(self._graph, autograph=False, input_signature=[
            tf.TensorSpec((None, None, None, channels), tf.float32, name="volume"),
            tf.TensorSpec((3, 2), tf.int32, name="paddings"),
            tf.TensorSpec((None, 3), tf.int32, name="starts"),
            tf.TensorSpec((None, p[0]), tf.float32, name="weights_x"),
            tf.TensorSpec((None, p[1]), tf.float32, name="weights_y"),
            tf.TensorSpec((None, p[2]), tf.float32, name="weights_z"),
            tf.TensorSpec((), tf.float32, name="pad_value"),
        ])

    # -------------------------------------------------------------- graph parts

    def _extract_tiles(self, volume, starts):
        """(batch, *patch, channels) tiles starting at ``starts`` (batch, 3)."""
        size = [*self.patch, self.channels]
        return tf.stack([dynamic_slice(volume, tf.concat([starts[j], [0]], 0), size)
                         for j in range(self.batch_size)])

    def _blend_tiles(self, acc, pred, starts, wx, wy, wz):
        """acc[tile j] += pred[j] * (wx[j] x wy[j] x wz[j]) for every tile of the batch."""
        value = acc.read_value()
        size = [*self.patch, self.classes]
        for j in range(self.batch_size):
            begin = tf.concat([starts[j], [0]], 0)
            weight = (wx[j][:, None, None] * wy[j][None, :, None]) * wz[j][None, None, :]
            region = tf.cast(dynamic_slice(value, begin, size), tf.float32)
            update = tf.cast(region + pred[j] * weight[..., None], self.dtype)
            value = dynamic_update_slice(value, update, begin)
        acc.assign(value)
        return tf.constant(0)

    def _call_model(self, tiles):
        """One model call on tiles (n, *patch, c): float32 (n, *patch, classes)."""
        model = self._model()
        x = tiles if self.slice_axis is None else tf.squeeze(tiles, self.slice_axis + 1)
        pred = tf.cast(select_output(model(x, training=False), self.output, model), tf.float32)
        if self.slice_axis is not None:
            if pred.shape.rank == 3:
                pred = pred[..., None]
            if pred.shape.rank != 4:
                raise ModelError(f"2D model output has shape {tuple(pred.shape)}; expected "
                                 "(batch, height, width, channels)")
            pred = tf.expand_dims(pred, self.slice_axis + 1)
        if pred.shape.rank == 4:
            pred = pred[..., None]
        if pred.shape.rank != 5 or tuple(pred.shape[1:4]) != self.patch:
            raise ModelError(
                f"model output shape {tuple(pred.shape)} does not match its tiles "
                f"{(None, *self.patch)} + (channels,); the model must keep the spatial size of "
                "its input (padding='same')")
        if pred.shape[-1] != self.classes:
            raise ModelError(f"model output has {pred.shape[-1]} channels on tiles, its output "
                             f"spec {self.classes}; give the model a fixed number of outputs")
        return pred

    def _predict(self, tiles):
        """Sum over the TTA flips of the (flipped back) predictions of ``tiles``."""
        total = None
        for axes in self.flips:
            flip_axes = [a + 1 for a in axes]
            x = tf.reverse(tiles, flip_axes) if axes else tiles
            pred = self._call_model(x)
            if axes:
                pred = tf.reverse(pred, flip_axes)
            total = pred if total is None else total + pred
        return total

    def _graph(self, volume, paddings, starts, wx, wy, wz, pad_value):
        spatial = tf.shape(volume)[:3]
        padded = tf.pad(volume, tf.concat([paddings, [[0, 0]]], 0), constant_values=pad_value)
        self._acc.assign(tf.zeros(tf.concat([tf.shape(padded)[:3], [self.classes]], 0),
                                  self.dtype))
        batch = self.batch_size
        count = tf.shape(starts)[0]
        batches = (count + batch - 1) // batch
        fill = batches * batch - count  # rows of the last batch without a tile: weight zero
        starts = tf.pad(starts, [[0, fill], [0, 0]])
        wx, wy, wz = (tf.pad(w, [[0, fill], [0, 0]]) for w in (wx, wy, wz))

        def body(i, token):
            first = i * batch
            rows = tf.minimum(batch, count - first)
            batch_starts = starts[first:first + batch]
            tiles = self._extract(padded, batch_starts)
            pred = self._predict(tiles[:rows])
            pred = tf.pad(pred, [[0, batch - rows], [0, 0], [0, 0], [0, 0], [0, 0]])
            with tf.control_dependencies([token]):  # one blend at a time, in order
                token = self._blend(self._acc, pred, batch_starts, wx[first:first + batch],
                                    wy[first:first + batch], wz[first:first + batch])
            return i + 1, token

        _, token = tf.while_loop(lambda i, _: i < batches, body, (tf.constant(0), tf.constant(0)),
                                 parallel_iterations=1)
        with tf.control_dependencies([token]):
            total = self._acc.read_value()
        return tf.slice(total, tf.concat([paddings[:, 0], [0]], 0),
                        tf.concat([spatial, [self.classes]], 0))

    # -------------------------------------------------------------- host side

    def __call__(self, array: np.ndarray, grid, pad_value: float) -> np.ndarray:
        """Predict ``array`` (x, y, z, c) over ``grid`` (tuples of :class:`tiling.AxisTile`)."""
        spatial = array.shape[:3]
        before = [max(0, -min(tile[a].start for tile in grid)) for a in range(3)]
        after = [max(0, max(tile[a].start for tile in grid) + self.patch[a] - spatial[a])
                 for a in range(3)]
        starts = np.array([[tile[a].start + before[a] for a in range(3)] for tile in grid],
                          np.int32)
        weights = []
        for a in range(3):
            w = np.zeros((len(grid), self.patch[a]), np.float32)
            for row, tile in zip(w, grid):
                row[tile[a].tile_lo:tile[a].tile_hi] = tile[a].weights
            weights.append(w)
        weights[0] *= np.float32(1.0 / len(self.flips))
        with self._lock:
            try:
                result = self._run(_shared_tensor(np.asarray(array)),
                                   np.array([before, after], np.int32).T, starts, *weights,
                                   np.float32(pad_value))
                return result.numpy()
            finally:
                self._acc.assign(tf.zeros((0, 0, 0, self.classes), self.dtype))


def compiled_window(model, patch, batch_size, channels, flips, output, slice_axis,
                    output_dtype) -> CompiledWindow:
    """The cached :class:`CompiledWindow` of ``model`` for this tile configuration."""
    key = (tuple(patch), int(batch_size), int(channels), tuple(tuple(f) for f in flips),
           repr(output), slice_axis, np.dtype(output_dtype).name)
    with _CACHE_LOCK:
        windows = _CACHE.setdefault(model, {})
        if key not in windows:
            windows[key] = CompiledWindow(model, patch, batch_size, channels, flips, output,
                                          slice_axis, output_dtype)
        return windows[key]

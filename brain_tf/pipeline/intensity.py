"""Deterministic intensity transforms in TF ops, for channels-last images.

Each function takes explicit parameters (drawn by the random augmentation)
and works on 2D (rows, cols, c) or 3D (x, y, z, c) images unless it says
otherwise. Noise uses a counter-based integer hash instead of a random-number
kernel: XLA on CPU compiles TF's random kernels into very slow code, while
this hash fuses into the surrounding elementwise work.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

from brain_tf.pipeline.spatial3d import smooth_field

_NOISE_SCALE = float(1.0 / np.sqrt(4 * (256.0**2 - 1) / 12.0))


def adjust_gamma(image, gamma):
    """Gamma on each channel's [min, max] range: lo + (hi - lo) * ((x - lo) / (hi - lo)) ** gamma.

    The range is kept, so this works on z-scored images; a constant channel
    is unchanged. ``gamma`` is a scalar or one value per channel.
    """
    spatial = list(range(len(image.shape) - 1))
    lo = tf.reduce_min(image, axis=spatial)
    hi = tf.reduce_max(image, axis=spatial)
    span = hi - lo
    safe = tf.where(span > 0, span, 1.0)
    unit = tf.clip_by_value((image - lo) / safe, 0.0, 1.0)
    # exp(g log u) instead of pow: a third of the cost under XLA, exact at u = 0 (exp(-inf) = 0)
    powered = tf.exp(tf.cast(gamma, tf.float32) * tf.math.log(unit))
    return tf.where(span > 0, lo + span * powered, image)


def brightness_contrast(image, scale, shift):
    """``image * scale + shift`` (contrast, then brightness), per channel or for all."""
    return image * tf.cast(scale, tf.float32) + tf.cast(shift, tf.float32)


def bias_field(log_control, out_shape: Sequence[int]):
    """A smooth multiplicative field exp(B-spline(log_control)) on ``out_shape`` (3D)."""
    return tf.exp(smooth_field(log_control, out_shape))


def apply_bias_field(image, log_control):
    """Multiply a 3D image (x, y, z, c) by the bias field of ``log_control`` (a, b, c)."""
    return image * bias_field(log_control, image.shape[:3])[..., None]


def _mix(x):
    """A 32-bit integer hash (xor-shift-multiply), applied elementwise to uint32."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))
    x = x * tf.constant(0x7FEB352D, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(15, tf.uint32)))
    x = x * tf.constant(0x846CA68B, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, tf.constant(16, tf.uint32)))


def hash_normal(shape: Sequence[int], key):
    """Approximately standard-normal noise of ``shape`` from an integer ``key``.

    Each value is the sum of the four bytes of a 32-bit hash of (position,
    key), centred and scaled to unit variance (an Irwin-Hall approximation of
    the normal, bounded at about +-3.5). Same key, same noise.
    """
    n = int(np.prod(shape))
    index = tf.cast(tf.range(n, dtype=tf.int32), tf.uint32)
    h = _mix(_mix(index) + tf.cast(key, tf.uint32))
    byte = tf.constant(255, tf.uint32)
    total = (tf.bitwise.bitwise_and(h, byte)
             + tf.bitwise.bitwise_and(tf.bitwise.right_shift(h, tf.constant(8, tf.uint32)), byte)
             + tf.bitwise.bitwise_and(tf.bitwise.right_shift(h, tf.constant(16, tf.uint32)), byte)
             + tf.bitwise.right_shift(h, tf.constant(24, tf.uint32)))
    return tf.reshape((tf.cast(total, tf.float32) - 510.0) * _NOISE_SCALE, shape)


def add_noise(image, std, key):
    """``image + std * hash_normal(image.shape, key)``."""
    return image + tf.cast(std, tf.float32) * hash_normal(image.shape, key)


def gaussian_matrix(n: int, sigma):
    """(n, n) row-normalised Gaussian smoothing matrix (renormalised at the borders)."""
    sigma = tf.maximum(tf.cast(sigma, tf.float32), 1e-3)
    d = tf.range(n, dtype=tf.float32)
    w = tf.exp(-0.5 * tf.square((d[:, None] - d[None, :]) / sigma))
    return w / tf.reduce_sum(w, axis=1, keepdims=True)


_AXIS_EINSUM = ("ai,ijkc->ajkc", "bj,ijkc->ibkc", "ck,ijkl->ijcl")


def apply_along_axis(image, matrix, axis: int):
    """``matrix`` (n, n) applied along spatial ``axis`` of a 3D image (x, y, z, c)."""
    return tf.einsum(_AXIS_EINSUM[axis], matrix, image)


def gaussian_blur3d(image, sigma_vox):
    """Separable Gaussian blur of (x, y, z, c) with per-axis sigma in voxels."""
    sigma_vox = tf.cast(sigma_vox, tf.float32)
    for axis in range(3):
        image = apply_along_axis(image, gaussian_matrix(int(image.shape[axis]), sigma_vox[axis]),
                                 axis)
    return image


def _to_last(image, axis: int):
    perm = [a for a in range(len(image.shape)) if a != axis] + [axis]
    inverse = list(np.argsort(perm))
    return tf.transpose(image, perm), inverse


def ghosting(image, axis: int, num_ghosts, intensity):
    """MR ghosting: scale every ``num_ghosts``-th k-space line along ``axis`` by ``1 - intensity``.

    Removing a fraction of every n-th line adds n faint shifted copies
    (ghosts) of the image along ``axis``. The centre line (k = 0) is kept, so
    the mean intensity is unchanged. Uses a 1D FFT along ``axis``.
    """
    moved, inverse = _to_last(image, axis)
    n = int(moved.shape[-1])
    k = tf.range(n, dtype=tf.int32)
    lines = tf.equal(tf.math.floormod(k, tf.cast(num_ghosts, tf.int32)), 0) & (k > 0)
    factor = tf.where(lines, 1.0 - tf.cast(intensity, tf.float32), 1.0)
    spectrum = tf.signal.fft(tf.complex(moved, tf.zeros_like(moved)))
    out = tf.math.real(tf.signal.ifft(spectrum * tf.complex(factor, 0.0)))
    return tf.transpose(out, inverse)


def motion(image, shifts_vox, axis: int):
    """MR motion artefact from rigid translations during the acquisition (3D).

    k-space is acquired line by line along ``axis`` (from the most negative
    to the most positive frequency); it is split into ``len(shifts_vox)``
    equal segments and segment ``s`` is taken from the image translated by
    ``shifts_vox[s]`` (voxels, three axes) via the Fourier shift theorem.
    """
    shifts = tf.cast(shifts_vox, tf.float32)
    segments = int(shifts.shape[0])
    channels_first = tf.transpose(image, (3, 0, 1, 2))
    spectrum = tf.signal.fft3d(tf.complex(channels_first, tf.zeros_like(channels_first)))
    sizes = [int(n) for n in image.shape[:3]]
    freqs = [tf.constant(np.fft.fftfreq(n).astype(np.float32)) for n in sizes]
    order = np.argsort(np.fft.fftfreq(sizes[axis]), kind="stable")
    segment_of_line = np.empty(sizes[axis], np.int32)
    segment_of_line[order] = np.arange(sizes[axis]) * segments // sizes[axis]
    factor = tf.zeros(sizes, tf.complex64)
    for s in range(segments):
        phase = ((shifts[s, 0] * freqs[0])[:, None, None] + (shifts[s, 1] * freqs[1])[None, :, None]
                 + (shifts[s, 2] * freqs[2])[None, None, :])
        shape = [1, 1, 1]
        shape[axis] = sizes[axis]
        select = tf.reshape(tf.constant((segment_of_line == s).astype(np.float32)), shape)
        ramp = tf.exp(tf.complex(tf.zeros_like(phase), -2.0 * np.pi * phase))
        factor += ramp * tf.complex(select, 0.0)
    out = tf.math.real(tf.signal.ifft3d(spectrum * factor[None]))
    return tf.transpose(out, (1, 2, 3, 0))


def add_rician_noise(image, std, key):
    """Rician noise of a magnitude image: ``|image + std * (n1 + i n2)|``.

    ``n1`` and ``n2`` are two independent :func:`hash_normal` fields drawn from
    ``key``; where the image is 0 the result is Rayleigh-distributed (an MR
    magnitude image's background).
    """
    std = tf.cast(std, tf.float32)
    noise = hash_normal([2] + [int(n) for n in image.shape], key)
    return tf.sqrt(tf.square(image + std * noise[0]) + tf.square(std * noise[1]))


def slice_matrix(n: int, step, offset, sigma):
    """(n, n) operator simulating thick slices along an axis of ``n`` voxels.

    The signal is smoothed with the slice profile (a Gaussian of ``sigma``
    voxels, :func:`gaussian_matrix`), sampled at slice positions ``offset +
    j * step`` (voxels; linear interpolation between voxels), then linearly
    interpolated back onto the voxels between the two nearest slices
    (positions beyond the axis are clamped to its ends). ``step = 1``,
    ``offset = 0`` and a negligible ``sigma`` give the identity.
    """
    step = tf.cast(step, tf.float32)
    offset = tf.cast(offset, tf.float32)
    voxels = tf.range(n, dtype=tf.float32)
    u = (voxels - offset) / step
    first = tf.floor(u)
    w = (u - first)[:, None]
    q0 = offset + first * step

    def hat(q):  # linear interpolation weights at positions q: (n, n)
        q = tf.clip_by_value(q, 0.0, float(n - 1))
        return tf.nn.relu(1.0 - tf.abs(voxels[None, :] - q[:, None]))

    resample = (1.0 - w) * hat(q0) + w * hat(q0 + step)
    return resample @ gaussian_matrix(n, sigma)


def thick_slices(image, axis: int, thickness_mm, spacing: Sequence[float], offset):
    """Simulate slices ``thickness_mm`` thick along ``axis`` of a 3D image (x, y, z, c).

    The slice profile is a Gaussian whose full width at half maximum is the
    slice thickness, less the blur the image already has at its own voxel
    size: sigma = sqrt(max(t^2 - s^2, 0)) / (2 sqrt(2 ln 2)) in mm, for voxel
    size s along ``axis``. Slices are ``max(t, s)`` apart and the first sits
    at ``offset`` (a fraction of that distance, in [0, 1)); see
    :func:`slice_matrix`.
    """
    s = float(spacing[axis])
    t = tf.cast(thickness_mm, tf.float32)
    sigma = tf.sqrt(tf.maximum(t * t - s * s, 0.0)) / (2.0 * np.sqrt(2.0 * np.log(2.0)) * s)
    step = tf.maximum(t, s) / s
    matrix = slice_matrix(int(image.shape[axis]), step, tf.cast(offset, tf.float32) * step, sigma)
    return apply_along_axis(image, matrix, axis)


def rescale_percentiles(image, lower: float = 0.5, upper: float = 99.5,
                        max_samples: int = 4096):
    """Per channel: clip to the [lower, upper] percentiles, then rescale to [0, 1].

    The TF counterpart of the ``percentile`` normalisation of
    :mod:`brain_tf.preprocess.normalise` (a constant channel gives 0). The
    percentiles are those of a regular subsample of at most about
    ``max_samples`` voxels (every k-th voxel along each axis; numpy's linear
    interpolation between order statistics), which keeps the sort small.
    """
    spatial = [int(n) for n in image.shape[:-1]]
    channels = int(image.shape[-1])
    stride = max(1, int(np.ceil((np.prod(spatial) / max_samples) ** (1.0 / len(spatial)))))
    sub = image[tuple(slice(None, None, stride) for _ in spatial)]
    values = tf.sort(tf.reshape(sub, (-1, channels)), axis=0)
    m = int(values.shape[0])

    def at(q):
        pos = (m - 1) * q / 100.0
        i = int(np.floor(pos))
        j = min(i + 1, m - 1)
        return values[i] + (values[j] - values[i]) * (pos - i)

    lo, hi = at(lower), at(upper)
    span = hi - lo
    unit = (tf.clip_by_value(image, lo, hi) - lo) / tf.where(span > 0, span, 1.0)
    return tf.where(span > 0, unit, 0.0)


def zscore_nonzero(image):
    """Per channel: (x - mean) / std over the voxels > 0; voxels that are 0 stay 0.

    The TF counterpart of the ``zscore_nonzero`` normalisation of
    :mod:`brain_tf.preprocess.normalise` (a channel without positive voxels,
    or with std 0, gives 0).
    """
    spatial = list(range(len(image.shape) - 1))
    positive = tf.cast(image > 0, tf.float32)
    count = tf.maximum(tf.reduce_sum(positive, axis=spatial), 1.0)
    mean = tf.reduce_sum(image * positive, axis=spatial) / count
    var = tf.reduce_sum(tf.square(image - mean) * positive, axis=spatial) / count
    std = tf.sqrt(var)
    out = (image - mean) / tf.where(std > 0, std, 1.0)
    return tf.where((image == 0) | (std <= 0), 0.0, out)

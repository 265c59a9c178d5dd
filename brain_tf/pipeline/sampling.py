"""Patch samplers: where to cut training patches from a subject (TF ops).

A :class:`PatchSampler` draws ``patches_per_subject`` patch corners for one
loaded subject at a time, so loading is paid once for several patches. All
draws come from a stateless seed, so the same seed gives the same patches.

Modes:

``uniform``
    corners uniform over every position where the patch fits (a patch larger
    than the volume is placed anywhere the volume still fits inside it).
``rejection``
    uniform candidates until one has a background fraction below
    ``max_background`` (system C: 0.95), up to ``max_tries``. The candidates
    are drawn at once and scored with a summed-area table of the foreground,
    so a try costs eight lookups. When no candidate qualifies the one with the
    least background is used and counted in :attr:`PatchSampler.stats`.
``foreground``
    with probability ``foreground_p`` the patch is centred on a random voxel
    of a foreground class (system B: 0.95); otherwise uniform. With
    ``class_probs`` the centre's class is drawn first (label-balanced
    sampling; background too if it has a probability), then a voxel of it.
    A subject without any such voxel falls back to uniform (and is counted
    as a fallback).

The counters in :attr:`PatchSampler.stats` count what the pipeline sampled,
which runs a few subjects ahead of training (prefetching).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from brain_tf.errors import ConfigError

MODES = ("uniform", "rejection", "foreground")


class SamplerStats:
    """Counters a user can read while or after training: ``stats.as_dict()``."""

    def __init__(self):
        self.subjects = tf.Variable(0, dtype=tf.int64, trainable=False, name="sampled_subjects")
        self.patches = tf.Variable(0, dtype=tf.int64, trainable=False, name="sampled_patches")
        self.fallbacks = tf.Variable(0, dtype=tf.int64, trainable=False, name="sampler_fallbacks")

    def as_dict(self) -> dict[str, int]:
        return {"subjects": int(self.subjects.numpy()), "patches": int(self.patches.numpy()),
                "fallbacks": int(self.fallbacks.numpy())}

    def reset(self) -> None:
        for v in (self.subjects, self.patches, self.fallbacks):
            v.assign(0)

    def __repr__(self) -> str:
        return f"SamplerStats({self.as_dict()})"


class PatchSampler:
    """Draws patch corners in a subject's label map.

    Args:
        patch_shape: (x, y, z) voxels.
        mode: ``"uniform"``, ``"rejection"`` or ``"foreground"`` (see module docstring).
        patches_per_subject: patches cut from each loaded subject.
        max_background: rejection threshold on the background fraction (strict).
        max_tries: rejection candidates per patch.
        foreground_p: probability of a foreground-centred patch.
        foreground_classes: class indices counted as foreground (default: all > 0).
        class_probs: per-class probabilities for the centre's class, as a list
            indexed by class or a ``{class: p}`` dict (renormalised over the
            classes present in each subject).
    """

    def __init__(
        self,
        patch_shape: Sequence[int],
        mode: str = "uniform",
        patches_per_subject: int = 1,
        max_background: float = 0.95,
        max_tries: int = 1000,
        foreground_p: float = 0.95,
        foreground_classes: Sequence[int] | None = None,
        class_probs: Sequence[float] | Mapping[int, float] | None = None,
    ):
        self.patch_shape = tuple(int(n) for n in patch_shape)
        if len(self.patch_shape) != 3 or min(self.patch_shape) < 1:
            raise ConfigError(f"patch_shape must be three positive integers, got {patch_shape!r}")
        if mode not in MODES:
            raise ConfigError(f"sampler mode must be one of {MODES}, not {mode!r}")
        if int(patches_per_subject) < 1 or int(max_tries) < 1:
            raise ConfigError("patches_per_subject and max_tries must be at least 1")
        if not 0.0 <= foreground_p <= 1.0 or not 0.0 < max_background <= 1.0:
            raise ConfigError("foreground_p must be in [0, 1] and max_background in (0, 1]")
        self.mode = mode
        self.patches_per_subject = int(patches_per_subject)
        self.max_background = float(max_background)
        self.max_tries = int(max_tries)
        self.foreground_p = float(foreground_p)
        self.foreground_classes = None if foreground_classes is None else sorted(
            int(c) for c in foreground_classes)
        if isinstance(class_probs, Mapping):
            size = max(int(k) for k in class_probs) + 1
            probs = np.zeros(size)
            for k, v in class_probs.items():
                probs[int(k)] = float(v)
            class_probs = probs
        if class_probs is not None:
            class_probs = np.asarray(class_probs, np.float32)
            if class_probs.ndim != 1 or (class_probs < 0).any() or class_probs.sum() <= 0:
                raise ConfigError(f"class_probs must be non-negative with a positive sum, "
                                  f"got {class_probs.tolist()}")
            class_probs = class_probs / class_probs.sum()
        self.class_probs = class_probs
        self.stats = SamplerStats()

    @classmethod
    def from_config(cls, config: Mapping) -> "PatchSampler":
        """Build from a TOML-friendly dict with the constructor's argument names."""
        try:
            return cls(**dict(config))
        except TypeError as exc:
            raise ConfigError(f"patch sampler config: {exc}") from None

    # --------------------------------------------------------------- internals
    def _ranges(self, shape):
        size = tf.constant(self.patch_shape, tf.int32)
        lo = tf.minimum(0, shape - size)
        hi = tf.maximum(0, shape - size)
        return lo, hi

    def _uniform(self, shape, seed, count):
        lo, hi = self._ranges(shape)
        u = tf.random.stateless_uniform((count, 3), seed)
        return lo + tf.cast(tf.floor(u * tf.cast(hi - lo + 1, tf.float32)), tf.int32)

    @staticmethod
    def _foreground_table(label):
        """Summed-area table of ``label > 0`` over the foreground's bounding box, and its start.

        Outside the bounding box there is no foreground, so boxes clipped to
        it count the same; for a tumour this is a small part of the volume.
        """
        # per-axis "any foreground" lines from two cheap reductions of the uint8 map
        label = tf.cast(label, tf.uint8)
        over_z = tf.reduce_max(label, axis=2)
        over_x = tf.reduce_max(label, axis=0)
        lines = [tf.reduce_max(over_z, axis=1), tf.reduce_max(over_z, axis=0),
                 tf.reduce_max(over_x, axis=0)]
        first, stop = [], []
        for line in lines:
            line = tf.cast(line > 0, tf.int32)
            n = tf.shape(line, out_type=tf.int32)[0]
            start = tf.argmax(line, output_type=tf.int32)
            end = n - tf.argmax(tf.reverse(line, [0]), output_type=tf.int32)
            first.append(start)
            stop.append(tf.where(tf.reduce_any(line > 0), end, start))  # empty: no box
        first, stop = tf.stack(first), tf.stack(stop)
        box = tf.cast(tf.slice(label, first, stop - first) > 0, tf.int32)
        table = tf.pad(tf.cumsum(tf.cumsum(tf.cumsum(box, 2), 1), 0), [[1, 0], [1, 0], [1, 0]])
        return table, first, stop - first

    def _box_counts(self, table, origin, extent, corners):
        """Foreground voxels in each box [corner, corner + patch) (see _foreground_table)."""
        size = tf.constant(self.patch_shape, tf.int32)
        a = tf.clip_by_value(corners - origin, 0, extent)
        b = tf.clip_by_value(corners + size - origin, 0, extent)
        total = tf.zeros(tf.shape(corners)[:1], table.dtype)
        for bits in range(8):
            pick = [(bits >> axis) & 1 for axis in range(3)]
            point = tf.stack([b[:, i] if pick[i] else a[:, i] for i in range(3)], axis=1)
            sign = 1 if (3 - sum(pick)) % 2 == 0 else -1
            total += sign * tf.gather_nd(table, point)
        return total

    def _rejection(self, label, seed):
        shape = tf.shape(label, out_type=tf.int32)
        table, origin, extent = self._foreground_table(label)
        k, t = self.patches_per_subject, self.max_tries
        corners = tf.reshape(self._uniform(shape, seed, k * t), (k, t, 3))
        counts = tf.reshape(self._box_counts(table, origin, extent, tf.reshape(corners, (-1, 3))),
                            (k, t))
        background = 1.0 - tf.cast(counts, tf.float32) / float(np.prod(self.patch_shape))
        ok = background < self.max_background
        first_ok = tf.argmax(tf.cast(ok, tf.int32), axis=1, output_type=tf.int32)
        best = tf.argmin(background, axis=1, output_type=tf.int32)
        found = tf.reduce_any(ok, axis=1)
        choice = tf.where(found, first_ok, best)
        fallbacks = tf.reduce_sum(tf.cast(~found, tf.int64))
        return tf.gather(corners, choice, batch_dims=1), fallbacks

    def _foreground(self, label, seed):
        shape = tf.shape(label, out_type=tf.int32)
        k = self.patches_per_subject
        seeds = tf.random.experimental.stateless_split(seed, 4)
        flat = tf.reshape(tf.cast(label, tf.int32), [-1])
        if self.class_probs is not None:
            allowed = tf.constant(self.class_probs > 0)
            nclass = len(self.class_probs)
            wanted = (flat < nclass) & tf.gather(allowed, tf.minimum(flat, nclass - 1))
        elif self.foreground_classes is not None:
            wanted = tf.reduce_any(flat[:, None] == tf.constant(self.foreground_classes)[None, :],
                                   axis=1)
        else:
            wanted = flat > 0
        index = tf.cast(tf.where(wanted)[:, 0], tf.int32)
        n = tf.shape(index)[0]
        u = tf.random.stateless_uniform((k,), seeds[0])
        if self.class_probs is None:
            pick = tf.minimum(tf.cast(u * tf.cast(n, tf.float32), tf.int32), tf.maximum(n - 1, 0))
            available = tf.fill([k], n > 0)
        else:
            classes = tf.gather(flat, index)
            index = tf.gather(index, tf.argsort(classes, stable=True))
            counts = tf.math.bincount(classes, minlength=nclass, maxlength=nclass)
            starts = tf.cumsum(counts, exclusive=True)
            probs = tf.constant(self.class_probs) * tf.cast(counts > 0, tf.float32)
            logits = tf.math.log(tf.maximum(probs, 1e-30))[None, :]
            cls = tf.random.stateless_categorical(logits, k, seeds[1], dtype=tf.int32)[0]
            size = tf.gather(counts, cls)
            offset = tf.minimum(tf.cast(u * tf.cast(size, tf.float32), tf.int32),
                                tf.maximum(size - 1, 0))
            pick = tf.gather(starts, cls) + offset
            available = tf.fill([k], tf.reduce_sum(probs) > 0)
        padded = tf.concat([index, [0]], 0)  # a subject without such voxels reads the 0
        voxel = tf.gather(padded, tf.minimum(pick, n))
        centre = tf.stack([voxel // (shape[1] * shape[2]), (voxel // shape[2]) % shape[1],
                           voxel % shape[2]], axis=1)
        lo, hi = self._ranges(shape)
        centred = tf.clip_by_value(centre - tf.constant(self.patch_shape) // 2, lo, hi)
        uniform = self._uniform(shape, seeds[2], k)
        use_fg = tf.random.stateless_uniform((k,), seeds[3]) < self.foreground_p
        corners = tf.where((use_fg & available)[:, None], centred, uniform)
        fallbacks = tf.reduce_sum(tf.cast(use_fg & ~available, tf.int64))
        return corners, fallbacks

    # ------------------------------------------------------------------- API
    def corners(self, label, seed) -> tf.Tensor:
        """(patches_per_subject, 3) int32 corners in ``label`` (x, y, z); updates :attr:`stats`.

        Corners may be negative or reach past the end when the patch is larger
        than the volume; cut with zero padding (:func:`cut_patch`).
        """
        seed = tf.cast(seed, tf.int64)
        if self.mode == "uniform":
            shape = tf.shape(label, out_type=tf.int32)[:3]
            corners, fallbacks = self._uniform(shape, seed, self.patches_per_subject), 0
        elif self.mode == "rejection":
            corners, fallbacks = self._rejection(label, seed)
        else:
            corners, fallbacks = self._foreground(label, seed)
        updates = [self.stats.subjects.assign_add(1),
                   self.stats.patches.assign_add(self.patches_per_subject),
                   self.stats.fallbacks.assign_add(tf.cast(fallbacks, tf.int64))]
        with tf.control_dependencies(updates):
            return tf.identity(corners)


def cut_patch(volume, start, shape: Sequence[int]):
    """The box ``[start, start + shape)`` of ``volume`` (x, y, z[, c]); outside is 0.

    ``start`` may be negative or reach past the end. The result has the
    static shape ``shape`` (+ channels).
    """
    shape = [int(n) for n in shape]
    size = tf.shape(volume, out_type=tf.int32)[:3]
    start = tf.cast(start, tf.int32)
    lo = tf.clip_by_value(start, 0, size)
    hi = tf.clip_by_value(start + shape, 0, size)
    extra = len(volume.shape) - 3
    piece = tf.slice(volume, tf.concat([lo, tf.zeros([extra], tf.int32)], 0),
                     tf.concat([hi - lo, tf.fill([extra], -1)], 0))
    before = lo - start
    after = tf.constant(shape) - before - (hi - lo)
    paddings = tf.concat([tf.stack([before, after], axis=1), tf.zeros([extra, 2], tf.int32)], 0)
    # a patch inside the volume is the slice itself: skip the pad's second copy
    out = tf.cond(tf.reduce_any(paddings != 0), lambda: tf.pad(piece, paddings), lambda: piece)
    out.set_shape(shape + list(volume.shape[3:]))
    return out

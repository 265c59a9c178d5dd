"""tf.data pipelines yielding ``(x, y)`` batches for ``model.fit``.

* :func:`patch_dataset` - segmentation patches (systems A, B, C): subjects are
  loaded in parallel, each gives several patches (:class:`PatchSampler`); a
  patch is warped straight out of the subject (or cut when not augmented),
  one-hot encoded in the same compiled function, then shuffled and batched.
  With a generating config (``synth``, :class:`SynthGenerator`) each patch's
  image is generated from its label map instead of read.
* :func:`volume_dataset` - whole volumes with a scalar or dict target
  (age regression, sex classification; systems A and B).
* :func:`slice_dataset` - 2D slices with a mask, a class index or a dict of
  targets for multi-head models (systems D and E).

Randomness is stateless: the subject order comes from a seeded shuffle and
every sample gets its own seed from a seeded stream, so a pipeline built with
the same seed yields the same batches (and each epoch differs from the last).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import tensorflow as tf

from brain_tf.errors import ConfigError, DataError
from brain_tf.pipeline.augment2d import Augment2D
from brain_tf.pipeline.augment3d import Augment3D
from brain_tf.pipeline.generate import LABEL_VALUES, SynthGenerator
from brain_tf.pipeline.sampling import PatchSampler, cut_patch
from brain_tf.pipeline.sources import Source

AUTOTUNE = tf.data.AUTOTUNE


def one_hot_labels(label, num_classes: int, drop_background: bool = False):
    """Class indices (..., ) to float32 one-hot (..., K), or (..., K-1) without class 0."""
    classes = tf.range(1 if drop_background else 0, num_classes, dtype=tf.int32)
    return tf.cast(tf.equal(tf.cast(label, tf.int32)[..., None], classes), tf.float32)


def _indexed_seeds(n: int, shuffle: bool, seed: int, repeat: bool):
    """(index, seed pair) elements: a seeded (re)shuffle of 0..n-1 with a seed per element.

    A shuffled stream draws new seeds on every pass; an unshuffled one (validation) the
    same seeds every pass, so its samples are the same each epoch."""
    index = tf.data.Dataset.range(n)
    if shuffle:
        index = index.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        index = index.repeat()
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=shuffle).batch(2)
    return tf.data.Dataset.zip((index, seeds))


def lookup_table(label_lookup: Sequence[int | Sequence[int]] | Mapping[int, int]) -> np.ndarray:
    """(256,) int32 table: label value -> class index, -1 for values ``label_lookup`` lacks.

    ``label_lookup`` lists the classes in order, each as the label value or the
    list of values it takes (``[[0, 7], [1, 2], [3]]``: values 0 and 7 are class
    0, ...; the form of :func:`brain_tf.preprocess.labels.values_to_indices`),
    or is a ``{value: class}`` mapping (keys may be strings of integers, as TOML
    writes them).
    """
    try:
        if isinstance(label_lookup, Mapping):
            pairs = [(int(value), int(cls)) for value, cls in label_lookup.items()]
        else:
            pairs = [(int(value), cls) for cls, values in enumerate(label_lookup)
                     for value in np.atleast_1d(values).tolist()]
    except (TypeError, ValueError):
        raise ConfigError(f"label_lookup must give the label values of each class, "
                          f"got {label_lookup!r}") from None
    table = np.full(LABEL_VALUES, -1, np.int32)
    for value, cls in pairs:
        if not 0 <= value < LABEL_VALUES or cls < 0 or table[value] >= 0:
            raise ConfigError(f"label_lookup: label values must be within 0..255, each in one "
                              f"class >= 0; got {value} -> {cls} in {label_lookup!r}")
        table[value] = cls
    return table


def _make_augment3d(augment, spacing) -> Augment3D | None:
    if augment is None or isinstance(augment, Augment3D):
        aug = augment
    else:
        aug = Augment3D(augment, spacing=spacing)
    if aug is not None and aug.config["synth"]:
        raise ConfigError("an augmentation config with synth = true generates images from "
                          "label maps; only patch_dataset does that")
    return None if aug is None or aug.is_identity else aug


def _patch_augmenters(augment, spacing) -> tuple[SynthGenerator | None, Augment3D | None]:
    """(generator, augmentation) of a patch dataset: a ``synth`` config generates."""
    if isinstance(augment, SynthGenerator):
        return augment, augment.augment
    if augment is not None and not isinstance(augment, Augment3D):
        augment = Augment3D(augment, spacing=spacing)
    if augment is not None and augment.config["synth"]:
        return SynthGenerator(augment), augment
    return None, _make_augment3d(augment, spacing)


def _pad_to_multiple(volume, multiple: int):
    """Zero-pad the end of the three spatial axes up to a multiple of ``multiple``."""
    size = tf.shape(volume, out_type=tf.int32)[:3]
    extra = (multiple - size % multiple) % multiple
    paddings = tf.concat([tf.stack([tf.zeros_like(extra), extra], axis=1),
                          tf.zeros([len(volume.shape) - 3, 2], tf.int32)], 0)
    padded = tf.pad(volume, paddings)
    padded.set_shape([None] * 3 + list(volume.shape[3:]))
    return padded


def _finish(ds, shuffle_buffer: int, seed: int, batch_size: int, drop_remainder: bool,
            prefetch: int):
    if shuffle_buffer and shuffle_buffer > 1:
        ds = ds.shuffle(shuffle_buffer, seed=seed + 1, reshuffle_each_iteration=True)
    if batch_size:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.prefetch(prefetch)


def patch_dataset(
    subjects,
    sampler: PatchSampler,
    num_classes: int,
    augment: str | Mapping[str, Any] | Augment3D | SynthGenerator | None = None,
    drop_background: bool = False,
    batch_size: int = 2,
    shuffle: bool = True,
    shuffle_buffer: int = 16,
    seed: int = 0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    length: int | None = None,
    repeat: bool = False,
    drop_remainder: bool = False,
    num_parallel_calls: int = AUTOTUNE,
    load_parallel_calls: int = 2,
    prefetch: int = 2,
    shape_bucket: int | None = None,
    label_lookup: Sequence[int | Sequence[int]] | Mapping[int, int] | None = None,
) -> tf.data.Dataset:
    """Segmentation patches ``(x (b, px, py, pz, c), y (b, px, py, pz, K))``.

    Args:
        subjects: list of subjects or a ``loader(i)`` (see :class:`Source`), with labels.
        sampler: where patches are cut; its ``stats`` count fallbacks.
        num_classes: K, the number of classes of ``y`` (with background).
        augment: preset name, config dict, :class:`Augment3D` or :class:`SynthGenerator`
            (None: no augmentation). A config with ``synth = true`` (the preset
            ``"synth"``) ignores the subjects' images: each patch's image
            (one channel) is generated from its label map, and ``y`` is the
            generated image's label map.
        drop_background: leave out the class-0 channel of ``y`` (sigmoid outputs, system C).
        label_lookup: label value -> class index (the label values of each class
            in class order, or a ``{value: class}`` dict; see
            :func:`lookup_table`), applied to the label maps before
            one-hot encoding and before the sampler reads them (its classes
            are the looked-up ones), e.g. fine anatomical labels to
            background/CSF/GM/WM. A label value it lacks raises
            :class:`DataError` naming the subject. None: label maps hold the
            class indices already.
        shuffle: shuffle the subject order each epoch; ``shuffle_buffer`` patches are mixed.
        seed: makes the whole stream reproducible.
        spacing: voxel size in mm (for the augmentation's mm ranges).
        length: the number of subjects when ``subjects`` is a loader without ``len``.
        repeat: repeat forever (use with ``steps_per_epoch``).
        shape_bucket: zero-pad each subject's axes up to a multiple of this many
            voxels. A warp is compiled once per distinct subject shape (about a
            second each); subjects preprocessed onto one grid need no bucket.
    """
    source = Source.wrap(subjects, length=length, spatial_dims=3)
    if not source.has_labels:
        raise DataError(f"{source.name(0)}: patch datasets need label maps")
    gen, aug = _patch_augmenters(augment, spacing)
    patch = list(sampler.patch_shape)
    warps = aug is not None and aug.warps
    k = sampler.patches_per_subject
    table = None
    if label_lookup is not None:
        table = lookup_table(label_lookup)
        if table.max() >= num_classes:
            raise ConfigError(f"label_lookup maps to class {table.max()} but num_classes is "
                              f"{num_classes}")

    def check_lookup(index, counts):
        missing = np.flatnonzero((counts > 0) & (table < 0))
        if missing.size:
            raise DataError(f"{source.name(int(index))}: label values {missing.tolist()} are "
                            f"not in label_lookup; give each a class index")
        return np.int32(0)

    def classes(label):
        return tf.gather(tf.constant(table), tf.cast(label, tf.int32))

    def load(index, pair):
        image, label = source.tf_load(index, with_label=True)
        sampled = label
        if table is not None:
            counts = tf.math.bincount(tf.cast(label, tf.int32), minlength=LABEL_VALUES,
                                      maxlength=LABEL_VALUES)
            checked = tf.numpy_function(check_lookup, [index, counts], tf.int32)
            with tf.control_dependencies([checked]):
                label = tf.identity(label)
            if sampler.mode != "uniform":  # uniform corners read only the shape
                sampled = tf.cast(classes(label), tf.uint8)
        corners = sampler.corners(sampled, pair)
        seeds = tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(pair, 1), k)
        if warps and shape_bucket:
            label = _pad_to_multiple(label, shape_bucket)
        if gen is not None:  # a generated patch needs only the label map
            return (label,), corners, seeds
        if warps and shape_bucket:
            image = _pad_to_multiple(image, shape_bucket)
        return (image, label), corners, seeds

    def expand(volumes, corners, seeds):
        shared = tf.data.Dataset.from_tensors(volumes).repeat(k)
        return tf.data.Dataset.zip((shared, tf.data.Dataset.from_tensor_slices((corners, seeds))))

    def target(y):
        return one_hot_labels(y if table is None else classes(y), num_classes, drop_background)

    def transform(params, x, y, centre):
        if aug is not None:
            x, y = aug.apply(params, x, y, patch, centre)
        return x, target(y)

    def generate(params, y, centre):
        x, y = gen.apply(params, y, patch, centre)
        return x, target(y)

    # one compiled function per patch: warp (or cut), intensity (or generation) and one-hot
    # fused by XLA; a warp reads the whole subject, so XLA compiles once per subject shape
    jit = bool(aug.config["jit"]) if aug else True
    compiled = tf.function(generate if gen is not None else transform, jit_compile=jit)
    half = tf.constant([(n - 1) / 2.0 for n in patch], tf.float32)

    def make_patch(volumes, per_patch):
        corner, pair = per_patch
        if gen is not None:
            params = gen.sample(pair)
            (label,) = volumes
            if warps:
                return compiled(params, label, tf.cast(corner, tf.float32) + half)
            return compiled(params, cut_patch(label, corner, patch), half)
        image, label = volumes
        params = aug.sample(pair) if aug is not None else {}
        if warps:
            return compiled(params, image, label, tf.cast(corner, tf.float32) + half)
        return compiled(params, cut_patch(image, corner, patch), cut_patch(label, corner, patch),
                        half)

    ds = _indexed_seeds(len(source), shuffle, seed, repeat)
    ds = ds.map(load, num_parallel_calls=load_parallel_calls)
    ds = ds.flat_map(expand)
    if not repeat:  # flat_map hides the size; Keras shows progress and stops cleanly with it
        ds = ds.apply(tf.data.experimental.assert_cardinality(len(source) * k))
    ds = ds.map(make_patch, num_parallel_calls=num_parallel_calls)
    return _finish(ds, shuffle_buffer if shuffle else 0, seed, batch_size, drop_remainder, prefetch)


def _targets_tensor(values, n: int, name: str):
    array = np.asarray(values)
    if array.shape[:1] != (n,):
        raise DataError(f"target {name!r} has {array.shape[:1]} values for {n} subjects")
    if array.dtype.kind in "fc":
        if not np.all(np.isfinite(array)):
            raise DataError(f"target {name!r} has missing (NaN) values; drop those subjects")
        return tf.constant(array.astype(np.float32))
    if array.dtype.kind in "iub":
        return tf.constant(array.astype(np.int32))
    raise DataError(f"target {name!r} must be numbers (encode classes as 0..K-1), "
                    f"got {array.dtype}")


def _targets(targets, n: int):
    """A function index -> y for a sequence or a dict of sequences (multi-head)."""
    if targets is None:
        return None
    if isinstance(targets, Mapping):
        tables = {k: _targets_tensor(v, n, k) for k, v in targets.items()}
        return lambda i: {k: tf.gather(t, i) for k, t in tables.items()}
    table = _targets_tensor(targets, n, "y")
    return lambda i: tf.gather(table, i)


def volume_dataset(
    subjects,
    targets,
    augment: str | Mapping[str, Any] | Augment3D | None = None,
    batch_size: int = 1,
    shuffle: bool = True,
    seed: int = 0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    length: int | None = None,
    repeat: bool = False,
    drop_remainder: bool = False,
    num_parallel_calls: int = AUTOTUNE,
    prefetch: int = 2,
) -> tf.data.Dataset:
    """Whole volumes ``(x (b, X, Y, Z, c), y)`` for regression or classification.

    ``targets`` is a sequence aligned with ``subjects`` (float ages, integer
    class indices) or a dict of them (a dict ``y`` for multi-head models).
    All volumes must share one grid (preprocess with a fixed ``shape``).
    Augmented volumes are zero outside the original field of view.
    """
    source = Source.wrap(subjects, length=length, spatial_dims=3)
    shape = list(source.first()[0].shape[:3])
    target = _targets(targets, len(source))
    if target is None:
        raise DataError("volume_dataset needs targets (ages, class indices or a dict of them)")
    aug = _make_augment3d(augment, spacing)

    def load(index, pair):
        x, _ = source.tf_load(index, with_label=False, spatial_shape=shape)
        if aug is not None:
            x, _ = aug(x, None, pair)
        return x, target(index)

    ds = _indexed_seeds(len(source), shuffle, seed, repeat)
    ds = ds.map(load, num_parallel_calls=num_parallel_calls)
    return _finish(ds, 0, seed, batch_size, drop_remainder, prefetch)


def slice_dataset(
    images,
    masks=None,
    targets=None,
    num_classes: int | None = None,
    augment: str | Mapping[str, Any] | Augment2D | None = None,
    drop_background: bool = False,
    batch_size: int = 16,
    shuffle: bool = True,
    seed: int = 0,
    length: int | None = None,
    repeat: bool = False,
    drop_remainder: bool = False,
    num_parallel_calls: int = AUTOTUNE,
    prefetch: int = 2,
) -> tf.data.Dataset:
    """2D slices ``(x (b, rows, cols, c), y)`` for segmentation or classification.

    Args:
        images: (N, rows, cols[, c]) array, list of slices or ``(image, mask)``
            pairs, or a ``loader(i)`` (see :class:`Source`).
        masks: class-index masks aligned with ``images`` (when not given in pairs);
            ``y`` is then one-hot with ``num_classes`` channels (``drop_background``
            leaves class 0 out).
        targets: class indices or a dict of them (``{"perspective": ..., "sequence": ...}``)
            when ``y`` is not a mask.
        augment: preset name (``"lgg"``, ``"tcga_gbm"``), config dict or :class:`Augment2D`.
            Images keep their scale (the 2D models normalise their inputs themselves).
    """
    if masks is not None:
        if callable(images):
            raise DataError("with a loader, return (image, mask) pairs instead of passing masks")
        if len(masks) != len(images):
            raise DataError(f"{len(masks)} masks for {len(images)} images")
        images = [(images[i], masks[i]) for i in range(len(images))]
    source = Source.wrap(images, length=length, spatial_dims=2)
    shape = list(source.first()[0].shape[:2])
    segmentation = source.has_labels
    if segmentation and not num_classes:
        raise ConfigError("slice_dataset with masks needs num_classes")
    if not segmentation and targets is None:
        raise DataError("slice_dataset needs masks or targets")
    target = _targets(targets, len(source)) if not segmentation else None
    if augment is not None and not isinstance(augment, Augment2D):
        augment = Augment2D(augment)
    aug = None if augment is None or augment.is_identity else augment

    def load(index, pair):
        x, mask = source.tf_load(index, with_label=segmentation, spatial_shape=shape)
        if aug is not None:
            x, mask = aug(x, mask, pair)
        if segmentation:
            return x, one_hot_labels(mask, num_classes, drop_background)
        return x, target(index)

    ds = _indexed_seeds(len(source), shuffle, seed, repeat)
    ds = ds.map(load, num_parallel_calls=num_parallel_calls)
    return _finish(ds, 0, seed, batch_size, drop_remainder, prefetch)

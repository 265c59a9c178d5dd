"""Class-balanced batches of 2D slices for metric learning (system E's Siamese embedding).

A pair or triplet loss compares the samples of a batch with each other, so every batch
holds ``classes_per_batch`` classes drawn at random and ``per_class`` slices of each
(distinct slices while a class has enough). ``y`` is the class id of each slice. The
draws are stateless: every batch gets its seed from a seeded stream, so a pipeline built
with the same seed yields the same batches.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import tensorflow as tf

from brain_tf.errors import ConfigError, DataError
from brain_tf.pipeline.augment2d import Augment2D
from brain_tf.pipeline.sources import Source

AUTOTUNE = tf.data.AUTOTUNE


def class_members(labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(classes, members, counts)``: the distinct labels, a (classes, max count) table of
    the indices of each class's items (padded with its first index) and their counts."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    groups = [np.flatnonzero(labels == c) for c in classes]
    counts = np.array([len(g) for g in groups], np.int32)
    members = np.stack([np.pad(g, (0, counts.max() - len(g)), mode="edge") for g in groups])
    return classes, members.astype(np.int64), counts


def draw_batch(seed, members, counts, classes_per_batch: int, per_class: int):
    """Item indices ``(classes_per_batch * per_class,)`` and the row of ``members`` (class
    position) of each, for one batch drawn with the stateless ``seed``."""
    members = tf.convert_to_tensor(members, tf.int64)
    counts = tf.convert_to_tensor(counts, tf.int32)
    class_seed, item_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    chosen = tf.argsort(tf.random.stateless_uniform(tf.shape(counts), class_seed))
    chosen = chosen[:classes_per_batch]
    n = tf.gather(counts, chosen)
    width = tf.shape(members)[1]
    # random keys; padding sorts last, so a class's first positions are a random sample
    keys = tf.random.stateless_uniform([classes_per_batch, width], item_seed)
    keys += tf.cast(tf.range(width)[None, :] >= n[:, None], tf.float32) * 2.0
    order = tf.argsort(keys, axis=1)
    positions = tf.gather(order, tf.range(per_class)[None, :] % n[:, None], batch_dims=1)
    items = tf.gather(tf.gather(members, chosen), positions, batch_dims=1)
    rows = tf.repeat(chosen, per_class)
    return tf.reshape(items, [-1]), rows


def class_balanced_dataset(
    images,
    labels,
    per_class: int,
    classes_per_batch: int | None = None,
    augment: str | Mapping[str, Any] | Augment2D | None = None,
    seed: int = 0,
    batches: int | None = None,
    num_parallel_calls: int = AUTOTUNE,
    prefetch: int = 2,
) -> tf.data.Dataset:
    """Batches ``(x (b, rows, cols, c), y (b,))`` of ``classes_per_batch`` classes (default
    all) x ``per_class`` slices, ``y`` the items' ``labels`` (integer class ids).

    Args:
        images: slices or a ``loader(i)`` (see :class:`Source`), aligned with ``labels``.
        per_class: slices of each class in a batch (at least 2: a pair needs two).
        augment: preset name, config dict or :class:`Augment2D` (None: no augmentation).
        seed: makes the stream reproducible.
        batches: None for an endless stream (training, with ``steps_per_epoch``); a count
            gives that many batches, the same ones on every pass (validation).
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise DataError(f"class_balanced_dataset needs integer class ids, got {labels.dtype}")
    source = Source.wrap(images, spatial_dims=2)
    if len(labels) != len(source):
        raise DataError(f"{len(labels)} labels for {len(source)} slices")
    classes, members, counts = class_members(labels)
    if len(classes) < 2:
        raise DataError(f"class-balanced batches need at least two classes, the slices have "
                        f"{len(classes)}; check the labels (and target.held_out)")
    if per_class < 2:
        raise ConfigError(f"per_class must be at least 2 (a positive pair), not {per_class}")
    classes_per_batch = len(classes) if classes_per_batch is None else int(classes_per_batch)
    if not 2 <= classes_per_batch <= len(classes):
        raise ConfigError(f"classes_per_batch must be between 2 and {len(classes)} (the "
                          f"classes), not {classes_per_batch}")
    shape = list(source.first()[0].shape[:2])
    if augment is not None and not isinstance(augment, Augment2D):
        augment = Augment2D(augment)
    aug = None if augment is None or augment.is_identity else augment
    class_ids = tf.constant(classes.astype(np.int32))

    def batch_items(pair):
        items, rows = draw_batch(pair, members, counts, classes_per_batch, per_class)
        return tf.data.Dataset.from_tensor_slices((items, tf.gather(class_ids, rows)))

    def load(item, pair):
        index, label = item
        x, _ = source.tf_load(index, with_label=False, spatial_shape=shape)
        if aug is not None:
            x, _ = aug(x, None, pair)
        return x, label

    endless = batches is None
    draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=endless).batch(2)
    if not endless:
        draws = draws.take(int(batches))
    items = draws.flat_map(batch_items)
    pairs = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=endless).batch(2)
    ds = tf.data.Dataset.zip((items, pairs)).map(load, num_parallel_calls=num_parallel_calls)
    ds = ds.batch(classes_per_batch * per_class, drop_remainder=True)
    if not endless:
        ds = ds.apply(tf.data.experimental.assert_cardinality(int(batches)))
    return ds.prefetch(prefetch)

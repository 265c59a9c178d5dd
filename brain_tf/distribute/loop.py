"""A training loop for strategies where ``model.fit`` does not work.

Keras 3's ``model.fit`` fails under ``MultiWorkerMirroredStrategy`` (an open
upstream problem: "Attempt to convert a value (PerReplica...) to a Tensor").
:func:`distributed_fit` trains the same compiled model with the model's own
``train_step``/``test_step`` run by ``strategy.run`` inside a ``tf.function``,
and drives the same Keras callbacks as ``fit`` (early stopping with best-weight
restore, checkpoints, backup/resume, CSV history), so a run folder looks the
same whichever path trained it.

Training batches come from ``strategy.experimental_distribute_dataset`` (the
global batch is split across replicas; workers get different batches through
tf.data auto-sharding by DATA). Validation batches are not split: every
replica evaluates every batch, and the metrics (summed across replicas) are
ratios, so their values equal a single-device evaluation while all workers
step in lockstep whatever the number of batches.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from brain_tf.errors import ConfigError


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with tf.data auto-sharding by DATA (each worker keeps every Nth batch).

    The brain_tf pipelines are generated from subject indices, not read from
    files, so sharding by FILE cannot apply.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _steps(dataset, steps_per_epoch, workers: int) -> tuple[int, bool]:
    """Steps per epoch (equal on every worker) and whether the dataset repeats."""
    cardinality = int(dataset.cardinality())
    infinite = cardinality == int(tf.data.INFINITE_CARDINALITY)
    if steps_per_epoch:
        return int(steps_per_epoch), infinite
    if cardinality < 0:
        raise ConfigError("multi-worker training needs training.steps_per_epoch when the "
                          "training dataset's length is unknown or infinite")
    steps = cardinality // workers
    if steps < 1:
        raise ConfigError(f"the training dataset has {cardinality} batches for {workers} "
                          "workers; use more subjects or a smaller batch_size")
    return steps, infinite


def _floats(logs: dict) -> dict:
    return {k: float(v) for k, v in logs.items()}


def distributed_fit(model, train_ds, val_ds, strategy, epochs: int, steps_per_epoch=None,
                    callbacks=(), verbose: int = 2) -> keras.callbacks.History:
    """Train a model compiled in ``strategy.scope()``; returns its History like ``fit``."""
    workers = getattr(strategy.extended, "_num_workers", 1)
    steps, infinite = _steps(train_ds, steps_per_epoch, workers)
    with strategy.scope():
        model._symbolic_build(data_batch=train_ds.element_spec)
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    dist_train = strategy.experimental_distribute_dataset(shard_by_data(train_ds))

    @tf.function
    def train_step(iterator):
        strategy.run(model.train_step, args=(next(iterator),))

    @tf.function
    def test_step(batch):
        strategy.run(model.test_step, args=(batch,))

    callback_list = keras.callbacks.CallbackList(
        list(callbacks), add_history=True, add_progbar=verbose != 0, verbose=verbose,
        epochs=epochs, steps=steps, model=model)
    model.stop_training = False
    callback_list.on_train_begin()
    initial_epoch = model._initial_epoch or 0
    iterator = iter(dist_train) if infinite else None
    logs = None
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        if not infinite:
            iterator = iter(dist_train)
        for step in range(steps):
            callback_list.on_train_batch_begin(step)
            train_step(iterator)
            callback_list.on_train_batch_end(step, None)
            if model.stop_training:
                break
        logs = _floats(model.get_metrics_result())
        if val_ds is not None:
            model.reset_metrics()
            for batch in val_ds:
                test_step(batch)
            logs.update({f"val_{k}": v for k, v in _floats(model.get_metrics_result()).items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs=logs)
    # predict, evaluate and export in this process alone from now on (otherwise predict
    # would gather every worker's outputs); the variables keep their trained values
    model._distribute_strategy = None
    return model.history

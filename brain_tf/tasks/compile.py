"""Build a task's model, loss, metrics and optimizer from its config, and fit it.

Both steps follow ``training.strategy`` (see :mod:`brain_tf.distribute`): the
model is built and compiled in the strategy's scope, with the mixed_float16
policy when ``training.mixed_precision`` is true, and trained with
``model.fit`` (one device, MirroredStrategy) or with the equivalent
multi-worker loop (MultiWorkerMirroredStrategy), with the same callbacks.
"""

from __future__ import annotations

import sys

import keras

from brain_tf import losses as bt_losses
from brain_tf import metrics as bt_metrics
from brain_tf import schedules as bt_schedules
from brain_tf.distribute import (
    config_strategy,
    distributed_fit,
    float32_outputs,
    is_multi_worker,
    precision_policy,
)
from brain_tf.errors import ConfigError
from brain_tf.models import build_model
from brain_tf.training import run_callbacks


def _get(getter, spec):
    """A registered object from a config entry ``{class = "Name", option = ...}``."""
    if isinstance(spec, str):
        return spec  # a Keras built-in name such as "mse"
    spec = dict(spec)
    return getter(spec.pop("class"), **spec)


def make_loss(spec):
    """A brain_tf loss from ``{class = "SoftDiceLoss", ...}`` or a Keras loss name."""
    return _get(bt_losses.get, spec)


def make_metrics(specs):
    """Metrics from a list of entries, or a dict output name -> list (multi-output models)."""
    if isinstance(specs, dict):
        return {name: make_metrics(entries) for name, entries in specs.items()}
    return [_get(bt_metrics.get, s) for s in specs]


def make_optimizer(spec: dict, total_steps: int | None = None):
    spec = dict(spec)
    name = spec.pop("name", "adam").lower()
    lr = spec.pop("learning_rate", 1e-3)
    schedule = spec.pop("schedule", None)
    if schedule:
        schedule = dict(schedule)
        kind = schedule.pop("name")
        if kind == "OneCycle":
            schedule.setdefault("total_steps", total_steps)
            lr = bt_schedules.OneCycle(max_learning_rate=lr, **schedule)
        elif kind == "StepDecay":
            lr = bt_schedules.StepDecay(initial_learning_rate=lr, **schedule)
        else:
            raise ConfigError(f"unknown learning-rate schedule {kind!r}")
    optimizers = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
                  "sgd": keras.optimizers.SGD}
    if name not in optimizers:
        raise ConfigError(f"unknown optimizer {name!r}; choose from {sorted(optimizers)}")
    return optimizers[name](learning_rate=lr, **spec)


def compiled_model(config: dict, input_shape, num_outputs: int, total_steps: int | None = None):
    """The config's model, built and compiled in the strategy's scope.

    ``training.mixed_precision = true`` builds it with the mixed_float16 policy
    (the policy is put back afterwards; outputs and losses stay float32).
    """
    model_cfg = dict(config["model"])
    tr = config["training"]
    mixed = bool(tr.get("mixed_precision", False))
    with config_strategy(config).scope(), precision_policy(mixed):
        model = build_model(model_cfg.pop("name"), input_shape=tuple(input_shape),
                            num_outputs=num_outputs, **model_cfg)
        if mixed and not float32_outputs(model):
            raise ConfigError(f"model {config['model']['name']!r} has float16 outputs under "
                              "mixed precision; its head layers need dtype='float32'")
        model.compile(optimizer=make_optimizer(config["optimizer"], total_steps),
                      loss=make_loss(config["loss"]),
                      metrics=make_metrics(config.get("metrics", [])),
                      jit_compile=bool(tr.get("jit_compile", False)))
    return model


def fit(model, train_ds, val_ds, config: dict, run):
    """Train with the run's callbacks (early stopping on the validation metric with
    best-weight restore, stop-at-epoch, best checkpoint, backup/resume, CSV history).

    ``config["training"]`` gives epochs, steps_per_epoch (None: one pass over
    ``train_ds``), monitor, mode, patience, stop_at_epoch, verbose (default: a
    progress bar on a terminal, one line per epoch otherwise), strategy and
    reduce_lr (ReduceLROnPlateau options, on the same monitored metric).
    ``train_ds`` yields global batches (the config's batch size), which the
    strategy splits across replicas.
    """
    tr = config["training"]
    callbacks = run_callbacks(run.path, monitor=tr.get("monitor", "val_loss"),
                              mode=tr.get("mode", "auto"), patience=tr.get("patience"),
                              stop_at_epoch=tr.get("stop_at_epoch"))
    if tr.get("reduce_lr"):  # e.g. {factor = 0.5, patience = 3}, on the monitored metric
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=tr.get("monitor", "val_loss"), mode=tr.get("mode", "auto"),
            **tr["reduce_lr"]))
    verbose = tr.get("verbose", 1 if sys.stdout.isatty() else 2)
    strategy = config_strategy(config)
    if is_multi_worker(strategy):
        return distributed_fit(model, train_ds, val_ds, strategy, epochs=tr["epochs"],
                               steps_per_epoch=tr.get("steps_per_epoch"), callbacks=callbacks,
                               verbose=verbose)
    with strategy.scope():
        # the tf.data pipelines shuffle themselves (Keras would only warn about it)
        return model.fit(train_ds, validation_data=val_ds, epochs=tr["epochs"],
                         steps_per_epoch=tr.get("steps_per_epoch"), callbacks=callbacks,
                         verbose=verbose, shuffle=False)

"""Build a task's model, loss, metrics and optimizer from its config, and fit it."""

from __future__ import annotations

import sys

import keras

from brain_tf import losses as bt_losses
from brain_tf import metrics as bt_metrics
from brain_tf import schedules as bt_schedules
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


def make_metrics(specs: list) -> list:
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
    model_cfg = dict(config["model"])
    model = build_model(model_cfg.pop("name"), input_shape=tuple(input_shape),
                        num_outputs=num_outputs, **model_cfg)
    model.compile(optimizer=make_optimizer(config["optimizer"], total_steps),
                  loss=make_loss(config["loss"]), metrics=make_metrics(config.get("metrics", [])),
                  jit_compile=bool(config["training"].get("jit_compile", False)))
    return model


def fit(model, train_ds, val_ds, config: dict, run):
    """``model.fit`` with the run's callbacks (early stopping on the validation metric with
    best-weight restore, stop-at-epoch, best checkpoint, backup/resume, CSV history).

    ``config["training"]`` gives epochs, steps_per_epoch (None: one pass over
    ``train_ds``), monitor, mode, patience, stop_at_epoch and verbose (default: a
    progress bar on a terminal, one line per epoch otherwise).
    """
    tr = config["training"]
    callbacks = run_callbacks(run.path, monitor=tr.get("monitor", "val_loss"),
                              mode=tr.get("mode", "auto"), patience=tr.get("patience"),
                              stop_at_epoch=tr.get("stop_at_epoch"))
    verbose = tr.get("verbose", 1 if sys.stdout.isatty() else 2)
    return model.fit(train_ds, validation_data=val_ds, epochs=tr["epochs"],
                     steps_per_epoch=tr.get("steps_per_epoch"), callbacks=callbacks,
                     verbose=verbose)

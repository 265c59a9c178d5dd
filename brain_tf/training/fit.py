"""Build and compile a run's model from its config, and fit it (in one or two stages).

Both steps follow ``training.strategy`` (see :mod:`brain_tf.distribute`): the model is
built and compiled in the strategy's scope, in the precision of ``training.precision``
(float32, bfloat16 or float16: :mod:`brain_tf.distribute.precision`), and trained with
``model.fit`` (one device, MirroredStrategy) or the equivalent multi-worker loop
(MultiWorkerMirroredStrategy), with the same callbacks.

Two-stage fine-tuning is a training feature of every task: with
``training.freeze_epochs > 0`` and pretrained weights (``model.weights``), the layers up
to the task's freeze layer train frozen first (their history, checkpoint and weights in
``run/frozen/``), then everything trains with a fresh optimizer and schedule.
"""

from __future__ import annotations

import shutil
import sys

import keras

from brain_tf import losses as bt_losses
from brain_tf import metrics as bt_metrics
from brain_tf import schedules as bt_schedules
from brain_tf.distribute import (
    distributed_fit, float32_outputs, get_strategy, is_multi_worker, precision_policy,
    resolve_precision, training_precision,
)
from brain_tf.errors import ConfigError
from brain_tf.io import atomic_path
from brain_tf.models import build_model, freeze_up_to
from brain_tf.schema import RunConfig
from brain_tf.training.callbacks import run_callbacks
from brain_tf.training.run import RunFolder


def _registered(getter, spec):
    """A registered object from ``{class = "Name", option = ...}``, or a Keras name."""
    if isinstance(spec, str):
        return spec
    spec = dict(spec)
    if "class" not in spec:
        raise ConfigError(f"{spec}: a loss or metric table needs class = \"Name\"")
    return getter(spec.pop("class"), **spec)


def make_loss(spec):
    """A brain_tf loss from ``{class = "SoftDiceLoss", ...}`` or a Keras loss name."""
    return _registered(bt_losses.get, spec)


def make_metrics(specs):
    """Metrics from a list of entries, or a dict head -> list (multi-output models)."""
    if isinstance(specs, dict):
        return {name: make_metrics(entries) for name, entries in specs.items()}
    return [_registered(bt_metrics.get, s) for s in specs or []]


def make_optimizer(config: RunConfig, total_steps: int):
    opt = config.optimizer
    lr = opt.learning_rate
    if opt.schedule:
        schedule = dict(opt.schedule)
        kind = schedule.pop("name")
        if kind == "OneCycle":
            lr = bt_schedules.OneCycle(max_learning_rate=lr, total_steps=total_steps, **schedule)
        else:
            lr = bt_schedules.StepDecay(initial_learning_rate=lr, **schedule)
    optimizers = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
                  "sgd": keras.optimizers.SGD}
    options = dict(opt.options)
    if opt.weight_decay is not None:
        options["weight_decay"] = opt.weight_decay
    try:
        return optimizers[opt.name](learning_rate=lr, **options)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"[optimizer] {opt.name}: {err}") from None


def _compile(model, config: RunConfig, total_steps: int, metrics) -> None:
    model.compile(optimizer=make_optimizer(config, total_steps), loss=make_loss(config.loss),
                  metrics=make_metrics(metrics), jit_compile=config.training.jit_compile)


def compiled_model(config: RunConfig, input_shape, num_outputs, total_steps: int,
                   metrics=None) -> keras.Model:
    """The config's model, built and compiled in the strategy's scope (``metrics``
    replaces ``config.metrics``, e.g. one list per head)."""
    options = dict(config.model)
    if "name" not in options:
        raise ConfigError("[model] needs name = \"...\" (see brain_tf.models.BUILDERS)")
    precision = resolve_precision(training_precision(config.training),
                                  where="--precision (training.precision)")
    with get_strategy(config.training.strategy).scope(), precision_policy(precision):
        model = build_model(options.pop("name"), input_shape=tuple(input_shape),
                            num_outputs=num_outputs, **options)
        if not float32_outputs(model):
            raise ConfigError(f"model {config.model['name']!r} has {precision} outputs; its "
                              "head layers need dtype='float32'")
        _compile(model, config, total_steps, config.metrics if metrics is None else metrics)
    return model


def fit(model, train_ds, val_ds, config: RunConfig, run: RunFolder, epochs: int,
        steps_per_epoch: int | None, final: bool = True):
    """Train with the run's callbacks: early stopping on the validation metric with the
    best weights restored, stop-at-epoch, best checkpoint, backup/resume, CSV history,
    ReduceLROnPlateau and TensorBoard when configured. ``final=False`` (a frozen first
    stage) trains every planned epoch without early stopping."""
    tr = config.training
    callbacks = run_callbacks(run.path, monitor=tr.monitor, mode=tr.mode,
                              patience=tr.patience if final else None,
                              stop_at_epoch=tr.stop_at_epoch if final else None,
                              tensorboard=tr.tensorboard, reduce_lr=tr.reduce_lr)
    verbose = tr.verbose if tr.verbose is not None else (1 if sys.stdout.isatty() else 2)
    strategy = get_strategy(tr.strategy)
    if is_multi_worker(strategy):
        return distributed_fit(model, train_ds, val_ds, strategy, epochs=epochs,
                               steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                               verbose=verbose)
    val_steps = int(val_ds.cardinality()) if val_ds is not None else -1
    if val_steps > 0:
        # one pass per epoch through a repeated dataset: Keras keeps its validation
        # iterator across epochs, so a cache() in the pipeline fills once and is reused
        val_ds = val_ds.repeat()
    with strategy.scope():
        # the tf.data pipelines shuffle themselves (Keras would only warn about it)
        return model.fit(train_ds, validation_data=val_ds, epochs=epochs,
                         steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                         verbose=verbose, shuffle=False,
                         validation_steps=val_steps if val_steps > 0 else None)


def fit_stages(model, train_ds, val_ds, config: RunConfig, run: RunFolder,
               steps_per_epoch: int, freeze_layer: str | None, metrics=None):
    """:func:`fit`, after a frozen first stage when the config asks for one.

    With ``training.freeze_epochs > 0``, pretrained weights (``model.weights`` set) and a
    ``freeze_layer``, the layers up to it train frozen for ``freeze_epochs`` epochs in
    ``run/frozen/``; then all layers train for ``training.epochs`` epochs with a new
    optimizer (and one-cycle schedule). A resumed run reloads the frozen stage's weights
    instead of repeating it. A randomly initialised encoder is never frozen.
    """
    tr = config.training
    frozen_epochs = tr.freeze_epochs if config.model.get("weights") and freeze_layer else 0
    if tr.freeze_epochs and not frozen_epochs:
        print("training.freeze_epochs skipped: the encoder has no pretrained weights")
    metrics = config.metrics if metrics is None else metrics
    if frozen_epochs:
        done = run / "frozen" / "model.weights.h5"
        with get_strategy(tr.strategy).scope():
            freeze_up_to(model, freeze_layer)
            _compile(model, config, steps_per_epoch * frozen_epochs, metrics)
        if done.exists():
            model.load_weights(str(done))
        else:
            stage = RunFolder(run / "frozen")
            stage.path.mkdir(parents=True, exist_ok=True)
            fit(model, train_ds, val_ds, config, stage, frozen_epochs, steps_per_epoch,
                final=False)
            with atomic_path(done) as tmp:
                model.save_weights(str(tmp))
            shutil.rmtree(stage / "backup", ignore_errors=True)
        with get_strategy(tr.strategy).scope():
            freeze_up_to(model, None)
            _compile(model, config, steps_per_epoch * tr.epochs, metrics)
    fit(model, train_ds, val_ds, config, run, tr.epochs, steps_per_epoch)
    return model

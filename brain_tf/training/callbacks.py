"""Keras callbacks for training runs."""

from __future__ import annotations

from pathlib import Path

import keras


class StopAtEpoch(keras.callbacks.Callback):
    """Stop training after ``epoch`` epochs (1-based), e.g. system A's stop at epoch 12.

    Unlike ``epochs=`` this keeps a schedule's or a resumed run's total epoch
    count intact: the run is planned for N epochs and cut at ``epoch``.
    """

    def __init__(self, epoch: int):
        super().__init__()
        if epoch < 1:
            raise ValueError(f"stop-at-epoch must be >= 1, not {epoch}")
        self.epoch = int(epoch)
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 >= self.epoch:
            self.model.stop_training = True
            self.stopped_epoch = epoch + 1


HIGHER_IS_BETTER = ("acc", "auc", "dice", "precision", "recall", "sensitivity", "specificity")


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """``"min"`` or ``"max"``: ``mode``, or for ``"auto"`` max for accuracy-like metrics
    (:data:`HIGHER_IS_BETTER` in the name) and min for losses and errors."""
    if mode != "auto":
        return mode
    return "max" if any(k in monitor for k in HIGHER_IS_BETTER) else "min"


class ResumeBest(keras.callbacks.Callback):
    """Keeps "best epoch" decisions right across a resumed run, and restores the best weights.

    Keras' EarlyStopping and ModelCheckpoint keep their best value in memory only, so after
    a resume (BackupAndRestore) they would start from scratch and ``best.keras`` could be
    overwritten by a worse epoch. At the start of training this callback seeds both from the
    run's ``history.csv`` (the best monitored value so far, and the epochs waited since); at
    the end, with ``restore``, it loads the weights of ``best.keras``: the best epoch of the
    whole run, resumed or not.
    """

    def __init__(self, run_dir: Path, monitor: str, mode: str, early=None, checkpoint=None,
                 restore: bool = True):
        super().__init__()
        self.run_dir, self.monitor, self.mode = Path(run_dir), monitor, mode
        self.early, self.checkpoint, self.restore = early, checkpoint, restore

    def on_train_begin(self, logs=None):
        import pandas as pd

        path = self.run_dir / "history.csv"
        if not path.exists() or path.stat().st_size == 0:
            return
        history = pd.read_csv(path)
        if self.monitor not in history or history.empty:
            return
        values = history[self.monitor].to_numpy(float)
        best = int(values.argmax() if self.mode == "max" else values.argmin())
        if self.checkpoint is not None:
            self.checkpoint.best = float(values[best])
        if self.early is not None:
            self.early.best, self.early.best_epoch = float(values[best]), best
            self.early.wait = len(values) - 1 - best

    def on_train_end(self, logs=None):
        best = self.run_dir / "best.keras"
        if self.restore and best.exists():
            self.model.load_weights(str(best))


def run_callbacks(
    run_dir: str | Path,
    monitor: str = "val_loss",
    mode: str = "auto",
    patience: int | None = 10,
    stop_at_epoch: int | None = None,
    checkpoint: bool = True,
    backup: bool = True,
    tensorboard: bool = False,
) -> list[keras.callbacks.Callback]:
    """The standard callbacks of a run folder.

    - BackupAndRestore in ``backup/`` so a killed run resumes at its last epoch (the backup
      stays until the run folder is complete: :meth:`RunFolder.mark_complete` removes it);
    - EarlyStopping on ``monitor`` (a validation metric) after ``patience`` epochs;
    - ModelCheckpoint of the best model to ``best.keras``, whose weights the model ends
      with when early stopping is on (:class:`ResumeBest`, also right after a resume);
    - CSVLogger to ``history.csv`` (appending, so a resumed run keeps its history);
    - StopAtEpoch and TensorBoard when asked.
    """
    run_dir = Path(run_dir)
    callbacks: list[keras.callbacks.Callback] = []
    if backup:
        callbacks.append(keras.callbacks.BackupAndRestore(str(run_dir / "backup"),
                                                          delete_checkpoint=False))
    mode = monitor_mode(monitor, mode)
    early = best = None
    if patience is not None:
        early = keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience,
                                              verbose=1)
        callbacks.append(early)
    if checkpoint:
        best = keras.callbacks.ModelCheckpoint(str(run_dir / "best.keras"), monitor=monitor,
                                               mode=mode, save_best_only=True)
        callbacks.append(best)
    if early is not None or best is not None:
        callbacks.append(ResumeBest(run_dir, monitor, mode, early, best,
                                    restore=early is not None and best is not None))
    callbacks.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True))
    if stop_at_epoch:
        callbacks.append(StopAtEpoch(stop_at_epoch))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard")))
    return callbacks


def tensorboard_installed() -> bool:
    """Whether the ``tensorboard`` package is there: TensorFlow writes TensorBoard logs
    through it but does not install it (``pip install 'brain_tf[tensorboard]'``)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None

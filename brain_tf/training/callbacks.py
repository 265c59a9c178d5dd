"""Keras callbacks for training runs."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import keras

from brain_tf.io import atomic_path


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


class HistoryCSV(keras.callbacks.Callback):
    """``history.csv``: one row per epoch (``epoch``, then the logs in name order).

    An epoch's row is on disk (flushed and synced) before the epoch's backup is written, as
    :func:`run_callbacks` puts the backup last, so a killed run never has a backup ahead of
    its history. A run killed after the row but before the backup redoes that epoch: at
    the first epoch of a fit, the rows of that epoch and later are dropped, so after any
    resume the file holds every epoch exactly once.
    """

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self._first = True

    def _read(self, header_only: bool = False) -> tuple[list[str], list[list[str]]]:
        """The file's header and rows (none when it is missing or empty)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return [], []
        with open(self.path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            return header, [] if header_only else [row for row in reader if row]

    def on_train_begin(self, logs=None):
        self._first = True

    def on_epoch_begin(self, epoch, logs=None):
        if not self._first:
            return
        self._first = False
        header, rows = self._read()
        if not rows:
            return
        column = header.index("epoch")
        by_epoch = {int(row[column]): row for row in rows}  # a repeated epoch: its last row
        kept = [by_epoch[e] for e in sorted(by_epoch) if e < epoch]
        if kept != rows:
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
                csv.writer(f).writerows([header] + kept)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        header, _ = self._read(header_only=True)
        new = not header
        if new:
            header = ["epoch"] + sorted(logs)
        row = [epoch if key == "epoch" else _csv_value(logs.get(key, "NA")) for key in header]
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(header)
            writer.writerow(row)
            f.flush()
            os.fsync(f.fileno())


def _csv_value(value):
    """A log value as CSV text: numbers as themselves, sequences as ``[a, b]``."""
    if hasattr(value, "numpy"):
        value = value.numpy()
    if hasattr(value, "ndim") and value.ndim == 0:
        value = value.item()
    if isinstance(value, (str, int, float)):
        return value
    try:
        return "[" + ", ".join(str(v) for v in value) + "]"
    except TypeError:
        return str(value)


class ResumeBest(keras.callbacks.Callback):
    """Keeps "best epoch" decisions right across a resumed run, and restores the best weights.

    Keras' EarlyStopping and ModelCheckpoint keep their best value in memory only, so after
    a resume (BackupAndRestore) they would start from scratch and ``best.keras`` could be
    overwritten by a worse epoch. At the first epoch of training (after :class:`HistoryCSV`
    has dropped the rows of epochs to be redone) this callback seeds both from the run's
    ``history.csv`` (the best monitored value so far, and the epochs waited since); at the
    end, with ``restore``, it loads the weights of ``best.keras``: the best epoch of the
    whole run, resumed or not.
    """

    def __init__(self, run_dir: Path, monitor: str, mode: str, early=None, checkpoint=None,
                 restore: bool = True):
        super().__init__()
        self.run_dir, self.monitor, self.mode = Path(run_dir), monitor, mode
        self.early, self.checkpoint, self.restore = early, checkpoint, restore
        self._first = True

    def on_train_begin(self, logs=None):
        self._first = True

    def on_epoch_begin(self, epoch, logs=None):
        if self._first:
            self._first = False
            self._seed()

    def _seed(self):
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
    reduce_lr: dict | None = None,
) -> list[keras.callbacks.Callback]:
    """The standard callbacks of a run folder.

    - :class:`HistoryCSV` to ``history.csv`` (appending, so a resumed run keeps its history);
    - EarlyStopping on ``monitor`` (a validation metric) after ``patience`` epochs;
    - ModelCheckpoint of the best model to ``best.keras``, whose weights the model ends
      with when early stopping is on (:class:`ResumeBest`, also right after a resume);
    - ReduceLROnPlateau (options ``reduce_lr``), StopAtEpoch and TensorBoard when asked;
    - BackupAndRestore in ``backup/`` so a killed run resumes at its last epoch (the backup
      stays until the run folder is complete: :meth:`RunFolder.mark_complete` removes it).
      It comes last: an epoch's backup is written after everything else the epoch writes
      or changes, so the backup never runs ahead of the history.
    """
    run_dir = Path(run_dir)
    callbacks: list[keras.callbacks.Callback] = [HistoryCSV(run_dir / "history.csv")]
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
    if reduce_lr:
        callbacks.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=mode,
                                                           **reduce_lr))
    if stop_at_epoch:
        callbacks.append(StopAtEpoch(stop_at_epoch))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard")))
    if backup:
        callbacks.append(keras.callbacks.BackupAndRestore(str(run_dir / "backup"),
                                                          delete_checkpoint=False))
    return callbacks


def tensorboard_installed() -> bool:
    """Whether the ``tensorboard`` package is there: TensorFlow writes TensorBoard logs
    through it but does not install it (``pip install 'brain_tf[tensorboard]'``)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None

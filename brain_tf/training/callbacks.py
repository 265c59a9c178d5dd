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

    - EarlyStopping on ``monitor`` (a validation metric) restoring the best weights;
    - ModelCheckpoint of the best model to ``best.keras``;
    - BackupAndRestore in ``backup/`` so a killed run resumes at its last epoch;
    - CSVLogger to ``history.csv`` (appending, so a resumed run keeps its history);
    - StopAtEpoch and TensorBoard when asked.
    """
    run_dir = Path(run_dir)
    callbacks: list[keras.callbacks.Callback] = []
    if backup:
        callbacks.append(keras.callbacks.BackupAndRestore(str(run_dir / "backup"),
                                                          delete_checkpoint=True))
    if patience is not None:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=patience, restore_best_weights=True, verbose=1))
    if checkpoint:
        callbacks.append(keras.callbacks.ModelCheckpoint(
            str(run_dir / "best.keras"), monitor=monitor, mode=mode, save_best_only=True))
    callbacks.append(keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True))
    if stop_at_epoch:
        callbacks.append(StopAtEpoch(stop_at_epoch))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "tensorboard")))
    return callbacks

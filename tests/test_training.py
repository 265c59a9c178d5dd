"""Run callbacks and run folders: stop-at-epoch, best-weight restore, resume, export."""

import subprocess
import sys

import keras
import numpy as np
import pandas as pd
import pytest

from brain_tf.training import RunFolder, SavedModelPredictor, StopAtEpoch, run_callbacks


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((3,))
    model = keras.Model(inp, keras.layers.Dense(1, name="head")(inp))
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def data(n=32):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, x @ np.array([[1.0], [-2.0], [0.5]], np.float32)


def test_stop_at_epoch_stops_where_told(tmp_path):
    x, y = data()
    model = tiny_model()
    cb = StopAtEpoch(3)
    history = model.fit(x, y, epochs=10, verbose=0, callbacks=[cb])
    assert len(history.history["loss"]) == 3 and cb.stopped_epoch == 3


class _WorsenAfter(keras.callbacks.Callback):
    """Make the validation loss get worse from epoch 3 on by corrupting the weights."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch >= 3:
            w = self.model.get_layer("head").get_weights()
            self.model.get_layer("head").set_weights([w[0] + 5.0, w[1]])


def test_early_stopping_restores_best_weights(tmp_path):
    x, y = data()
    model = tiny_model()
    callbacks = run_callbacks(tmp_path, monitor="val_loss", patience=2, backup=False)
    snapshots = []
    grab = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, logs: snapshots.append((logs["val_loss"], model.get_weights())))
    model.fit(x, y, validation_data=(x, y), epochs=20, verbose=0,
              callbacks=[grab, _WorsenAfter()] + callbacks)
    history = pd.read_csv(tmp_path / "history.csv")
    assert len(history) < 20  # stopped early
    best = int(np.argmin(history["val_loss"]))
    assert best == 2
    best_weights = snapshots[best][1]
    for got, want in zip(model.get_weights(), best_weights):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert (tmp_path / "best.keras").exists()


class _Crash(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.at:
            raise KeyboardInterrupt("killed")


def test_interrupted_run_resumes_from_backup(tmp_path):
    x, y = data()
    model = tiny_model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(x, y, validation_data=(x, y), epochs=5, verbose=0,
                  callbacks=run_callbacks(tmp_path, patience=None) + [_Crash(2)])
    assert (tmp_path / "backup").exists()
    resumed = tiny_model(seed=1)  # a fresh process would rebuild the model like this
    epochs_run = []
    count = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs_run.append(e))
    resumed.fit(x, y, validation_data=(x, y), epochs=5, verbose=0,
                callbacks=run_callbacks(tmp_path, patience=None) + [count])
    assert epochs_run == [2, 3, 4]
    assert list(pd.read_csv(tmp_path / "history.csv")["epoch"]) == [0, 1, 2, 3, 4]
    # the backup stays until the run folder is complete: a kill while saving the model
    # must not lose the finished epochs
    assert (tmp_path / "backup").exists()
    again = tiny_model(seed=2)
    epochs_run.clear()
    again.fit(x, y, validation_data=(x, y), epochs=5, verbose=0,
              callbacks=run_callbacks(tmp_path, patience=None) + [count])
    assert epochs_run == [] and len(pd.read_csv(tmp_path / "history.csv")) == 5
    np.testing.assert_array_equal(again.get_weights()[0], resumed.get_weights()[0])
    RunFolder(tmp_path).mark_complete({})
    assert not (tmp_path / "backup").exists() and (tmp_path / "complete.json").exists()


class _Killed(BaseException):
    """Ends a fit where it is raised, as a SIGKILL would: no later callback runs."""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_run_killed_around_its_backup_resumes_with_every_epoch_once(tmp_path, monkeypatch,
                                                                     when):
    """Killed in epoch 1 just before or just after its backup is written, the resumed
    run's history.csv holds every epoch exactly once (a kill between the backup and the
    history row used to leave epochs 0, 2, 3)."""
    save = keras.callbacks.BackupAndRestore._save_model

    def save_then_die(self):
        if when == "before" and self._current_epoch == 2:
            raise _Killed
        save(self)
        if when == "after" and self._current_epoch == 2:
            raise _Killed

    x, y = data()
    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "_save_model", save_then_die)
    with pytest.raises(_Killed):
        tiny_model().fit(x, y, validation_data=(x, y), epochs=4, verbose=0,
                         callbacks=run_callbacks(tmp_path, patience=None))
    monkeypatch.setattr(keras.callbacks.BackupAndRestore, "_save_model", save)
    epochs_run = []
    count = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs_run.append(e))
    tiny_model(seed=1).fit(x, y, validation_data=(x, y), epochs=4, verbose=0,
                           callbacks=run_callbacks(tmp_path, patience=None) + [count])
    assert epochs_run == ([1, 2, 3] if when == "before" else [2, 3])
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    assert history["loss"].notna().all() and history["val_loss"].notna().all()


def test_run_folder_saves_and_exports(tmp_path):
    x, _ = data()
    model = tiny_model()
    run = RunFolder.create("demo-task", run_id="r1", base=tmp_path)
    run.save_config({"task": "demo-task", "model": {"name": "dense"}})
    run.save_json("metrics.json", {"mae": np.float32(1.5), "bad": float("nan")})
    run.save_model(model)
    assert RunFolder.open(run.path).load_config()["model"]["name"] == "dense"
    assert run.load_json("metrics.json") == {"mae": 1.5, "bad": None}
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(run.load_model().predict(x, verbose=0), expected, rtol=1e-6)
    np.testing.assert_allclose(SavedModelPredictor(run.path)(x), expected, rtol=1e-5)
    np.save(tmp_path / "x.npy", x)
    code = ("import numpy as np, sys; from brain_tf.training import SavedModelPredictor; "
            f"print(SavedModelPredictor(r'{run.path}')(np.load(r'{tmp_path / 'x.npy'}')).sum())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert float(out.stdout.strip().splitlines()[-1]) == pytest.approx(float(expected.sum()),
                                                                       rel=1e-5)

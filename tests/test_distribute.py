"""tf.distribute: mirrored replicas match one device, multi-worker training, mixed precision,
the chief's run folder and the command-line flags."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import keras
import pytest
from conftest import free_ports

from brain_tf.cli import build_parser
from brain_tf.distribute import get_strategy, is_chief, precision_policy
from brain_tf.errors import ConfigError
from brain_tf.schema import RunConfig
from brain_tf.tasks import TASKS
from brain_tf.tasks.base import SCHEMAS
from brain_tf.training.fit import compiled_model

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}

# Two logical CPU devices must be configured before TensorFlow starts: a fresh process.
# The same tiny model, data and global batch of 4 are trained three ways: one replica
# (model.fit), two replicas with model.fit, two replicas with the multi-worker loop.
MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from brain_tf.distribute import distributed_fit, get_strategy
    from brain_tf.schema import RunConfig
    from brain_tf.tasks.base import SCHEMAS
    from brain_tf.training import RunFolder
    from brain_tf.training.fit import compiled_model, fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 8, 8, 8, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) * 3 + 1).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()
    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)

    def config(strategy):
        return RunConfig.build({"model": {"name": "cnn3d", "filters": [2], "dropout": 0.0},
                                "optimizer": {"name": "sgd", "learning_rate": 0.05},
                                "loss": "mse", "metrics": [],
                                "training": {"strategy": strategy, "epochs": 2,
                                             "steps_per_epoch": 2, "verbose": 0}},
                               SCHEMAS["volume"])

    def train(strategy, loop, folder):
        keras.utils.set_random_seed(1)
        cfg = config(strategy)
        model = compiled_model(cfg, (8, 8, 8, 1), 1, total_steps=4)
        start = model.get_weights()
        run = RunFolder(sys.argv[1] + "/" + folder)
        run.path.mkdir()
        if loop:
            distributed_fit(model, ds, val, get_strategy(strategy), epochs=2, steps_per_epoch=2,
                            verbose=0)
        else:
            fit(model, ds, val, cfg, run, epochs=2, steps_per_epoch=2)
        return model, start

    out = {"replicas": get_strategy("mirrored").num_replicas_in_sync}
    one, start = train("default", False, "one")
    for name, loop in (("fit", False), ("loop", True)):
        two, _ = train("mirrored", loop, name)
        out[name] = max(float(np.abs(a - b).max())
                        for a, b in zip(one.get_weights(), two.get_weights()))
    out["moved"] = max(float(np.abs(a - b).max()) for a, b in zip(one.get_weights(), start))
    print("RESULT " + json.dumps(out))
""")


def test_two_replicas_give_the_weights_of_one(tmp_path):
    out = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path)], env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT ")[-1])
    assert result["replicas"] == 2
    assert result["moved"] > 1e-3  # training changed the weights...
    assert result["fit"] < 1e-5  # ...identically with 2 replicas through model.fit
    assert result["loop"] < 1e-5  # and through the multi-worker training loop
    assert (tmp_path / "fit" / "history.csv").exists()




TINY = """
[data.fractions]
train = 0.34
val = 0.33
test = 0.33
[sampler]
patch_size = [16, 16, 8]
patches_per_subject = 2
max_tries = 10
[model]
depth = 2
base_filters = 2
[training]
epochs = 1
steps_per_epoch = 2
batch_size = 2
val_patches = 1
verbose = 0
[inference]
patch_size = [16, 16, 8]
overlap = 0.0
"""


def test_two_workers_train_and_only_the_chief_writes(tmp_path):
    from brain_tf.data.synthetic import synthesize

    spec = synthesize("msd_brats", tmp_path / "data", subjects=3, seed=2, shape=(16, 16, 8))
    (tmp_path / "tiny.toml").write_text(TINY)
    ports = free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    workers = []
    for i in range(2):
        env = {**ENV, "TF_CONFIG": json.dumps({"cluster": cluster,
                                                 "task": {"type": "worker", "index": i}}),
               "TMPDIR": str(tmp_path)}
        cmd = [sys.executable, "-m", "brain_tf.cli", "tumor-segmentation", "train",
               "--preset", "small", "--spec", str(spec), "--config", str(tmp_path / "tiny.toml"),
               "--strategy", "multiworker", "--run-dir", str(tmp_path / f"run{i}")]
        workers.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True))
    results = [w.communicate(timeout=400) for w in workers]
    for w, (_, err) in zip(workers, results):
        assert w.returncode == 0, err[-3000:]
    chief = tmp_path / "run0"
    for name in ("model.keras", "saved_model/saved_model.pb", "config.toml", "history.csv",
                 "metrics.json", "splits.csv"):
        assert (chief / name).exists(), name
    assert not (tmp_path / "run1").exists()
    assert not list(tmp_path.glob("brain_tf_worker_*"))  # the worker's folder was removed
    # both workers ended with the same weights: the same test-split figures
    figures = [[line for line in out.splitlines() if "mean Dice" in line] for out, _ in results]
    assert figures[0] and figures[0] == figures[1]
    assert results[0][0].splitlines()[-1] == f"run folder: {chief}"
    assert "the chief writes the run folder" in results[1][0].splitlines()[-1]


def test_mixed_precision_build_keeps_float32_outputs_and_resets_the_policy(monkeypatch):
    from brain_tf.distribute import precision

    monkeypatch.setattr(precision, "gpu_capabilities", lambda: ((8, 0),))  # float16 on a GPU
    raw = {"model": {"name": "cnn3d", "filters": [2], "dropout": 0.0}, "loss": "mse",
           "training": {"mixed_precision": True}}
    model = compiled_model(RunConfig.build(raw, SCHEMAS["volume"]), (8, 8, 8, 1), 1, 10)
    assert keras.config.dtype_policy().name == "float32"  # nothing leaks
    assert model.get_layer("block1_conv").compute_dtype == "float16"
    assert model.get_layer("block1_conv").variable_dtype == "float32"
    assert model.outputs[0].dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    plain = compiled_model(RunConfig.build({**raw, "training": {}}, SCHEMAS["volume"]),
                           (8, 8, 8, 1), 1, 10)
    assert plain.get_layer("block1_conv").compute_dtype == "float32"
    with pytest.raises(RuntimeError):
        with precision_policy(True):
            assert keras.config.dtype_policy().name == "mixed_float16"
            raise RuntimeError("inside")
    assert keras.config.dtype_policy().name == "float32"


def test_strategy_names_and_chief(monkeypatch):
    task = TASKS["tumor-segmentation"]
    assert task.config("small").training.strategy == "default"
    with pytest.raises(ConfigError, match="strategy must be one of 'default', 'mirrored'"):
        task.config("small", {"training": {"strategy": "horovod"}})
    with pytest.raises(ConfigError, match="choose one of default, mirrored, multiworker"):
        get_strategy("horovod")
    cluster = {"worker": ["a:1", "b:2"]}
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief()
    for task, chief in ((("worker", 0), True), (("worker", 1), False)):
        monkeypatch.setenv("TF_CONFIG", json.dumps(
            {"cluster": cluster, "task": {"type": task[0], "index": task[1]}}))
        assert is_chief() is chief
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {**cluster, "chief": ["c:3"]}, "task": {"type": "worker", "index": 0}}))
    assert not is_chief()  # with a chief task, worker 0 is not the chief
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ConfigError, match="TF_CONFIG is not valid JSON"):
        is_chief()
    monkeypatch.delenv("TF_CONFIG")


def _parsed_config(monkeypatch, argv):
    task = TASKS["tumor-segmentation"]
    seen = {}
    run = SimpleNamespace(path="models/tumor-segmentation/RUN")
    monkeypatch.setattr(task, "train", lambda config, run_dir=None, force=False: seen.update(
        config=config, run_dir=run_dir, force=force) or run)
    args = build_parser().parse_args(argv)
    assert args._fn(args) is run
    return seen


def test_cli_train_flags(monkeypatch, tmp_path):
    (tmp_path / "c.toml").write_text("[model]\nbase_filters = 3\n[training]\nepochs = 7\n")
    seen = _parsed_config(monkeypatch, [
        "tumor-segmentation", "train", "--preset", "small", "--strategy", "mirrored",
        "--mixed-precision", "--shards", "/s", "--config", str(tmp_path / "c.toml"),
        "--batch-size", "8", "--run-dir", "R"])
    config = seen["config"]
    assert config.training.strategy == "mirrored"
    assert config.training.precision == "float16"  # --mixed-precision is its alias
    assert config.training.batch_size == 8 and config.training.epochs == 7
    assert config.data.shards == "/s"
    assert config.model["base_filters"] == 3 and config.model["depth"] == 3
    assert seen["run_dir"] == "R" and seen["force"] is False
    plain = _parsed_config(monkeypatch, ["tumor-segmentation", "train"])["config"]
    assert plain.training.strategy == "default" and plain.training.precision == "float32"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tumor-segmentation", "train", "--strategy", "tpu"])

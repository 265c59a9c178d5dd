"""Saved models reload in a fresh process after ``import brain_tf.objects`` alone, and export."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from brain_tf.losses import DiceCELoss, SoftDiceLoss, WeightedCrossEntropy
from brain_tf.metrics import DiceCoefficient, Sensitivity, Specificity
from brain_tf.models import build_model
from brain_tf.schedules import OneCycle, StepDecay

RELOAD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    import brain_tf.objects

    folder = sys.argv[1]
    report = {}
    for name in ("seg", "tissue", "sex", "age"):
        model = keras.saving.load_model(f"{folder}/{name}.keras")
        x = np.load(f"{folder}/{name}_x.npy")
        out = keras.ops.convert_to_numpy(model(x, training=False))
        entry = {
            "max_diff": float(np.abs(out - np.load(f"{folder}/{name}_y.npy")).max()),
            "loss": type(model.loss).__name__,
            "loss_config": model.loss.get_config() if name != "age" else None,
            "learning_rate": model.optimizer.get_config()["learning_rate"],
            "iterations": int(model.optimizer.iterations.numpy()),
            "layers": sorted({type(layer).__name__ for layer in model.layers}),
        }
        if name == "seg":
            entry["evaluate"] = model.evaluate(x, np.load(f"{folder}/seg_t.npy"), verbose=0,
                                               return_dict=True)
        report[name] = entry
    print(json.dumps(report))
""")


def _tiny_models(rng):
    """Four tiny compiled models covering every brain_tf loss, metric, schedule and layer."""
    seg = build_model("unet3d", input_shape=(8, 8, 8, 2), depth=2, base_filters=2)
    seg.compile(optimizer=keras.optimizers.Adam(OneCycle(1e-3, total_steps=20)),
                loss=SoftDiceLoss(squared_pred=True),
                metrics=[DiceCoefficient(), Sensitivity(class_id=0), Specificity(threshold=0.4)],
                jit_compile=False)
    tissue = build_model("resunet3d", input_shape=(8, 8, 8, 1), num_outputs=3, depth=2,
                         base_filters=2, norm="group", norm_groups=2)
    tissue.compile(optimizer=keras.optimizers.SGD(StepDecay(0.01, step_size=5)),
                   loss=DiceCELoss(class_weights=[0.1, 0.45, 0.45]),
                   metrics=[DiceCoefficient(output_activation="softmax", include_background=False)],
                   jit_compile=False)
    sex = build_model("cnn3d", input_shape=(8, 8, 8, 1), num_outputs=2, filters=(2, 4),
                      hidden_units=4, mc_dropout=True, output_activation="softmax")
    sex.compile(optimizer="adam", loss=WeightedCrossEntropy(class_weights=[1.0, 2.0]),
                jit_compile=False)
    age = build_model("resnext3d", input_shape=(8, 8, 8, 1), widths=(4, 8), blocks=(1, 1),
                      cardinality=2, stem_filters=4)
    age.compile(optimizer="adam", loss="mse", jit_compile=False)
    data = {
        "age": (rng.normal(size=(2, 8, 8, 8, 1)), np.array([[30.0], [70.0]])),
        "seg": (rng.normal(size=(2, 8, 8, 8, 2)), (rng.random((2, 8, 8, 8, 3)) > 0.7) * 1.0),
        "tissue": (rng.normal(size=(2, 8, 8, 8, 1)),
                   np.eye(3)[rng.integers(0, 3, size=(2, 8, 8, 8))]),
        "sex": (rng.normal(size=(2, 8, 8, 8, 1)), np.eye(2)[[0, 1]]),
    }
    data = {k: (x.astype("float32"), t.astype("float32")) for k, (x, t) in data.items()}
    return {"seg": seg, "tissue": tissue, "sex": sex, "age": age}, data


def test_keras_file_reloads_in_fresh_process(tmp_path, rng):
    models, data = _tiny_models(rng)
    expected_eval = None
    for name, model in models.items():
        x, target = data[name]
        model.fit(x, target, batch_size=1, epochs=1, verbose=0)  # two optimizer steps
        model.save(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}_x.npy", x)
        np.save(tmp_path / f"{name}_t.npy", target)
        np.save(tmp_path / f"{name}_y.npy", keras.ops.convert_to_numpy(model(x, training=False)))
        if name == "seg":
            expected_eval = model.evaluate(x, target, verbose=0, return_dict=True)
    result = subprocess.run([sys.executable, "-c", RELOAD, str(tmp_path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    seg, tissue, sex, age = report["seg"], report["tissue"], report["sex"], report["age"]
    assert seg["max_diff"] <= 1e-6 and tissue["max_diff"] <= 1e-6 and age["max_diff"] <= 1e-6
    assert seg["loss"] == "SoftDiceLoss" and seg["loss_config"]["squared_pred"] is True
    assert tissue["loss"] == "DiceCELoss"
    assert tissue["loss_config"]["class_weights"] == [0.1, 0.45, 0.45]
    assert sex["loss"] == "WeightedCrossEntropy"
    assert seg["learning_rate"]["class_name"] == "OneCycle"
    assert seg["learning_rate"]["config"]["total_steps"] == 20
    assert tissue["learning_rate"]["class_name"] == "StepDecay"
    assert seg["iterations"] == tissue["iterations"] == sex["iterations"] == 2
    assert "MCDropout" in sex["layers"] and "GroupNormalization" in tissue["layers"]
    assert "GroupedConv3D" in age["layers"]
    assert sex["max_diff"] > 0  # MC dropout still samples masks after reloading
    for key in ("loss", "dice", "sensitivity", "specificity"):
        assert seg["evaluate"][key] == pytest.approx(expected_eval[key], rel=1e-5), key


def test_export_saved_model_serving_signature(tmp_path, rng):
    model = build_model("unet3d", input_shape=(8, 8, 8, 2), depth=2, base_filters=2, norm="batch")
    x = rng.normal(size=(2, 8, 8, 8, 2)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    model.export(tmp_path / "saved_model", verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "saved_model"))
    np.testing.assert_allclose(reloaded.serve(x).numpy(), expected, atol=1e-6)
    serving = reloaded.signatures["serving_default"]
    (output,) = serving(tf.constant(x)).values()
    np.testing.assert_allclose(output.numpy(), expected, atol=1e-6)

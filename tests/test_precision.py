"""Precision: bfloat16 training keeps float32 weights and outputs, bfloat16 and float32
predictions agree, a model trained in bfloat16 reloads and predicts in float32, the
Keras dtype policy never leaks, and a precision this machine lacks is a one-line error
before anything runs."""

import json

import keras
import numpy as np
import pytest

from brain_tf.cli import main
from brain_tf.data.synthetic import synthesize
from brain_tf.distribute import precision as prec
from brain_tf.errors import ConfigError
from brain_tf.io import load_volume
from brain_tf.inference import sliding_window_predict
from brain_tf.models import build_model
from brain_tf.schema import RunConfig
from brain_tf.tasks import TASKS
from brain_tf.tasks.base import SCHEMAS
from brain_tf.training.fit import compiled_model
from brain_tf.training.run import SavedModelPredictor, load_keras_model
from brain_tf.training.runner import Context, predictor_in_precision

needs_bfloat16 = pytest.mark.skipif(not prec.bfloat16_supported(),
                                    reason="this machine has no bfloat16 (AMX/AVX-512 BF16)")
no_gpu = pytest.mark.skipif(bool(prec.gpu_capabilities()), reason="float16 runs on a GPU")

# bfloat16 keeps 8 significant bits (a relative step of 2^-8 = 0.4 %); through a tiny
# U-Net of random weights the softmax probabilities move by at most this much
PROBABILITY_TOLERANCE = 0.02


def _unet(precision="float32"):
    with prec.precision_policy(precision):
        return build_model("unet3d", input_shape=(None, None, None, 2), num_outputs=3,
                           depth=2, base_filters=4, output_activation="softmax")


def _bfloat16_config(**training):
    raw = {"model": {"name": "unet3d", "depth": 2, "base_filters": 4,
                     "output_activation": "softmax"},
           "loss": {"class": "DiceCELoss"}, "metrics": [],
           "training": {"precision": "bfloat16", **training}}
    return RunConfig.build(raw, SCHEMAS["segmentation"])


def _data(n=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 16, 16, 16, 2)).astype(np.float32)
    y = keras.utils.to_categorical((x[..., 0] > 0) + (x[..., 1] > 1), 3).astype(np.float32)
    return x, y


@needs_bfloat16
def test_bfloat16_trains_with_float32_weights_and_outputs():
    model = compiled_model(_bfloat16_config(), (16, 16, 16, 2), 3, total_steps=3)
    assert keras.config.dtype_policy().name == "float32"  # nothing leaks
    assert prec.model_precision(model) == "bfloat16"
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv3D)]
    assert convs[0].compute_dtype == "bfloat16"
    assert convs[-1].compute_dtype == "float32"  # the softmax head
    assert model.outputs[0].dtype == "float32"
    before = [w.copy() for w in model.get_weights()]
    x, y = _data()
    history = model.fit(x, y, batch_size=2, epochs=3, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    assert all(w.dtype == "float32" for w in model.weights)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    out = model(x[:1], training=False)
    assert out.dtype == "float32"
    np.testing.assert_allclose(np.asarray(out).sum(-1), 1.0, atol=1e-5)


@needs_bfloat16
def test_bfloat16_and_float32_predictions_agree_and_the_window_stays_float32():
    model = _unet()
    low = prec.in_precision(model, "bfloat16")
    assert prec.model_precision(low) == "bfloat16" and prec.model_precision(model) == "float32"
    assert low.layers[-1].compute_dtype == "float32"
    x, _ = _data(2, seed=1)
    full, half = model.predict_on_batch(x), low.predict_on_batch(x)
    assert half.dtype == np.float32
    assert 0 < np.abs(full - half).max() < PROBABILITY_TOLERANCE  # computed in bfloat16
    volume = np.random.default_rng(2).standard_normal((24, 20, 16, 2)).astype(np.float32)
    a = sliding_window_predict(model, volume, (16, 16, 16), overlap=0.5, batch_size=2)
    b = sliding_window_predict(low, volume, (16, 16, 16), overlap=0.5, batch_size=2)
    assert b.dtype == np.float32 and a.shape == b.shape
    assert np.abs(a - b).max() < PROBABILITY_TOLERANCE
    assert (a.argmax(-1) == b.argmax(-1)).mean() > 0.98


@needs_bfloat16
def test_a_bfloat16_model_reloads_and_predicts_in_float32(tmp_path):
    model = compiled_model(_bfloat16_config(), (16, 16, 16, 2), 3, total_steps=2)
    x, y = _data()
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = load_keras_model(tmp_path / "m.keras")
    assert prec.model_precision(loaded) == "bfloat16"
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)  # float32 weights, saved and read exactly
    full = prec.in_precision(loaded, "float32")
    assert prec.model_precision(full) == "float32"
    assert all(layer.compute_dtype == "float32" for layer in full.layers)
    assert keras.config.dtype_policy().name == "float32"
    with prec.precision_policy("float32"):
        reference = build_model("unet3d", input_shape=(16, 16, 16, 2), num_outputs=3,
                                depth=2, base_filters=4, output_activation="softmax")
    reference.set_weights(loaded.get_weights())  # built in float32: the exact same numbers
    np.testing.assert_array_equal(full.predict_on_batch(x), reference.predict_on_batch(x))
    assert np.abs(full.predict_on_batch(x) - loaded.predict_on_batch(x)).max() \
        < PROBABILITY_TOLERANCE


def test_precision_names_auto_and_the_policy_is_restored(monkeypatch):
    assert prec.resolve_precision("float32") == "float32"
    with pytest.raises(ConfigError, match=r"--precision 'double': choose one of float32"):
        prec.resolve_precision("double")
    monkeypatch.setitem(prec.AUTO_BFLOAT16, "predict", True)
    assert prec.resolve_precision(None, "predict") == (
        "bfloat16" if prec.bfloat16_supported() else "float32")
    monkeypatch.setitem(prec.AUTO_BFLOAT16, "predict", False)
    assert prec.resolve_precision("auto", "predict") == "float32"
    with pytest.raises(RuntimeError):
        with prec.precision_policy("bfloat16"):
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
            raise RuntimeError("inside")
    assert keras.config.dtype_policy().name == "float32"
    with pytest.raises(ConfigError, match=r"mixed_precision = true is precision = \"float16\""):
        TASKS["tumor-segmentation"].config(
            "small", {"training": {"mixed_precision": True, "precision": "bfloat16"}})
    with pytest.raises(ConfigError, match=r"precision must be one of"):
        TASKS["tumor-segmentation"].config("small", {"training": {"precision": "half"}})


@no_gpu
def test_float16_on_a_cpu_is_a_one_line_error_before_anything_runs(tmp_path, capsys):
    for flags in (["--mixed-precision"], ["--precision", "float16"]):
        code = main(["tumor-segmentation", "train", "--preset", "small", *flags,
                     "--spec", str(tmp_path / "absent.toml"), "--run-dir", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert code == 2
        assert err.count("\n") == 1 and "float16 needs a GPU" in err
        assert "bfloat16" in err  # names what to use instead
    assert not (tmp_path / "r").exists()
    code = main(["tumor-segmentation", "predict", "--model", str(tmp_path / "none"),
                 str(tmp_path / "x.nii.gz"), "--out", str(tmp_path / "o"),
                 "--precision", "float16"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "float16 needs a GPU" in err
    assert not (tmp_path / "o").exists()


TINY = {
    "sampler": {"patch_size": [16, 16, 8], "patches_per_subject": 2, "max_tries": 10},
    "model": {"depth": 2, "base_filters": 2},
    "training": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "val_patches": 1,
                 "verbose": 0, "precision": "bfloat16"},
    "inference": {"patch_size": [16, 16, 8], "overlap": 0.0},
}


@pytest.fixture(scope="module")
def bfloat16_runs(tmp_path_factory):
    if not prec.bfloat16_supported():
        pytest.skip("this machine has no bfloat16")
    root = tmp_path_factory.mktemp("bfloat16")
    spec = synthesize("msd_brats", root / "data", subjects=5, seed=3, shape=(24, 24, 16))
    task = TASKS["tumor-segmentation"]
    return spec, [task.train(task.config("small", {**TINY, "data": {"spec": str(spec)}}),
                             run_dir=str(root / name)) for name in ("a", "b")]


def test_bfloat16_runs_are_reproducible_and_predict_in_either_precision(bfloat16_runs,
                                                                         tmp_path):
    """On a CPU, bfloat16 training with deterministic ops gives the same bytes twice (as
    float32 does: tests/test_runner.py); its run predicts in float32 and in bfloat16."""
    spec, (a, b) = bfloat16_runs
    assert (a / "history.csv").read_bytes() == (b / "history.csv").read_bytes()
    assert (a / "metrics.json").read_bytes() == (b / "metrics.json").read_bytes()
    learned = json.loads((a / "learned.json").read_text())
    assert learned["model"]["precision"] == "bfloat16"
    task = TASKS["tumor-segmentation"]
    ctx = Context(task, task.load_config(a), learned=learned)
    family = task.family("small")
    saved = SavedModelPredictor(a.path)
    assert predictor_in_precision(family, ctx, a, saved, "bfloat16") is saved  # its own
    full = predictor_in_precision(family, ctx, a, saved, "float32")  # rebuilt from model.keras
    assert isinstance(full, keras.Model) and prec.model_precision(full) == "float32"
    image = sorted((spec.parent / "imagesTr").glob("*.nii.gz"))[0]
    labels = {}
    for precision in ("float32", "bfloat16"):
        assert main(["tumor-segmentation", "predict", "--model", str(a.path), str(image),
                     "--out", str(tmp_path / precision), "--precision", precision]) == 0
        (written,) = (tmp_path / precision).glob("*_seg.nii.gz")
        labels[precision] = np.asarray(load_volume(written, dtype=None).array)
    assert (labels["float32"] == labels["bfloat16"]).mean() > 0.99
    # a float16 model (trained on a GPU) is evaluated here in float32, not refused
    half = prec.in_precision(a.load_model(), "float16")
    runnable = prec.runnable_here(half)
    assert prec.model_precision(runnable) == ("float16" if prec.gpu_capabilities()
                                              else "float32")
    assert keras.config.dtype_policy().name == "float32"

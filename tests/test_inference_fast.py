"""Compiled sliding window, cohort pipeline, ONNX export and ONNX Runtime prediction."""

import sys
import threading
import time

import keras
import numpy as np
import pytest

from brain_tf.errors import DataError, ModelError
from brain_tf.inference import aligned_empty, sliding_window_predict
from brain_tf.inference.cohort import CohortError, run_cohort
from brain_tf.inference.onnx_model import OnnxPredictor, export_onnx
from brain_tf.io import atomic_path, load_volume, save_volume


def _conv_model(activation: str, seed: int, channels: int = 2, classes: int = 3):
    """Two 3x3x3 convolutions: the output depends on each voxel's neighbours."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, None, channels))
    x = keras.layers.Conv3D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    outputs = keras.layers.Conv3D(classes, 3, padding="same", activation=activation,
                                  name="head")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def heads():
    return {"softmax": _conv_model("softmax", 0), "sigmoid": _conv_model("sigmoid", 1)}


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(0).normal(size=(37, 29, 23, 2)).astype(np.float32)


# ---------------------------------------------------------------- compiled == numpy


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
@pytest.mark.parametrize("tta", [False, True])
@pytest.mark.parametrize("patch", [(16, 16, 16), (40, 12, 8)])  # 40 > 37: padded along x
def test_compiled_path_matches_numpy_path(heads, volume, head, tta, patch):
    model = heads[head]
    for overlap in (0.0, 0.25, 0.5, 0.7):
        fast = sliding_window_predict(model, volume, patch, overlap, tta=tta, batch_size=3)
        slow = sliding_window_predict(model, volume, patch, overlap, tta=tta, batch_size=3,
                                      compiled=False)
        assert fast.shape == (37, 29, 23, 3) and fast.dtype == np.float32
        np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-6)
    if head == "softmax":
        np.testing.assert_allclose(fast.sum(axis=-1), 1.0, rtol=1e-5)  # a blend of softmaxes


def test_compiled_path_blends_hand_computed_weights():
    volume = np.zeros((6, 1, 1, 1), np.float32)
    volume[4:] = 1.0  # tile 0 (voxels 0-3) sees only zeros, tile 1 (voxels 2-5) a one
    inputs = keras.Input((None, None, None, 1))
    tile_max = keras.layers.Lambda(lambda x: keras.ops.max(x, axis=1, keepdims=True) + 0 * x)
    model = keras.Model(inputs, tile_max(inputs))  # each tile predicts its maximum everywhere
    constant = sliding_window_predict(model, volume, (4, 1, 1), 0.5, "constant", batch_size=1)
    np.testing.assert_allclose(constant[:, 0, 0, 0], [0, 0, 0.5, 0.5, 1, 1])
    gauss = sliding_window_predict(model, volume, (4, 1, 1), 0.5, "gaussian", batch_size=2)
    # voxel 2: tile 0 at its offset 2 (weight e^-0.5), tile 1 at offset 0 (e^-4.5)
    expected = [0, 0, 1 / (1 + np.e**4), 1 / (1 + np.e**-4), 1, 1]
    np.testing.assert_allclose(gauss[:, 0, 0, 0], expected, rtol=1e-6, atol=1e-7)


def test_compiled_float16_output_multi_output_and_slices(volume):
    inputs = keras.Input((None, None, None, 2))
    a = keras.layers.Conv3D(2, 3, padding="same", activation="sigmoid", name="a")(inputs)
    b = keras.layers.Conv3D(1, 1, name="b")(inputs)
    model = keras.Model(inputs, {"a": a, "b": b})
    for kwargs in ({"output": "a", "output_dtype": "float16"}, {"output": "b", "tta": True}):
        fast = sliding_window_predict(model, volume, 16, 0.5, batch_size=4, **kwargs)
        slow = sliding_window_predict(model, volume, 16, 0.5, batch_size=4, compiled=False,
                                      **kwargs)
        assert fast.dtype == slow.dtype and fast.shape == slow.shape
        np.testing.assert_allclose(fast.astype(np.float32), slow.astype(np.float32), atol=2e-3)
    conv2d = keras.Sequential([keras.Input((None, None, 2)), keras.layers.Conv2D(3, 3,
                                                                                 padding="same")])
    fast = sliding_window_predict(conv2d, volume, (16, 16), 0.5, slice_axis=1, tta=True)
    slow = sliding_window_predict(conv2d, volume, (16, 16), 0.5, slice_axis=1, tta=True,
                                  compiled=False)
    np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-5)


def test_compiled_path_input_kinds(heads, volume):
    """Shared (aligned float32), float64 and non-contiguous inputs give the same result."""
    model = heads["sigmoid"]
    expected = sliding_window_predict(model, volume, 16, 0.5, compiled=False)
    shared = aligned_empty(volume.shape)
    assert shared.ctypes.data % 64 == 0 and shared.flags.c_contiguous
    shared[...] = volume
    for array in (shared, volume.astype(np.float64),
                  np.asfortranarray(volume)):
        out = sliding_window_predict(model, array, 16, 0.5)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(shared, volume)  # the shared input is not written to


def test_compiled_path_any_array_kind(heads, volume, tmp_path):
    """Read-only, memory-mapped, big-endian, other dtypes and strided views: each gives
    the numpy path's result, whether the compiled path shares its memory or copies it
    (a read-only array that is aligned float32 cannot be shared through DLPack)."""
    model = heads["softmax"]
    expected = sliding_window_predict(model, volume, 16, 0.5, compiled=False)
    frozen = aligned_empty(volume.shape)
    frozen[...] = volume
    frozen.setflags(write=False)  # aligned, contiguous float32, but read-only
    np.save(tmp_path / "v.npy", volume)
    mapped_ro = np.load(tmp_path / "v.npy", mmap_mode="r")
    mapped_rw = np.load(tmp_path / "v.npy", mmap_mode="r+")
    raw = np.memmap(tmp_path / "v.raw", np.float32, "w+", shape=volume.shape)
    raw[...] = volume
    raw.flush()
    page = np.memmap(tmp_path / "v.raw", np.float32, "r", shape=volume.shape)
    assert page.ctypes.data % 64 == 0 and not page.flags.writeable  # mmap'd pages: aligned
    wide = np.zeros(volume.shape[:3] + (4,), np.float32)
    wide[..., ::2] = volume
    kinds = {"read-only aligned": frozen, "memory-mapped read-only": mapped_ro,
             "memory-mapped writable": mapped_rw, "memory-mapped page": page,
             "from bytes": np.frombuffer(volume.tobytes(), np.float32).reshape(volume.shape),
             "big-endian": volume.astype(">f4"), "float16": volume.astype(np.float16),
             "channel stride": wide[..., ::2], "reversed": volume[::-1][::-1]}
    for name, array in kinds.items():
        out = sliding_window_predict(model, array, 16, 0.5)
        reference = sliding_window_predict(model, array, 16, 0.5, compiled=False)
        np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-6, err_msg=name)
        if array.dtype != np.float16:  # the same values as the original volume
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(page, volume)  # nothing written through a shared view


def test_compiled_path_errors(volume):
    shrinking = keras.Sequential([keras.Input((None, None, None, 2)),
                                  keras.layers.Conv3D(1, 3, strides=2, padding="same")])
    with pytest.raises(ModelError, match="spatial size"):
        sliding_window_predict(shrinking, volume, 16)
    with pytest.raises(ModelError, match="Keras model"):
        sliding_window_predict(lambda b: b, volume, 16, compiled=True)


# ---------------------------------------------------------------- cohort pipeline


def _temporary_files(folder):
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name)


def _cohort(tmp_path, n=6):
    """Items 0..n-1: a 3D input scan each; outputs: probabilities and labels."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    rng = np.random.default_rng(3)
    for i in range(n):
        save_volume(rng.normal(size=(8, 8, 6)).astype(np.float32), tmp_path / f"in/{i}.nii.gz",
                    affine=affine)
    calls = {"prepare": [], "predict": [], "write": []}

    def prepare(i):
        calls["prepare"].append(i)
        return load_volume(tmp_path / f"in/{i}.nii.gz")

    def predict(vol):
        calls["predict"].append(vol.path)
        return 1.0 / (1.0 + np.exp(-vol.array))

    def write(i, prob):
        calls["write"].append(i)
        save_volume(prob, tmp_path / f"out/{i}_prob.nii.gz", affine=affine)
        save_volume((prob > 0.5).astype(np.uint8), tmp_path / f"out/{i}_seg.nii.gz",
                    affine=affine)

    def outputs(i):
        return [tmp_path / f"out/{i}_prob.nii.gz", tmp_path / f"out/{i}_seg.nii.gz"]

    return prepare, predict, write, outputs, calls


def _cohort_threads():
    return [t for t in threading.enumerate() if t.name.startswith("cohort-")]


def test_cohort_predict_failure_then_resume(tmp_path):
    prepare, predict, write, outputs, calls = _cohort(tmp_path)
    failed = []

    def predict_failing_once(vol):
        if vol.path.endswith("3.nii.gz") and not failed:
            failed.append(vol.path)
            raise RuntimeError("out of memory")
        return predict(vol)

    with pytest.raises(CohortError, match=r"^3: predict failed: RuntimeError: out of memory"):
        run_cohort(range(6), prepare, predict_failing_once, write, outputs, progress=False)
    assert not _cohort_threads()
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == sorted(f"{i}_{k}.nii.gz" for i in range(3) for k in ("prob", "seg"))
    assert _temporary_files(tmp_path) == []

    for key in calls:
        calls[key].clear()
    result = run_cohort(range(6), prepare, predict_failing_once, write, outputs,
                        progress=False)
    assert result.skipped == [0, 1, 2] and result.done == [3, 4, 5]
    assert calls["prepare"] == [3, 4, 5] and calls["write"] == [3, 4, 5]
    assert _temporary_files(tmp_path) == []
    prob = load_volume(tmp_path / "out/4_prob.nii.gz").array
    scan = load_volume(tmp_path / "in/4.nii.gz").array
    np.testing.assert_allclose(prob, 1.0 / (1.0 + np.exp(-scan)), rtol=1e-6)
    assert not _cohort_threads()


def test_cohort_write_failure_leaves_no_partial_output(tmp_path):
    prepare, predict, write, outputs, calls = _cohort(tmp_path)

    def write_crashing_in_second_output(i, prob):
        if i == 2:
            save_volume(prob, tmp_path / "out/2_prob.nii.gz", affine=np.eye(4))
            with atomic_path(tmp_path / "out/2_seg.nii.gz") as tmp:
                tmp.write_bytes(b"half a file")
                raise OSError("disk full")
        write(i, prob)

    with pytest.raises(CohortError, match=r"^2: write failed: OSError: disk full"):
        run_cohort(range(6), prepare, predict, write_crashing_in_second_output, outputs,
                   progress=False)
    assert not _cohort_threads()
    assert _temporary_files(tmp_path) == []
    assert not (tmp_path / "out/2_seg.nii.gz").exists()
    assert not (tmp_path / "out/3_prob.nii.gz").exists()  # nothing written after the error
    result = run_cohort(range(6), prepare, predict, write, outputs, progress=False)
    assert result.skipped == [0, 1] and result.done == [2, 3, 4, 5]  # 2 lacked one output
    assert _temporary_files(tmp_path) == []


def test_cohort_prepare_error_keeps_its_class_and_names_the_item(tmp_path):
    prepare, predict, write, outputs, calls = _cohort(tmp_path)
    (tmp_path / "in/4.nii.gz").write_bytes(b"not a NIfTI file")
    with pytest.raises(DataError, match=r"^4: .*4\.nii\.gz"):
        run_cohort(range(6), prepare, predict, write, outputs, progress=False)
    assert calls["write"] == [0, 1, 2, 3]  # the items read before the bad one are finished
    assert not _cohort_threads()


def test_cohort_memory_is_bounded_and_progress_is_printed(tmp_path, capsys):
    live, most = [0], [0]
    lock = threading.Lock()

    def prepare(i):
        with lock:
            live[0] += 1
            most[0] = max(most[0], live[0])
        return np.full(4, i)

    def predict(x):
        time.sleep(0.01)  # the reader could race ahead if the queues were not bounded
        return x * 2

    def write(i, result):
        with lock:
            live[0] -= 1
        (tmp_path / f"{i}.txt").write_text(str(int(result[0])))

    result = run_cohort(range(30), prepare, predict, write, lambda i: [tmp_path / f"{i}.txt"],
                        prefetch=1)
    assert result.done == list(range(30))
    assert (tmp_path / "7.txt").read_text() == "14"
    # one being read, one queued, one predicted, one queued for writing, one being written
    assert most[0] <= 5
    err = capsys.readouterr().err
    assert "[30/30] 29" in err and "scans/min" in err and "left" in err


# ---------------------------------------------------------------- ONNX


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, heads):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    tile = np.random.default_rng(4).normal(size=(2, 16, 16, 16, 2)).astype(np.float32)
    export_onnx(heads["softmax"], path, sample=tile)  # checks ONNX Runtime against Keras
    return path


def test_onnx_model_agrees_with_keras_on_a_tile(onnx_file, heads):
    tile = np.random.default_rng(5).normal(size=(1, 16, 12, 8, 2)).astype(np.float32)
    predictor = OnnxPredictor(onnx_file)
    got = predictor(tile)
    assert got.shape == (1, 16, 12, 8, 3)
    np.testing.assert_allclose(got, heads["softmax"].predict_on_batch(tile), atol=1e-4)
    assert sorted(p.name for p in onnx_file.parent.iterdir()) == ["model.onnx"]


def test_onnx_predictor_inside_sliding_window(onnx_file, heads, volume):
    onnx_out = sliding_window_predict(OnnxPredictor(onnx_file), volume, (16, 16, 16), 0.5,
                                      batch_size=2)
    keras_out = sliding_window_predict(heads["softmax"], volume, (16, 16, 16), 0.5, batch_size=2)
    np.testing.assert_allclose(onnx_out, keras_out, atol=1e-4)


def test_onnx_errors(tmp_path, monkeypatch, heads):
    with pytest.raises(ModelError, match=r"\.onnx"):
        export_onnx(heads["softmax"], tmp_path / "model.h5")
    def no_tf2onnx(*args, **kwargs):  # what Keras raises when the onnx extra is not installed
        raise ImportError("No module named 'tf2onnx'")

    monkeypatch.setattr(keras.Model, "export", no_tf2onnx)
    with pytest.raises(ModelError, match=r"model\.onnx: exporting to ONNX needs tf2onnx"):
        export_onnx(heads["softmax"], tmp_path / "model.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ModelError, match="onnxruntime is not installed"):
        OnnxPredictor(tmp_path / "missing.onnx")

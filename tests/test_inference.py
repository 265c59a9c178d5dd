"""Sliding-window inference: tiling, blending, TTA, slice mode, labels, NIfTI output."""

import math
import tracemalloc

import keras
import nibabel as nib
import numpy as np
import pytest

from brain_tf.errors import ConfigError, DataError, ModelError
from brain_tf.inference import (
    BRATS_NESTED_VALUES,
    flip_sets,
    gaussian_profile,
    labels_from_sigmoid,
    labels_from_softmax,
    predict_volume,
    sliding_window_predict,
    tile_grid,
    tile_starts,
    to_label_map,
    write_prediction,
)
from brain_tf.io import Volume, load_volume, save_volume


def identity(batch):
    return batch


# ---------------------------------------------------------------- tiling


def test_tile_starts_hand_values():
    assert tile_starts(10, 4, 0.5) == [0, 2, 4, 6]
    assert tile_starts(10, 4, 0.0) == [0, 3, 6]  # 3 tiles needed, spread evenly
    assert tile_starts(8, 8, 0.5) == [0]
    assert tile_starts(3, 8, 0.5) == [-2]  # one tile centred on a short axis
    assert tile_starts(240, 160, 0.25) == [0, 80]
    starts = tile_starts(155, 16, 0.5)
    assert len(starts) == 19 and starts[0] == 0 and starts[-1] == 155 - 16
    assert max(np.diff(starts)) <= 8  # at least half of each tile is shared
    assert len(tile_grid((240, 240, 155), (160, 160, 16), 0.5)) == 2 * 2 * 19


@pytest.mark.parametrize("overlap", [-0.1, 1.0, 1.5])
def test_overlap_out_of_range(overlap):
    with pytest.raises(ConfigError, match="overlap"):
        tile_starts(10, 4, overlap)


def test_gaussian_profile():
    g = gaussian_profile(4, 0.125)  # centre 1.5, sigma 0.5
    np.testing.assert_allclose(g, np.exp([-4.5, -0.5, -0.5, -4.5]) / math.exp(-0.5))
    assert gaussian_profile(1)[0] == 1.0


def test_flip_sets():
    assert flip_sets(False, (0, 1, 2)) == [()]
    assert len(flip_sets(True, (0, 1, 2))) == 8
    assert flip_sets(True, (0, 2)) == [(), (0,), (2,), (0, 2)]
    assert flip_sets([(1,), 2, (2, 1)], (0, 1, 2)) == [(), (1,), (2,), (1, 2)]
    with pytest.raises(ConfigError, match="spatial axes"):
        flip_sets([(3,)], (0, 1, 2))


# ---------------------------------------------------------------- stitching


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.75])
def test_identity_model_reproduces_volume(mode, overlap):
    volume = np.random.default_rng(1).normal(size=(19, 13, 7, 2)).astype(np.float32)
    for patch in [(8, 8, 4), (24, 5, 7)]:  # not dividing the volume; larger than an axis
        out = sliding_window_predict(identity, volume, patch, overlap, mode, batch_size=3)
        assert out.dtype == np.float32 and out.shape == volume.shape
        np.testing.assert_allclose(out, volume, rtol=1e-6, atol=1e-6)


def test_blend_weights_hand_computed():
    volume = np.zeros((6, 1, 1, 1), np.float32)
    calls = []

    def tile_index(batch):  # first tile predicts 0 everywhere, the second 1
        calls.append(len(calls))
        return np.full(batch.shape, float(calls[-1]), np.float32)

    constant = sliding_window_predict(tile_index, volume, (4, 1, 1), 0.5, "constant", batch_size=1)
    np.testing.assert_allclose(constant[:, 0, 0, 0], [0, 0, 0.5, 0.5, 1, 1])
    calls.clear()
    gauss = sliding_window_predict(tile_index, volume, (4, 1, 1), 0.5, "gaussian", batch_size=1)
    # voxel 2: tile 0 at its offset 2 (weight e^-0.5), tile 1 at offset 0 (e^-4.5)
    expected = [0, 0, 1 / (1 + math.e**4), 1 / (1 + math.e**-4), 1, 1]
    np.testing.assert_allclose(gauss[:, 0, 0, 0], expected, rtol=1e-6, atol=1e-7)


def test_float16_output_and_3d_input():
    volume = np.random.default_rng(2).uniform(size=(17, 11, 9)).astype(np.float32)
    out = sliding_window_predict(identity, volume, 8, 0.5, output_dtype="float16", tta=True)
    assert out.shape == (17, 11, 9, 1) and out.dtype == np.float16
    np.testing.assert_allclose(out[..., 0], volume, atol=2e-3)
    with pytest.raises(ConfigError, match="output_dtype"):
        sliding_window_predict(identity, volume, 8, output_dtype="int8")


def test_keras_pointwise_model_matches_whole_volume_prediction():
    model = keras.Sequential([keras.Input((None, None, None, 2)),
                              keras.layers.Conv3D(3, 1, activation="sigmoid", name="head")])
    volume = np.random.default_rng(3).normal(size=(19, 13, 7, 2)).astype(np.float32)
    out = sliding_window_predict(model, volume, (8, 8, 4), 0.5, batch_size=4)
    whole = model.predict_on_batch(volume[None])[0]
    assert out.shape == (19, 13, 7, 3)
    np.testing.assert_allclose(out, whole, rtol=1e-5, atol=1e-6)


def test_flip_tta_of_flip_equivariant_model_equals_plain():
    conv = keras.layers.Conv3D(2, 3, padding="same", name="box")
    model = keras.Sequential([keras.Input((None, None, None, 1)), conv])
    kernel = np.full((3, 3, 3, 1, 2), 1 / 27, np.float32) * np.array([1.0, -2.0], np.float32)
    conv.set_weights([kernel, np.array([0.1, 0.3], np.float32)])  # symmetric kernel
    volume = np.random.default_rng(4).normal(size=(14, 12, 10, 1)).astype(np.float32)
    plain = sliding_window_predict(model, volume, (8, 8, 6), 0.5, batch_size=4)
    tta = sliding_window_predict(model, volume, (8, 8, 6), 0.5, tta=True, batch_size=4)
    np.testing.assert_allclose(tta, plain, rtol=1e-5, atol=1e-5)
    assert np.abs(plain).max() > 0.1


def test_tta_flips_predictions_back():
    def ramp(batch):  # ignores its input: 0, 1, 2, 3 along the first tile axis
        out = np.zeros(batch.shape[:4] + (1,), np.float32)
        out[:] = np.arange(batch.shape[1], dtype=np.float32)[:, None, None, None]
        return out

    volume = np.zeros((4, 3, 2, 1), np.float32)
    plain = sliding_window_predict(ramp, volume, (4, 3, 2), mode="constant")
    np.testing.assert_array_equal(plain[:, 0, 0, 0], [0, 1, 2, 3])
    flipped_x = sliding_window_predict(ramp, volume, (4, 3, 2), mode="constant", tta=[(0,)])
    np.testing.assert_allclose(flipped_x, 1.5)  # mean of the ramp and its mirror
    flipped_y = sliding_window_predict(ramp, volume, (4, 3, 2), mode="constant", tta=[(1,)])
    np.testing.assert_allclose(flipped_y, plain)  # the ramp does not vary along y
    np.testing.assert_allclose(
        sliding_window_predict(identity, volume + np.arange(4.0)[:, None, None, None],
                               (3, 2, 2), 0.5, tta=True),
        volume + np.arange(4.0)[:, None, None, None], rtol=1e-6)


# ---------------------------------------------------------------- 2D models


def _conv2d_model(kernel_size, seed):
    conv = keras.layers.Conv2D(3, kernel_size, padding="same", name="conv")
    model = keras.Sequential([keras.Input((None, None, 2)), conv])
    rng = np.random.default_rng(seed)
    conv.set_weights([rng.normal(size=(kernel_size, kernel_size, 2, 3)).astype(np.float32),
                      rng.normal(size=3).astype(np.float32)])
    return model


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slice_by_slice_matches_per_slice_prediction(axis):
    model = _conv2d_model(3, seed=axis)
    volume = np.random.default_rng(5).normal(size=(6, 5, 4, 2)).astype(np.float32)
    out = sliding_window_predict(model, volume, None, slice_axis=axis, batch_size=3)
    slices = np.moveaxis(volume, axis, 0)
    expected = np.moveaxis(model.predict_on_batch(slices), 0, axis)
    assert out.shape == (6, 5, 4, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_slices_tiled_in_plane_with_tta():
    volume = np.random.default_rng(6).normal(size=(9, 7, 5, 2)).astype(np.float32)
    out = sliding_window_predict(identity, volume, (4, 4), 0.5, slice_axis=1, tta=True)
    np.testing.assert_allclose(out, volume, rtol=1e-6, atol=1e-6)
    seen = []

    def record(batch):
        seen.append(batch.shape)
        return batch

    sliding_window_predict(record, volume, (4, 1, 4), 0.5, slice_axis=1, batch_size=100)
    assert all(len(s) == 4 for s in seen)  # the 2D model gets (n, h, w, c)
    assert seen[0][1:] == (4, 4, 2)


# ---------------------------------------------------------------- memory, progress, errors


def test_extra_memory_bounded_by_output():
    volume = np.random.default_rng(7).normal(size=(48, 48, 40, 2)).astype(np.float32)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = sliding_window_predict(identity, volume, 16, 0.5, tta=True, batch_size=2)
        extra = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    # the output itself (same size as the input here) plus a few tiles
    assert extra < volume.nbytes + 12 * 16**3 * 2 * 4
    np.testing.assert_allclose(out, volume, rtol=1e-6, atol=1e-6)


def test_progress_bar(capsys):
    sliding_window_predict(identity, np.zeros((8, 8, 8, 1)), 4, 0.0, progress=True, batch_size=8)
    assert "8/8" in capsys.readouterr().out


def test_user_errors():
    volume = np.zeros((8, 8, 8, 1), np.float32)
    with pytest.raises(DataError, match="channels"):
        sliding_window_predict(identity, np.zeros((8, 8)), 4)
    with pytest.raises(ConfigError, match="patch_size"):
        sliding_window_predict(identity, volume, (4, 4))
    with pytest.raises(ConfigError, match="one slice thick"):
        sliding_window_predict(identity, volume, (4, 4, 4), slice_axis=2)
    with pytest.raises(ConfigError, match="mode"):
        sliding_window_predict(identity, volume, 4, mode="linear")
    with pytest.raises(ModelError, match="spatial size"):
        sliding_window_predict(lambda b: b[:, ::2], volume, 4)
    with pytest.raises(ModelError, match="output="):
        sliding_window_predict(lambda b: {"a": b, "b": b}, volume, 4)
    out = sliding_window_predict(lambda b: {"a": b, "b": 2 * b}, volume + 1, 4, output="b")
    np.testing.assert_allclose(out, 2.0)


# ---------------------------------------------------------------- label maps


def test_softmax_labels_map_to_dataset_values():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.2, 0.5, 0.3]], np.float32)
    np.testing.assert_array_equal(labels_from_softmax(p), [0, 2, 1])
    labels = labels_from_softmax(p, label_values=(0, 1, 4))
    np.testing.assert_array_equal(labels, [0, 4, 1])
    assert labels.dtype == np.uint8
    with pytest.raises(ConfigError, match="one value per output"):
        labels_from_softmax(p, label_values=(0, 1))


def test_sigmoid_argmax_merge():
    # channels: edema, non-enhancing, enhancing (exclusive classes, background dropped)
    p = np.array([[0.9, 0.6, 0.2],    # both first two above 0.5 -> the most probable
                  [0.3, 0.2, 0.4],    # none above threshold -> background
                  [0.6, 0.1, 0.8],    # enhancing wins
                  [0.45, 0.1, 0.3]], np.float32)
    np.testing.assert_array_equal(labels_from_sigmoid(p, merge="argmax"), [1, 0, 3, 0])
    per_channel = labels_from_sigmoid(p, threshold=(0.4, 0.5, 0.9), merge="argmax")
    np.testing.assert_array_equal(per_channel, [1, 0, 1, 1])


def test_sigmoid_nested_merge_brats_values():
    assert BRATS_NESTED_VALUES == (2, 1, 4)
    # channels: whole tumour, tumour core, enhancing tumour
    p = np.array([[0.9, 0.2, 0.1],    # whole tumour only -> edema (2)
                  [0.9, 0.8, 0.1],    # core -> 1
                  [0.9, 0.8, 0.7],    # enhancing -> 4
                  [0.2, 0.1, 0.9],    # innermost wins even alone -> 4
                  [0.1, 0.1, 0.1]], np.float32)
    np.testing.assert_array_equal(labels_from_sigmoid(p, merge="nested"), [2, 1, 4, 4, 0])
    np.testing.assert_array_equal(
        to_label_map(p, "sigmoid", label_values=(1, 2, 3), merge="nested"), [1, 2, 3, 3, 0])
    with pytest.raises(ConfigError, match="merge"):
        labels_from_sigmoid(p, merge="union")
    with pytest.raises(ConfigError, match="activation"):
        to_label_map(p, "relu")


# ---------------------------------------------------------------- NIfTI output


def _softmax_of_input(batch):
    e = np.exp(10 * (batch - batch.max(axis=-1, keepdims=True)))
    return e / e.sum(axis=-1, keepdims=True)


def test_predicted_nifti_keeps_affine_shape_and_labels(tmp_path):
    rng = np.random.default_rng(8)
    array = rng.normal(size=(13, 10, 7, 3)).astype(np.float32)
    affine = np.array([[1.5, 0, 0, -20], [0, 2.0, 0, 10], [0, 0, 2.5, 4], [0, 0, 0, 1]])
    save_volume(array, tmp_path / "scan.nii.gz", affine=affine)
    volume = load_volume(tmp_path / "scan.nii.gz")
    labels_path, prob_path = tmp_path / "out" / "labels.nii.gz", tmp_path / "out" / "prob.nii.gz"
    pred = predict_volume(_softmax_of_input, volume, (8, 8, 4), label_values=(0, 1, 4),
                          labels_path=labels_path, probabilities_path=prob_path)
    expected = np.array([0, 1, 4])[np.argmax(array, axis=-1)]
    np.testing.assert_array_equal(pred.labels, expected)

    labels_img, prob_img = nib.load(labels_path), nib.load(prob_path)
    np.testing.assert_allclose(labels_img.affine, affine)
    np.testing.assert_allclose(prob_img.affine, affine)
    assert labels_img.shape == (13, 10, 7) and prob_img.shape == (13, 10, 7, 3)
    assert np.issubdtype(labels_img.get_data_dtype(), np.integer)
    assert prob_img.get_data_dtype() == np.float32
    np.testing.assert_array_equal(np.asarray(labels_img.dataobj), expected)
    assert set(np.unique(np.asarray(labels_img.dataobj))) == {0, 1, 4}
    np.testing.assert_allclose(prob_img.get_fdata(), pred.probabilities, atol=1e-6)


def test_sigmoid_nested_prediction_written_with_brats_values(tmp_path):
    array = np.zeros((6, 6, 4, 3), np.float32)
    array[1:5, 1:5] = [1, 0, 0]
    array[2:4, 2:4] = [1, 1, 0]
    array[2, 2] = [1, 1, 1]
    volume = Volume(array, np.diag([1.0, 1.0, 2.0, 1.0]), path="tumour.nii.gz")
    pred = predict_volume(identity, volume, 4, activation="sigmoid", merge="nested",
                          labels_path=tmp_path / "seg.nii.gz")
    written = np.asarray(nib.load(tmp_path / "seg.nii.gz").dataobj)
    assert written.shape == (6, 6, 4)
    assert set(np.unique(written)) == {0, 1, 2, 4}
    assert written[2, 2, 0] == 4 and written[3, 3, 0] == 1 and written[1, 1, 0] == 2
    np.testing.assert_array_equal(written, pred.labels)


def test_write_prediction_errors(tmp_path):
    volume = Volume(np.zeros((4, 4, 4, 1), np.float32), np.eye(4), path="scan.nii")
    with pytest.raises(DataError, match="does not fit"):
        write_prediction(volume, tmp_path / "l.nii.gz", labels=np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(DataError, match="Volume"):
        predict_volume(identity, volume.array, 4, labels_path=tmp_path / "l.nii.gz")

"""Grad-CAM heat maps, PNG overlays and Monte Carlo dropout uncertainty."""

import keras
import matplotlib.image
import numpy as np
import pytest

from brain_tf.errors import DataError, ModelError
from brain_tf.inference import (
    find_last_conv_layer,
    grad_cam,
    mc_dropout_predict,
    save_cam_overlay,
)
from brain_tf.models.layers import MCDropout


class FixedMask(keras.layers.Layer):
    """Multiplies its input by constant masks, one output channel per mask."""

    def __init__(self, masks, **kwargs):
        super().__init__(**kwargs)
        self.masks = np.asarray(masks, np.float32)  # (n_masks, spatial...)

    def call(self, x):
        masks = keras.ops.convert_to_tensor(np.moveaxis(self.masks, 0, -1))
        return x * masks


def _set_identity(layer):
    kernel, bias = layer.get_weights()
    eye = np.eye(kernel.shape[-2], kernel.shape[-1], dtype=np.float32)
    layer.set_weights([eye.reshape(kernel.shape), np.zeros_like(bias)])


def _region_model_2d(masks):
    """Class c looks at the image only through mask c (1x1 conv, mean pool, linear head)."""
    n = len(masks)
    inputs = keras.Input((16, 16, 1))
    x = FixedMask(masks, name="look")(inputs)
    conv = keras.layers.Conv2D(n, 1, name="conv")
    dense = keras.layers.Dense(n, name="head")
    outputs = dense(keras.layers.GlobalAveragePooling2D(name="pool")(conv(x)))
    model = keras.Model(inputs, outputs)
    _set_identity(conv)
    _set_identity(dense)
    return model


def test_grad_cam_highlights_the_region_the_model_looks_at():
    left = np.zeros((16, 16), np.float32)
    left[2:8, 3:9] = 1
    right = np.zeros((16, 16), np.float32)
    right[9:14, 10:15] = 1
    model = _region_model_2d([left, right])
    image = np.random.default_rng(0).uniform(0.5, 1.0, size=(16, 16, 1)).astype(np.float32)
    assert find_last_conv_layer(model) == "conv"

    # score_c = mean(A_c): its gradient is uniform, so CAM_c = ReLU(A_c) / max = masked image
    cam0 = grad_cam(model, image, class_index=0)
    assert cam0.shape == (16, 16) and cam0.dtype == np.float32
    expected = image[..., 0] * left
    np.testing.assert_allclose(cam0, expected / expected.max(), rtol=1e-5, atol=1e-6)
    cam1 = grad_cam(model, image[None], layer_name="conv", class_index=[1])
    assert cam1.shape == (1, 16, 16)
    expected = image[..., 0] * right
    np.testing.assert_allclose(cam1[0], expected / expected.max(), rtol=1e-5, atol=1e-6)

    # default class = the most probable one: make the right region brighter
    brighter = image.copy()
    brighter[9:14, 10:15] += 5
    np.testing.assert_array_equal(grad_cam(model, brighter) > 0, right > 0)


def test_grad_cam_3d_regressor_upsampled_to_input_grid():
    inputs = keras.Input((8, 8, 8, 1))
    mask = np.zeros((8, 8, 8), np.float32)
    mask[:4, :4, :4] = 1  # the model only sees one octant
    x = FixedMask([mask], name="look")(inputs)
    conv = keras.layers.Conv3D(1, 2, strides=2, use_bias=False, name="enc_conv")
    x = keras.layers.GlobalAveragePooling3D(name="pool")(conv(x))
    model = keras.Model(inputs, keras.layers.Dense(1, name="age")(x))
    conv.set_weights([np.ones((2, 2, 2, 1, 1), np.float32)])
    model.get_layer("age").set_weights([np.array([[3.0]], np.float32), np.array([40.0])])

    cam = grad_cam(model, np.ones((8, 8, 8, 1), np.float32))
    assert cam.shape == (8, 8, 8)
    assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    np.testing.assert_allclose(cam[:3, :3, :3], 1.0)  # inside the octant
    np.testing.assert_allclose(cam[5:, :, :], 0.0)  # far from it
    np.testing.assert_allclose(cam[:, 5:, :], 0.0)
    # at the boundary the 4^3 map is interpolated linearly between cell centres
    np.testing.assert_allclose(cam[3, 0, 0], 0.75)
    np.testing.assert_allclose(cam[4, 0, 0], 0.25)


def test_grad_cam_layer_errors():
    backbone = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="inner")],
                                name="backbone")
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.GlobalAveragePooling2D()(backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    with pytest.raises(ModelError, match="nested model 'backbone'"):
        grad_cam(model, np.ones((8, 8, 1)), layer_name="inner")
    with pytest.raises(ModelError, match="not found"):
        grad_cam(model, np.ones((8, 8, 1)), layer_name="conv5_block3_out")
    with pytest.raises(ModelError, match="no Conv2D/Conv3D"):
        grad_cam(model, np.ones((8, 8, 1)))
    with pytest.raises(ModelError, match="spatial grid"):
        grad_cam(model, np.ones((8, 8, 1)), layer_name="out")


def test_save_cam_overlay_png(tmp_path):
    rng = np.random.default_rng(1)
    path2d = save_cam_overlay(rng.uniform(size=(16, 12, 3)), rng.uniform(size=(16, 12)),
                              tmp_path / "slice.png", title="class 1")
    path3d = save_cam_overlay(rng.normal(size=(10, 12, 8, 2)), rng.uniform(size=(10, 12, 8)),
                              tmp_path / "deep" / "volume.png")
    small, wide = matplotlib.image.imread(path2d), matplotlib.image.imread(path3d)
    assert small.ndim == 3 and wide.ndim == 3
    assert wide.shape[1] > 2.5 * wide.shape[0]  # three panels side by side
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "slice.png", "volume.png"]
    with pytest.raises(DataError, match="png"):
        save_cam_overlay(np.zeros((4, 4)), np.zeros((4, 4)), tmp_path / "x.jpg")
    with pytest.raises(DataError, match="grid"):
        save_cam_overlay(np.zeros((4, 5)), np.zeros((4, 4)), tmp_path / "x.png")


# ---------------------------------------------------------------- MC dropout


def _classifier(rate, heads=None):
    inputs = keras.Input((6,))
    x = keras.layers.Dense(32, activation="relu", name="hidden")(inputs)
    x = MCDropout(rate, name="mc_dropout")(x)
    if heads is None:
        return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="head")(x))
    outputs = {name: keras.layers.Dense(k, activation="softmax", name=name)(x)
               for name, k in heads.items()}
    return keras.Model(inputs, outputs)


def test_mc_dropout_rate_zero_has_zero_variance():
    model = _classifier(0.0)
    x = np.random.default_rng(2).normal(size=(5, 6)).astype(np.float32)
    plain = model.predict_on_batch(x)
    for batch_size in (32, 2):  # several passes per call, and chunks of one pass
        result = mc_dropout_predict(model, x, passes=7, batch_size=batch_size)
        assert set(result) == {"mean", "std", "entropy", "mutual_information"}
        np.testing.assert_array_equal(result["std"], 0.0)
        np.testing.assert_allclose(result["mean"], plain, rtol=1e-5, atol=1e-7)
        entropy = -(plain * np.log(plain)).sum(axis=-1)
        np.testing.assert_allclose(result["entropy"], entropy, rtol=1e-5)
        np.testing.assert_allclose(result["mutual_information"], 0.0, atol=1e-6)


def test_mc_dropout_rate_positive_varies():
    model = _classifier(0.5)
    x = np.random.default_rng(3).normal(size=(4, 6)).astype(np.float32)
    result = mc_dropout_predict(model, x, passes=30, batch_size=16, keep_samples=True)
    samples = result["samples"]
    assert samples.shape == (30, 4, 3)
    assert (result["std"] > 1e-3).all(axis=-1).any()
    np.testing.assert_allclose(result["mean"], samples.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result["std"], samples.std(axis=0), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(result["mean"].sum(axis=-1), 1.0, rtol=1e-5)
    assert (result["mutual_information"] > 0).all()
    assert (result["mutual_information"] <= result["entropy"] + 1e-6).all()
    chunked = mc_dropout_predict(model, x, passes=5, batch_size=3)
    assert (chunked["std"] > 0).any()


def test_seeded_mc_dropout_is_the_same_every_time_and_after_export(tmp_path):
    """Seeded passes repeat exactly, for the model in memory, the model reloaded from its
    file in a fresh state and its exported SavedModel; another seed gives other passes."""
    from brain_tf.inference.batches import predict_in_batches
    from brain_tf.inference.mc_dropout import seed_random_layers
    from brain_tf.training.run import SavedModelPredictor, load_keras_model

    model = _classifier(0.5, heads={"perspective": 3, "sequence": 4})
    x = np.random.default_rng(5).normal(size=(5, 6)).astype(np.float32)
    first = mc_dropout_predict(model, x, passes=6, batch_size=4, seed=7)
    model.predict_on_batch(x)  # the random state moves on with every call
    again = mc_dropout_predict(model, x, passes=6, batch_size=4, seed=7)
    other = mc_dropout_predict(model, x, passes=6, batch_size=4, seed=8)
    for head in ("perspective", "sequence"):
        np.testing.assert_array_equal(again[head]["mean"], first[head]["mean"])
        np.testing.assert_array_equal(again[head]["std"], first[head]["std"])
        assert not np.allclose(other[head]["mean"], first[head]["mean"])
    model.save(tmp_path / "m.keras")
    model.export(tmp_path / "saved", verbose=False)
    loaded = load_keras_model(tmp_path / "m.keras")
    exported = SavedModelPredictor(tmp_path / "saved")
    assert seed_random_layers(model, 0) == seed_random_layers(exported, 0) == 1
    mean, std = predict_in_batches(model, lambda idx: x[list(idx)], 5, 2, passes=4, seed=3)
    for predictor in (model, loaded, exported):
        mc_dropout_predict(predictor, x, passes=3)  # unseeded: the state moves on
        m, s = predict_in_batches(predictor, lambda idx: x[list(idx)], 5, 2, passes=4, seed=3)
        for head in mean:
            np.testing.assert_allclose(m[head], mean[head], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(s[head], std[head], rtol=1e-5, atol=1e-6)


def test_mc_dropout_regressor_keeps_batchnorm_in_inference_mode():
    inputs = keras.Input((3,))
    bn = keras.layers.BatchNormalization(name="bn")
    x = MCDropout(0.0, name="mc_dropout")(bn(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, name="age")(x))
    bn.set_weights([np.ones(3), np.zeros(3), np.array([1.0, 2.0, 3.0]), np.array([4.0, 4, 4])])
    model.get_layer("age").set_weights([np.ones((3, 1)), np.array([50.0])])
    x = np.array([[3.0, 4.0, 5.0], [1.0, 2.0, 3.0]], np.float32)
    result = mc_dropout_predict(model, x, passes=4)
    assert set(result) == {"mean", "std"}
    # moving statistics: each feature (x - mean) / sqrt(4 + 1e-3), summed, + 50
    expected = 50 + (x - [1.0, 2.0, 3.0]).sum(axis=1, keepdims=True) / np.sqrt(4.001)
    np.testing.assert_allclose(result["mean"], expected, rtol=1e-5)
    np.testing.assert_array_equal(result["std"], 0.0)


def test_mc_dropout_multi_head_dict_outputs():
    model = _classifier(0.3, heads={"perspective": 3, "sequence": 4})
    x = np.random.default_rng(4).normal(size=(2, 6)).astype(np.float32)
    result = mc_dropout_predict(model, x, passes=6,
                                kind={"perspective": "classifier", "sequence": "auto"})
    assert set(result) == {"perspective", "sequence"}
    assert result["perspective"]["mean"].shape == (2, 3)
    assert result["sequence"]["std"].shape == (2, 4)
    assert result["sequence"]["entropy"].shape == (2,)
    assert (result["sequence"]["entropy"] <= np.log(4) + 1e-6).all()

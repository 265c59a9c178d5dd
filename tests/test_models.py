"""Model builders: architecture (shapes, names, parameter counts), heads, errors, training."""

import keras
import numpy as np
import pytest

from brain_tf.errors import ConfigError, ModelError
from brain_tf.losses import DiceCELoss, SoftDiceLoss
from brain_tf.models import BUILDERS, MCDropout, build_model, freeze_up_to, last_conv_layer_name
from brain_tf.models.layers import GroupedConv3D
from brain_tf.models import resnet_encoder


def _conv(kernel_volume, cin, cout, bias=True):
    return kernel_volume * cin * cout + (cout if bias else 0)


def _predict(model, x):
    """Eager forward pass in inference mode (``predict`` would trace a graph)."""
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(x, training=False))


def _train_steps(model, x, y, loss):
    """Two optimizer steps (batch size len(x) / 2), eagerly: no graph tracing, which
    costs far more than the steps themselves for these tiny inputs."""
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, run_eagerly=True)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=max(len(x) // 2, 1), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(not np.array_equal(b, a) for b, a in zip(before, model.get_weights()))


def test_registry_names_and_errors():
    assert set(BUILDERS) >= {"unet3d", "resunet3d", "resnext3d", "resnext3d_50", "cnn3d",
                             "resnet_classifier", "unet2d_resnet"}
    with pytest.raises(ConfigError, match="unknown model 'unet4d'"):
        build_model("unet4d")
    with pytest.raises(ConfigError, match="no option base_filter"):
        build_model("unet3d", base_filter=8)
    with pytest.raises(ConfigError, match="no option bogus"):
        build_model("resnext3d_50", bogus=1)
    with pytest.raises(ConfigError, match="input size 20 on spatial axis 0.*depth=4"):
        build_model("unet3d", input_shape=(20, 16, 16, 1), depth=4)
    with pytest.raises(ConfigError, match="unknown normalisation"):
        build_model("unet3d", input_shape=(16, 16, 16, 1), norm="layer")
    with pytest.raises(ConfigError, match="softmax head needs"):
        build_model("unet3d", input_shape=(16, 16, 16, 1), num_outputs=1,
                    output_activation="softmax")


def test_remaining_builders_build_with_defaults():
    # unet3d, resunet3d, resnext3d_50 and cnn3d defaults are checked in their own tests
    expected = {"resnext3d": ((None, 64, 64, 64, 1), (None, 1), "linear"),
                "resnet_classifier": ((None, 224, 224, 3), (None, 3), "softmax"),
                "unet2d_resnet": ((None, 256, 256, 3), (None, 256, 256, 2), "softmax")}
    for name, (input_shape, output_shape, activation) in expected.items():
        model = build_model(name)
        assert model.input_shape == input_shape and model.output_shape == output_shape, name
        assert model.get_layer("head").activation.__name__ == activation, name


def test_unet3d_default_is_system_c():
    model = build_model("unet3d")
    assert model.input_shape == (None, 160, 160, 16, 4)
    assert model.output_shape == (None, 160, 160, 16, 3)
    assert model.get_layer("head").activation is keras.activations.sigmoid
    filters = {name: model.get_layer(name).filters for name in
               ("enc1_conv1", "enc1_conv2", "enc3_conv2", "bottleneck_conv2", "dec3_conv1",
                "dec2_conv2", "dec1_conv2")}
    assert filters == {"enc1_conv1": 32, "enc1_conv2": 64, "enc3_conv2": 256,
                       "bottleneck_conv2": 512, "dec3_conv1": 256, "dec2_conv2": 128,
                       "dec1_conv2": 64}
    enc = (_conv(27, 4, 32) + _conv(27, 32, 64) + _conv(27, 64, 64) + _conv(27, 64, 128)
           + _conv(27, 128, 128) + _conv(27, 128, 256) + _conv(27, 256, 256) + _conv(27, 256, 512))
    dec = (_conv(8, 512, 256) + _conv(27, 512, 256) + _conv(27, 256, 256)
           + _conv(8, 256, 128) + _conv(27, 256, 128) + _conv(27, 128, 128)
           + _conv(8, 128, 64) + _conv(27, 128, 64) + _conv(27, 64, 64) + _conv(1, 64, 3))
    assert model.count_params() == enc + dec


def test_unet3d_small_sigmoid_trains(rng):
    model = build_model("unet3d", input_shape=(16, 16, 16, 2), depth=3, base_filters=4)
    for name in ("enc1_conv1", "enc1_relu2", "enc1_pool", "enc2_pool", "bottleneck_conv2",
                 "dec2_up", "dec2_concat", "dec1_up", "dec1_concat", "dec1_conv2", "head"):
        model.get_layer(name)
    assert model.get_layer("dec1_concat").output.shape[-1] == 8 + 8
    x = rng.normal(size=(2, 16, 16, 16, 2)).astype("float32")
    y = (rng.random((2, 16, 16, 16, 3)) > 0.8).astype("float32")
    out = _predict(model, x)
    assert out.shape == (2, 16, 16, 16, 3) and out.min() >= 0 and out.max() <= 1
    _train_steps(model, x, y, SoftDiceLoss(squared_pred=True))


def test_unet3d_softmax_instance_norm_upsample_any_size(rng):
    model = build_model("unet3d", input_shape=(None, None, None, 1), num_outputs=3, depth=3,
                        base_filters=4, second_conv_factor=1, norm="instance",
                        upsampling="upsample", dropout=0.1, output_activation="softmax")
    assert model.get_layer("enc1_norm1").groups == 4  # one group per channel
    assert isinstance(model.get_layer("dec1_up"), keras.layers.UpSampling3D)
    model.get_layer("dec1_up_conv")
    model.get_layer("enc1_dropout")
    for shape in ((1, 16, 8, 12, 1), (1, 8, 8, 8, 1)):
        out = _predict(model, rng.normal(size=shape).astype("float32"))
        assert out.shape == shape[:-1] + (3,)
        np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


def test_resunet3d_residual_blocks_and_inplane_pooling(rng):
    default = build_model("resunet3d")
    assert default.output_shape == (None, 64, 64, 64, 4)
    assert [default.get_layer(f"{p}_conv2").filters for p in
            ("enc1", "enc2", "enc3", "enc4", "bottleneck")] == [32, 64, 128, 256, 512]
    model = build_model("resunet3d", input_shape=(16, 16, 4, 1), depth=3, base_filters=4,
                        pool_size=(2, 2, 1))
    shortcut = model.get_layer("enc2_shortcut")
    assert shortcut.kernel_size == (1, 1, 1) and not shortcut.use_bias
    assert model.get_layer("enc1_pool").output.shape[1:4] == (8, 8, 4)
    x = rng.normal(size=(2, 16, 16, 4, 1)).astype("float32")
    y = np.eye(4, dtype="float32")[rng.integers(0, 4, size=(2, 16, 16, 4))]
    out = _predict(model, x)
    assert out.shape == (2, 16, 16, 4, 4)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)
    _train_steps(model, x, y, DiceCELoss(class_weights=[0.1, 0.3, 0.3, 0.3]))
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_model("resunet3d", input_shape=(16, 16, 6, 1), depth=3, pool_size=(2, 2, 2))


def test_resnext3d_50_parameter_count():
    model = build_model("resnext3d_50")

    def block(cin, width, first):
        out = 2 * width
        count = (cin * width + 4 * width + 27 * width * width // 32 + 4 * width
                 + width * out + 4 * out)
        return count + (cin * out + 4 * out if first else 0)

    expected, cin = 7 ** 3 * 1 * 64 + 4 * 64, 64
    for width, blocks in zip((128, 256, 512, 1024), (3, 4, 6, 3)):
        for b in range(blocks):
            expected += block(cin, width, b == 0)
            cin = 2 * width
    expected += 2048 + 1
    assert model.count_params() == expected == 25_892_033
    assert model.get_layer("conv2_block1_2_conv").groups == 32
    assert isinstance(model.get_layer("conv2_block1_2_conv"), GroupedConv3D)
    native = build_model("resnext3d_50", split_groups=False)
    assert type(native.get_layer("conv2_block1_2_conv")) is keras.layers.Conv3D
    assert native.count_params() == model.count_params()
    assert model.get_layer("conv1_conv").strides == (2, 2, 1)


def test_grouped_conv3d_matches_keras_grouped_conv(rng):
    x = rng.normal(size=(2, 6, 5, 4, 8)).astype("float32")
    split = GroupedConv3D(12, 3, strides=(2, 1, 1), padding="same", groups=4, name="split")
    native = keras.layers.Conv3D(12, 3, strides=(2, 1, 1), padding="same", groups=4)
    split.build(x.shape)
    native.build(x.shape)
    assert split.kernel.shape == native.kernel.shape == (3, 3, 3, 2, 12)
    native.set_weights(split.get_weights())
    np.testing.assert_allclose(_predict(split, x), _predict(native, x), atol=1e-5)
    # group g sees only input channels 2g, 2g+1: changing channel 0 moves outputs 0..2 only
    bumped = x.copy()
    bumped[..., 0] += 1.0
    changed = np.abs(_predict(split, bumped) - _predict(split, x)).max(axis=(0, 1, 2, 3)) > 0
    assert changed.tolist() == [True] * 3 + [False] * 9


def test_resnext3d_small_regression_trains(rng):
    model = build_model("resnext3d", input_shape=(16, 16, 16, 1), widths=(8, 16), blocks=(1, 2),
                        cardinality=4, stem_filters=8)
    assert model.get_layer("conv3_block1_2_conv").strides == (2, 2, 2)
    assert model.get_layer("pool1_pool").output.shape[1:4] == (4, 4, 4)  # stem /2, pool /2
    assert model.output_shape == (None, 1)
    x = rng.normal(size=(2, 16, 16, 16, 1)).astype("float32")
    _train_steps(model, x, np.array([[30.0], [60.0]], "float32"), "mse")
    classifier = build_model("resnext3d_small", input_shape=(16, 16, 16, 1), num_outputs=2,
                             output_activation="softmax")
    np.testing.assert_allclose(_predict(classifier, x).sum(-1), 1.0, rtol=1e-5)


def test_cnn3d_names_heads_and_mc_dropout(rng):
    default = build_model("cnn3d")
    assert last_conv_layer_name() == "block4_conv"
    assert isinstance(default.get_layer("block4_conv"), keras.layers.Conv3D)
    assert default.get_layer("block4_conv").filters == 128
    assert default.get_layer("block1_norm").groups == 16  # one group per channel
    assert default.get_layer("dropout").rate == pytest.approx(0.3)
    model = build_model("cnn3d", input_shape=(16, 16, 16, 1), num_outputs=2, filters=(4, 8),
                        hidden_units=8, mc_dropout=True, output_activation="softmax")
    assert isinstance(model.get_layer("dropout"), MCDropout)
    assert isinstance(model.get_layer("head_dropout"), MCDropout)
    assert model.get_layer("head_dense").units == 8
    x = rng.normal(size=(3, 16, 16, 16, 1)).astype("float32")
    first, second = _predict(model, x), _predict(model, x)
    np.testing.assert_allclose(first.sum(-1), 1.0, rtol=1e-5)
    assert not np.allclose(first, second)  # dropout stays on at inference
    _train_steps(model, x, np.eye(2, dtype="float32")[[0, 1, 1]], "categorical_crossentropy")
    with pytest.raises(ConfigError, match="too small"):
        build_model("cnn3d", input_shape=(8, 16, 16, 1))
    with pytest.raises(ConfigError, match="mc_dropout needs"):
        build_model("cnn3d", input_shape=(16, 16, 16, 1), dropout=0.0, mc_dropout=True)


def test_resnet_classifier_dual_head_freeze_and_mc_dropout(rng):
    model = build_model("resnet_classifier", input_shape=(64, 64, 3),
                        num_outputs={"perspective": 3, "sequence": 4}, freeze="all",
                        dropout=0.2, mc_dropout=True)
    assert set(model.output) == {"perspective", "sequence"}
    assert model.get_layer("perspective").units == 3 and model.get_layer("sequence").units == 4
    assert not model.get_layer("conv5_block3_out").trainable
    assert not model.get_layer("conv1_conv").trainable
    assert model.get_layer("perspective").trainable
    assert isinstance(model.get_layer("dropout"), MCDropout)
    x = rng.random((2, 64, 64, 3)).astype("float32")
    first, second = _predict(model, x), _predict(model, x)
    assert first["perspective"].shape == (2, 3) and first["sequence"].shape == (2, 4)
    np.testing.assert_allclose(first["sequence"].sum(-1), 1.0, rtol=1e-5)
    assert not np.allclose(first["sequence"], second["sequence"])
    freeze_up_to(model, "conv3_block4_out")
    assert not model.get_layer("conv3_block4_out").trainable
    assert model.get_layer("conv4_block1_1_conv").trainable
    with pytest.raises(ConfigError, match="no layer 'conv9'"):
        freeze_up_to(model, "conv9")


def test_resnet_classifier_weights_offline_and_local_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(ModelError, match="local weights file"):
        build_model("resnet_classifier", input_shape=(64, 64, 3), weights="imagenet")
    with pytest.raises(ModelError, match="does not exist"):
        build_model("resnet_classifier", input_shape=(64, 64, 3), weights=tmp_path / "no.h5")

    backbone = keras.applications.ResNet50(include_top=False, weights=None,
                                           input_shape=(64, 64, 3))
    path = tmp_path / "resnet50_notop.weights.h5"
    backbone.save_weights(path)
    model = build_model("resnet_classifier", input_shape=(64, 64, 3), num_outputs=4,
                        weights=str(path))
    assert model.output_shape == (None, 4)
    for name in ("conv1_conv", "conv4_block6_2_conv", "conv5_block3_3_bn"):
        for loaded, saved in zip(model.get_layer(name).get_weights(),
                                 backbone.get_layer(name).get_weights()):
            np.testing.assert_array_equal(loaded, saved)


def test_unet2d_resnet34_trains_and_freezes(rng, tmp_path):
    model = build_model("unet2d_resnet", input_shape=(64, 64, 3), num_outputs=2,
                        base_filters=4, freeze_encoder=True)
    assert model.output_shape == (None, 64, 64, 2)
    assert not model.get_layer("conv5_block3_out").trainable
    assert model.get_layer("dec5_up").trainable
    assert model.get_layer("dec2_concat").output.shape[1:3] == (32, 32)
    assert [model.get_layer(f"dec{k}_conv1").filters for k in (5, 4, 3, 2, 1)] == [64, 32, 16,
                                                                                   8, 4]
    blocks = [n for n in (layer.name for layer in model.layers) if n.endswith("_out")]
    assert len(blocks) == 3 + 4 + 6 + 3  # ResNet-34 layout
    x = rng.random((2, 64, 64, 3)).astype("float32")
    y = np.eye(2, dtype="float32")[rng.integers(0, 2, size=(2, 64, 64))]
    _train_steps(model, x, y, DiceCELoss())  # a frozen-encoder epoch, as in system D
    freeze_up_to(model, None)
    assert model.get_layer("conv1_conv").trainable
    # a ResNet-34 encoder weights file loads by structure
    encoder = resnet_encoder.resnet34_backbone(keras.Input((64, 64, 3)))
    path = tmp_path / "resnet34.weights.h5"
    encoder.save_weights(path)
    loaded = build_model("unet2d_resnet", input_shape=(64, 64, 3), base_filters=4, weights=path)
    np.testing.assert_array_equal(loaded.get_layer("conv4_block2_1_conv").get_weights()[0],
                                  encoder.get_layer("conv4_block2_1_conv").get_weights()[0])
    with pytest.raises(ModelError, match="no ImageNet ResNet-34"):
        build_model("unet2d_resnet", input_shape=(64, 64, 3), weights="imagenet")
    with pytest.raises(ConfigError, match="divisible by 32"):
        build_model("unet2d_resnet", input_shape=(48, 64, 3))


def test_unet2d_resnet50_backbone_depth4(rng):
    model = build_model("unet2d_resnet", input_shape=(32, 32, 3), num_outputs=1,
                        backbone="resnet50", depth=4, base_filters=4,
                        output_activation="sigmoid")
    assert model.output_shape == (None, 32, 32, 1)
    assert model.get_layer("dec4_concat").output.shape[1:] == (4, 4, 32 + 512)
    with pytest.raises(ValueError):
        model.get_layer("conv5_block3_out")  # depth 4 stops at the 1/16 stage
    out = _predict(model, rng.random((1, 32, 32, 3)).astype("float32"))
    assert out.min() >= 0 and out.max() <= 1

"""Augmentation: deterministic transforms checked by hand, image and label moved together."""

import numpy as np
import pytest
import tensorflow as tf

from brain_tf.errors import ConfigError
from brain_tf.pipeline import PRESETS, Augment2D, Augment3D, augment_config
from brain_tf.pipeline import augment2d as a2
from brain_tf.pipeline import intensity as it
from brain_tf.pipeline import spatial3d as sp


def coordinate_volume(shape):
    """Channels = the voxel's own (x, y, z) index: a warp's output shows where it read."""
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape],
                                indexing="ij"), axis=-1)
    label = ((grid[..., 0] + 2 * grid[..., 1] + 3 * grid[..., 2]) % 7).astype(np.uint8)
    return grid, label


def test_flip3d_is_exact():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(4, 5, 6, 2)).astype(np.float32)
    out = sp.flip3d(tf.constant(volume), [True, False, True]).numpy()
    np.testing.assert_array_equal(out, volume[::-1, :, ::-1])


def test_rotation_by_90_degrees_matches_index_arithmetic():
    image, label = coordinate_volume((6, 6, 4))
    matrix = sp.affine_matrix([0.0, 0.0, np.pi / 2], [1.0, 1.0, 1.0], [False] * 3, (1, 1, 1))
    out, lab = sp.warp3d(tf.constant(image), matrix, [2.5, 2.5, 1.5], (6, 6, 4),
                         tf.constant(label))
    i, j, k = np.meshgrid(np.arange(6), np.arange(6), np.arange(4), indexing="ij")
    # a +90 degree rotation about z reads source (5 - j, i, k) for output (i, j, k)
    np.testing.assert_allclose(out.numpy(), image[5 - j, i, k], atol=1e-5)
    np.testing.assert_array_equal(lab.numpy(), label[5 - j, i, k])


def test_warp_moves_image_and_label_identically():
    shape = (28, 26, 18)
    image, label = coordinate_volume(shape)
    aug = Augment3D({"rotation_deg": [10, 8, 15], "scale": [0.85, 1.15],
                     "translation_mm": [2, 2, 1], "elastic_mm": 2.0, "elastic_points": 5,
                     "flip_axes": [0, 1, 2]}, spacing=(1.0, 1.0, 1.5))
    out_shape = (10, 8, 6)
    centre = tf.constant([13.0, 12.5, 8.5])  # a patch well inside the volume
    for seed in range(5):
        params = aug.sample(tf.constant([seed, 9], tf.int64))
        assert bool(params["affine"]) and bool(params["elastic"])
        out, lab = aug.apply(params, tf.constant(image), tf.constant(label), out_shape, centre)
        where = out.numpy()  # trilinear reproduces the coordinates it read from
        assert where.min() > 0 and (where.max(axis=(0, 1, 2)) < np.array(shape) - 1).all()
        assert np.abs(where.mean(axis=(0, 1, 2)) - centre.numpy()).max() < 2.5
        nearest = np.floor(where + 0.5).astype(int)
        expected = label[nearest[..., 0], nearest[..., 1], nearest[..., 2]]
        # rounding can differ only where a coordinate is within float error of .5
        assert (lab.numpy() == expected).mean() > 0.999


def test_outside_the_source_reads_zero():
    image, label = coordinate_volume((6, 6, 6))
    image += 1.0
    matrix = np.eye(3, dtype=np.float32)
    out, lab = sp.warp3d(tf.constant(image), matrix, [4.0, 2.5, 2.5], (6, 6, 6),
                         tf.constant(label + 1))
    out, lab = out.numpy(), lab.numpy()
    # output x index i reads source x = i - 2.5 + 4 = i + 1.5: i = 4 reads 5.5, outside
    np.testing.assert_array_equal(out[4:], 0)
    np.testing.assert_array_equal(lab[4:], 0)
    np.testing.assert_allclose(out[:3, :, :, 0], image[1:4, :, :, 0] + 0.5, atol=1e-5)
    assert (lab[:4] > 0).all()


def test_identity_warp_is_exact_and_flip_only_configs_do_not_warp():
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(8, 8, 6, 2)).astype(np.float32)
    label = rng.integers(0, 3, (8, 8, 6)).astype(np.uint8)
    out, lab = sp.warp3d(tf.constant(volume), np.eye(3, dtype=np.float32), [3.5, 3.5, 2.5],
                         (8, 8, 6), tf.constant(label))
    np.testing.assert_array_equal(out.numpy(), volume)
    np.testing.assert_array_equal(lab.numpy(), label)
    aug = Augment3D({"flip_axes": [0, 2], "flip_p": 1.0})
    assert not aug.warps
    out, lab = aug(tf.constant(volume), tf.constant(label), seed=(0, 0))
    np.testing.assert_array_equal(out.numpy(), volume[::-1, :, ::-1])
    np.testing.assert_array_equal(lab.numpy(), label[::-1, :, ::-1])
    assert Augment3D("none").is_identity and not Augment3D("brats").is_identity
    with pytest.raises(ConfigError):
        aug.apply(aug.sample([0, 0]), tf.constant(volume), out_shape=(4, 4, 4))


def test_sampling_is_deterministic_and_streams_are_independent():
    aug = Augment3D("brats")
    a = aug.sample(tf.constant([4, 2], tf.int64))
    b = aug.sample(tf.constant([4, 2], tf.int64))
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    more = Augment3D({"preset": "brats", "bias_coefficient": 0.5})
    c = more.sample(tf.constant([4, 2], tf.int64))
    np.testing.assert_array_equal(a["angles"].numpy(), c["angles"].numpy())
    np.testing.assert_array_equal(a["noise_key"].numpy(), c["noise_key"].numpy())


def test_jit_and_eager_agree():
    rng = np.random.default_rng(2)
    cfg = {"preset": "brats", "gamma_p": 1.0, "noise_p": 1.0, "bias_coefficient": 0.3,
           "bias_p": 1.0, "contrast": [0.9, 1.1], "intensity_p": 1.0}
    volume = tf.constant(rng.normal(size=(16, 16, 12, 2)).astype(np.float32))
    label = tf.constant(rng.integers(0, 3, (16, 16, 12)).astype(np.uint8))
    x1, y1 = Augment3D(cfg)(volume, label, seed=(3, 3), out_shape=(8, 8, 4))
    x2, y2 = Augment3D({**cfg, "jit": False})(volume, label, seed=(3, 3), out_shape=(8, 8, 4))
    np.testing.assert_allclose(x1.numpy(), x2.numpy(), rtol=1e-4, atol=1e-4)
    assert (y1.numpy() == y2.numpy()).mean() > 0.99


# ------------------------------------------------------------------ intensity
def test_gamma_contrast_and_brightness_by_hand():
    x = np.array([0.0, 1.0, 2.0, 4.0], np.float32).reshape(4, 1, 1, 1)
    out = it.adjust_gamma(tf.constant(x), 2.0).numpy().ravel()
    np.testing.assert_allclose(out, [0, 4 * (1 / 4) ** 2, 4 * (2 / 4) ** 2, 4], rtol=1e-5)
    np.testing.assert_allclose(it.adjust_gamma(tf.constant(x), 1.0).numpy(), x, rtol=1e-6)
    constant = np.full((3, 1, 1, 1), 2.0, np.float32)
    np.testing.assert_array_equal(it.adjust_gamma(tf.constant(constant), 0.5).numpy(), constant)
    np.testing.assert_allclose(it.brightness_contrast(tf.constant(x), 2.0, -1.0).numpy(),
                               2 * x - 1)


def test_hash_noise_is_deterministic_and_standard():
    a = it.hash_normal((100, 100, 10), 7).numpy()
    np.testing.assert_array_equal(a, it.hash_normal((100, 100, 10), 7).numpy())
    b = it.hash_normal((100, 100, 10), 8).numpy()
    assert abs(a.mean()) < 0.01 and abs(a.std() - 1) < 0.01
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01
    assert abs(np.corrcoef(a.ravel()[:-1], a.ravel()[1:])[0, 1]) < 0.01
    x = np.ones((10, 10, 10, 1), np.float32)
    np.testing.assert_allclose(it.add_noise(tf.constant(x), 0.5, 3).numpy(),
                               1 + 0.5 * it.hash_normal((10, 10, 10, 1), 3).numpy())


def test_smooth_fields_and_bias():
    w = sp.bspline_matrix(9, 5)
    np.testing.assert_allclose(w.sum(1), 1, atol=1e-6)
    assert (w >= 0).all()
    field = sp.smooth_field(tf.fill([5, 5, 5], 0.3), (7, 6, 5)).numpy()
    np.testing.assert_allclose(field, 0.3, atol=1e-6)
    x = np.ones((7, 6, 5, 2), np.float32)
    out = it.apply_bias_field(tf.constant(x), tf.fill([4, 4, 4], np.log(2.0))).numpy()
    np.testing.assert_allclose(out, 2.0, rtol=1e-5)


def test_blur_of_a_delta_is_a_row_normalised_gaussian():
    x = np.zeros((9, 9, 9, 1), np.float32)
    x[4, 4, 4] = 1
    out = it.gaussian_blur3d(tf.constant(x), [1.0, 1.0, 1.0]).numpy()[..., 0]
    d = np.arange(9)
    weights = np.exp(-0.5 * (d[:, None] - d[None, :]) ** 2)  # rows renormalised at the border
    g = weights[:, 4] / weights.sum(axis=1)
    np.testing.assert_allclose(out, g[:, None, None] * g[None, :, None] * g[None, None, :],
                               atol=1e-6)


def test_kspace_artefacts():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 8, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(it.ghosting(tf.constant(x), 1, 2, 0.0).numpy(), x, atol=1e-5)
    ghost = it.ghosting(tf.constant(x), 1, 2, 1.0).numpy()
    # removing every 2nd line but k = 0 along y: x - (x + roll(x, 4)) / 2 + mean
    expected = (x - np.roll(x, 4, axis=1)) / 2 + x.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(ghost, expected, atol=1e-5)
    still = it.motion(tf.constant(x), np.zeros((3, 3), np.float32), 0).numpy()
    np.testing.assert_allclose(still, x, atol=1e-5)
    moved = it.motion(tf.constant(x), np.array([[0, 2, 0]] * 2, np.float32), 0).numpy()
    np.testing.assert_allclose(moved, np.roll(x, 2, axis=1), atol=1e-4)


# ----------------------------------------------------------------------- config
def test_presets_and_config_errors():
    for name in ("brats", "hippocampus", "ixi_age", "ixi_sex", "camcan", "lgg", "tcga_gbm", "none"):
        assert name in PRESETS
    assert augment_config("lgg")[0] == 2 and augment_config("brats")[0] == 3
    dims, cfg = augment_config({"preset": "brats", "gamma_p": 1.0})
    assert dims == 3 and cfg["gamma_p"] == 1.0 and cfg["flip_axes"] == [0, 1, 2]
    with pytest.raises(ConfigError, match="unknown keys"):
        augment_config({"preset": "brats", "rotation": 5})
    with pytest.raises(ConfigError):
        augment_config("mri")
    with pytest.raises(ConfigError):
        Augment3D("lgg")
    with pytest.raises(ConfigError):
        Augment2D("brats")
    with pytest.raises(ConfigError):
        Augment3D({"gamma_p": 2.0})
    assert "flip_axes" not in PRESETS["hippocampus"]  # labels are left/right: no x flips


# ---------------------------------------------------------------------------- 2D
def test_2d_flip_and_rotation_are_exact():
    rng = np.random.default_rng(4)
    image = rng.random((6, 6, 3)).astype(np.float32)
    mask = rng.integers(0, 3, (6, 6)).astype(np.uint8)
    flip = a2.projective_matrix((6, 6), [True, False], 0.0, 1.0, [0.0, 0.0], 0.0,
                                np.zeros((4, 2), np.float32))
    out = a2.warp2d(tf.constant(image), flip).numpy()
    np.testing.assert_allclose(out, image[:, ::-1], atol=1e-5)
    rot = a2.projective_matrix((6, 6), [False, False], np.pi / 2, 1.0, [0.0, 0.0], 0.0,
                               np.zeros((4, 2), np.float32))
    out = a2.warp2d(tf.constant(mask, tf.float32)[..., None], rot, "NEAREST").numpy()[..., 0]
    r, c = np.meshgrid(np.arange(6), np.arange(6), indexing="ij")
    # output (row r, col c) reads input at x = c' with (x, y) = R90 @ (c - 2.5, r - 2.5)
    np.testing.assert_array_equal(out, mask[c, 5 - r])


def test_2d_homography_maps_the_corners():
    src = np.array([[0, 0], [9, 0], [9, 7], [0, 7]], np.float32)
    dst = src + np.array([[1, -1], [0.5, 0.2], [-1, 0], [0.3, 0.4]], np.float32)
    h = a2.homography(src, dst).numpy()
    mapped = (h @ np.c_[src, np.ones(4)].T).T
    np.testing.assert_allclose(mapped[:, :2] / mapped[:, 2:], dst, atol=1e-4)


def test_2d_augment_keeps_mask_values_and_moves_them_with_the_image():
    image = np.zeros((32, 32, 3), np.float32)
    image[8:20, 10:24] = 1.0
    mask = (image[..., 0] > 0).astype(np.uint8)
    aug = Augment2D({"preset": "lgg", "affine_p": 1.0, "lighting_p": 0.0})
    for seed in range(4):
        x, m = aug(tf.constant(image), tf.constant(mask), seed=(seed, 0))
        m = m.numpy()
        assert set(np.unique(m)) <= {0, 1}
        bright = x.numpy()[..., 0] > 0.5
        assert (bright == (m == 1)).mean() > 0.97


def test_2d_lighting_by_hand():
    x = np.array([[[0.2], [0.6]]], np.float32)  # mean 0.4
    out = a2.lighting(tf.constant(x), 1.5, 2.0).numpy()
    np.testing.assert_allclose(out.ravel(), [(0.4 - 0.4) * 1.5, (0.4 + 0.4) * 1.5], rtol=1e-6)

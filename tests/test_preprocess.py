"""Preprocessing: resampling, crop/pad, normalisation schemes, label mapping, masks, cache."""

import numpy as np
import pandas as pd
import pytest

from brain_tf.errors import ConfigError, DataError
from brain_tf.io import Volume, save_volume
from brain_tf.preprocess import (
    ManifestLoader,
    PreprocessCache,
    Preprocessed,
    config_hash,
    crop_start,
    indices_to_values,
    normalise,
    preprocess_slice,
    preprocess_subject,
    resample,
    simple_brain_mask,
    target_grid,
    values_to_indices,
    window,
)
from brain_tf.preprocess.aligned import as_aligned, is_aligned


def world(affine, voxel):
    return (np.asarray(affine) @ np.r_[voxel, 1.0])[:3]


# ----------------------------------------------------------------- resampling
def test_target_grid_modes():
    assert target_grid((100, 80, 60), (1, 1, 2), target_spacing=2) == ((50, 40, 60), (2, 2, 2))
    assert target_grid((100, 80, 60), (1, 1, 1), target_shape=(50, 40, 30)) == (
        (50, 40, 30), (2.0, 2.0, 2.0))
    assert target_grid((100, 80, 60), (1, 1, 1), 3, (64, 64, 64)) == ((64, 64, 64), (3, 3, 3))
    assert target_grid((10, 10, 10), (1, 1, 1)) == ((10, 10, 10), (1, 1, 1))
    with pytest.raises(ConfigError):
        target_grid((10, 10, 10), (1, 1, 1), target_spacing=(1, -1, 1))


def test_resample_keeps_centre_and_reproduces_a_linear_ramp():
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = [-10.0, 5.0, 2.0]
    shape = (21, 15, 9)
    # the image is the world x coordinate: linear interpolation must reproduce it
    xs = world(affine, [0, 0, 0])[0] + np.arange(shape[0], dtype=np.float32)
    ramp = np.broadcast_to(xs[:, None, None], shape).astype(np.float32)
    out, new_affine = resample(ramp, affine, (11, 8, 5), (2.0, 2.0, 2.0), order=1)
    assert out.shape == (11, 8, 5)
    old_centre = world(affine, (np.array(shape) - 1) / 2)
    new_centre = world(new_affine, (np.array([11, 8, 5]) - 1) / 2)
    np.testing.assert_allclose(new_centre, old_centre, atol=1e-9)
    np.testing.assert_allclose(np.sqrt((new_affine[:3, :3] ** 2).sum(0)), [2, 2, 2])
    expected_x = np.array([world(new_affine, [i, 3, 2])[0] for i in range(11)])
    np.testing.assert_allclose(out[:, 3, 2], expected_x, atol=1e-4)


def test_resample_labels_nearest_and_channels():
    rng = np.random.default_rng(1)
    label = rng.integers(0, 4, (12, 12, 12)).astype(np.uint8)
    out, _ = resample(label, np.eye(4), (6, 6, 6), (2, 2, 2), order=0)
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1, 2, 3}
    # the new voxel 0 centre sits at old position 0.5 -> nearest rounds to a neighbour
    image = rng.normal(size=(8, 8, 8, 2)).astype(np.float32)
    same, affine = resample(image, np.eye(4), (8, 8, 8), (1, 1, 1), order=3)
    np.testing.assert_array_equal(same, image)
    np.testing.assert_array_equal(affine, np.eye(4))


def test_window_pads_and_crops():
    a = np.arange(5 * 4 * 3).reshape(5, 4, 3)
    w = window(a, (-1, 1, 0), (3, 2, 3))
    assert w.shape == (3, 2, 3)
    np.testing.assert_array_equal(w[0], 0)
    np.testing.assert_array_equal(w[1:], a[0:2, 1:3, :])
    np.testing.assert_array_equal(window(a, (10, 0, 0), (2, 2, 2)), 0)


def test_crop_start_centre_and_bbox():
    np.testing.assert_array_equal(crop_start((10, 10, 10), (4, 6, 10)), [3, 2, 0])
    mask = np.zeros((20, 20, 20), bool)
    mask[12:16, 2:6, 8:10] = True  # box centre (13.5, 3.5, 8.5)
    start = crop_start((20, 20, 20), (4, 4, 4), "bbox", mask)
    np.testing.assert_array_equal(start, [12, 2, 7])
    with pytest.raises(ConfigError):
        crop_start((20, 20, 20), (4, 4, 4), "corner")


# -------------------------------------------------------------- normalisation
def test_zscore_mask_matches_hand_computation():
    image = np.array([1, 2, 3, 4, 100], np.float32).reshape(5, 1, 1, 1)
    mask = np.array([1, 1, 1, 1, 0], bool).reshape(5, 1, 1)
    out = normalise(image, "zscore_mask", mask=mask)
    std = np.sqrt(1.25)  # values 1..4: mean 2.5, variance 1.25
    np.testing.assert_allclose(out.ravel(), [-1.5 / std, -0.5 / std, 0.5 / std, 1.5 / std, 0],
                               rtol=1e-6)
    with pytest.raises(DataError):
        normalise(image, "zscore_mask")
    with pytest.raises(DataError):
        normalise(image, "zscore_mask", mask=np.zeros((5, 1, 1), bool))


def test_zscore_nonzero_matches_hand_computation():
    image = np.array([0, 2, 4, 6], np.float32).reshape(4, 1, 1, 1)
    std = np.sqrt(8 / 3)  # over 2, 4, 6: mean 4
    np.testing.assert_allclose(normalise(image, "zscore_nonzero").ravel(),
                               [0, -2 / std, 0, 2 / std], rtol=1e-6)
    np.testing.assert_allclose(normalise(image, "zscore_nonzero", keep_zero=False).ravel(),
                               [-4 / std, -2 / std, 0, 2 / std], rtol=1e-6)


def test_zscore_slice_per_channel_per_slice_and_constant_slice():
    image = np.zeros((2, 1, 2, 2), np.float32)
    image[:, 0, 0, 0] = [1, 3]  # slice 0, channel 0: mean 2, std 1
    image[:, 0, 0, 1] = [5, 5]  # slice 0, channel 1: constant -> 0
    image[:, 0, 1, 0] = [10, 30]  # slice 1, channel 0: mean 20, std 10
    image[:, 0, 1, 1] = [0, 4]  # slice 1, channel 1: mean 2, std 2
    out = normalise(image, "zscore_slice")
    np.testing.assert_allclose(out[:, 0, 0, 0], [-1, 1])
    np.testing.assert_allclose(out[:, 0, 0, 1], [0, 0])
    np.testing.assert_allclose(out[:, 0, 1, 0], [-1, 1])
    np.testing.assert_allclose(out[:, 0, 1, 1], [-1, 1])


def test_percentile_clips_and_rescales():
    image = np.arange(101, dtype=np.float32).reshape(101, 1, 1, 1)
    out = normalise(image, "percentile", lower=10, upper=90).ravel()
    np.testing.assert_allclose(out[[0, 10, 50, 90, 100]], [0, 0, 0.5, 1, 1], atol=1e-6)
    with pytest.raises(ConfigError):
        normalise(image, "percentile", lower=90, upper=10)


def test_imagenet_normalisation():
    pixel = np.array([[[255, 0, 128]]], np.uint8)
    out = normalise(pixel, "imagenet")
    expected = (np.array([1.0, 0.0, 128 / 255]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-5)
    with pytest.raises(DataError):
        normalise(np.zeros((2, 2, 1)), "imagenet")


def test_unknown_scheme_and_bad_options():
    with pytest.raises(ConfigError):
        normalise(np.ones((2, 2, 2, 1)), "zscore_everything")
    with pytest.raises(ConfigError):
        normalise(np.ones((2, 2, 2, 1)), "zscore_slice", lower=3)


# ---------------------------------------------------------------------- labels
def test_label_values_to_indices():
    np.testing.assert_array_equal(values_to_indices(np.array([0, 255, 255, 0]), [0, 255]),
                                  [0, 1, 1, 0])
    np.testing.assert_array_equal(values_to_indices(np.array([4, 0, 2, 1]), [0, 1, 2, 4]),
                                  [3, 0, 2, 1])
    np.testing.assert_array_equal(indices_to_values(np.array([3, 0, 2]), [0, 1, 2, 4]), [4, 0, 2])
    with pytest.raises(DataError, match=r"\[3\]"):
        values_to_indices(np.array([0, 3]), [0, 1, 2, 4], where="lab.nii.gz")


def test_simple_brain_mask_finds_the_head():
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(32)] * 3, indexing="ij"), -1)
    head = ((grid - 15.5) ** 2).sum(-1) < 10**2
    image = rng.normal(0, 0.05, (32, 32, 32)).clip(0) + head * 1.0
    image[head & (((grid - 15.5) ** 2).sum(-1) < 3**2)] = 0.0  # dark ventricle: a hole
    mask = simple_brain_mask(image)
    dice = 2 * (mask & head).sum() / (mask.sum() + head.sum())
    assert dice > 0.95
    assert mask[16, 16, 16]  # the hole is filled
    with pytest.raises(DataError):
        simple_brain_mask(np.zeros((8, 8, 8)))


# ------------------------------------------------------------- whole subject
def _subject(rng):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    image = np.zeros((16, 16, 16), np.float32)
    image[3:13, 3:13, 3:13] = rng.uniform(1, 2, (10, 10, 10))
    label = np.zeros((16, 16, 16), np.uint8)
    label[6:10, 6:10, 6:10] = 255
    return Volume(image, affine, path="img.nii.gz"), Volume(label, affine, path="lab.nii.gz")


def test_preprocess_subject_end_to_end(rng):
    image, label = _subject(rng)
    config = {"spacing": 4.0, "shape": [8, 8, 8], "normalise": "zscore_mask", "mask": "auto",
              "order": 1, "crop": [6, 6, 6], "crop_mode": "bbox"}
    out = preprocess_subject(image, label, None, config, label_values=[0, 255], subject="s1")
    assert isinstance(out, Preprocessed)
    assert out.image.shape == (6, 6, 6, 1) and out.image.dtype == np.float32
    assert out.label.dtype == np.uint8 and set(np.unique(out.label)) == {0, 1}
    assert out.spacing == (4.0, 4.0, 4.0)
    inside = out.image[out.mask, 0]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-4
    np.testing.assert_array_equal(out.image[~out.mask], 0)
    # the affine still maps the label's centre of mass to the same world point
    before = world(label.affine, np.argwhere(label.array > 0).mean(0))
    after = world(out.affine, np.argwhere(out.label > 0).mean(0))
    np.testing.assert_allclose(after, before, atol=1e-6)


def test_preprocess_subject_errors(rng):
    image, label = _subject(rng)
    with pytest.raises(ConfigError, match="unknown keys"):
        preprocess_subject(image, config={"spacingg": 2})
    with pytest.raises(DataError, match="mask"):
        preprocess_subject(image, config={"normalise": "zscore_mask"})
    small = Volume(np.zeros((8, 8, 8), np.uint8), np.eye(4), path="small.nii.gz")
    with pytest.raises(DataError, match="small.nii.gz"):
        preprocess_subject(image, small)


def test_config_hash_changes_with_config():
    a = config_hash({"normalise": "zscore_nonzero"})
    assert a == config_hash({"normalise": "zscore_nonzero", "order": 3})  # default spelled out
    assert a != config_hash({"normalise": "zscore_slice"})
    assert a != config_hash({"normalise": "zscore_nonzero"}, label_values=[0, 1])


# ----------------------------------------------------------------------- cache
def test_cache_roundtrip_invalidation_and_aligned_reads(tmp_path, rng):
    image, label = _subject(rng)
    item = preprocess_subject(image, label, config={"normalise": "zscore_nonzero"},
                              label_values=[0, 255], subject="a/b")
    path = tmp_path / "cache.h5"
    cache = PreprocessCache(path, {"normalise": "zscore_nonzero"}, [0, 255])
    calls = []

    def compute():
        calls.append(1)
        return item

    first = cache.get_or_create("a/b", compute)
    again = PreprocessCache(path, {"normalise": "zscore_nonzero"}, [0, 255]).get_or_create(
        "a/b", compute)
    assert len(calls) == 1 and cache.keys() == ["a/b"] and "a/b" in cache
    np.testing.assert_array_equal(again.image, first.image)
    np.testing.assert_array_equal(again.label, item.label)
    np.testing.assert_array_equal(again.affine, item.affine)
    assert again.spacing == item.spacing and again.mask is None
    assert is_aligned(again.image)
    with pytest.warns(UserWarning, match="config changed"):
        changed = PreprocessCache(path, {"normalise": "zscore_slice"}, [0, 255])
    assert len(changed) == 0 and changed.get("a/b") is None


def test_cache_rebuilds_an_unreadable_file(tmp_path):
    path = tmp_path / "broken.h5"
    path.write_bytes(b"not hdf5 at all")
    with pytest.warns(UserWarning, match="unreadable"):
        cache = PreprocessCache(path, {})
    assert cache.keys() == []


def test_manifest_loader_reads_preprocesses_and_caches(tmp_path, rng):
    image, label = _subject(rng)
    save_volume(image, tmp_path / "s1_T1.nii.gz")
    save_volume(label, tmp_path / "s1_seg.nii.gz")
    manifest = pd.DataFrame({"sample": ["s1"], "subject": ["s1"],
                             "image_T1": [str(tmp_path / "s1_T1.nii.gz")],
                             "label": [str(tmp_path / "s1_seg.nii.gz")]})
    config = {"normalise": "zscore_nonzero", "spacing": 4.0}
    loader = ManifestLoader(manifest, config, [0, 255], cache=tmp_path / "c.h5")
    item = loader(0)
    assert len(loader) == 1 and loader.subject_id(0) == "s1"
    assert item.image.shape == (8, 8, 8, 1) and set(np.unique(item.label)) == {0, 1}
    assert "s1" in loader.cache
    direct = preprocess_subject(image, label, None, config, [0, 255])
    np.testing.assert_allclose(item.image, direct.image, atol=1e-6)
    with pytest.raises(DataError):
        ManifestLoader(manifest.iloc[:0])


def test_preprocess_slice():
    image = np.zeros((4, 6, 3), np.uint8)
    image[..., 0] = 255
    mask = np.zeros((4, 6), np.uint8)
    mask[1:3, 2:4] = 255
    x, m = preprocess_slice(image, mask, {"labels": [0, 255]})
    assert x.dtype == np.float32 and x.shape == (4, 6, 3)
    np.testing.assert_allclose(x[..., 0], 255.0)  # 8-bit pixels keep their values
    np.testing.assert_array_equal(m, mask // 255)
    x, m = preprocess_slice(image[..., 0], mask, {"labels": [0, 255], "shape": [8, 12],
                                                  "rgb": True})
    assert x.shape == (8, 12, 3) and m.shape == (8, 12) and m.sum() == 16
    np.testing.assert_allclose(x[0, 0], [255.0, 255.0, 255.0], rtol=1e-5)
    sixteen = (image[..., 0].astype(np.uint16) * 257)  # 65535 on the 16-bit scale
    np.testing.assert_allclose(preprocess_slice(sixteen)[0][..., 0], 255.0, rtol=1e-6)
    unit = preprocess_slice(image[..., 0].astype(np.float32) / 255.0)[0]
    np.testing.assert_allclose(unit[..., 0], 255.0, rtol=1e-6)
    with pytest.raises(ConfigError):
        preprocess_slice(image, config={"size": 3})


def test_as_aligned_copies_only_when_needed():
    a = np.arange(1000, dtype=np.float32)[1:]  # offset by 4 bytes: not aligned
    b = as_aligned(a)
    assert is_aligned(b) and b is not a
    np.testing.assert_array_equal(a, b)
    assert as_aligned(b) is b

"""Datasets for model.fit: whole volumes, 2D slices, patches from a cached manifest."""

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from brain_tf.errors import ConfigError, DataError
from brain_tf.io import Volume, save_image, save_volume
from brain_tf.pipeline import PatchSampler, Source, patch_dataset, slice_dataset, volume_dataset
from brain_tf.preprocess import ManifestLoader, SliceLoader


def _volumes(n, shape=(12, 10, 8), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(np.float32) for _ in range(n)]


def test_volume_dataset_targets_follow_subjects():
    volumes = _volumes(5)
    ages = [20.5, 31.0, 42.0, 55.5, 67.0]
    ds = volume_dataset(volumes, ages, batch_size=2, shuffle=False)
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    np.testing.assert_array_equal(np.concatenate(ys), np.float32(ages))
    np.testing.assert_array_equal(np.concatenate(xs)[..., 0], np.stack(volumes))
    shuffled = volume_dataset(volumes, ages, batch_size=5, shuffle=True, seed=3)
    x, y = next(iter(shuffled))
    for xi, yi in zip(x.numpy(), y.numpy()):  # each volume still carries its own age
        np.testing.assert_array_equal(xi[..., 0], volumes[ages.index(float(yi))])


def test_volume_dataset_augmentation_and_dict_targets():
    volumes = _volumes(3, shape=(16, 16, 16))
    targets = {"age": [30.0, 40.0, 50.0], "sex": [0, 1, 1]}
    ds = volume_dataset(volumes, targets, augment="ixi_age", batch_size=3, shuffle=False, seed=1)
    x, y = next(iter(ds))
    assert x.shape == (3, 16, 16, 16, 1)
    assert y["sex"].dtype == tf.int32 and y["age"].dtype == tf.float32
    np.testing.assert_array_equal(y["sex"].numpy(), [0, 1, 1])
    assert not np.allclose(x.numpy()[..., 0], np.stack(volumes))  # moved
    again = next(iter(volume_dataset(volumes, targets, augment="ixi_age", batch_size=3,
                                     shuffle=False, seed=1)))[0]
    np.testing.assert_array_equal(x.numpy(), again.numpy())
    with pytest.raises(DataError, match="NaN"):
        volume_dataset(volumes, [30.0, np.nan, 50.0])
    with pytest.raises(DataError, match="numbers"):
        volume_dataset(volumes, ["M", "F", "F"])
    with pytest.raises(DataError, match="3 subjects"):
        volume_dataset(volumes, [1.0, 2.0])


def test_volume_dataset_rejects_a_subject_on_another_grid():
    volumes = _volumes(2) + _volumes(1, shape=(12, 10, 9))
    ds = volume_dataset(volumes, [1.0, 2.0, 3.0], batch_size=1, shuffle=False)
    with pytest.raises(tf.errors.OpError, match="one grid"):
        list(ds)


def test_slice_dataset_masks_one_hot_and_pixels_kept():
    rng = np.random.default_rng(0)
    images = (255 * rng.random((4, 16, 16, 3))).astype(np.float32)
    masks = (rng.random((4, 16, 16)) > 0.7).astype(np.uint8)
    ds = slice_dataset(images, masks=masks, num_classes=2, batch_size=4, shuffle=False)
    x, y = next(iter(ds))
    np.testing.assert_array_equal(x.numpy(), images)  # the models normalise, not the pipeline
    np.testing.assert_array_equal(y.numpy().argmax(-1), masks)
    assert y.shape == (4, 16, 16, 2)
    ds = slice_dataset(images, masks=masks, num_classes=2, drop_background=True,
                       augment="lgg", batch_size=2, seed=4)
    for x, y in ds:
        assert y.shape[-1] == 1 and set(np.unique(y.numpy())) <= {0.0, 1.0}
    with pytest.raises(ConfigError):
        slice_dataset(images, masks=masks)
    with pytest.raises(ConfigError):
        slice_dataset(images, masks=masks, num_classes=2, augment="brats")


def test_slice_dataset_multi_head_targets():
    # constant slices 0.01 * 2**i: brightness (x0.8-1.2) keeps them apart, so each
    # augmented, shuffled slice still tells which index it was
    images = np.stack([np.full((8, 8, 3), 0.01 * 2.0**i, np.float32) for i in range(6)])
    targets = {"perspective": [0, 1, 2, 0, 1, 2], "sequence": [3, 2, 1, 0, 1, 2]}
    ds = slice_dataset(images, targets=targets, augment="tcga_gbm", batch_size=6, seed=2)
    x, y = next(iter(ds))
    assert x.shape == (6, 8, 8, 3) and set(y) == {"perspective", "sequence"}
    index = np.rint(np.log2(x.numpy().mean(axis=(1, 2, 3)) / 0.01)).astype(int)
    assert sorted(index) == list(range(6)) and list(index) != list(range(6))
    for key in targets:
        np.testing.assert_array_equal(y[key].numpy(), np.array(targets[key])[index])
    with pytest.raises(DataError):
        slice_dataset(images)


def test_source_validates_items():
    with pytest.raises(DataError, match="label shape"):
        Source([(np.zeros((4, 4, 4)), np.zeros((4, 4, 3), np.uint8))]).load(0)
    with pytest.raises(DataError, match="class indices"):
        Source([(np.zeros((4, 4, 4)), np.full((4, 4, 4), 300))]).load(0)
    with pytest.raises(DataError, match="empty"):
        Source([])
    loaded = Source([(np.zeros((4, 4, 4)), np.ones((4, 4, 4), np.int64))]).load(0)
    assert loaded[0].shape == (4, 4, 4, 1) and loaded[1].dtype == np.uint8


def test_patches_from_a_cached_manifest_train_a_model(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for s in range(2):
        image = rng.normal(size=(20, 20, 12)).astype(np.float32) + 3
        label = np.zeros((20, 20, 12), np.uint8)
        label[6:14, 6:14, 3:9] = 4  # BraTS-style value 4 -> class 3
        image[label > 0] += 2
        save_volume(Volume(image, np.eye(4)), tmp_path / f"s{s}.nii.gz")
        save_volume(Volume(label, np.eye(4)), tmp_path / f"s{s}_seg.nii.gz")
        rows.append({"sample": f"s{s}", "subject": f"s{s}",
                     "image_t1": str(tmp_path / f"s{s}.nii.gz"),
                     "label": str(tmp_path / f"s{s}_seg.nii.gz")})
    loader = ManifestLoader(pd.DataFrame(rows), {"normalise": "zscore_slice"}, [0, 1, 2, 4],
                            cache=tmp_path / "cache.h5")
    sampler = PatchSampler((8, 8, 8), "rejection", patches_per_subject=2, max_background=0.9)
    ds = patch_dataset(loader, sampler, num_classes=4, augment="brats", drop_background=True,
                       batch_size=2, seed=0)
    inputs = keras.Input((8, 8, 8, 1))
    outputs = keras.layers.Conv3D(3, 3, padding="same", activation="sigmoid")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="binary_crossentropy")
    history = model.fit(ds, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert sorted(loader.cache.keys()) == ["s0", "s1"]
    assert sampler.stats.as_dict()["patches"] == 8 and sampler.stats.as_dict()["fallbacks"] == 0
    x, y = next(iter(ds))
    assert y.shape == (2, 8, 8, 8, 3) and float(tf.reduce_sum(y[..., 2])) > 0  # class 3 kept


def test_slices_stream_from_files_through_a_slice_loader(tmp_path):
    rows = []
    for i in range(3):
        image = np.zeros((12, 12, 3), np.uint8)
        image[2:6 + i, 3:9] = 200
        mask = np.where(image[..., 0] > 0, 255, 0).astype(np.uint8)
        save_image(image, tmp_path / f"c_{i}.tif")
        save_image(mask, tmp_path / f"c_{i}_mask.tif")
        rows.append({"sample": f"c_{i}", "subject": "c",
                     "image_image": str(tmp_path / f"c_{i}.tif"),
                     "label": str(tmp_path / f"c_{i}_mask.tif")})
    loader = SliceLoader(pd.DataFrame(rows), {"labels": [0, 255]})
    x0, m0 = loader(0)
    assert x0.shape == (12, 12, 3) and m0.sum() == 4 * 6
    np.testing.assert_allclose(x0[3, 4], 200, rtol=1e-6)  # 8-bit pixels keep their values
    ds = slice_dataset(loader, num_classes=2, batch_size=3, shuffle=False)
    x, y = next(iter(ds))
    assert x.shape == (3, 12, 12, 3)
    np.testing.assert_array_equal(y.numpy()[..., 1].sum(axis=(1, 2)), [24, 30, 36])

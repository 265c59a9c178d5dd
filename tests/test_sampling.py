"""Patch samplers: thresholds, fallbacks, foreground frequency, determinism, cutting."""

import numpy as np
import pytest
import tensorflow as tf

from brain_tf.errors import ConfigError, DataError
from brain_tf.pipeline import PatchSampler, cut_patch, patch_dataset


def corners_of(sampler, label, seed=(1, 2)):
    return sampler.corners(tf.constant(label), tf.constant(seed, tf.int64)).numpy()


def background_fraction(label, corner, shape):
    box = label[tuple(slice(max(c, 0), max(c + s, 0)) for c, s in zip(corner, shape))]
    return 1.0 - (box > 0).sum() / np.prod(shape)


def test_cut_patch_inside_and_outside():
    volume = np.arange(6 * 5 * 4 * 2, dtype=np.float32).reshape(6, 5, 4, 2)
    inside = cut_patch(tf.constant(volume), [1, 2, 0], [3, 2, 4]).numpy()
    np.testing.assert_array_equal(inside, volume[1:4, 2:4, 0:4])
    outside = cut_patch(tf.constant(volume), [-2, 3, 2], [4, 4, 4]).numpy()
    expected = np.zeros((4, 4, 4, 2), np.float32)
    expected[2:4, 0:2, 0:2] = volume[0:2, 3:5, 2:4]
    np.testing.assert_array_equal(outside, expected)


def test_uniform_corners_cover_the_valid_range():
    sampler = PatchSampler((4, 6, 8), "uniform", patches_per_subject=500)
    corners = corners_of(sampler, np.zeros((10, 6, 5), np.uint8))
    assert corners[:, 0].min() == 0 and corners[:, 0].max() == 6
    np.testing.assert_array_equal(corners[:, 1], 0)  # patch fits exactly
    assert corners[:, 2].min() == -3 and corners[:, 2].max() == 0  # patch larger: volume inside


def test_rejection_meets_threshold_when_possible():
    label = np.zeros((40, 40, 20), np.uint8)
    label[5:15, 25:35, 2:10] = 2  # 800 voxels
    shape = (12, 12, 8)  # 1152 voxels: a patch can reach 1 - 800/1152 = 0.31 background
    sampler = PatchSampler(shape, "rejection", patches_per_subject=50, max_background=0.6,
                           max_tries=500)
    corners = corners_of(sampler, label)
    fractions = [background_fraction(label, c, shape) for c in corners]
    assert max(fractions) < 0.6
    assert sampler.stats.as_dict() == {"subjects": 1, "patches": 50, "fallbacks": 0}


def test_rejection_falls_back_to_the_best_patch_and_counts_it():
    label = np.zeros((30, 30, 30), np.uint8)
    label[20, 7, 13] = 1  # one voxel: no patch can be 95% foreground-free... reversed
    shape = (8, 8, 8)
    sampler = PatchSampler(shape, "rejection", patches_per_subject=6, max_background=0.5,
                           max_tries=2000)
    corners = corners_of(sampler, label)
    assert sampler.stats.as_dict()["fallbacks"] == 6
    # the best of 2000 tries contains the only foreground voxel
    for c in corners:
        assert background_fraction(label, c, shape) == 1 - 1 / 512
    empty = PatchSampler(shape, "rejection", patches_per_subject=3)
    assert corners_of(empty, np.zeros((30, 30, 30), np.uint8)).shape == (3, 3)
    assert empty.stats.as_dict()["fallbacks"] == 3


def test_foreground_centre_frequency_matches_p():
    label = np.zeros((32, 32, 32), np.uint8)
    label[15:17, 15:17, 15:17] = 1
    shape = (8, 8, 8)
    sampler = PatchSampler(shape, "foreground", patches_per_subject=4000, foreground_p=0.7)
    corners = corners_of(sampler, label, seed=(7, 7))
    centres = corners + np.array(shape) // 2
    hit = label[centres[:, 0], centres[:, 1], centres[:, 2]] > 0
    # uniform centres hit the 2x2x2 block with probability (2/25)^3 = 0.0005
    assert abs(hit.mean() - 0.7) < 0.035
    assert sampler.stats.as_dict()["fallbacks"] == 0


def test_class_probabilities_balance_the_centre_class():
    label = np.zeros((24, 24, 24), np.uint8)
    label[2:22, 2:22, 2:12] = 1  # a large class
    label[10:12, 10:12, 16:18] = 2  # a tiny class
    shape = (4, 4, 4)
    sampler = PatchSampler(shape, "foreground", patches_per_subject=3000, foreground_p=1.0,
                           class_probs={1: 0.25, 2: 0.75})
    corners = corners_of(sampler, label)
    centres = corners + 2
    classes = label[centres[:, 0], centres[:, 1], centres[:, 2]]
    assert set(np.unique(classes)) == {1, 2}
    assert abs((classes == 2).mean() - 0.75) < 0.035
    # a subject without the wanted classes falls back to uniform and is counted
    none = PatchSampler(shape, "foreground", patches_per_subject=5, foreground_p=1.0)
    corners_of(none, np.zeros((10, 10, 10), np.uint8))
    assert none.stats.as_dict()["fallbacks"] == 5


def test_same_seed_same_corners():
    label = np.zeros((30, 30, 30), np.uint8)
    label[10:20, 10:20, 10:20] = 1
    for mode in ("uniform", "rejection", "foreground"):
        sampler = PatchSampler((6, 6, 6), mode, patches_per_subject=10)
        a, b = corners_of(sampler, label, (3, 4)), corners_of(sampler, label, (3, 4))
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, corners_of(sampler, label, (3, 5)))


def test_sampler_config_errors():
    with pytest.raises(ConfigError):
        PatchSampler((4, 4), "uniform")
    with pytest.raises(ConfigError):
        PatchSampler((4, 4, 4), "random")
    with pytest.raises(ConfigError):
        PatchSampler.from_config({"patch_shape": [4, 4, 4], "modes": "uniform"})
    assert PatchSampler.from_config({"patch_shape": [4, 4, 4], "mode": "rejection"}).mode == \
        "rejection"


def _subjects(n=3, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image = rng.normal(size=(20, 18, 16, 2)).astype(np.float32)
        label = np.zeros((20, 18, 16), np.uint8)
        label[5:12, 4:10, 3:9] = 1 + i % 3
        out.append((image, label))
    return out


def test_patch_dataset_is_deterministic_and_one_hot_matches_labels():
    subjects = _subjects()
    sampler = PatchSampler((8, 8, 8), "foreground", patches_per_subject=4, foreground_p=0.5)

    def batches(seed, epochs=1):
        ds = patch_dataset(subjects, sampler, num_classes=4, drop_background=True,
                           batch_size=3, seed=seed)
        return [(x.numpy(), y.numpy()) for _ in range(epochs) for x, y in ds]

    first, again, other = batches(5, epochs=2), batches(5), batches(6)
    second_epoch, first = first[4:], first[:4]
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, second_epoch))
    assert sum(x.shape[0] for x, _ in first) == 12
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    x, y = first[0]
    assert x.shape == (3, 8, 8, 8, 2) and y.shape == (3, 8, 8, 8, 3) and y.dtype == np.float32
    assert set(np.unique(y.sum(-1))) <= {0.0, 1.0}
    # without augmentation every patch is a verbatim box of one subject
    found = False
    for image, label in subjects:
        for c in np.ndindex(13, 11, 9):
            if np.array_equal(image[c[0]:c[0] + 8, c[1]:c[1] + 8, c[2]:c[2] + 8], x[0]):
                lab = label[c[0]:c[0] + 8, c[1]:c[1] + 8, c[2]:c[2] + 8]
                np.testing.assert_array_equal(y[0].argmax(-1) + (y[0].sum(-1) > 0), lab)
                found = True
                break
    assert found
    assert sampler.stats.as_dict()["subjects"] == 12  # four passes over three subjects


def test_patch_dataset_with_a_loader_and_errors():
    subjects = _subjects(2)
    calls = []

    def loader(i):
        calls.append(int(i))
        return subjects[i]

    sampler = PatchSampler((8, 8, 8), "rejection", patches_per_subject=3, max_background=0.99)
    ds = patch_dataset(loader, sampler, num_classes=4, batch_size=2, length=2, shuffle=False)
    n = sum(int(x.shape[0]) for x, _ in ds)
    assert n == 6 and sorted(set(calls)) == [0, 1]
    with pytest.raises(DataError, match="label"):
        patch_dataset([s[0] for s in subjects], sampler, num_classes=4)
    with pytest.raises(DataError, match="length"):
        patch_dataset(lambda i: subjects[i], sampler, num_classes=4)


def test_shape_bucket_pads_without_changing_patches():
    subjects = _subjects(2)
    for image, _ in subjects:  # a zero border, as in MRI: edge and padding then agree
        border = np.ones(image.shape[:3], bool)
        border[1:-1, 1:-1, 1:-1] = False
        image[border] = 0.0

    def batches(bucket):
        sampler = PatchSampler((8, 8, 8), "uniform", patches_per_subject=2)
        ds = patch_dataset(subjects, sampler, num_classes=4, augment={"rotation_deg": 5},
                           batch_size=4, seed=1, shape_bucket=bucket)
        return [(x.numpy(), y.numpy()) for x, y in ds]

    for (x1, y1), (x2, y2) in zip(batches(None), batches(32)):
        np.testing.assert_allclose(x1, x2, atol=1e-6)
        np.testing.assert_array_equal(y1, y2)

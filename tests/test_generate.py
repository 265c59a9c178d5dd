"""Generated images: drawn intensities, alignment, resolution, stripping, datasets."""

import numpy as np
import pytest
import tensorflow as tf

from brain_tf.errors import ConfigError
from brain_tf.pipeline import (
    Augment3D, PatchSampler, SynthGenerator, lookup_table, patch_dataset, volume_dataset,
)
from brain_tf.pipeline import intensity as it
from brain_tf.preprocess.normalise import percentile, zscore_nonzero

PLAIN = {"synth": True, "synth_normalise": "none", "synth_std": [0.0, 0.0]}


def nested_boxes(n=24):
    """0 outside, then shells 1 and 2 around a core 3 (a head-like nesting)."""
    label = np.zeros((n, n, n), np.uint8)
    for value, margin in ((1, 2), (2, 5), (3, 8)):
        label[margin:n - margin, margin:n - margin, margin:n - margin] = value
    return label


def quadrants(n=24):
    """Four labels in the four (x, y) quadrants, plus background in the first two z-slices."""
    x, y, _ = np.meshgrid(*[np.arange(n)] * 3, indexing="ij")
    label = (1 + (x >= n // 2) + 2 * (y >= n // 2)).astype(np.uint8)
    label[:, :, :2] = 0
    return label


def with_means(params, values):
    """``params`` with the mean of label v set to ``values[v]``."""
    means = params["means"].numpy().copy()
    means[:len(values)] = values
    return {**params, "means": tf.constant(means)}


def test_fixed_parameters_give_each_label_its_mean_and_spread():
    label = nested_boxes()
    gen = SynthGenerator(PLAIN)
    params = with_means(gen.sample([0, 1]), [0.1, 0.7, 0.3, 0.9])
    x, lab = gen.apply(params, label)
    assert x.shape == (24, 24, 24, 1)
    np.testing.assert_array_equal(lab.numpy(), label)  # no warp: the labels themselves
    np.testing.assert_array_equal(x.numpy()[..., 0], np.float32([0.1, 0.7, 0.3, 0.9])[label])
    # a spread: each label's voxels have the drawn mean and std
    gen = SynthGenerator({**PLAIN, "synth_std": [0.02, 0.1]})
    params = with_means(gen.sample([3, 1]), [0.4, 0.5, 0.6, 0.7])
    x = gen.apply(params, label)[0].numpy()[..., 0]
    for v in range(4):
        values = x[label == v]
        assert abs(values.mean() - [0.4, 0.5, 0.6, 0.7][v]) < 0.01
        assert abs(values.std() / float(params["stds"][v]) - 1) < 0.1


def test_groups_share_a_draw_and_the_background_can_be_dark():
    label = nested_boxes()
    gen = SynthGenerator({**PLAIN, "synth_groups": [[1, 3]], "synth_dark_background_p": 1.0})
    for seed in range(3):
        x = gen(label, seed=(seed, 0))[0].numpy()[..., 0]
        assert (x[label == 0] == 0).all()
        assert x[label == 1][0] == x[label == 3][0] != x[label == 2][0]
    with pytest.raises(ConfigError, match="one group"):
        SynthGenerator({**PLAIN, "synth_groups": [[1, 2], [2, 3]]})
    with pytest.raises(ConfigError, match="synth = true"):
        SynthGenerator({"preset": "brats"})


def test_image_and_target_stay_aligned_after_a_warp():
    label = quadrants(28)
    cfg = {**PLAIN, "synth_std": [0.01, 0.05], "rotation_deg": [20, 20, 20],
           "scale": [0.8, 1.2], "elastic_mm": 3.0, "elastic_points": 5}
    gen = SynthGenerator(cfg, spacing=(1.0, 1.0, 1.5))
    centre = tf.constant([13.5, 13.5, 14.0])
    for seed in range(3):
        params = gen.sample([seed, 4])
        assert bool(params["affine"]) and bool(params["elastic"])
        x, lab = gen.apply(params, label, (16, 16, 12), centre)
        x, lab = x.numpy()[..., 0], lab.numpy()
        assert len(np.unique(lab)) >= 4  # the warp turned and mixed the regions
        for v in np.unique(lab):
            assert abs(x[lab == v].mean() - float(params["means"][v])) < 0.02
        # the label patch is the one Augment3D moves with an image
        _, same = gen.augment.apply(params, np.zeros(label.shape + (1,), np.float32), label,
                                    (16, 16, 12), centre)
        np.testing.assert_array_equal(lab, same.numpy())


def test_contrast_order_varies_between_samples():
    label = nested_boxes(16)
    gen = SynthGenerator({"synth": True, "synth_std": [0.0, 0.0]})  # percentile normalised
    inner_brighter = []
    for seed in range(60):
        x = gen(label, (seed, 7))[0].numpy()[..., 0]
        assert x.min() == 0.0 and x.max() == 1.0
        inner_brighter.append(x[label == 2].mean() > x[label == 1].mean())
    assert 0.3 < np.mean(inner_brighter) < 0.7


def edge_widths(x):
    """Per axis: voxels on the line through the centre between 2% and 98% of its maximum."""
    c = [n // 2 for n in x.shape]
    lines = [x[:, c[1], c[2]], x[c[0], :, c[2]], x[c[0], c[1], :]]
    return [int(((line > 0.02 * line.max()) & (line < 0.98 * line.max())).sum())
            for line in lines]


def test_thick_slices_blur_only_along_their_axis():
    label = np.zeros((24, 24, 24), np.uint8)
    label[6:18, 6:18, 6:18] = 1
    gen = SynthGenerator({**PLAIN, "synth_slice_p": 1.0, "synth_slice_mm": [5.0, 5.0]})
    base = with_means(gen.sample([0, 0]), [0.0, 1.0])
    for axis in range(3):
        params = {**base, "slice_axis": tf.constant(axis), "slice_phase": tf.constant(0.3)}
        widths = edge_widths(gen.apply(params, label)[0].numpy()[..., 0])
        assert widths[axis] >= 4
        assert [w for a, w in enumerate(widths) if a != axis] == [0, 0]
    # slices as thin as the voxels, starting on a voxel, change nothing
    image = tf.constant(np.random.default_rng(0).random((8, 9, 10, 1), np.float32))
    same = it.thick_slices(image, 1, 1.5, (1.5, 1.5, 1.5), 0.0)
    np.testing.assert_allclose(same.numpy(), image.numpy(), atol=1e-6)
    m = it.slice_matrix(12, 3.0, 1.0, 1.2).numpy()
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-5)
    # voxel 4 lies on the slice at 4: it reads that slice's profile, centred on voxel 4
    g = np.exp(-0.5 * ((np.arange(12) - 4) / 1.2) ** 2)
    np.testing.assert_allclose(m[4], g / g.sum(), atol=1e-5)


def test_skull_stripping_zeroes_the_head_in_image_and_target():
    label = nested_boxes()  # 1 scalp, 2 skull, 3 brain
    cfg = {"synth": True, "synth_mean": [0.2, 1.0], "synth_std": [0.0, 0.05],
           "synth_strip_labels": [1, 2],
           "synth_strip_p": 1.0, "synth_normalise": "zscore_nonzero"}
    x, lab = SynthGenerator(cfg)(label, seed=(2, 2))
    x, lab = x.numpy()[..., 0], lab.numpy()
    np.testing.assert_array_equal(lab, np.where(label == 3, 3, 0))
    assert (x[label != 3] == 0).all() and (x[label == 3] != 0).all()
    assert abs(x[label == 3].mean()) < 1e-5  # z-scored over the brain


def test_field_of_view_crop_zeroes_slabs_at_the_borders():
    label = quadrants()
    gen = SynthGenerator({**PLAIN, "synth_mean": [0.2, 1.0], "synth_crop_p": 1.0,
                          "synth_crop_fraction": 0.25})
    params = gen.sample([1, 1])
    fraction = np.array([[0.1, 0.0], [0.2, 0.05], [0.0, 0.24]], np.float32)
    x, lab = gen.apply({**params, "crop_fraction": tf.constant(fraction)}, label)
    kept = np.zeros(label.shape, bool)
    kept[2:24, 4:23, 0:19] = True  # floor(fraction * 24) voxels cut at each end
    np.testing.assert_array_equal(lab.numpy(), np.where(kept, label, 0))
    np.testing.assert_array_equal(x.numpy()[..., 0] > 0, kept)


def test_normalisations_match_the_preprocessing_schemes():
    rng = np.random.default_rng(1)
    image = rng.gamma(2.0, size=(12, 10, 8, 1)).astype(np.float32)
    image[:3] = 0.0
    np.testing.assert_allclose(it.rescale_percentiles(tf.constant(image)).numpy(),
                               percentile(image), atol=1e-5)
    np.testing.assert_allclose(it.zscore_nonzero(tf.constant(image)).numpy(),
                               zscore_nonzero(image), atol=1e-5)
    zeros = tf.zeros((40, 40, 40, 1))
    for signal in (0.0, 0.3):  # Rician: E[r^2] = signal^2 + 2 std^2; r >= 0
        r = it.add_rician_noise(zeros + signal, 0.1, 3).numpy()
        assert r.min() >= 0 and abs(np.mean(r**2) / (signal**2 + 0.02) - 1) < 0.01
    bright = it.add_rician_noise(zeros + 5.0, 0.1, 3).numpy()  # about Gaussian far from 0
    assert abs(bright.mean() - 5.0) < 0.005 and abs(bright.std() - 0.1) < 0.005


def subjects(n=2):
    return [(np.zeros((24, 24, 24), np.float32), quadrants()) for _ in range(n)]


def test_patch_dataset_generates_images_with_looked_up_targets():
    lookup = [[0], [1, 2], [3, 4]]  # class order, as the [classes] groups give them
    ds = patch_dataset(subjects(), PatchSampler((24, 24, 24)), num_classes=3, augment=PLAIN,
                       label_lookup=lookup, batch_size=2, shuffle=False)
    x, y = next(iter(ds))
    assert x.shape == (2, 24, 24, 24, 1) and y.shape == (2, 24, 24, 24, 3)
    np.testing.assert_array_equal(y.numpy().sum(-1), 1.0)
    np.testing.assert_array_equal(y.numpy()[0].argmax(-1), lookup_table(lookup)[quadrants()])
    for xi in x.numpy()[..., 0]:  # one value per fine label
        assert all(len(np.unique(xi[quadrants() == v])) == 1 for v in range(5))
    # the synth preset with every artefact, patches warped out of the subject
    cfg = {"preset": "synth", "synth_slice_p": 1.0, "synth_crop_p": 1.0, "synth_rician_p": 0.5}
    ds = patch_dataset(subjects(), PatchSampler((16, 16, 8), "foreground", 2), num_classes=3,
                       augment=cfg, label_lookup=lookup, batch_size=4, spacing=(1.5, 1.5, 2.0))
    x, y = next(iter(ds))
    assert x.shape == (4, 16, 16, 8, 1) and y.shape == (4, 16, 16, 8, 3)
    np.testing.assert_array_equal(y.numpy().sum(-1), 1.0)
    assert np.isfinite(x.numpy()).all() and x.numpy().min() >= 0 and x.numpy().max() <= 1


def test_real_images_with_fine_labels_are_looked_up_for_the_sampler_and_the_target():
    rng = np.random.default_rng(2)
    image = rng.normal(size=(24, 24, 24)).astype(np.float32)
    label = np.ones((24, 24, 24), np.uint8)  # fine label 1 (scalp, say) almost everywhere
    label[3:6, 16:19, 10:13] = 4  # a small structure of class 1
    sampler = PatchSampler((6, 6, 6), "foreground", patches_per_subject=4, foreground_p=1.0)
    ds = patch_dataset([(image, label)], sampler, num_classes=2, label_lookup={0: 0, 1: 0, 4: 1},
                       batch_size=4, shuffle=False)
    x, y = next(iter(ds))
    y = y.numpy()
    assert (y[:, 3, 3, 3, 1] == 1).all()  # every patch is centred on the looked-up class 1
    for xi, yi in zip(x.numpy()[..., 0], y):  # the image is read, not generated
        corner = np.argwhere(np.isclose(image, xi[0, 0, 0]))[0]
        box = tuple(slice(c, c + 6) for c in corner)
        np.testing.assert_array_equal(xi, image[box])
        np.testing.assert_array_equal(yi.argmax(-1), label[box] == 4)


def test_same_seed_same_batch_other_seed_other_batch():
    def first(seed):
        # the compiled path is the one above; this one is traced without XLA (no compile)
        ds = patch_dataset(subjects(), PatchSampler((12, 12, 12), patches_per_subject=2),
                           num_classes=5, augment={"preset": "synth", "jit": False},
                           batch_size=4, seed=seed)
        return [t.numpy() for t in next(iter(ds))]

    a, b, c = first(5), first(5), first(6)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])


def test_lookup_errors_name_the_subject_and_the_fix():
    with pytest.raises(tf.errors.OpError, match="values \\[3, 4\\] are not in label_lookup"):
        list(patch_dataset(subjects(1), PatchSampler((8, 8, 8)), num_classes=2,
                           label_lookup=[0, [1, 2]]))
    with pytest.raises(ConfigError, match="num_classes"):
        patch_dataset(subjects(1), PatchSampler((8, 8, 8)), num_classes=2,
                      label_lookup={"0": 0, "1": 1, "2": 2, "3": 2, "4": 2})
    with pytest.raises(ConfigError, match="each in one class"):
        lookup_table([[0, 1], [1, 2]])
    np.testing.assert_array_equal(lookup_table([[0, 7], [1, 2], 3])[[0, 1, 2, 3, 7, 8]],
                                  [0, 1, 1, 2, 0, -1])
    with pytest.raises(ConfigError, match="patch_dataset"):
        volume_dataset([np.zeros((8, 8, 8), np.float32)], [1.0], augment="synth")
    assert Augment3D("synth").config["synth"]  # the generator's keys are 3D config keys

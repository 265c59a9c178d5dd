"""Predictions land on the input file's own grid: shape, affine and voxel order.

Every test runs load -> preprocess -> an identity "model" (probabilities =
one-hot of the preprocessed label) -> labels_on_grid, and compares with the
label map as stored in the file. Without resampling the result must be equal
voxel for voxel; with resampling to another spacing it must have a high Dice.
"""

import contextlib
from importlib.resources import files

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation

from brain_tf.errors import DataError
from brain_tf.evaluation.segmentation import dice
from brain_tf.io import Grid, Volume, load_label, load_modalities, load_volume, save_volume
from brain_tf.preprocess import labels_on_grid, preprocess_subject, restrict_to_mask

NIB_DATA = files("nibabel") / "tests" / "data"
LABELS = [0, 1, 2, 3]
SHAPE = (20, 24, 16)
SPACING = 1.5

#: Lowest Dice of a label after preprocessing onto this spacing (mm) and back: the label
#: goes onto the preprocessed grid by nearest neighbour, the probabilities come back
#: linearly. 2 mm loses detail on the way there (measured 0.82-0.94 on these phantoms),
#: 1 mm keeps it (measured 0.996-1.0).
DICE_AFTER = {2.0: 0.8, 1.0: 0.99}


def _phantom(points: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Labels 1-3 at world points (..., 3) in mm: an ellipsoid, a box, a small ball."""
    x, y, z = np.moveaxis(np.asarray(points, dtype=float) / scale, -1, 0)
    out = np.zeros(x.shape, np.uint8)
    out[((x + 5) / 8) ** 2 + ((y - 3) / 10) ** 2 + ((z + 1) / 7) ** 2 <= 1] = 1
    out[(np.abs(x - 7) <= 5) & (np.abs(y + 7) <= 5) & (np.abs(z - 2) <= 6)] = 2
    out[(x + 8) ** 2 + (y + 10) ** 2 + (z - 5) ** 2 <= 5.5**2] = 3
    return out


def _labels_on(affine: np.ndarray, shape, scale: float = 1.0) -> np.ndarray:
    """The phantom sampled at the voxel centres of a grid."""
    ijk = np.indices(shape).reshape(3, -1).T
    return _phantom(ijk @ affine[:3, :3].T + affine[:3, 3], scale).reshape(shape)


def _centred(rotation_and_zooms: np.ndarray, shape) -> np.ndarray:
    """Affine with the given 3x3 part whose grid centre is the world origin."""
    affine = np.eye(4)
    affine[:3, :3] = rotation_and_zooms
    affine[:3, 3] = -rotation_and_zooms @ ((np.asarray(shape) - 1) / 2)
    return affine


BASE_AFFINE = _centred(np.diag([SPACING] * 3), SHAPE)


def _write(tmp_path, labels: np.ndarray, affine: np.ndarray, name: str = "scan"):
    """A label file and an image file (intensity from the labels) on one grid."""
    label_path, image_path = tmp_path / f"{name}_seg.nii.gz", tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(labels.astype(np.uint8), affine), str(label_path))
    nib.save(nib.Nifti1Image(labels.astype(np.float32) * 100 + 20, affine), str(image_path))
    return image_path, label_path


def _one_hot(label: np.ndarray, classes: int = len(LABELS)) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[label]


def _round_trip(image_path, label_path, config, **kwargs):
    """Labels on the input's grid from the one-hot of the preprocessed label."""
    image = load_volume(image_path)
    label = load_label(label_path, values=LABELS)
    pre = preprocess_subject(image, label, None, config, LABELS)
    out = labels_on_grid(_one_hot(pre.label), pre.affine, image.file_grid, **kwargs)
    return out, image.file_grid, pre


def _stored(path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def _world_centroids(labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return np.array([affine[:3, :3] @ np.argwhere(labels == c).mean(0) + affine[:3, 3]
                     for c in LABELS[1:]])


def _dices(out: np.ndarray, reference: np.ndarray) -> list[float]:
    return [dice(out == c, reference == c) for c in LABELS[1:]]


FLIPS = [np.array([[0, fx], [1, fy], [2, fz]]) for fx in (1, -1) for fy in (1, -1)
         for fz in (1, -1)]
# sagittal acquisition order: voxel axes y, z, x (nibabel ornt: RAS axis i -> stored axis)
PERMUTATIONS = [np.array([[2, 1], [0, 1], [1, 1]]), np.array([[2, -1], [0, -1], [1, 1]])]
CODES = ["RAS", "RAI", "RPS", "RPI", "LAS", "LAI", "LPS", "LPI", "ASR", "PSL"]


@pytest.mark.parametrize("ornt, code", zip(FLIPS + PERMUTATIONS, CODES), ids=CODES)
def test_reoriented_file_comes_back_on_its_own_grid(tmp_path, ornt, code):
    base = _labels_on(BASE_AFFINE, SHAPE)
    stored = nib.Nifti1Image(base, BASE_AFFINE).as_reoriented(ornt)
    image_path, label_path = _write(tmp_path, np.asarray(stored.dataobj), stored.affine)
    truth, affine = _stored(label_path)
    assert "".join(nib.aff2axcodes(affine)) == code

    out, grid, pre = _round_trip(image_path, label_path, {})
    assert out.shape == truth.shape and grid.shape == truth.shape
    np.testing.assert_allclose(grid.affine, affine)
    np.testing.assert_array_equal(out, truth)
    np.testing.assert_allclose(_world_centroids(out, grid.affine),
                               _world_centroids(base, BASE_AFFINE), atol=1e-9)
    np.testing.assert_array_equal(grid.to_file(pre.label), truth)

    base_path = _write(tmp_path, base, BASE_AFFINE, "ras")
    for spacing, shape in ((2.0, (15, 18, 12)), (1.0, (30, 36, 24))):
        config = {"spacing": spacing, "order": 1}
        resampled, grid, pre = _round_trip(image_path, label_path, config)
        assert pre.label.shape == shape and resampled.shape == truth.shape
        assert min(_dices(resampled, truth)) > DICE_AFTER[spacing]
        # the same world labels whatever the stored voxel order
        from_ras, _, _ = _round_trip(*base_path, config)
        np.testing.assert_array_equal(resampled, apply_orientation(from_ras, ornt))


def _rotation(degrees: float, axis: int) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    rot = np.eye(3)
    rot[i, i], rot[i, j], rot[j, i], rot[j, j] = c, -s, s, c
    return rot


def test_oblique_affine_rotated_20_degrees(tmp_path):
    # stored L-A-S, rotated 20 degrees about y and then 20 degrees about x
    rotation = _rotation(20, 0) @ _rotation(20, 1) @ np.diag([-SPACING, SPACING, SPACING])
    affine = _centred(rotation, SHAPE)
    image_path, label_path = _write(tmp_path, _labels_on(affine, SHAPE), affine)
    truth, _ = _stored(label_path)
    loaded = load_volume(image_path)
    assert not np.allclose(loaded.affine[:3, :3], np.diag(np.diag(loaded.affine[:3, :3])))

    out, grid, _ = _round_trip(image_path, label_path, {})
    np.testing.assert_allclose(grid.affine, affine, atol=1e-6)  # stored as float32
    np.testing.assert_array_equal(out, truth)

    for spacing in DICE_AFTER:
        resampled, _, pre = _round_trip(image_path, label_path, {"spacing": spacing, "order": 1})
        assert min(_dices(resampled, truth)) > DICE_AFTER[spacing]
    one_row_at_a_time = labels_on_grid(_one_hot(pre.label), pre.affine, grid, slab_voxels=1)
    np.testing.assert_array_equal(one_row_at_a_time, resampled)


def test_anisotropic_1x1x5_mm(tmp_path):
    shape = (40, 40, 8)
    affine = _centred(np.diag([-1.0, -1.0, 5.0]), shape)  # L-P-S, 5 mm slices
    image_path, label_path = _write(tmp_path, _labels_on(affine, shape, scale=1.25), affine)
    truth, _ = _stored(label_path)
    for spacing, size in ((2.0, 20), (1.0, 40)):
        out, grid, pre = _round_trip(image_path, label_path, {"spacing": spacing, "order": 1})
        assert pre.label.shape == (size,) * 3 and out.shape == shape
        np.testing.assert_allclose(grid.affine, affine)
        assert min(_dices(out, truth)) > DICE_AFTER[spacing]


def _sigmoid_labels(probabilities: np.ndarray) -> np.ndarray:
    """Channels 1..K-1 without background: the most probable above 0.5, else 0."""
    best = np.argmax(probabilities, axis=-1) + 1
    return np.where(probabilities.max(axis=-1) > 0.5, best, 0).astype(np.uint8)


@pytest.mark.parametrize("crop, kept", [
    # x: 21 -> 12 starts at RAS voxel 4, i.e. stored (L-A-S) voxels 20-15 .. 20-4 = 5..16;
    # y: 24 -> 30 pads (all kept); z: 16 -> 10 starts at voxel 3: 3..12
    ([12, 30, 10], (slice(5, 17), slice(None), slice(3, 13))),
    ([25, 30, 20], (slice(None),) * 3),  # padding only
])
def test_crop_and_pad_map_back_exactly(tmp_path, crop, kept):
    shape = (21, 24, 16)
    affine = _centred(np.diag([-SPACING, SPACING, SPACING]), shape)
    image_path, label_path = _write(tmp_path, _labels_on(affine, shape), affine)
    truth, _ = _stored(label_path)
    expected = np.zeros_like(truth)
    expected[kept] = truth[kept]
    assert expected.sum() > 0

    out, grid, pre = _round_trip(image_path, label_path, {"crop": crop})
    assert pre.label.shape == tuple(crop)
    np.testing.assert_array_equal(out, expected)
    one_row_at_a_time = labels_on_grid(_one_hot(pre.label), pre.affine, grid, slab_voxels=1)
    np.testing.assert_array_equal(one_row_at_a_time, expected)
    sigmoid = labels_on_grid(_one_hot(pre.label)[..., 1:], pre.affine, grid,
                             to_labels=_sigmoid_labels, background_channel=None)
    np.testing.assert_array_equal(sigmoid, expected)


def test_partial_field_of_view_after_resampling(tmp_path):
    shape = (21, 24, 16)
    affine = _centred(_rotation(20, 2) @ np.diag([-SPACING, SPACING, SPACING]), shape)
    image_path, label_path = _write(tmp_path, _labels_on(affine, shape), affine)
    truth, _ = _stored(label_path)
    config = {"spacing": 2.0, "shape": [10, 12, 8], "crop": [8, 12, 8], "order": 1}
    out, grid, pre = _round_trip(image_path, label_path, config)
    # where each stored voxel centre falls on the preprocessed grid
    ijk = np.indices(shape).reshape(3, -1).T
    matrix = np.linalg.inv(pre.affine) @ grid.affine
    at = (ijk @ matrix[:3, :3].T + matrix[:3, 3]).reshape(shape + (3,))
    size = np.asarray(pre.label.shape)
    outside = np.any((at < -0.5 - 1e-6) | (at > size - 0.5 + 1e-6), axis=-1)
    inside = np.all((at >= 0) & (at <= size - 1), axis=-1)
    assert outside.sum() > 0.5 * outside.size and inside.sum() > 0.1 * inside.size
    assert np.all(out[outside] == 0)
    assert min(dice(out[inside] == c, truth[inside] == c) for c in LABELS[1:]) > DICE_AFTER[2.0]
    sigmoid = labels_on_grid(_one_hot(pre.label)[..., 1:], pre.affine, grid,
                             to_labels=_sigmoid_labels, background_channel=None)
    assert np.all(sigmoid[outside] == 0)


def _classes(array: np.ndarray) -> np.ndarray:
    """Three intensity classes (voxel by voxel, so any voxel order gives the same map)."""
    values = np.asarray(array, dtype=np.float64)
    return np.digitize(values, np.quantile(values, [0.4, 0.8])).astype(np.uint8)


REAL_FILES = ["anatomical.nii", "reoriented_anat_moved.nii", "resampled_anat_moved.nii",
              "standard.nii.gz", "functional.nii", "example4d.nii.gz",
              "example_nifti2.nii.gz", "test.mgz"]


@pytest.mark.parametrize("name", REAL_FILES)
def test_real_files_round_trip_on_their_own_grid(tmp_path, name):
    path = NIB_DATA / name
    stored = nib.load(str(path))
    data = np.asarray(stored.dataobj)
    finite = bool(np.all(np.isfinite(data)))
    truth = _classes(np.nan_to_num(data if data.ndim == 3 else data[..., 0]))
    with contextlib.nullcontext() if finite else pytest.warns(UserWarning, match="NaN/Inf"):
        volume = load_modalities([path], nonfinite="raise" if finite else "zero")
    grid = volume.file_grid
    assert grid.shape == truth.shape
    np.testing.assert_allclose(grid.affine, stored.affine)
    label = volume.with_array(_classes(volume.array[..., 0]))
    # no resampling: exact; upsampling by 2 puts every stored voxel centre midway
    # between two preprocessed voxels that both took its label: exact as well
    for config in ({}, {"spacing": [s / 2 for s in volume.spacing], "order": 1}):
        pre = preprocess_subject(volume, label, None, config, [0, 1, 2])
        out = labels_on_grid(_one_hot(pre.label, 3), pre.affine, grid)
        np.testing.assert_array_equal(out, truth)
    written = save_volume(out, tmp_path / "seg.nii.gz", affine=grid.affine, header=grid.header)
    again = nib.load(str(written))
    np.testing.assert_array_equal(np.asarray(again.dataobj), truth)
    np.testing.assert_allclose(again.affine, stored.affine, atol=1e-5)
    assert nib.aff2axcodes(again.affine) == nib.aff2axcodes(stored.affine)
    if isinstance(stored.header, nib.Nifti1Header):
        assert int(again.header["sform_code"]) == (int(stored.header["sform_code"]) or 1)
        assert int(again.header["qform_code"]) == (int(stored.header["qform_code"]) or 1)


def test_scaled_big_endian_file(tmp_path):
    source = nib.load(str(NIB_DATA / "anatomical.nii"))
    values = np.asarray(source.dataobj).astype(np.float32) * 40.5 + 1000.25  # beyond int16
    header = source.header.copy()  # big-endian, L-A-S
    header.set_data_dtype(np.int16)
    path = tmp_path / "scaled.nii"
    nib.save(nib.Nifti1Image(values, source.affine, header), str(path))
    stored = nib.load(str(path))
    assert stored.header.endianness == ">" and stored.dataobj.slope != 1
    volume = load_volume(path)
    truth = _classes(stored.get_fdata())
    pre = preprocess_subject(volume, volume.with_array(_classes(volume.array)), None, {}, [0, 1, 2])
    out = labels_on_grid(_one_hot(pre.label, 3), pre.affine, volume.file_grid)
    written = save_volume(out, tmp_path / "seg.nii", affine=volume.file_grid.affine,
                          header=volume.file_grid.header)
    again = nib.load(str(written))
    assert again.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(again.dataobj), truth)


def test_save_keeps_the_input_codes(tmp_path):
    affine = BASE_AFFINE
    img = nib.Nifti1Image(np.zeros(SHAPE, np.float32), affine)
    img.set_sform(affine, code=4)  # MNI space
    img.set_qform(affine, code=0)
    nib.save(img, str(tmp_path / "mni.nii.gz"))
    grid = load_volume(tmp_path / "mni.nii.gz").file_grid
    out = nib.load(str(save_volume(np.zeros(SHAPE, np.uint8), tmp_path / "a.nii.gz",
                                   affine=grid.affine, header=grid.header)))
    assert (int(out.header["sform_code"]), int(out.header["qform_code"])) == (4, 1)
    plain = nib.load(str(save_volume(np.zeros(SHAPE, np.uint8), tmp_path / "b.nii.gz",
                                     affine=affine)))
    assert (int(plain.header["sform_code"]), int(plain.header["qform_code"])) == (1, 1)


def test_mask_restricts_the_labels(tmp_path):
    shape = (10, 12, 8)
    affine = _centred(np.diag([-2.0, 2.0, 2.0]), shape)  # L-A-S
    labels = np.zeros(shape, np.uint8)
    labels[2:8, 3:9, 1:7] = 1  # 6 x 6 x 6 = 216 voxels
    mask = np.zeros(shape, np.uint8)
    mask[:5] = 1  # keeps stored x 2, 3, 4 of the labels: 3 x 6 x 6 = 108 voxels
    image_path, label_path = _write(tmp_path, labels, affine)
    nib.save(nib.Nifti1Image(mask, affine), str(tmp_path / "mask.nii.gz"))
    out, grid, _ = _round_trip(image_path, label_path, {})
    brain = load_volume(tmp_path / "mask.nii.gz", ndim=3)
    restricted = restrict_to_mask(out, brain, grid)
    assert int((out > 0).sum()) == 216
    assert int((restricted > 0).sum()) == 108
    assert int((restricted != out).sum()) == 108
    assert not restricted[5:].any()
    np.testing.assert_array_equal(restricted[:5], labels[:5])

    nib.save(nib.Nifti1Image(np.ones((10, 12, 9), np.uint8), affine), str(tmp_path / "m2.nii"))
    with pytest.raises(DataError, match=r"m2.nii: .*\(10, 12, 9\).*\(10, 12, 8\)"):
        restrict_to_mask(out, load_volume(tmp_path / "m2.nii"), grid)
    moved = affine.copy()
    moved[0, 3] += 2.0
    nib.save(nib.Nifti1Image(mask, moved), str(tmp_path / "m3.nii"))
    with pytest.raises(DataError, match=r"m3.nii: brain mask is not on the grid"):
        restrict_to_mask(out, load_volume(tmp_path / "m3.nii"), grid)


def test_volume_keeps_its_file_grid():
    volume = load_volume(NIB_DATA / "anatomical.nii")
    source = volume.source
    assert isinstance(source, Grid) and source.shape == (33, 41, 25)
    np.testing.assert_array_equal(source.to_loaded, [[0, -1], [1, 1], [2, 1]])
    assert volume.with_array(volume.array * 2).file_grid is source
    assert load_volume(NIB_DATA / "anatomical.nii", canonical=False).file_grid.to_loaded.tolist() \
        == [[0, 1], [1, 1], [2, 1]]
    memory = Volume(np.zeros((4, 5, 6), np.float32), np.eye(4))
    assert memory.file_grid.shape == (4, 5, 6) and memory.source is None

"""NIfTI and 2D image I/O: real files written by other tools, round trips, errors."""

import gzip
from importlib.resources import files

import nibabel as nib
import numpy as np
import pytest

from brain_tf.errors import DataError
from brain_tf.io import (Volume, atomic_path, load_image, load_label, load_modalities,
                         load_volume, save_image, save_volume)

NIB_DATA = files("nibabel") / "tests" / "data"


def test_loads_las_file_as_ras_with_data_flipped():
    path = NIB_DATA / "anatomical.nii"
    raw = nib.load(str(path))
    assert nib.aff2axcodes(raw.affine) == ("L", "A", "S")
    vol = load_volume(path)
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(vol.array, np.asarray(raw.dataobj, np.float32)[::-1])
    assert vol.spacing == pytest.approx((2.0, 2.0, 2.0))
    # the same voxel keeps its world coordinate
    ijk = np.array([3, 5, 7, 1.0])
    flipped = np.array([raw.shape[0] - 1 - 3, 5, 7, 1.0])
    np.testing.assert_allclose(raw.affine @ ijk, vol.affine @ flipped)


def test_canonical_false_keeps_stored_orientation():
    vol = load_volume(NIB_DATA / "anatomical.nii", canonical=False)
    assert nib.aff2axcodes(vol.affine) == ("L", "A", "S")


@pytest.mark.parametrize("name", ["example4d.nii.gz", "example_nifti2.nii.gz"])
def test_loads_4d_and_nifti2(name):
    vol = load_volume(NIB_DATA / name, ndim=4)
    raw = nib.load(str(NIB_DATA / name))
    assert vol.shape == raw.shape
    assert vol.array.dtype == np.float32
    assert vol.spacing == pytest.approx(tuple(float(z) for z in raw.header.get_zooms()[:3]))


def test_anisotropic_spacing_from_affine():
    vol = load_volume(NIB_DATA / "standard.nii.gz")
    assert vol.spacing == pytest.approx((1.0, 3.0, 2.0))


def test_wrong_dimensions_names_file():
    with pytest.raises(DataError, match=r"example4d.nii.gz: has 4 dimensions .* expected 3"):
        load_volume(NIB_DATA / "example4d.nii.gz", ndim=3)


def test_round_trip_keeps_data_dtype_class_and_affine(tmp_path, rng):
    affine = np.array([[-1.5, 0, 0, 90], [0, 1.5, 0, -120], [0, 0, 3.0, -60], [0, 0, 0, 1]])
    image = rng.normal(size=(7, 8, 5)).astype(np.float32)
    path = save_volume(image, tmp_path / "img.nii.gz", affine=affine)
    back = load_volume(path, canonical=False)
    np.testing.assert_array_equal(back.array, image)
    np.testing.assert_allclose(back.affine, affine)
    assert nib.load(str(path)).get_data_dtype() == np.float32

    labels = rng.integers(0, 4, size=(7, 8, 5))
    lpath = save_volume(labels, tmp_path / "lab.nii.gz", affine=affine)
    assert nib.load(str(lpath)).get_data_dtype() == np.uint8
    lab = load_label(lpath, values=[0, 1, 2, 3], canonical=False)
    assert lab.array.dtype.kind == "u"
    np.testing.assert_array_equal(lab.array, labels)


def test_save_volume_object_keeps_affine_and_canonical_reload(tmp_path):
    vol = load_volume(NIB_DATA / "anatomical.nii")
    out = save_volume(vol, tmp_path / "copy.nii")
    again = load_volume(out)
    np.testing.assert_array_equal(again.array, vol.array)
    np.testing.assert_allclose(again.affine, vol.affine)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope.nii.gz: file not found"):
        load_volume(tmp_path / "nope.nii.gz")


def test_not_a_nifti(tmp_path):
    bad = tmp_path / "notes.nii"
    bad.write_text("this is not an image")
    with pytest.raises(DataError, match=r"notes.nii: (not a NIfTI|corrupt)"):
        load_volume(bad)


def test_truncated_gzip(tmp_path, rng):
    good = save_volume(rng.normal(size=(20, 20, 20)).astype(np.float32),
                       tmp_path / "good.nii.gz", affine=np.eye(4))
    data = good.read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.nii.gz: corrupt or truncated"):
        load_volume(bad)


def test_nan_voxels_rejected_or_zeroed(tmp_path):
    array = np.ones((4, 4, 4), np.float32)
    array[0, 0, 0] = np.nan
    array[1, 1, 1] = np.inf
    path = save_volume(array, tmp_path / "nan.nii.gz", affine=np.eye(4))
    with pytest.raises(DataError, match=r"nan.nii.gz: 2 NaN/Inf voxels"):
        load_volume(path)
    with pytest.warns(UserWarning, match="set 2 NaN/Inf voxels to 0"):
        vol = load_volume(path, nonfinite="zero")
    assert vol.array[0, 0, 0] == 0 and vol.array[1, 1, 1] == 0 and vol.array.sum() == 62


def test_label_outside_declared_set(tmp_path):
    path = save_volume(np.array([[[0, 1], [2, 7]]]), tmp_path / "lab.nii.gz", affine=np.eye(4))
    with pytest.raises(DataError, match=r"lab.nii.gz: label values \[7\] are outside"):
        load_label(path, values=[0, 1, 2, 3])


def test_modalities_stack_and_mismatch(tmp_path, rng):
    a = rng.normal(size=(5, 6, 7)).astype(np.float32)
    b = rng.normal(size=(5, 6, 7)).astype(np.float32)
    pa = save_volume(a, tmp_path / "t1.nii.gz", affine=np.eye(4))
    pb = save_volume(b, tmp_path / "t2.nii.gz", affine=np.eye(4))
    vol = load_modalities([pa, pb])
    assert vol.shape == (5, 6, 7, 2)
    np.testing.assert_array_equal(vol.array[..., 1], b)

    shifted = np.eye(4)
    shifted[0, 3] = 10
    pc = save_volume(b, tmp_path / "moved.nii.gz", affine=shifted)
    with pytest.raises(DataError, match=r"moved.nii.gz: modality affine differs"):
        load_modalities([pa, pc])
    pd_ = save_volume(b[:4], tmp_path / "small.nii.gz", affine=np.eye(4))
    with pytest.raises(DataError, match=r"small.nii.gz: modality shape \(4, 6, 7\) differs"):
        load_modalities([pa, pd_])


def test_label_grid_must_match_image(tmp_path):
    img = Volume(np.zeros((5, 6, 7), np.float32), np.eye(4), path="img.nii.gz")
    lpath = save_volume(np.zeros((5, 6, 8), np.uint8), tmp_path / "lab.nii.gz", affine=np.eye(4))
    with pytest.raises(DataError, match=r"lab.nii.gz: label shape \(5, 6, 8\) differs"):
        load_label(lpath, like=img)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []


def test_2d_image_round_trip_and_errors(tmp_path, rng):
    rgb = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    path = save_image(rgb, tmp_path / "slice.tif")
    np.testing.assert_array_equal(load_image(path), rgb)
    as_float = load_image(path, dtype=np.float32)
    np.testing.assert_allclose(as_float, rgb / 255.0, atol=1e-6)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match=r"broken.png: unreadable or corrupt"):
        load_image(tmp_path / "broken.png")
    with pytest.raises(DataError, match=r"gone.jpg: file not found"):
        load_image(tmp_path / "gone.jpg")


def test_gzip_of_garbage(tmp_path):
    bad = tmp_path / "junk.nii.gz"
    bad.write_bytes(gzip.compress(b"x" * 400))
    with pytest.raises(DataError, match=r"junk.nii.gz"):
        load_volume(bad)

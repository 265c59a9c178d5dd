"""Synthetic phantoms: anatomy, fine labels, contrasts, tumours, biology, realism, and the
written layouts."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from brain_tf.config import load_toml
from brain_tf.data import load_spec
from brain_tf.data.synthetic import (
    LAYOUTS, Phantom, grid_axes, make_subject, render_anatomy, render_phantom, render_slice,
    resolve_grid, sample_anatomy, sample_phantom, synthesize)
from brain_tf.data.synthetic.shapes import ellipsoid
from brain_tf.data.synthetic.fields import Field, random_field
from brain_tf.data.synthetic.geometry import reorient
from brain_tf.data.synthetic.labels import HIPPOCAMPUS, LABELS, MASK, TISSUE, TUMOUR_LABELS
from brain_tf.data.synthetic.realism import cortical_thickness, realism_figures
from brain_tf.data.synthetic.slices import axial_display, plane_axes, to_display
from brain_tf.errors import ConfigError, DataError
from brain_tf.io import load_image, load_volume

FACE = ndimage.generate_binary_structure(3, 1)


def _world_centroid(labels, value, affine):
    ijk = np.argwhere(labels == value).mean(axis=0)
    return affine[:3, :3] @ ijk + affine[:3, 3]


# ------------------------------------------------------------------ building blocks
def test_ellipsoid_distance_is_exact_along_the_axes():
    u = (np.array([10.0, 0, 0, 0], np.float32), np.array([0, 4.0, 0, 0], np.float32),
         np.array([0, 0, 12.0, 0], np.float32))
    d = ellipsoid(u, (0, 0, 0), (5.0, 8.0, 9.0))
    # (10,0,0) is 5 mm outside; (0,4,0) 4 mm inside; (0,0,12) 3 mm outside; the centre
    # is as deep as the shortest semi-axis.
    np.testing.assert_allclose(d, [5.0, -4.0, 3.0, -5.0], atol=1e-5)


def test_field_is_a_cubic_bspline_of_its_lattice():
    values = np.zeros((7, 7, 7), np.float32)
    values[3, 3, 3] = 1.0
    field = Field(values=values, step=2.0, start=-6.0)  # lattice point 3 is at 0 mm
    axes = (np.array([0.0, 2.0, 1.0]), np.array([0.0]), np.array([0.0]))
    out = field.sample(axes)[:, 0, 0]
    # B-spline weights at a lattice point: 1/6, 4/6, 1/6 per axis; halfway: 23/48.
    np.testing.assert_allclose(out, [(4 / 6) ** 3, (1 / 6) * (4 / 6) ** 2,
                                     (23 / 48) * (4 / 6) ** 2], rtol=1e-5)
    slope = field.sample((np.array([1.0]), np.array([0.0]), np.array([0.0])), derivative=0)
    # at x = 1 mm (f = 1/2) the weight of lattice point 3 falls by (3/4 - 2)/2 = -5/8 per
    # step, i.e. -5/16 per mm; y and z sit on the lattice point (weight 4/6 each).
    np.testing.assert_allclose(slope[0, 0, 0], -(5 / 16) * (4 / 6) ** 2, rtol=1e-5)


def test_random_field_has_unit_spread():
    field = random_field(np.random.default_rng(0), 6.0)
    values = field.sample(grid_axes((40, 40, 40), (3.0, 3.0, 3.0)))
    assert 0.8 < values.std() < 1.2
    assert abs(values.mean()) < 0.2


def test_reorient_keeps_world_positions_and_load_volume_undoes_it(tmp_path):
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    affine = np.diag([2.0, 3.0, 4.0, 1.0])
    affine[:3, 3] = [-3, -6, -10]
    stored, stored_affine = reorient(array, affine, "PIR")
    assert stored.shape == (5, 6, 4)
    assert nib.aff2axcodes(stored_affine) == ("P", "I", "R")
    # voxel (i, j, k) of the stored array is RAS voxel (k, 4 - i, 5 - j): same world point.
    i, j, k = 1, 2, 3
    assert stored[i, j, k] == array[k, 4 - i, 5 - j]
    np.testing.assert_allclose(stored_affine @ [i, j, k, 1], affine @ [k, 4 - i, 5 - j, 1])
    from brain_tf.io import save_volume
    save_volume(stored, tmp_path / "x.nii.gz", stored_affine)
    back = load_volume(tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.affine, affine)


def test_cortical_thickness_of_a_slab_by_hand():
    # a 3-voxel GM slab between CSF and WM at 1.5 mm: 4 voxel steps between its sides
    # for every GM voxel, less one voxel: 4.5 mm
    tissue = np.zeros((12, 12, 12), np.uint8)
    tissue[:, :, :4] = 1
    tissue[:, :, 4:7] = 2
    tissue[:, :, 7:] = 3
    assert cortical_thickness(tissue, (1.5, 1.5, 1.5)) == pytest.approx(4.5)


def test_label_lookups_cover_every_label():
    assert list(LABELS.values()) == list(range(len(LABELS)))
    assert TISSUE[LABELS["cerebral_cortex"]] == 2 and TISSUE[LABELS["brainstem"]] == 3
    assert TISSUE[LABELS["lateral_ventricles"]] == 1 and TISSUE[LABELS["dura"]] == 0
    assert MASK[LABELS["extracerebral_csf"]] and not MASK[LABELS["skull"]]
    assert HIPPOCAMPUS[LABELS["right_hippocampus"]] == 1
    assert HIPPOCAMPUS[LABELS["left_hippocampus"]] == 2
    assert HIPPOCAMPUS.sum() == 3


def test_display_orientation_by_hand():
    vol = (10 * np.arange(3)[:, None] + np.arange(4)[None, :]).astype(float)[:, :, None]
    img = axial_display(vol, 0)
    # rows run anterior -> posterior (y descending), columns right -> left (x descending)
    assert img.shape == (4, 3)
    assert img[0, 0] == vol[2, 3, 0] == 23 and img[3, 2] == vol[0, 0, 0] == 0
    np.testing.assert_array_equal(to_display(vol), img)
    axes = plane_axes("SAG", 5.0, (6, 8), 80.0)
    assert [len(a) for a in axes] == [1, 8, 6] and axes[0][0] == 5.0
    assert np.diff(axes[1]).mean() == pytest.approx(10.0)


# ------------------------------------------------------------------ one subject
@pytest.fixture(scope="module")
def healthy():
    return make_subject(np.random.default_rng(1), (64, 72, 64), 3.0, age=45, sex="F",
                        modalities=("T1", "T1gd", "T2", "FLAIR", "DWI"))


def test_labels_fractions_and_mask(healthy):
    s = healthy
    assert set(np.unique(s.tissue)) == {0, 1, 2, 3}
    assert set(np.unique(s.hippocampus)) == {0, 1, 2}
    np.testing.assert_array_equal(s.mask, s.tissue > 0)
    assert not s.tumour.any()
    f = s.tissue_fractions()
    assert 0.08 < f["csf"] < 0.35 and 0.30 < f["gm"] < 0.60 and 0.20 < f["wm"] < 0.50
    assert 900 < s.brain_volume_ml() < 1700
    assert s.spacing == (3.0, 3.0, 3.0) and s.shape == (64, 72, 64)
    # the head (scalp, skull, face) lies outside the brain: full-head T1 is bright there
    t1 = s.images["T1"]
    assert t1[~s.mask].max() > 0.8 * np.percentile(t1[s.tissue == 3], 50)


def test_right_hippocampus_is_at_larger_world_x(healthy):
    right = _world_centroid(healthy.hippocampus, 1, healthy.affine)
    left = _world_centroid(healthy.hippocampus, 2, healthy.affine)
    assert right[0] - left[0] > 35  # about 54 mm apart
    assert abs(right[2] - left[2]) < 6
    for label in (1, 2):  # 2.5-5 ml each
        assert 2.5 < (healthy.hippocampus == label).sum() * 27 / 1000 < 5.0


def test_contrast_order_inside_tissue(healthy):
    # interior voxels (all face neighbours alike): at 3 mm thin CSF and cortex are
    # partial-volume mixtures
    interior = [ndimage.binary_erosion(healthy.tissue == t, FACE) for t in (1, 2, 3)]
    mean = {m: [healthy.images[m][inside].mean() for inside in interior]
            for m in healthy.images}
    csf, gm, wm = mean["T1"]
    assert wm > 1.2 * gm and gm > 1.5 * csf
    csf, gm, wm = mean["T2"]
    assert csf > 1.3 * gm and gm > 1.1 * wm
    csf, gm, wm = mean["FLAIR"]
    assert gm > 1.1 * wm and wm > 2 * csf
    # DWI: free water (CSF) dark; its low resolution blurs thin CSF, so use the ventricles
    ventricles = ndimage.binary_erosion(healthy.tissue == 1, FACE)
    dwi = healthy.images["DWI"]
    assert dwi[healthy.tissue == 3].mean() > 2 * dwi[ventricles].mean()
    # gadolinium does not change healthy brain much
    assert 0.9 < mean["T1gd"][2] / mean["T1"][2] < 1.1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_high_grade_tumour_is_nested(seed):
    s = make_subject(np.random.default_rng(seed), (48, 48, 40), 4.0, tumour="high",
                     modalities=("FLAIR", "T1", "T1gd", "T2"), skull_strip=True)
    t = s.tumour
    assert set(np.unique(t)) <= {0, 1, 2, 3} and {1, 3} <= set(np.unique(t))
    assert not (t > 0)[~s.mask].any()
    # non-enhancing centre enclosed by the enhancing rim
    assert np.isin(t[ndimage.binary_dilation(t == 2, FACE)], (2, 3)).all()
    # every brain voxel touching the core is tumour (oedema surrounds the core)
    assert (t[ndimage.binary_dilation(t >= 2, FACE) & s.mask] > 0).all()
    whole = (t > 0).sum() / s.mask.sum()
    assert 0.002 < whole < 0.4
    # skull-stripped: images are exactly zero outside the brain
    assert all((img[~s.mask] == 0).all() for img in s.images.values())
    flair, t1, t1gd = s.images["FLAIR"], s.images["T1"], s.images["T1gd"]
    assert flair[t == 1].mean() > 1.3 * flair[s.tissue == 2].mean()  # oedema bright on FLAIR
    # the rim is a few mm thick, so at 4 mm most of it mixes with the dark centre
    assert np.percentile(t1gd[t == 3], 75) > 1.1 * np.median(t1gd[(s.tissue == 3) & (t == 0)])
    assert t1gd[t == 3].mean() / t1[t == 3].mean() > 1.8  # the rim enhances


def test_low_grade_tumour_is_mostly_non_enhancing():
    s = make_subject(np.random.default_rng(4), (48, 48, 40), 4.0, tumour="low",
                     modalities=("FLAIR",))
    counts = np.bincount(s.tumour.ravel(), minlength=4)
    assert counts[2] > 0 and counts[2] > 3 * counts[3]


def test_same_seed_same_subject_other_seed_differs():
    kwargs = dict(shape=(32, 32, 32), spacing=6.0, tumour="high", modalities=("T1", "FLAIR"))
    a = make_subject(np.random.default_rng(7), **kwargs)
    b = make_subject(np.random.default_rng(7), **kwargs)
    c = make_subject(np.random.default_rng(8), **kwargs)
    np.testing.assert_array_equal(a.images["FLAIR"], b.images["FLAIR"])
    np.testing.assert_array_equal(a.tumour, b.tumour)
    assert a.age == b.age and a.sex == b.sex
    assert not np.array_equal(a.tissue, c.tissue)
    assert np.abs(a.images["T1"] - c.images["T1"]).mean() > 0.05 * a.images["T1"].mean()


def test_a_plane_matches_the_volume_it_cuts():
    rng = np.random.default_rng(5)
    phantom = sample_phantom(rng, 50, "M", None, None, (0, -8, 0))
    axes = grid_axes((32, 32, 32), (6.0, 6.0, 6.0))
    vol = render_phantom(phantom, axes, ("T1",), rng)
    k = 18
    plane = render_slice(phantom, "AX", axes[2][k], (32, 32), 192.0, ("T1",), rng)
    np.testing.assert_array_equal(plane["mask"], axial_display(vol["mask"], k))


def test_slices_differ_by_perspective_and_sequence():
    rng = np.random.default_rng(6)
    phantom = sample_phantom(rng, 60, "F", "high", None, (0, -8, 0))
    ax = render_slice(phantom, "AX", 5.0, (48, 48), 240.0, ("T1", "T2"), rng)
    sag = render_slice(phantom, "SAG", 5.0, (48, 48), 240.0, ("T1",), rng)
    corr = np.corrcoef(ax["images"]["T1"].ravel(), sag["images"]["T1"].ravel())[0, 1]
    assert corr < 0.6
    inside = ax["mask"]
    t1, t2 = ax["images"]["T1"][inside], ax["images"]["T2"][inside]
    assert np.corrcoef(t1, t2)[0, 1] < 0  # T2 inverts the T1 contrast inside the brain


# ------------------------------------------------------------------ biology across subjects
def test_age_and_sex_drive_the_anatomy():
    rng = np.random.default_rng(11)
    axes = grid_axes((48, 56, 40), (4.0, 4.0, 4.0))
    rows = []
    for i in range(40):
        age, sex = rng.uniform(18, 88), "M" if i % 2 else "F"
        anat = sample_anatomy(rng, age, sex)
        maps = render_anatomy(anat, Phantom(anat, None, None, np.zeros(3)).frame(axes),
                              head=False)
        counts = np.bincount(maps.tissue.ravel(), minlength=4)[1:].astype(float)
        rows.append([age, sex == "M", *(counts / counts.sum()), maps.mask.sum() * 64e-3])
    data = np.array(rows)
    age, male, gm, csf, volume = data[:, 0], data[:, 1] == 1, data[:, 3], data[:, 2], data[:, 5]
    assert np.corrcoef(age, gm)[0, 1] < -0.75    # measured about -0.9
    assert np.corrcoef(age, csf)[0, 1] > 0.75     # measured about +0.95
    ratio = volume[male].mean() / volume[~male].mean()
    welch = (volume[male].mean() - volume[~male].mean()) / np.sqrt(
        volume[male].var(ddof=1) / male.sum() + volume[~male].var(ddof=1) / (~male).sum())
    assert ratio > 1.06 and welch > 3              # about 13 % larger in men
    # irreducible error: an oracle regression on the true fractions is good, not perfect
    x = np.column_stack([np.ones(len(data)), data[:, 2:5]])
    errors = []
    for k in range(5):
        test = np.arange(len(data)) % 5 == k
        coef = np.linalg.lstsq(x[~test], age[~test], rcond=None)[0]
        errors.append(np.abs(x[test] @ coef - age[test]))
    mae = np.concatenate(errors).mean()
    assert 2.0 < mae < 9.0                         # measured about 5 years


# ------------------------------------------------------------------ anatomy at 2 mm
@pytest.fixture(scope="module")
def adult():
    """A 35-year-old man, full head at 2 mm, on a scanner without bias field."""
    return make_subject(np.random.default_rng(3), (90, 110, 100), 2.0, age=35, sex="M",
                        modalities=("T1", "T2"), scanner={"bias": 0.0})


def test_realism_figures_fall_in_adult_ranges():
    # mean of three adults (25, 35 and 45 years) at 2 mm: tissue fractions of
    # CSF+GM+WM, median T1 ratios to WM and cortical thickness in published ranges
    rows = []
    for seed, (age, sex) in enumerate([(25, "M"), (35, "F"), (45, "M")]):
        s = make_subject(np.random.default_rng(seed), (90, 110, 100), 2.0, age=age, sex=sex,
                         modalities=("T1",), scanner={"bias": 0.0})
        rows.append(realism_figures(s.images["T1"], s.tissue, s.spacing))
    f = {k: np.mean([r[k] for r in rows]) for k in rows[0]}
    assert 0.08 < f["csf"] < 0.15 and 0.50 < f["gm"] < 0.58 and 0.33 < f["wm"] < 0.40
    assert 0.40 < f["csf_wm"] < 0.55 and 0.72 < f["gm_wm"] < 0.82
    assert 2.0 < f["thickness"] < 4.0


def test_fine_labels_hold_every_structure_and_give_the_other_maps(adult):
    healthy = [v for n, v in LABELS.items() if v not in TUMOUR_LABELS]
    assert set(np.unique(adult.labels)) == set(healthy)
    np.testing.assert_array_equal(adult.tissue, TISSUE[adult.labels])
    np.testing.assert_array_equal(adult.mask, MASK[adult.labels])
    np.testing.assert_array_equal(adult.hippocampus, HIPPOCAMPUS[adult.labels])
    right = _world_centroid(adult.labels, LABELS["right_hippocampus"], adult.affine)
    left = _world_centroid(adult.labels, LABELS["left_hippocampus"], adult.affine)
    assert right[0] > left[0] + 35
    # the corpus callosum lies above the lateral ventricles, the cerebellum behind and
    # below the cerebrum, the brainstem below the thalami
    centre = {n: _world_centroid(adult.labels, LABELS[n], adult.affine) for n in (
        "corpus_callosum", "lateral_ventricles", "cerebellar_cortex", "cerebral_cortex",
        "brainstem", "thalamus")}
    assert centre["corpus_callosum"][2] > centre["lateral_ventricles"][2]
    assert centre["cerebellar_cortex"][1] < centre["cerebral_cortex"][1] - 30
    assert centre["cerebellar_cortex"][2] < centre["cerebral_cortex"][2] - 30
    assert centre["brainstem"][2] < centre["thalamus"][2] - 15


def test_deep_grey_contrasts_follow_mr_physics(adult):
    median = {m: {n: np.median(adult.images[m][adult.labels == v]) for n, v in LABELS.items()
                  if n in ("cerebral_cortex", "cerebral_wm", "thalamus", "putamen", "pallidum")}
              for m in ("T1", "T2")}
    t1, t2 = median["T1"], median["T2"]
    assert t1["cerebral_cortex"] < t1["thalamus"] < t1["cerebral_wm"]
    assert t1["pallidum"] > t1["putamen"] and t2["pallidum"] < t2["putamen"]


def test_ventricles_grow_and_cortex_thins_with_age():
    axes = grid_axes((48, 56, 48), (3.0, 3.0, 3.0))
    maps = {}
    for age in (20, 80):
        anat = sample_anatomy(np.random.default_rng(5), age, "F", pose=False)
        maps[age] = render_anatomy(anat, Phantom(anat, None, None, np.zeros(3)).frame(axes),
                                   head=False)
    volume = {age: np.isin(m.labels, [LABELS["lateral_ventricles"],
                                      LABELS["third_fourth_ventricles"]]).sum()
              for age, m in maps.items()}
    assert volume[80] > 2 * volume[20]
    cortex = {age: (m.labels == LABELS["cerebral_cortex"]).sum() for age, m in maps.items()}
    assert cortex[80] < 0.9 * cortex[20]
    # the skull does not shrink: the intracranial cavity is the same
    np.testing.assert_array_equal(maps[20].mask, maps[80].mask)


def _shifted(array, k, axis):
    """``array`` moved by ``k`` voxels along ``axis``, padded with False."""
    out = np.zeros_like(array)
    src, dst = [slice(None)] * 3, [slice(None)] * 3
    src[axis], dst[axis] = (slice(k, None), slice(None, -k)) if k > 0 else (
        slice(None, k), slice(-k, None))
    out[tuple(dst)] = array[tuple(src)]
    return out


def test_white_matter_enters_the_gyri():
    # 1 mm block of lateral cortex: a sulcus has white matter within 3 mm on both of
    # its sides (a WM finger under each bank's gyrus). With a white-matter core under
    # a uniform ribbon (5.6 mm thick in the earlier phantom) no CSF voxel has.
    s = make_subject(np.random.default_rng(0), (40, 40, 40), 1.0, age=30, sex="M",
                     head=False, centre=(-48, 5, -25))
    wm, csf = s.tissue == 3, s.tissue == 1
    both = np.zeros_like(wm)
    for axis in range(3):
        plus, minus = np.zeros_like(wm), np.zeros_like(wm)
        for k in (1, 2, 3):
            plus |= _shifted(wm, k, axis)
            minus |= _shifted(wm, -k, axis)
        both |= plus & minus
    assert (both & csf).sum() > 0.01 * csf.sum()


# ------------------------------------------------------------------ written layouts
SMALL = {"camcan": (24, 28, 24), "ixi": (20, 24, 24), "adni_hippocampus": (40, 48, 40),
         "msd_brats": (24, 24, 16), "kaggle_lgg": (32, 32, 6), "tcga_gbm_slices": (32, 32),
         "phantoms": (18, 22, 20), "bids": (18, 22, 20)}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_layout_writes_a_valid_dataset(layout, tmp_path):
    spec_path = synthesize(layout, tmp_path / layout, subjects=2, seed=0, shape=SMALL[layout])
    assert spec_path == tmp_path / layout / "spec.toml"
    written = load_toml(spec_path)
    assert written["root"] == "." and written["name"] == layout
    spec = load_spec(spec_path)
    manifest = spec.manifest()  # raises on any problem
    assert manifest["subject"].nunique() == 2
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary folder left behind
    CHECKS[layout](tmp_path / layout, spec, manifest)


def _check_camcan(root, spec, manifest):
    assert manifest["age"].between(18, 88).all() and set(manifest["sex"]) == {"M", "F"}
    meta = pd.read_csv(root / "meta/meta_data_all.csv")
    assert list(meta.columns) == ["subject_id", "age", "gender_code", "gender_text"]
    for _, row in manifest.iterrows():
        image = load_volume(row["image_T1"], ndim=3)
        label = load_volume(row["label"], dtype=None).array
        mask = load_volume(row["mask"], dtype=None).array
        assert image.shape == (24, 28, 24) and image.spacing == pytest.approx((8.0,) * 3)
        assert set(np.unique(label)) <= {0, 1, 2, 3} and set(np.unique(mask)) == {0, 1}
        np.testing.assert_array_equal(mask, label > 0)
        fine = load_volume(root / f"labels/sub-{row['subject']}_labels.nii.gz", dtype=None).array
        np.testing.assert_array_equal(TISSUE[fine], label)


def _check_ixi(root, spec, manifest):
    sheet = pd.read_csv(root / "IXI.csv")
    assert {"IXI_ID", "SEX_ID (1=m, 2=f)", "AGE", "DOB", "STUDY_DATE"} <= set(sheet.columns)
    assert spec.metadata["path"] == "IXI.csv"
    assert manifest["age"].between(20, 86).all() and manifest["mask"].notna().all()
    for path in manifest["image_T1"]:
        assert nib.aff2axcodes(nib.load(path).affine) == ("P", "I", "R")
        vol = load_volume(path)
        assert vol.shape == (20, 24, 24) and vol.spacing == pytest.approx((9.0, 10.0, 10.0))


def _check_adni(root, spec, manifest):
    for _, row in manifest.iterrows():
        label = load_volume(row["label"], dtype=None)
        assert set(np.unique(label.array)) == {0, 1, 2}
        right = _world_centroid(label.array, 1, label.affine)
        left = _world_centroid(label.array, 2, label.affine)
        assert right[0] > left[0] + 30


def _check_brats(root, spec, manifest):
    info = json.loads((root / "dataset.json").read_text())
    assert info["numTraining"] == 2 and info["modality"]["0"] == "FLAIR"
    for _, row in manifest.iterrows():
        image = load_volume(row["image_image"], ndim=4)
        assert image.shape == (24, 24, 16, 4) and image.spacing == pytest.approx((10, 10, 155 / 16))
        assert image.array[0, 0, 0].tolist() == [0, 0, 0, 0]  # skull-stripped background
        label = load_volume(row["label"], dtype=None).array
        assert set(np.unique(label)) <= {0, 1, 2, 3}


def _check_lgg(root, spec, manifest):
    assert len(manifest) == 12
    masks = []
    for _, row in manifest.iterrows():
        image = load_image(row["image_image"])
        mask = load_image(row["label"])
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
        masks.append(mask.any())
    assert any(masks) and not all(masks)  # some slices show the tumour, some do not


def _check_tcga(root, spec, manifest):
    assert len(manifest) == 2 * 3 * 4 * 2
    index = pd.read_csv(root / "index.csv")
    assert list(index.columns) == ["patient", "perspective", "sequence", "label", "file"]
    assert sorted(root / f for f in index["file"]) == sorted(root.glob("*.jpg"))
    assert set(index["label"]) == {f"{p}_{s}" for p in ("AX", "COR", "SAG")
                                   for s in ("DWI", "T1", "T1C", "T2")}
    for path in manifest["image_image"][:6]:
        image = load_image(path)
        assert image.shape == (32, 32, 3) and image.max() > 100


def _check_phantoms(root, spec, manifest):
    assert spec.labels == LABELS and spec.image_columns == [
        "image_T1w", "image_T2w", "image_PDw", "image_FLAIR"]
    assert manifest["age"].between(18, 88).all() and set(manifest["sex"]) == {"M", "F"}
    for _, row in manifest.iterrows():
        fine = load_volume(row["label"], dtype=None)
        assert fine.shape == (18, 22, 20) and fine.spacing == pytest.approx((10.0,) * 3)
        seg = load_volume(root / f"segs/sub-{row['subject']}_seg.nii.gz", dtype=None).array
        np.testing.assert_array_equal(seg, TISSUE[fine.array])
        np.testing.assert_array_equal(load_volume(row["mask"], dtype=None).array,
                                      MASK[fine.array])
        assert load_volume(row["image_FLAIR"]).shape == (18, 22, 20)


def _check_bids(root, spec, manifest):
    assert json.loads((root / "dataset_description.json").read_text())["DatasetType"] == "raw"
    assert manifest["sample"].tolist() == ["sub-01_ses-01", "sub-02_ses-01", "sub-02_ses-02"]
    assert manifest["image_T2w"].notna().all() and manifest["label"].notna().all()


CHECKS = {"camcan": _check_camcan, "ixi": _check_ixi, "adni_hippocampus": _check_adni,
          "msd_brats": _check_brats, "kaggle_lgg": _check_lgg, "tcga_gbm_slices": _check_tcga,
          "phantoms": _check_phantoms, "bids": _check_bids}


def test_synthesize_is_deterministic_and_replaces_its_own_output(tmp_path):
    a = synthesize("msd_brats", tmp_path / "a", subjects=3, seed=4, shape=(16, 16, 12))
    b = synthesize("msd_brats", tmp_path / "b", subjects=3, seed=4, shape=(16, 16, 12))
    c = synthesize("msd_brats", tmp_path / "c", subjects=3, seed=5, shape=(16, 16, 12))
    name = "imagesTr/BRATS_002.nii.gz"
    first = load_volume(a.parent / name).array
    np.testing.assert_array_equal(first, load_volume(b.parent / name).array)
    assert not np.array_equal(first, load_volume(c.parent / name).array)
    # writing again into a synthetic dataset replaces it (no stale subjects remain)
    synthesize("msd_brats", tmp_path / "a", subjects=1, seed=4, shape=(16, 16, 12))
    assert len(load_spec(a).manifest()) == 1


def test_synthesize_refuses_bad_requests(tmp_path):
    with pytest.raises(ConfigError, match="camcan"):
        synthesize("brats2021", tmp_path / "x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        synthesize("camcan", tmp_path / "mine", subjects=1, shape=(16, 16, 16))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="subjects"):
        synthesize("camcan", tmp_path / "y", subjects=0)
    with pytest.raises(ConfigError, match="shape"):
        synthesize("camcan", tmp_path / "y", shape=(16, 16))


def test_grid_defaults_follow_the_field_of_view():
    assert resolve_grid("msd_brats") == ((96, 96, 64), (2.5, 2.5, 2.4219))
    assert resolve_grid("msd_brats", shape=(240, 240, 155)) == ((240, 240, 155), (1.0, 1.0, 1.0))
    assert resolve_grid("ixi", shape=(150, 256, 256))[1] == (1.2, 0.9375, 0.9375)
    assert resolve_grid("camcan", spacing=4) == ((48, 56, 48), (4.0, 4.0, 4.0))
    assert resolve_grid("kaggle_lgg", shape=(256, 256)) == ((256, 256, 24), (0.8594, 0.8594, 5.0))
    assert resolve_grid("tcga_gbm_slices") == ((128, 128), (1.875, 1.875))
    assert resolve_grid("phantoms") == ((90, 110, 100), (2.0, 2.0, 2.0))
    assert resolve_grid("phantoms", spacing=1) == ((180, 220, 200), (1.0, 1.0, 1.0))
    with pytest.raises(ConfigError, match="spacing"):
        resolve_grid("camcan", spacing=(1, 2))


def test_phantoms_without_a_bias_field_are_the_same_subjects(tmp_path):
    """write_phantoms(scanner=...) changes the images only: the same labels, and images
    whose log ratio to the biased ones spreads as the scanner's field does (sd 0.10)."""
    from brain_tf.data.synthetic.write_volumes import PHANTOM_SCANNER, write_phantoms
    from brain_tf.io import load_volume

    for name, bias in (("biased", PHANTOM_SCANNER["bias"]), ("flat", 0.0)):
        write_phantoms(tmp_path / name, 1, 7, (30, 36, 32), (6.0, 6.0, 6.0), lambda *a: None,
                       scanner={**PHANTOM_SCANNER, "bias": bias})

    def read(name, path):
        return np.asarray(load_volume(tmp_path / name / path, dtype=None).array)

    np.testing.assert_array_equal(read("biased", "labels/sub-0001_labels.nii.gz"),
                                  read("flat", "labels/sub-0001_labels.nii.gz"))
    brain = read("flat", "masks/sub-0001_brain_mask.nii.gz") > 0
    log_ratio = np.log(read("biased", "images/sub-0001_T1w.nii.gz")[brain]
                       / read("flat", "images/sub-0001_T1w.nii.gz")[brain])
    assert 0.02 < np.std(log_ratio) < 0.2

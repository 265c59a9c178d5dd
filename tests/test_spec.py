"""Data specs: every shipped spec reads a small tree made here; validation lists all problems."""

import numpy as np
import pandas as pd
import pytest

from brain_tf.data import load_spec, shipped_specs
from brain_tf.data.patterns import Pattern
from brain_tf.errors import SpecError
from brain_tf.io import save_image, save_volume

SPECS = shipped_specs()


def _vol(path, shape=(4, 4, 4)):
    save_volume(np.zeros(shape, np.float32), path, affine=np.eye(4))


def make_tree(name, root):
    """Write a 3-subject (or 3-patient) tree in the layout of shipped spec ``name``."""
    if name == "camcan":
        ids = ["CC110033", "CC110037", "CC110045"]
        for s in ids:
            _vol(root / f"images/sub-{s}_T1w_unbiased.nii.gz")
            _vol(root / f"masks/sub-{s}_T1w_brain_mask.nii.gz")
            _vol(root / f"segs_refs/sub-{s}_T1w_seg.nii.gz")
        (root / "meta").mkdir()
        pd.DataFrame({"subject_id": ids, "age": [24, 31, 77], "gender_code": [1, 2, 2],
                      "gender_text": ["MALE", "FEMALE", "FEMALE"]}).to_csv(
            root / "meta/meta_data_all.csv", index=False)
        return ids
    if name == "ixi":
        scans = [("002", "Guys", "0828"), ("012", "HH", "1211"), ("013", "HH", "1212")]
        for s, site, scan in scans:
            _vol(root / f"IXI-T1/IXI{s}-{site}-{scan}-T1.nii.gz")
        table = pd.DataFrame({"IXI_ID": [2, 12, 13], "SEX_ID (1=m, 2=f)": [2, 1, 1],
                              "AGE": [35.8, 38.8, 46.7]})
        table.to_csv(root / "IXI.csv", index=False)
        return ["IXI002", "IXI012", "IXI013"]
    if name == "adni_hippocampus":
        ids = ["002_S_0413", "002_S_0559", "003_S_1021"]
        for s in ids:
            _vol(root / f"images/{s}_T1.nii.gz")
            _vol(root / f"labels/{s}_hippocampus.nii.gz")
        return ids
    if name == "msd_brats":
        ids = ["BRATS_001", "BRATS_002", "BRATS_010"]
        for s in ids:
            _vol(root / f"imagesTr/{s}.nii.gz", (4, 4, 4, 4))
            _vol(root / f"labelsTr/{s}.nii.gz")
        _vol(root / "imagesTr/._BRATS_001.nii.gz")  # macOS metadata file in the real archive
        (root / "dataset.json").write_text("{}")
        return ids
    if name == "kaggle_lgg":
        ids = ["TCGA_CS_4941_19960909", "TCGA_DU_5849_19950405", "TCGA_HT_7692_19960724"]
        for s in ids:
            for n in (1, 2, 10):
                save_image(np.zeros((8, 8, 3), np.uint8), root / f"kaggle_3m/{s}/{s}_{n}.tif")
                save_image(np.zeros((8, 8), np.uint8), root / f"kaggle_3m/{s}/{s}_{n}_mask.tif")
        return ids
    if name == "tcga_gbm_slices":
        ids = ["TCGA-02-0003", "TCGA-06-0122", "TCGA-19-5958"]
        root.mkdir(parents=True, exist_ok=True)
        for s in ids:
            for persp, seq in [("AX", "T1C"), ("SAG", "T2"), ("COR", "DWI")]:
                save_image(np.zeros((8, 8, 3), np.uint8),
                           root / f"{persp}_{seq}_Glioma_GBM_{s}_{len(seq)}.jpg")
        return ids
    raise AssertionError(f"no tree for spec {name}")


def test_every_layout_has_a_spec():
    assert set(SPECS) == {"camcan", "ixi", "adni_hippocampus", "msd_brats", "kaggle_lgg",
                          "tcga_gbm_slices"}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_shipped_spec_reads_its_layout(name, tmp_path):
    root = tmp_path / name
    root.mkdir()
    subjects = make_tree(name, root)
    spec = load_spec(SPECS[name], root=root)
    if name == "ixi":  # the real sheet is .xls; the test tree has it as CSV
        spec.metadata["path"] = "IXI.csv"
    manifest = spec.manifest()
    assert sorted(manifest["subject"].unique()) == sorted(subjects)
    for column in spec.image_columns:
        assert manifest[column].map(lambda p: p.startswith(str(root))).all()
    if name == "kaggle_lgg":
        assert len(manifest) == 9
        assert not manifest["image_image"].str.endswith("_mask.tif").any()
        row = manifest[manifest["sample"] == "TCGA_CS_4941_19960909_10"].iloc[0]
        assert row["label"].endswith("TCGA_CS_4941_19960909_10_mask.tif")
    if name == "tcga_gbm_slices":
        assert set(manifest["perspective"]) == {"AX", "SAG", "COR"}
        assert set(manifest["sequence"]) == {"T1C", "T2", "DWI"}
    if name == "msd_brats":
        assert spec.channel_names == ["FLAIR", "T1w", "T1gd", "T2w"]
        assert len(manifest) == 3  # the hidden ._ file is not a subject
    if name == "camcan":
        assert manifest.set_index("subject").loc["CC110045", "age"] == 77
        assert list(manifest.sort_values("subject")["sex"]) == ["M", "F", "F"]
    if name == "ixi":
        assert manifest.set_index("subject").loc["IXI012", "sex"] == "M"
        assert manifest.set_index("subject").loc["IXI002", "age"] == pytest.approx(35.8)


def test_manifest_is_sorted_whatever_the_disk_order(tmp_path):
    make_tree("adni_hippocampus", tmp_path)
    manifest = load_spec(SPECS["adni_hippocampus"], root=tmp_path).manifest()
    assert list(manifest["sample"]) == sorted(manifest["sample"])


def test_validation_reports_every_problem_at_once(tmp_path):
    make_tree("camcan", tmp_path)
    (tmp_path / "masks/sub-CC110033_T1w_brain_mask.nii.gz").unlink()
    (tmp_path / "masks/sub-CC110037_T1w_brain_mask.nii.gz").unlink()
    _vol(tmp_path / "images/sub-CC999999_T1w_unbiased.nii.gz")
    _vol(tmp_path / "masks/sub-CC999999_T1w_brain_mask.nii.gz")
    (tmp_path / "segs_refs/sub-CC110045_T1w_seg.nii.gz").unlink()  # label is optional
    with pytest.raises(SpecError) as err:
        load_spec(SPECS["camcan"], root=tmp_path).manifest()
    text = str(err.value)
    assert "3 problem(s)" in text
    assert "sample CC110033: missing mask file" in text
    assert "sample CC110037: missing mask file" in text
    assert "subject CC999999: no row in metadata table" in text
    manifest = load_spec(SPECS["camcan"], root=tmp_path).manifest(validate=False)
    assert pd.isna(manifest.set_index("sample").loc["CC110045", "label"])


def test_duplicate_metadata_ids_and_empty_age(tmp_path):
    make_tree("camcan", tmp_path)
    table = pd.read_csv(tmp_path / "meta/meta_data_all.csv")
    table.loc[1, "age"] = np.nan
    table = pd.concat([table, table.iloc[[0]]])
    table.to_csv(tmp_path / "meta/meta_data_all.csv", index=False)
    with pytest.raises(SpecError) as err:
        load_spec(SPECS["camcan"], root=tmp_path).manifest()
    assert "id 'CC110033' has more than one row" in str(err.value)
    assert "subject CC110037: empty age" in str(err.value)


def test_empty_dataset_and_bad_root(tmp_path):
    with pytest.raises(SpecError, match="root folder .* does not exist; .*--root"):
        load_spec(SPECS["msd_brats"], root=tmp_path / "missing").manifest()
    with pytest.raises(SpecError, match="no files match 'imagesTr/"):
        load_spec(SPECS["msd_brats"], root=tmp_path).manifest()


def test_relative_root_resolves_against_spec_folder(tmp_path):
    make_tree("adni_hippocampus", tmp_path / "data")
    text = SPECS["adni_hippocampus"].read_text().replace('root = "../data/adni_hippocampus"',
                                                         'root = "data"')
    (tmp_path / "spec.toml").write_text(text)
    spec = load_spec(tmp_path / "spec.toml")
    assert spec.root == (tmp_path / "data").resolve()
    assert len(spec.manifest()) == 3


def test_invalid_spec_lists_its_errors(tmp_path):
    (tmp_path / "bad.toml").write_text('kind = "video"\ncolour = 1\n[files]\nlabel = "x"\n')
    with pytest.raises(SpecError) as err:
        load_spec(tmp_path / "bad.toml")
    text = str(err.value)
    assert "bad.toml" in text and "colour" in text and "kind must be" in text
    assert "needs images" in text
    (tmp_path / "broken.toml").write_text("name = \n")
    with pytest.raises(SpecError, match="broken.toml: invalid TOML"):
        load_spec(tmp_path / "broken.toml")


def test_pattern_fields_regex_and_backreference():
    p = Pattern("kaggle_3m/{case}/{case}_{n:\\d+}.tif")
    assert p.fields == ["case", "n"]
    assert p.glob() == "kaggle_3m/*/*_*.tif"
    assert p.match("kaggle_3m/A_B/A_B_12.tif") == {"case": "A_B", "n": "12"}
    assert p.match("kaggle_3m/A_B/A_B_12_mask.tif") is None
    assert p.match("kaggle_3m/A_B/C_D_12.tif") is None
    assert p.format({"case": "X", "n": 3}) == "kaggle_3m/X/X_3.tif"
    assert Pattern("a{x:\\d{3}}b").match("a123b") == {"x": "123"}


def test_spec_saves_and_reloads(tmp_path):
    make_tree("msd_brats", tmp_path / "d")
    spec = load_spec(SPECS["msd_brats"], root=tmp_path / "d")
    spec.save(tmp_path / "copy.toml")
    again = load_spec(tmp_path / "copy.toml")
    assert again.root == spec.root and again.labels == spec.labels
    pd.testing.assert_frame_equal(again.manifest(), spec.manifest())

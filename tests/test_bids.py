"""BIDS in and out: the source finds the twin's images and metadata, splits keep the
sessions of a participant together, bad datasets fail with one line naming the path, and
the App writes BIDS Derivatives on the input's grid, continues where it stopped, gathers
the cohort, and reports a broken participant while the others finish."""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brain_tf.bids import derivatives as deriv
from brain_tf.bids.predict import TissueResult
from brain_tf.bids.source import BidsFile, bids_spec, parse_name
from brain_tf.cli import main
from brain_tf.data import load_spec, split_subjects
from brain_tf.data.splits import check_no_leak
from brain_tf.data.synthetic import synthesize
from brain_tf.errors import SpecError
from brain_tf.io import load_volume, save_volume

SHAPE = (40, 48, 44)  # 4.5 mm voxels over the phantoms' field of view
KINDS = ["desc-brain_mask.nii.gz", "dseg.nii.gz", "dseg.json", "label-CSF_probseg.nii.gz",
         "label-GM_probseg.nii.gz", "label-WM_probseg.nii.gz"]


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    root = tmp_path_factory.mktemp("bids") / "twin"
    synthesize("bids", root, subjects=3, seed=0, shape=SHAPE)
    return root


@pytest.fixture(scope="module")
def app_run(twin, tmp_path_factory):
    out = tmp_path_factory.mktemp("derivatives") / "out"
    code = main(["bids", str(twin), str(out), "participant", "--spacing", "4"])
    return out, code


def test_parse_name():
    assert parse_name("sub-01_ses-2_acq-fast_run-1_T1w.nii.gz") == (
        (("sub", "01"), ("ses", "2"), ("acq", "fast"), ("run", "1")), "T1w")
    assert parse_name("sub-01_T2w.nii") == ((("sub", "01"),), "T2w")
    assert parse_name("sub-01_T1w.json") is None
    assert parse_name("sub-01_ses_T1w.nii.gz") is None  # an entity without a label
    assert parse_name("T1w.nii.gz") is None


def test_source_finds_images_sessions_and_metadata(twin):
    manifest = load_spec(twin / "spec.toml").manifest()
    assert manifest["sample"].tolist() == ["sub-01_ses-01", "sub-02_ses-01", "sub-02_ses-02",
                                           "sub-03_ses-01"]
    assert manifest["subject"].tolist() == ["01", "02", "02", "03"]
    assert manifest["session"].tolist() == ["01", "01", "02", "01"]
    participants = pd.read_csv(twin / "participants.tsv", sep="\t", dtype={"participant_id": str})
    baseline = dict(zip(participants["participant_id"], participants["age"]))
    # the follow-up's age comes from sessions.tsv: two years after the baseline
    assert manifest["age"].tolist() == pytest.approx(
        [baseline["sub-01"], baseline["sub-02"], baseline["sub-02"] + 2, baseline["sub-03"]])
    assert manifest["age"].dtype == float and set(manifest["sex"]) <= {"M", "F"}
    row = manifest.iloc[2]
    assert row["image_T1w"].endswith("sub-02/ses-02/anat/sub-02_ses-02_T1w.nii.gz")
    assert row["image_T2w"].endswith("sub-02/ses-02/anat/sub-02_ses-02_T2w.nii.gz")
    assert row["mask"].endswith("derivatives/phantoms/sub-02/ses-02/anat/"
                                "sub-02_ses-02_desc-brain_mask.nii.gz")
    truth = load_volume(row["label"], dtype=None).array
    assert set(np.unique(truth)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(load_volume(row["mask"], dtype=None).array, truth > 0)
    # --spec bids --root DIR: the T1w images alone; filters by entity and participant
    plain = load_spec("bids", root=twin).manifest()
    assert list(plain.filter(like="image_").columns) == ["image_T1w"] and len(plain) == 4
    assert bids_spec(twin, filters={"ses": "02"}).manifest()["sample"].tolist() == [
        "sub-02_ses-02"]
    only = bids_spec(twin, images={"T2": "T2w"}, participants=["sub-03"]).manifest()
    assert only["image_T2"].str.endswith("sub-03_ses-01_T2w.nii.gz").tolist() == [True]


def test_a_dataset_without_sessions_with_runs_and_missing_values(tmp_path):
    (tmp_path / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    for name in ("sub-a/anat/sub-a_T1w.nii.gz", "sub-b/anat/sub-b_run-1_T1w.nii.gz",
                 "sub-b/anat/sub-b_run-2_T1w.nii.gz", "sub-b/anat/notes_T1w.nii.gz",
                 "sub-c/func/sub-c_task-rest_bold.nii.gz"):
        save_volume(np.zeros((4, 4, 4), np.float32), tmp_path / name, affine=np.eye(4))
    (tmp_path / "sub-b/anat/sub-b_run-1_T1w.json").write_text("{}")
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tsex\tgroup\nsub-a\tn/a\tfemale\tcontrol\n"
        "sub-b\t31.5\tmale\tpatient\nsub-c\t40\tF\tcontrol\n")
    manifest = bids_spec(tmp_path, participants=["a", "b"]).manifest()
    assert manifest["sample"].tolist() == ["sub-a", "sub-b_run-1", "sub-b_run-2"]
    assert "session" not in manifest and manifest["run"].tolist()[1:] == ["1", "2"]
    assert np.isnan(manifest["age"][0]) and manifest["age"][1] == 31.5
    assert manifest["sex"].tolist() == ["F", "M", "M"]
    assert manifest["group"].tolist() == ["control", "patient", "patient"]
    with pytest.raises(SpecError, match="sub-c: no T1w image"):  # sub-c has only func/
        bids_spec(tmp_path).manifest()


def test_splits_keep_the_sessions_of_a_participant_together(twin):
    manifest = load_spec(twin / "spec.toml").manifest()
    for seed in range(4):
        split = split_subjects(manifest, {"train": 0.34, "val": 0.33, "test": 0.33}, seed=seed)
        check_no_leak(split)
        assert split.groupby("subject")["split"].nunique().max() == 1
        assert split.loc[split["subject"] == "02", "sample"].size == 2


def test_bad_datasets_fail_with_one_line_naming_the_path(twin, tmp_path):
    with pytest.raises(SpecError, match=f"{tmp_path}: not a BIDS dataset"):
        load_spec("bids", root=tmp_path).manifest()
    with pytest.raises(SpecError, match="participant label '09' not found"):
        bids_spec(twin, participants=["09"]).manifest()
    broken = tmp_path / "twin"
    shutil.copytree(twin, broken)
    (broken / "sub-03/ses-01/anat/sub-03_ses-01_T1w.nii.gz").unlink()
    with pytest.raises(SpecError, match=f"{broken / 'sub-03'}: no T1w image"):
        load_spec("bids", root=broken).manifest()
    # at participant level a participant without the suffix fails alone, naming its folder
    assert main(["bids", str(broken), str(tmp_path / "out"), "participant",
                 "--participant-label", "03"]) == 1
    error = deriv.read_tsv(tmp_path / "out/sub-03/sub-03_volumes.tsv")["error"][0]
    assert error.startswith(f"{broken / 'sub-03'}: no T1w image") and "\n" not in error
    assert main(["bids", str(tmp_path), str(tmp_path / "out"), "participant"]) == 2
    assert main(["bids", str(twin), str(tmp_path / "out"), "participant",
                 "--participant-label", "09"]) == 2


def test_app_writes_derivatives_on_the_input_grid(twin, app_run):
    out, code = app_run
    assert code == 0
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "brain_tf"
    assert description["Models"] == ["pretrained:brain", "pretrained:tissue"]
    assert pd.read_csv(out / "dseg.tsv", sep="\t")["name"].tolist() == [
        "background", "CSF", "GM", "WM"]
    for stem in ("sub-01_ses-01", "sub-02_ses-01", "sub-02_ses-02", "sub-03_ses-01"):
        sub, ses = stem.split("_")
        source = nib.load(str(twin / sub / ses / "anat" / f"{stem}_T1w.nii.gz"))
        folder = out / sub / ses / "anat"
        assert sorted(p.name for p in folder.iterdir()) == sorted(f"{stem}_{k}" for k in KINDS)
        maps = {}
        for kind in KINDS:
            if kind.endswith(".nii.gz"):
                img = nib.load(str(folder / f"{stem}_{kind}"))
                assert img.shape == source.shape
                np.testing.assert_allclose(img.affine, source.affine, atol=1e-5)
                maps[kind] = np.asarray(img.dataobj)
        mask = maps["desc-brain_mask.nii.gz"] > 0
        probs = np.stack([maps[f"label-{c}_probseg.nii.gz"] for c in ("CSF", "GM", "WM")], -1)
        assert probs.min() >= 0 and probs.sum(-1).max() <= 1 + 1e-4
        assert not probs[~mask].any() and not maps["dseg.nii.gz"][~mask].any()
        assert (out / sub / "figures" / f"{stem}_overlay.png").stat().st_size > 500


def test_labels_and_mask_are_those_of_the_predict_path(twin):
    """The App's probabilities give the labels the tissue task's own prediction gives."""
    from brain_tf.bids.predict import load_model, load_scan, predict_tissue
    from brain_tf.io import Volume

    brain, tissue = load_model("pretrained:brain", 4), load_model("pretrained:tissue", 4)
    volume = load_scan(twin / "sub-03/ses-01/anat/sub-03_ses-01_T1w.nii.gz")
    result = predict_tissue(brain, tissue, volume)
    grid = volume.file_grid
    np.testing.assert_array_equal(result.mask, brain.family.segment(brain.ctx, brain.net,
                                                                    volume) > 0)
    mask = Volume(grid.from_file(result.mask), volume.affine, source=grid)
    expected = tissue.family.segment(tissue.ctx, tissue.net, volume, mask)
    assert (result.labels == expected).mean() > 0.999  # argmax ties aside
    total = sum(result.probabilities.values())
    assert total.max() <= 1 + 1e-5 and set(np.unique(result.labels)) <= {0, 1, 2, 3}


def test_a_second_run_skips_finished_work(twin, app_run, capfd):
    out, _ = app_run
    files = sorted(p for p in out.rglob("sub-*/ses-*/anat/*"))
    before = {p: p.stat().st_mtime_ns for p in files}
    assert main(["bids", str(twin), str(out), "participant", "--spacing", "4"]) == 0
    assert "already have their outputs: skipped" in capfd.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in files} == before
    # the labels choose the participants and sessions looked at
    assert main(["bids", str(twin), str(out), "participant", "--participant-label", "02",
                 "--session-label", "02"]) == 0
    err = capfd.readouterr().err
    assert "1 of 1 scans already have their outputs" in err and "sub-01" not in err
    assert {p: p.stat().st_mtime_ns for p in files} == before
    # the participant's table still lists the session this run left out
    assert deriv.read_tsv(out / "sub-02/sub-02_volumes.tsv")["session_id"].tolist() == [
        "ses-01", "ses-02"]


def test_group_gathers_the_subject_tables(twin, app_run):
    out, _ = app_run
    assert main(["bids", str(twin), str(out), "group"]) == 0
    table = deriv.read_tsv(out / "volumes.tsv")
    subjects = pd.concat([deriv.read_tsv(p) for p in sorted(out.glob("sub-*/sub-*_volumes.tsv"))],
                         ignore_index=True)
    assert len(table) == 4
    for column in ("participant_id", "session_id", "source", "gm_ml", "wm_fraction",
                   "qc_mean_entropy", "qc_changed", "qc_flag", "age", "sex"):
        assert table[column].tolist() == subjects[column].tolist(), column
    sidecar = json.loads((out / "volumes.json").read_text())
    assert sidecar["gm_ml"]["Units"] == "ml"
    # the soft GM volume by hand: the sum of the GM probabilities times the voxel volume
    row = table.iloc[2]
    img = nib.load(str(out / "sub-02/ses-02/anat/sub-02_ses-02_label-GM_probseg.nii.gz"))
    voxel_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000
    assert row["gm_ml"] == pytest.approx(np.asarray(img.dataobj).sum() * voxel_ml, rel=1e-5)
    fractions = table[["csf_fraction", "gm_fraction", "wm_fraction"]].sum(axis=1)
    np.testing.assert_allclose(fractions, 1.0, atol=1e-6)
    assert (out / "report.html").is_file() and (out / "figures/summary.png").is_file()


def test_a_broken_participant_is_reported_and_the_others_finish(twin, app_run, tmp_path):
    out, _ = app_run
    broken, results = tmp_path / "twin", tmp_path / "out"
    shutil.copytree(twin, broken)
    shutil.copytree(out, results)
    shutil.rmtree(results / "sub-03")
    image = broken / "sub-03/ses-01/anat/sub-03_ses-01_T1w.nii.gz"
    image.write_bytes(b"not a NIfTI file")
    assert main(["bids", str(broken), str(results), "participant", "--spacing", "4"]) == 1
    failed = deriv.read_tsv(results / "sub-03/sub-03_volumes.tsv")
    assert failed["status"].tolist() == ["failed"] and str(image) in failed["error"][0]
    assert "sub-03: failed" in (results / "logs/participant.log").read_text()
    assert main(["bids", str(broken), str(results), "group"]) == 0
    table = deriv.read_tsv(results / "volumes.tsv")
    assert table.set_index("source")["status"].to_dict() == {
        "sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz": "ok",
        "sub-02/ses-01/anat/sub-02_ses-01_T1w.nii.gz": "ok",
        "sub-02/ses-02/anat/sub-02_ses-02_T1w.nii.gz": "ok",
        "sub-03/ses-01/anat/sub-03_ses-01_T1w.nii.gz": "failed"}
    assert table["flagged"].tolist()[-1]
    assert 'class="failed"' in (results / "report.html").read_text()


def test_an_age_model_given_with_models_adds_predicted_age(twin, app_run, tmp_path):
    """A tissue-volume age run trained on another BIDS twin (the BIDS spec as the data
    source of a task) predicts each image's age from the App's own label maps."""
    from brain_tf.tasks import TASKS

    spec = synthesize("bids", tmp_path / "train", subjects=8, seed=1, shape=(18, 22, 20))
    task = TASKS["age-regression"]
    run = task.train(task.config("features", {"data": {
        "spec": str(spec), "stratify": None,
        "fractions": {"train": 0.75, "val": 0.0, "test": 0.25}}}), run_dir=str(tmp_path / "run"))
    results = tmp_path / "out"
    shutil.copytree(app_run[0], results)
    assert main(["bids", str(twin), str(results), "participant", "--spacing", "4",
                 "--models", str(run.path)]) == 0
    assert main(["bids", str(twin), str(results), "group"]) == 0
    table = deriv.read_tsv(results / "volumes.tsv")
    assert table["predicted_age"].notna().all() and table["predicted_age"].between(0, 150).all()
    sidecar = deriv.read_sidecar(results / "sub-01/ses-01/anat/sub-01_ses-01_dseg.json")
    assert str(run.path) in sidecar["Models"]
    description = json.loads((results / "dataset_description.json").read_text())
    assert description["Models"] == ["pretrained:brain", "pretrained:tissue", str(run.path)]
    assert sidecar["Measures"]["predicted_age"] == pytest.approx(table["predicted_age"][0])


def test_probability_maps_and_qc_written_by_the_prediction_are_taken(tmp_path):
    """When the tissue prediction writes {stem}_label-*_probseg and {stem}_qc.json, the
    App maps them to BIDS names and puts the QC values in the tables."""
    shape, affine = (6, 5, 4), np.diag([2.0, 2.0, 2.0, 1.0])
    source = save_volume(np.ones(shape, np.float32), tmp_path / "scan.nii.gz", affine=affine)
    volume = load_volume(source)
    mask = np.zeros(shape, np.uint8)
    mask[1:5, 1:4, 1:3] = 1
    probs = {"CSF": 0.2, "GM": 0.5, "WM": 0.3}
    for name, p in probs.items():
        save_volume(mask * np.float32(p), tmp_path / f"pred/scan_label-{name}_probseg.nii.gz",
                    affine=affine)
    (tmp_path / "pred/scan_qc.json").write_text(json.dumps(
        {"entropy": 0.25, "separation": 1.5, "changed_share": 0.02, "flag": True,
         "class_means": {"csf": 10, "gm": 50}}))
    labels = mask * 2
    result = TissueResult.from_files(volume, mask, labels, tmp_path / "pred/scan")
    assert TissueResult.from_files(volume, mask, labels, tmp_path / "none") is None
    file = BidsFile(tmp_path / "bids/sub-07/anat/sub-07_T1w.nii.gz",
                    *parse_name("sub-07_T1w.nii.gz"), "anat")
    paths = deriv.output_paths(tmp_path / "out", file, tmp_path / "bids")
    row = deriv.write_image_outputs(paths, result, "sub-07/anat/sub-07_T1w.nii.gz", ["m"])
    assert paths["probseg_GM"] == tmp_path / "out/sub-07/anat/sub-07_label-GM_probseg.nii.gz"
    gm = nib.load(str(paths["probseg_GM"]))
    np.testing.assert_allclose(np.asarray(gm.dataobj), mask * 0.5, atol=1e-6)
    voxel_ml = 8 / 1000
    assert row["brain_ml"] == pytest.approx(24 * voxel_ml)
    assert row["gm_ml"] == pytest.approx(24 * 0.5 * voxel_ml, rel=1e-5)
    assert row["gm_fraction"] == pytest.approx(0.5, rel=1e-5)
    assert row["qc_flag"] is True and row["qc_separation"] == 1.5
    assert row["qc_class_means_gm"] == 50
    assert deriv.read_row(paths["sidecar"]) == pytest.approx(row)

"""Faults and bad input fail fast: one line naming the file or subject, nothing hung,
nothing half-written left readable."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib.resources import files
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brain_tf.cli import main
from brain_tf.data import apply_splits, load_spec, save_splits, split_subjects
from brain_tf.data.check import check_manifest
from brain_tf.data.shards import ShardLoader, load_index, write_shards
from brain_tf.data.synthetic import synthesize
from brain_tf.errors import DataError, SplitError
from brain_tf.io import load_volume, save_volume
from brain_tf.io.atomic import _HOST, writer_tag

REPO = Path(__file__).resolve().parents[1]
NIB_DATA = Path(str(files("nibabel") / "tests" / "data"))
TIMEOUT = 180  # seconds for a subprocess: far more than any of them needs


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """A tiny synthetic Cam-CAN dataset (8 subjects); copy it before breaking files."""
    root = tmp_path_factory.mktemp("faults") / "camcan"
    synthesize("camcan", root, subjects=8, seed=0, shape=(16, 16, 12))
    return root


def copy_of(twin, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(twin, root)
    spec = load_spec(root / "spec.toml")
    return spec, spec.manifest()


def rewrite(path, change, affine=None):
    img = nib.load(path)
    array = change(np.asanyarray(img.dataobj).copy())
    nib.save(nib.Nifti1Image(array, img.affine if affine is None else affine, img.header), path)


def run_python(code, tmp_path):
    """Run ``code`` in a fresh interpreter (this worktree's brain_tf) with a timeout."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


# ------------------------------------------------------- 1. pre-flight check
def break_files(manifest):
    """Seven subjects each broken one way; returns {subject: (file, message regex)}."""
    img, lab = list(manifest["image_T1"]), list(manifest["label"])
    subj = list(manifest["subject"])
    data = Path(img[0]).read_bytes()
    Path(img[0]).write_bytes(data[: len(data) // 2])
    data = bytearray(Path(img[1]).read_bytes())
    data[len(data) // 2] ^= 0x10  # one flipped bit inside the deflate stream
    Path(img[1]).write_bytes(bytes(data))
    rewrite(lab[2], lambda a: a[:, :, :10])
    affine = nib.load(lab[3]).affine.copy()
    affine[0, 3] += 5.0
    rewrite(lab[3], lambda a: a, affine)
    rewrite(lab[4], lambda a: np.where(a == 3, 7, a).astype(a.dtype))
    Path(lab[5]).write_bytes(b"")
    rewrite(img[6], lambda a: np.where(a > a.mean(), np.nan, a).astype(np.float32))
    return {subj[0]: (img[0], r"corrupt or truncated image data \(EOFError"),
            subj[1]: (img[1], r"corrupt or truncated image data \(BadGzipFile: CRC check failed"),
            subj[2]: (lab[2], r"label shape \(16, 16, 10\) differs from image"),
            subj[3]: (lab[3], r"label affine differs from image"),
            subj[4]: (lab[4], r"label values \[7\] are outside the declared label set "
                              r"\[0, 1, 2, 3\]"),
            subj[5]: (lab[5], r"empty file \(0 bytes\)"),
            subj[6]: (img[6], r"\d+ NaN/Inf voxels; fix the file")}


def test_check_reports_every_broken_subject_at_once(twin, tmp_path):
    spec, manifest = copy_of(twin, tmp_path)
    broken = break_files(manifest)
    with pytest.raises(DataError) as caught:
        check_manifest(manifest, spec)
    lines = str(caught.value).splitlines()
    assert lines[0] == f"{spec.path}: 7 problem(s) in 7 of 8 samples:"
    assert len(lines) == 8
    for subject, (path, text) in broken.items():
        line = re.compile(rf"  subject {subject}: {re.escape(path)}: {text}")
        assert sum(bool(line.match(text_line)) for text_line in lines) == 1
    report = check_manifest(manifest, spec, on_error="skip")
    assert report.bad_subjects == sorted(broken)
    good = set(manifest["subject"]) - set(broken)
    assert list(report.keep(manifest)["subject"]) == sorted(good)
    # files that passed are not read again (the labels off the image grid passed on their
    # own: 24 - 5), a repaired file is
    assert report.cached == 19 and report.files == 24
    shutil.copy(twin / Path(broken[manifest["subject"][5]][0]).relative_to(tmp_path / "data"),
                broken[manifest["subject"][5]][0])
    again = check_manifest(manifest, spec, on_error="skip")
    assert len(again.problems) == 6 and again.cached == 19


def test_check_cache_file_and_cli_flag(twin, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec, manifest = copy_of(twin, tmp_path)
    assert main(["manifest", "--spec", str(spec.path), "--check"]) == 0
    assert "checked 24 files of 8 samples" in capsys.readouterr().out
    stored = json.loads((tmp_path / "cache" / "brain_tf" / "checked_files.json").read_text())
    assert len(stored["files"]) == 24
    broken = break_files(manifest)
    assert main(["manifest", "--spec", str(spec.path), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert all(path in err for path, _ in broken.values())


def test_check_slices_mask_values_and_unreadable_image(tmp_path):
    spec_path = synthesize("kaggle_lgg", tmp_path / "lgg", subjects=2, seed=0,
                           shape=(16, 16, 4))
    spec = load_spec(spec_path)
    manifest = spec.manifest()
    image, mask = manifest["image_image"][0], manifest["label"][1]
    Path(image).write_bytes(Path(image).read_bytes()[:60])
    import skimage.io

    skimage.io.imsave(mask, np.full((16, 16), 128, np.uint8), check_contrast=False)
    report = check_manifest(manifest, spec, on_error="skip")
    by_path = {p.path: p.message for p in report.problems}
    assert by_path[image].startswith("unreadable or corrupt image")
    assert by_path[mask].startswith("label values [128] are outside the declared label set "
                                    "[0, 255]")
    assert len(report.problems) == 2


# --------------------------------------- 2. errors inside tf.data, model.fit
FIT = """
import sys
from pathlib import Path
import keras
import nibabel as nib
from brain_tf.data import load_spec
from brain_tf.errors import BrainTFError
from brain_tf.pipeline import PatchSampler, patch_dataset, pipeline_errors
from brain_tf.preprocess.loader import ManifestLoader

spec = load_spec("{spec}")
loader = ManifestLoader(spec.manifest(), {{}}, label_values=spec.label_values)
ds = patch_dataset(loader, PatchSampler((8, 8, 8), patches_per_subject=2), num_classes=4,
                   batch_size=2, repeat=True, shuffle=False)
x = keras.Input((8, 8, 8, 1))
model = keras.Model(x, keras.layers.Conv3D(4, 1, activation="softmax")(x))
model.compile("adam", "categorical_crossentropy")
if {guarded}:
    try:
        with pipeline_errors():
            model.fit(ds, epochs=2, steps_per_epoch=5, verbose=0)
    except BrainTFError as exc:  # what brain_tf.cli.main does
        print(f"error: {{type(exc).__name__}}: {{exc}}", file=sys.stderr)
        sys.exit(2)
model.fit(ds, epochs=2, steps_per_epoch=5, verbose=0)
"""


@pytest.mark.parametrize("fault", ["truncated image", "label value 7"])
def test_error_inside_the_pipeline_is_the_original_one_line_error(twin, tmp_path, fault):
    spec, manifest = copy_of(twin, tmp_path)
    if fault == "truncated image":  # aborted the process (exit 134) before
        bad = manifest["image_T1"][1]
        Path(bad).write_bytes(Path(bad).read_bytes()[:3000])
    else:  # hung after the error before
        bad = manifest["label"][1]
        rewrite(bad, lambda a: np.where(a == 3, 7, a).astype(a.dtype))
    done = run_python(FIT.format(spec=spec.path, guarded=True), tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: DataError: {bad}: ")
    assert "Traceback" not in done.stderr and "PyFunc" not in done.stderr


def test_pipeline_errors_around_a_loop_over_a_dataset():
    import tensorflow as tf

    from brain_tf.pipeline import pipeline_errors, volume_dataset

    volumes = [np.zeros((6, 6, 6), np.float32), np.zeros((5, 6, 6), np.float32)]
    ds = volume_dataset(volumes, [1.0, 2.0], batch_size=1, shuffle=False)
    with pytest.raises(DataError, match=r"^item 1: shape \(5, 6, 6\) differs from \(6, 6, 6\)"):
        with pipeline_errors():
            list(ds)
    other = tf.data.Dataset.from_tensors(1.0).map(
        lambda v: tf.debugging.check_numerics(v / 0.0, "divided by zero"))
    with pytest.raises(tf.errors.InvalidArgumentError):  # not a brain_tf error: unchanged
        with pipeline_errors():
            list(other)


def test_uncaught_pipeline_error_still_ends_the_process(twin, tmp_path):
    spec, manifest = copy_of(twin, tmp_path)
    bad = manifest["image_T1"][1]
    Path(bad).write_bytes(Path(bad).read_bytes()[:3000])
    done = run_python(FIT.format(spec=spec.path, guarded=False), tmp_path)
    assert done.returncode == 1  # the traceback of an uncaught error, not a hang or an abort
    assert f"DataError: {bad}: corrupt or truncated image data" in done.stderr


# ------------------------------------------------------ 3. splits from a file
def split_file(twin, tmp_path):
    manifest = load_spec(twin / "spec.toml").manifest()
    made = split_subjects(manifest, {"train": 0.5, "val": 0.25, "test": 0.25}, seed=0)
    path = save_splits(made, tmp_path / "splits.csv")
    return manifest, made, pd.read_csv(path, dtype=str), path


def test_splits_file_leaks_and_gaps_are_named(twin, tmp_path):
    manifest, made, table, path = split_file(twin, tmp_path)
    pd.testing.assert_series_equal(apply_splits(manifest, path)["split"], made["split"])
    train = table[table["split"] == "train"]
    one, other = train["sample"].iloc[0], train["sample"].iloc[1]
    pd.concat([table, train.iloc[:1]]).to_csv(path, index=False)
    with pytest.raises(SplitError, match=rf"{path}: 1 sample\(s\) are listed more than once "
                                         rf"\({one} 2 times in train\)"):
        apply_splits(manifest, path)
    pd.concat([table, train.iloc[:1].assign(split="test")]).to_csv(path, index=False)
    with pytest.raises(SplitError, match=rf"\({one} in test\+train\)"):
        apply_splits(manifest, path)
    table[table["sample"] != other].to_csv(path, index=False)
    with pytest.raises(SplitError, match=rf"1 sample\(s\) of the dataset are not listed, of "
                                         rf"subject\(s\) {other};"):
        apply_splits(manifest, path)
    extra = pd.DataFrame({"sample": ["CC000000"], "subject": ["CC000000"], "split": ["test"]})
    pd.concat([table, extra]).to_csv(path, index=False)
    with pytest.raises(SplitError, match=r"1 listed sample\(s\) are not in the dataset "
                                         r"\(CC000000\)"):
        apply_splits(manifest, path)


def test_splits_file_patient_in_two_splits_by_its_slices(tmp_path):
    manifest = pd.DataFrame({"sample": ["P1_0", "P1_1", "P2_0"], "subject": ["P1", "P1", "P2"]})
    path = tmp_path / "splits.csv"
    pd.DataFrame({"sample": ["P1_0", "P1_1", "P2_0"],
                  "split": ["train", "test", "val"]}).to_csv(path, index=False)
    with pytest.raises(SplitError, match=r"1 subject\(s\) appear in more than one split "
                                         r"\(P1 in test\+train\)"):
        apply_splits(manifest, path)


# ----------------------------------------------------------------- 4. files
def test_nibabel_files_that_are_not_volumes_or_lack_their_data(tmp_path):
    with pytest.raises(DataError, match=r"row_major.dconn.nii: is a CIFTI-2 file .*not a volume"):
        load_volume(NIB_DATA / "row_major.dconn.nii", canonical=False)
    gifti = Path(str(files("nibabel") / "gifti" / "tests" / "data")) / "ascii.gii"
    with pytest.raises(DataError, match=r"ascii.gii: is a GIFTI surface file, not a volume"):
        load_volume(gifti)
    shutil.copy(NIB_DATA / "analyze.hdr", tmp_path / "analyze.hdr")
    for canonical in (True, False):
        with pytest.raises(DataError, match=r"analyze.hdr: the data file analyze.img is missing"):
            load_volume(tmp_path / "analyze.hdr", canonical=canonical)
    shutil.copy(NIB_DATA / "T1.PAR", tmp_path / "T1.PAR")
    with pytest.raises(DataError, match=r"T1.PAR: the data file T1.REC is missing"):
        load_volume(tmp_path / "T1.PAR")
    with pytest.raises(DataError, match=r"phantom_truncated.PAR: invalid header \(PARRECError"):
        load_volume(NIB_DATA / "phantom_truncated.PAR")
    with pytest.raises(DataError, match=r"bad_datatype\+orig.HEAD: invalid header"):
        load_volume(NIB_DATA / "bad_datatype+orig.HEAD")
    with pytest.raises(DataError, match=r"0.dcm: is a DICOM file"):
        load_volume(Path(str(files("nibabel") / "nicom" / "tests" / "data")) / "0.dcm")


def test_temporary_files_of_killed_writers_are_removed(tmp_path):
    target = tmp_path / "pred.nii.gz"
    killed = run_python(f"""
        import os
        from brain_tf.io.atomic import atomic_path
        with atomic_path({str(target)!r}) as tmp:
            tmp.write_bytes(b"half a volume")
            os._exit(9)  # killed while writing
        """, tmp_path)
    assert killed.returncode == 9
    (left,) = tmp_path.glob(".pred.tmp-*.nii.gz")
    dead_pid = left.name.split("-")[-2]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".pred.tmp-{_HOST}-{sleeper.pid}-0123abcd.nii.gz"
        ours = tmp_path / f".pred.tmp-{writer_tag()}.nii.gz"
        elsewhere = tmp_path / f".pred.tmp-otherhost-{dead_pid}-0123abcd.nii.gz"
        unrelated = tmp_path / f".other.tmp-{left.name.split('tmp-')[1]}"
        for path in (live, ours, elsewhere, unrelated):
            path.write_bytes(b"in progress")
        save_volume(np.zeros((2, 2, 2), np.float32), target, affine=np.eye(4))
        assert not left.exists()  # the killed writer's file went
        assert live.exists() and ours.exists() and elsewhere.exists() and unrelated.exists()
        np.testing.assert_array_equal(load_volume(target).array, 0)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_killed_shard_rewrite_leaves_the_old_set_readable(twin, tmp_path):
    spec = load_spec(twin / "spec.toml")
    out = tmp_path / "shards"
    write_shards(spec, out, {}, subjects_per_shard=2, progress=False)
    before = load_index(out)
    first = ShardLoader(out)(5).image
    killed = run_python(f"""
        import os
        import brain_tf.data.shards as shards
        encode, calls = shards.encode_subject, []
        def dying(item, metadata=None):
            calls.append(1)
            if len(calls) == 4:
                os._exit(9)  # killed in the second shard
            return encode(item, metadata)
        shards.encode_subject = dying
        shards.write_shards({str(twin / "spec.toml")!r}, {str(out)!r},
                            {{"normalise": "zscore_nonzero"}}, subjects_per_shard=2,
                            progress=False)
        """, tmp_path)
    assert killed.returncode == 9
    assert load_index(out) == before  # readers still see the complete old set
    np.testing.assert_array_equal(ShardLoader(out)(5).image, first)
    sets = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(sets) == 2  # the old set and the half-written new one
    index = write_shards(spec, out, {"normalise": "zscore_nonzero"}, subjects_per_shard=2,
                         progress=False)
    (only,) = [p for p in out.iterdir() if p.is_dir()]  # old and half-written sets removed
    assert only.name not in sets and all(s["file"].startswith(only.name) for s in index["shards"])
    assert not np.array_equal(ShardLoader(out)(5).image, first)
    # a shard changed after writing: another size, or the same size with other bytes
    shard = out / index["shards"][1]["file"]
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])
    with pytest.raises(DataError, match=r"shard-00001-of-00004.tfrecord.gz: \d+ bytes where "
                                        r"index.json says \d+; the shard set is incomplete"):
        ShardLoader(out)
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(DataError, match=r"shard-00001-of-00004.tfrecord.gz: contents differ "
                                        r"from the checksum"):
        ShardLoader(out)(2)

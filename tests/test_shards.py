"""TFRecord shards: the same subjects as from NIfTI, the index, checks and the CLI."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from brain_tf.cli import main
from brain_tf.data import load_spec
from brain_tf.data.shards import ShardLoader, load_index, shard_dataset, subject_loader
from brain_tf.data.synthetic import synthesize
from brain_tf.errors import ConfigError, DataError
from brain_tf.preprocess.loader import ManifestLoader
from brain_tf.tasks import TASKS

PRESET = TASKS["tumor-segmentation"].config("small")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    spec = synthesize("camcan", root / "data", subjects=3, seed=3, shape=(20, 24, 16))
    code = main(["shard", "--spec", str(spec), "--out", str(root / "shards"),
                 "--task", "tumor-segmentation", "--preset", "small",
                 "--subjects-per-shard", "2"])
    assert code == 0
    return load_spec(spec), root / "shards"


def test_index_lists_shards_subjects_and_config(sharded):
    spec, folder = sharded
    index = json.loads((folder / "index.json").read_text())
    manifest = spec.manifest()
    assert index["num_subjects"] == 3
    files = [Path(s["file"]) for s in index["shards"]]
    assert [f.name for f in files] == ["shard-00000-of-00002.tfrecord.gz",
                                       "shard-00001-of-00002.tfrecord.gz"]
    assert files[0].parent == files[1].parent and files[0].parent.name.startswith("set-")
    assert [s["bytes"] for s in index["shards"]] == [(folder / f).stat().st_size for f in files]
    assert [len(s["subjects"]) for s in index["shards"]] == [2, 1]
    assert all((folder / s["file"]).read_bytes()[:2] == b"\x1f\x8b" for s in index["shards"])
    assert index["preprocess"]["normalise"] == PRESET.preprocess.normalise
    first = index["subjects"][manifest["sample"][0]]
    assert first["shard"] == 0 and first["position"] == 0
    assert first["image_shape"] == [20, 24, 16, 1]
    assert first["label"] and first["mask"]
    assert first["metadata"]["age"] == pytest.approx(float(manifest["age"][0]))
    assert not list(folder.glob(".*tmp*"))  # atomic writes left nothing behind


def test_shards_give_the_nifti_subjects_exactly(sharded):
    spec, folder = sharded
    manifest = spec.manifest()
    nifti = ManifestLoader(manifest, PRESET.preprocess.to_dict(), label_values=spec.label_values)
    rows = manifest.iloc[::-1]  # any order of rows
    config = TASKS["tumor-segmentation"].config("small", {"data": {"shards": str(folder)}})
    shards = subject_loader(rows, config, label_values=spec.label_values)
    assert isinstance(shards, ShardLoader) and len(shards) == 3
    for i in range(3):
        a, b = nifti(2 - i), shards(i)
        assert b.subject == a.subject == shards.subject_id(i)
        assert b.image.dtype == np.float32 and b.label.dtype == np.uint8
        np.testing.assert_array_equal(b.image, a.image)
        np.testing.assert_array_equal(b.label, a.label)
        np.testing.assert_array_equal(b.mask, a.mask)
        np.testing.assert_array_equal(b.affine, a.affine)
        assert b.spacing == a.spacing
    assert shards.metadata(0)["sex"] == manifest["sex"].iloc[-1]


def test_parallel_tf_data_reading_gives_the_same_arrays(sharded):
    spec, folder = sharded
    reference = ShardLoader(folder)
    seen = {}
    for item in shard_dataset(folder, num_parallel_reads=2):
        seen[item["subject"].numpy().decode()] = item
    assert sorted(seen) == sorted(reference.subjects)
    for i, sid in enumerate(reference.subjects):
        expected = reference(i)
        np.testing.assert_array_equal(seen[sid]["image"].numpy(), expected.image)
        np.testing.assert_array_equal(seen[sid]["label"].numpy(), expected.label)
        np.testing.assert_array_equal(seen[sid]["affine"].numpy(), expected.affine)


def test_mismatched_config_and_missing_subjects_are_clear_errors(sharded, tmp_path):
    spec, folder = sharded
    other = {**PRESET.preprocess.to_dict(), "normalise": "zscore_mask"}
    with pytest.raises(ConfigError, match="normalise: shards 'zscore_slice' vs config "
                                          "'zscore_mask'"):
        ShardLoader(folder, config=other, label_values=spec.label_values)
    with pytest.raises(DataError, match="not in the shards"):
        ShardLoader(folder, subjects=["nobody"])
    with pytest.raises(DataError, match="not a shard folder"):
        load_index(tmp_path)
    assert main(["shard", "--spec", "missing.toml", "--out", str(tmp_path / "o"),
                 "--task", "tumor-segmentation"]) == 2
    assert main(["shard", "--spec", "missing.toml", "--out", str(tmp_path / "o")]) == 2


def test_decompressed_shards_are_cached_and_evicted(sharded, tmp_path):
    _, folder = sharded
    loader = ShardLoader(folder, cached_shards=1)
    first = loader(0).image
    loader(2)  # the second shard replaces the first in the cache
    assert list(loader._records) == [folder / loader.index["shards"][1]["file"]]
    np.testing.assert_array_equal(loader(0).image, first)  # read again from disk
    # a truncated shard is a clear error naming the file
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    shard = broken / loader.index["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(DataError, match="shard-00000-of-00002.*write the shards again"):
        ShardLoader(broken)(0)


def test_train_from_shards_finishes_and_evaluates(sharded, tmp_path, monkeypatch):
    """train --shards, then evaluation of the shards' subjects. A record's array is a
    read-only view of its bytes, kept as it is when those happen to be 64-byte aligned
    (otherwise copied): here always, as in the runs where evaluation used to fail."""
    spec, folder = sharded
    from brain_tf.data import shards
    from brain_tf.preprocess.aligned import as_aligned

    def read_only_aligned(array, dtype=None):
        out = as_aligned(np.array(array), dtype)
        out.setflags(write=False)
        return out

    monkeypatch.setattr(shards, "as_aligned", read_only_aligned)
    assert not ShardLoader(folder)(0).image.flags.writeable
    tiny = tmp_path / "tiny.toml"
    tiny.write_text('[sampler]\npatch_size = [16, 16, 16]\npatches_per_subject = 1\n'
                    '[model]\ndepth = 2\nbase_filters = 4\n'
                    '[training]\nsteps_per_epoch = 1\nbatch_size = 1\nval_patches = 1\n'
                    'verbose = 0\n[inference]\npatch_size = [16, 16, 16]\nbatch_size = 1\n')
    run = tmp_path / "run"
    assert main(["tumor-segmentation", "train", "--spec", str(spec.path), "--preset", "small",
                 "--epochs", "1", "--shards", str(folder), "--config", str(tiny),
                 "--run-dir", str(run)]) == 0
    assert (run / "complete.json").exists() and (run / "metrics.json").exists()

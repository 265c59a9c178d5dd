"""Brain extraction end to end on a tiny synthetic full-head Cam-CAN twin: it learns (well
above a threshold-and-morphology mask), and predict writes the mask and the skull-stripped
image on the input's grid."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brain_tf.data.synthetic import synthesize
from brain_tf.evaluation import dice
from brain_tf.io import load_volume
from brain_tf.preprocess.brain_mask import simple_brain_mask
from brain_tf.tasks import TASKS

TINY = {
    "model": {"filters": [8, 16, 32]},
    "training": {"epochs": 6, "steps_per_epoch": 10, "batch_size": 4, "val_patches": 2,
                 "verbose": 0},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("brain")
    spec = synthesize("camcan", root / "data", subjects=8, seed=5, shape=(48, 56, 48),
                      spacing=4.0)
    task = TASKS["brain-extraction"]
    run = task.train(task.config("small", {**TINY, "data": {"spec": str(spec)}}),
                     run_dir=str(root / "run"))
    return root, run


def test_learns_the_brain_mask_far_better_than_a_threshold(trained):
    root, run = trained
    metrics = run.load_json("metrics.json")
    assert set(metrics["per_label"]) == {"brain"}
    assert run.load_learned()["labels"] == {"background": 0, "brain": 1}
    splits = pd.read_csv(run / "splits.csv")
    baseline = []
    for sample in splits.loc[splits["split"] == "test", "sample"]:
        image = load_volume(root / "data" / "images" / f"sub-{sample}_T1w_unbiased.nii.gz")
        mask = load_volume(root / "data" / "masks" / f"sub-{sample}_T1w_brain_mask.nii.gz")
        baseline.append(dice(simple_brain_mask(image.array[..., None]), mask.array > 0))
    assert np.mean(baseline) < 0.75  # the whole head passes a threshold, not only the brain
    assert metrics["dice_brain"] > np.mean(baseline) + 0.15


def test_predict_writes_the_mask_and_the_stripped_image_on_the_input_grid(trained, tmp_path):
    root, run = trained
    scan = sorted((root / "data" / "images").glob("*.nii.gz"))[0]
    moved = nib.load(str(scan)).as_reoriented(np.array([[0, -1], [2, 1], [1, 1]]))
    path = tmp_path / "las.nii.gz"
    nib.save(moved, str(path))
    written = TASKS["brain-extraction"].predict(run.path, [str(path)], tmp_path / "out")
    assert [p.name for p in written] == ["las_mask.nii.gz", "las_brain.nii.gz"]
    mask, brain = (nib.load(str(p)) for p in written)
    for img in (mask, brain):
        assert img.shape == moved.shape
        np.testing.assert_allclose(img.affine, moved.affine)
    m = np.asarray(mask.dataobj)
    assert set(np.unique(m)) <= {0, 1} and 0 < m.mean() < 0.6
    np.testing.assert_allclose(np.asarray(brain.dataobj), np.asarray(moved.dataobj) * m,
                               rtol=1e-5, atol=1e-5)


def test_a_bundle_predicts_what_its_run_predicts(trained, tmp_path):
    from brain_tf.cli import main

    root, run = trained
    card = tmp_path / "card.md"
    card.write_text("# brain\n")
    bundle = tmp_path / "bundle"
    assert main(["export", str(run.path), "--pretrained", str(bundle), "--card", str(card)]) == 0
    assert sorted(p.name for p in bundle.iterdir()) == [
        "MODEL_CARD.md", "complete.json", "config.toml", "learned.json", "weights.npz"]
    assert (bundle / "MODEL_CARD.md").read_text() == "# brain\n"
    scan = str(sorted((root / "data" / "images").glob("*.nii.gz"))[1])
    task = TASKS["brain-extraction"]
    from_run = np.asarray(nib.load(str(task.predict(run.path, [scan], tmp_path / "a")[0])).dataobj)
    from_bundle = np.asarray(nib.load(str(task.predict(bundle, [scan], tmp_path / "b")[0])).dataobj)
    assert from_run.sum() > 0
    assert np.mean(from_run == from_bundle) > 0.999  # float16 weights change (almost) nothing


def test_an_unknown_shipped_model_is_named(tmp_path):
    from brain_tf.errors import ModelError

    with pytest.raises(ModelError, match="pretrained:nope: no such shipped model"):
        TASKS["brain-extraction"].predict("pretrained:nope", ["a.nii.gz"], tmp_path)


def test_export_names_a_missing_card_before_writing(trained, tmp_path, capsys):
    from brain_tf.cli import main

    _, run = trained
    assert main(["export", str(run.path), "--pretrained", str(tmp_path / "b"),
                 "--card", str(tmp_path / "missing.md")]) == 2
    assert "missing.md: no such model card file" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()

"""The contrast-agnostic presets: fine phantom labels grouped into the model's classes,
images generated from them while training, and predictions on any contrast."""

import nibabel as nib
import numpy as np
import pytest

from brain_tf.data.synthetic import LABELS, MASK, TISSUE, synthesize
from brain_tf.tasks import TASKS
from brain_tf.tasks.tissue import PHANTOM_HEAD, PHANTOM_TISSUE


def test_preset_groups_are_the_phantom_lookups():
    for index, (name, values) in enumerate(PHANTOM_TISSUE.items()):
        assert sorted(np.flatnonzero(TISSUE == index).tolist()) == sorted(values), name
    groups = TASKS["brain-extraction"].config("synth").classes.groups
    assert sorted(groups["brain"]) == np.flatnonzero(MASK).tolist()
    assert sorted(groups["background"]) == np.flatnonzero(~MASK.astype(bool)).tolist()
    assert PHANTOM_HEAD == [LABELS[n] for n in ("skin_muscle", "fat", "skull", "marrow", "eyes",
                                                "other_head", "dura")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    spec = synthesize("phantoms", root / "data", subjects=6, seed=1, spacing=4.0)
    task = TASKS["tissue-segmentation"]
    config = task.config("synth", {
        "data": {"spec": str(spec)}, "preprocess": {"spacing": [4.0, 4.0, 4.0]},
        "sampler": {"patch_size": [32, 32, 32]}, "model": {"depth": 3, "base_filters": 4},
        "training": {"epochs": 2, "steps_per_epoch": 3, "val_patches": 1, "verbose": 0},
        "inference": {"patch_size": [32, 32, 32]}})
    return root, task.train(config, run_dir=str(root / "run"))


def test_generated_training_gives_a_one_channel_model_for_any_contrast(trained, tmp_path):
    root, run = trained
    learned = run.load_learned()
    assert learned["labels"] == {"background": 0, "csf": 1, "gm": 2, "wm": 3}
    assert learned["channels"] == ["T1w"]  # one channel; the training images were generated
    assert learned["label_sources"][1] == [8, 9, 10]
    assert run.load_model().input_shape == (None, 32, 32, 32, 1)
    metrics = run.load_json("metrics.json")
    assert set(metrics["per_label"]) == {"csf", "gm", "wm"}
    for contrast in ("T2w", "FLAIR"):
        scan = sorted((root / "data" / "images").glob(f"*_{contrast}.nii.gz"))[0]
        mask = root / "data" / "masks" / scan.name.replace(f"_{contrast}", "_brain_mask")
        out = nib.load(str(TASKS["tissue-segmentation"].predict(
            run.path, [str(scan)], tmp_path / contrast, masks=[str(mask)])[0]))
        assert out.shape == nib.load(str(scan)).shape
        labels = np.asarray(out.dataobj)
        assert set(np.unique(labels)) <= {0, 1, 2, 3}
        assert not labels[np.asarray(nib.load(str(mask)).dataobj) == 0].any()

"""The shipped models on a real scan: the MNI ICBM152 2009a T1 at 2 mm (nilearn; used for
evaluation only). Each floor sits a little under the figure measured when the model was
shipped (``bench/real_mni.py --step 2``), so a regression in the model, the bundle or
the prediction path fails here."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brain_tf.cli import main
from brain_tf.evaluation import dice
from brain_tf.evaluation.mni import contrast, mni_reference
from brain_tf.io import save_volume
from brain_tf.training.bundle import shipped_models

#: measured at 2 mm when shipped (see each MODEL_CARD.md), minus a margin
#: measured, refined by EM (inference.refine = "em"): T1 CSF 0.582, GM 0.882, WM 0.942;
#: T2-like 0.650 / 0.887 / 0.944 (the network alone: T1 0.474 / 0.819 / 0.864)
TISSUE_FLOORS = {"T1": {"csf": 0.55, "gm": 0.85, "wm": 0.91},
                 "t2_like": {"csf": 0.62, "gm": 0.86, "wm": 0.92}}
#: measured (brain where p(brain) >= 0.5): 0.980 of the brain kept, mask Dice 0.987
BRAIN_KEPT_FLOOR = 0.97
BRAIN_DICE_FLOOR = 0.97


@pytest.fixture(scope="module")
def mni(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mni")
    ref = mni_reference(step=2)
    scans = {"T1": save_volume(ref.image, folder / "T1.nii.gz"),
             "t2_like": save_volume(contrast(ref, "t2_like").image, folder / "t2_like.nii.gz")}
    return folder, ref, scans


def test_both_models_ship_small():
    assert shipped_models() == ["brain", "tissue"]
    from brain_tf.training.bundle import pretrained_folder

    for name in shipped_models():
        folder = pretrained_folder() / name
        assert "brain-tf " in (folder / "MODEL_CARD.md").read_text()  # the command to retrain
        assert all(f.stat().st_size <= 10 * 2**20 for f in folder.iterdir())


def test_brain_extraction_keeps_the_real_brain(mni):
    folder, ref, scans = mni
    assert main(["brain-extraction", "predict", "--model", "pretrained:brain",
                 str(scans["T1"]), "--out", str(folder / "brain")]) == 0
    img = nib.load(str(folder / "brain" / "T1_mask.nii.gz"))
    assert img.shape == ref.image.shape
    np.testing.assert_allclose(img.affine, ref.image.affine)
    mask = np.asarray(img.dataobj) > 0
    assert mask[ref.brain].mean() >= BRAIN_KEPT_FLOOR
    assert dice(mask, ref.brain) >= BRAIN_DICE_FLOOR


@pytest.mark.parametrize("case", sorted(TISSUE_FLOORS))
def test_tissue_segmentation_of_a_real_scan_with_no_mask_given(mni, case):
    folder, ref, scans = mni
    out = folder / f"tissue_{case}"
    assert main(["tissue-segmentation", "predict", "--model", "pretrained:tissue",
                 str(scans[case]), "--out", str(out)]) == 0
    seg = nib.load(str(out / f"{case}_seg.nii.gz"))
    assert seg.shape == ref.image.shape
    np.testing.assert_allclose(seg.affine, ref.image.affine)
    labels = np.asarray(seg.dataobj)
    for value, name in ((1, "csf"), (2, "gm"), (3, "wm")):
        assert dice(labels == value, ref.tissue == value) >= TISSUE_FLOORS[case][name], name
    qc = json.loads((out / f"{case}_qc.json").read_text())
    assert qc["flag"] is False, qc  # a real scan in range of the held-out phantoms
    if case == "T1":  # system A's features from the prediction: volumes near the truth
        assert main(["tissue-volumes", str(out / "T1_seg.nii.gz"),
                     "--out", str(folder / "volumes.csv")]) == 0
        row = pd.read_csv(folder / "volumes.csv").iloc[0]
        voxel_ml = 8.0 / 1000.0
        # measured: WM 660 ml against 636 (+4 %), GM 904 ml against 1089 (-17 %: GM is
        # under-segmented, the dark side of the cortex labelled CSF; see the model card)
        for value, name, tolerance in ((3, "wm", 0.08), (2, "gm", 0.20)):
            truth = (ref.tissue == value).sum() * voxel_ml
            assert abs(row[f"{name}_ml"] - truth) / truth < tolerance, (name, row[f"{name}_ml"])

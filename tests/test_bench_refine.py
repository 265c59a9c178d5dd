"""The refinement benches' helpers: option overrides and the partial-volume phantoms."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
from refine_options import parse_overrides  # noqa: E402
from refine_phantoms import _block_majority, _block_mean  # noqa: E402


def test_overrides_take_each_option_s_type():
    out = parse_overrides(["mrf=0.2", "components=2", "partial_volume=false",
                           "bias_order=0"])
    assert out == {"mrf": 0.2, "components": 2, "partial_volume": False, "bias_order": 0}
    assert type(out["components"]) is int and type(out["mrf"]) is float
    assert parse_overrides(["partial_volume=True"]) == {"partial_volume": True}


@pytest.mark.parametrize("item", ["mrf", "nonsense=1", "partial_volume=0", "components=0.5",
                                  "mrf=strong"])
def test_a_bad_override_names_the_fix(item):
    with pytest.raises(SystemExit, match="--set"):
        parse_overrides([item], "--set")


def test_block_mean_averages_each_voxel_s_subvoxels():
    fine = np.arange(4 * 4 * 2, dtype=np.float32).reshape(4, 4, 2)
    coarse = _block_mean(fine, 2)
    assert coarse.shape == (2, 2, 1)
    assert coarse[0, 0, 0] == pytest.approx(np.mean([0, 1, 2, 3, 8, 9, 10, 11]))
    assert coarse[1, 1, 0] == pytest.approx(np.mean([20, 21, 22, 23, 28, 29, 30, 31]))


def test_block_majority_is_the_class_covering_most_of_the_voxel():
    fine = np.zeros((4, 2, 2), np.uint8)
    fine[0:2] = [[[1, 1], [1, 2]], [[2, 2], [3, 1]]]      # 4 of 8 CSF, 3 GM, 1 WM
    fine[2:4] = [[[3, 3], [3, 2]], [[2, 0], [0, 3]]]      # 4 WM, 2 GM, 2 background
    assert _block_majority(fine, 2, 4).ravel().tolist() == [1, 3]
    fine[2:4] = [[[3, 3], [2, 2]], [[0, 0], [1, 1]]]      # a tie goes to the lower class
    assert _block_majority(fine, 2, 4).ravel().tolist() == [1, 0]


def test_partial_volume_phantoms_are_the_same_subjects_on_the_same_grid(tmp_path):
    from brain_tf.data.synthetic.write_volumes import write_phantoms
    from brain_tf.evaluation import dice
    from brain_tf.io import load_volume
    from refine_phantoms import write_partial_volume

    write_phantoms(tmp_path / "sharp", 1, 5, (24, 30, 26), (6.0, 6.0, 6.0), lambda: None)
    write_partial_volume(tmp_path / "pv", tmp_path / "sharp", 5)

    def read(folder, name):
        return load_volume(tmp_path / folder / name, dtype=None)

    seg, pv_seg = read("sharp", "segs/sub-0001_seg.nii.gz"), read("pv", "segs/sub-0001_seg.nii.gz")
    np.testing.assert_allclose(pv_seg.affine, seg.affine)
    assert dice(pv_seg.array == 3, seg.array == 3) > 0.8
    mask = read("pv", "masks/sub-0001_brain_mask.nii.gz").array
    np.testing.assert_array_equal(mask > 0, pv_seg.array > 0)
    t1 = read("sharp", "images/sub-0001_T1w.nii.gz").array
    pv_t1 = read("pv", "images/sub-0001_T1w.nii.gz").array
    assert np.corrcoef(t1.ravel(), pv_t1.ravel())[0, 1] > 0.9


def test_held_out_figures_are_averaged_per_voxel_size_and_over_all():
    from refine_phantoms import _size, evaluate

    def case(spacing, wrong):
        tissue = np.zeros((4, 4, 4), np.uint8)
        tissue[:, :, :1], tissue[:, :, 1:3], tissue[:, :, 3:] = 1, 2, 3
        net = tissue.copy()
        net[:wrong, :, 3] = 2                  # `wrong` rows of WM called GM
        probs = np.eye(4, dtype=np.float16)[net]
        return dict(probs=probs, inside=np.ones(net.shape, bool), tissue=tissue,
                    spacing=np.asarray(spacing), contrast="T1w", group="g",
                    size=_size(spacing))

    table, _, _ = evaluate([case((1, 1, 1), 0), case((2, 2, 2), 2)], None)
    # the 2 mm case: GM 32 voxels + 8 called GM -> Dice 2*32/(32+40); WM 8 of 16 -> 2*8/24
    gm, wm = 2 * 32 / 72, 2 * 8 / 24
    np.testing.assert_allclose(table["1 mm"], [1, 1, 1])
    np.testing.assert_allclose(table["2 mm"], [1, gm, wm])
    np.testing.assert_allclose(table["all"], [1, (1 + gm) / 2, (1 + wm) / 2])
    np.testing.assert_allclose(table["g"], table["all"])


def test_cases_name_their_degradation_and_leave_out_drops_exactly_those(tmp_path):
    from brain_tf.data.synthetic.write_volumes import write_phantoms
    from refine_phantoms import CONTRASTS, _cases, without

    write_phantoms(tmp_path, 2, 5, (24, 30, 26), (6.0, 6.0, 6.0), lambda: None)
    cases = [dict(name=name, contrast=contrast, degradation=degradation, ref=ref)
             for name, contrast, degradation, ref in _cases(tmp_path)]
    assert len(cases) == 2 * len(CONTRASTS) * 2           # each scan clean and degraded
    by_name = {c["name"]: c for c in cases}
    assert by_name["sub-0001_T1w_bias"]["degradation"] == "bias"      # subjects in turn
    assert by_name["sub-0002_FLAIR_noise"]["degradation"] == "noise"
    clean, biased = by_name["sub-0001_T1w"]["ref"], by_name["sub-0001_T1w_bias"]["ref"]
    np.testing.assert_array_equal(clean.tissue, biased.tissue)
    assert not np.allclose(clean.image.array, biased.image.array)
    kept = without(cases, ["bias"])
    assert len(kept) == len(cases) - len(CONTRASTS)
    assert not any(c["name"].endswith("_bias") for c in kept)
    assert sum(c["name"].endswith("_noise") for c in kept) == len(CONTRASTS)

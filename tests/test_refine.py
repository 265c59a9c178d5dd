"""Per-scan refinement of a softmax segmentation (brain_tf.inference.refine): the EM's
estimates on hand-made volumes, contrast independence, probability maps on the input's
grid through predict, soft volumes and the QC flag."""

import dataclasses
import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import scipy.ndimage as ndi

from brain_tf.cli import main
from brain_tf.data.synthetic.subject import make_subject
from brain_tf.evaluation.volumes import soft_volumes_table
from brain_tf.inference.refine import RefineOptions, refine
from brain_tf.inference.refine_em import (Mixture, bending_energy, fit, monomial_powers,
                                          partial_volume_pairs, polynomial_basis)
from brain_tf.io import save_volume

MEANS, SDS = (0.3, 0.6, 0.9), (0.03, 0.04, 0.05)


def _shell_labels(n):
    """Three classes in shells on an n^3 grid: 3 at the centre, 2 around it, 1 outside."""
    u = (np.indices((n, n, n)) - (n - 1) / 2) / ((n - 1) / 2)
    radius = np.sqrt((u**2).sum(axis=0))
    return np.where(radius < 0.5, 3, np.where(radius < 0.8, 2, 1)).astype(np.uint8)


def _shells(n=32, seed=0):
    """The shells with Gaussian intensities of MEANS / SDS, a prior that gives the true
    class 0.7 and the others 0.15 (an unsure network)."""
    rng = np.random.default_rng(seed)
    labels = _shell_labels(n)
    image = np.zeros(labels.shape, np.float32)
    for k, (m, s) in enumerate(zip(MEANS, SDS), start=1):
        image[labels == k] = rng.normal(m, s, int((labels == k).sum()))
    prior = np.full(labels.shape + (4,), 0.15, np.float32)
    prior[..., 0] = 0
    for k in (1, 2, 3):
        prior[..., k][labels == k] = 0.7
    return labels, image, prior


def test_em_recovers_means_variances_and_a_bias_field():
    n = 32
    labels, image, prior = _shells(n)
    u = (np.indices((n, n, n)) - (n - 1) / 2) / ((n - 1) / 2)   # -1..1 along each axis
    log_field = 0.15 * u[2] - 0.10 * u[1]                       # linear: order 1 holds it
    observed = image * np.exp(log_field)
    points = np.argwhere(np.ones((n, n, n), bool)).astype(float)
    basis, _ = polynomial_basis(points, 1, np.full(3, (n - 1) / 2), np.full(3, (n - 1) / 2))
    mixture, coefficients, q, _, _ = fit(observed.reshape(-1, 1), prior.reshape(-1, 4)[:, 1:],
                                      basis, weight=0.5, components=1, iterations=60)
    np.testing.assert_allclose(mixture.means[:, 0, 0], MEANS, rtol=0.02)
    np.testing.assert_allclose(np.sqrt(mixture.covariances[:, 0, 0, 0]), SDS, rtol=0.06)
    recovered = (basis @ coefficients)[:, 0]                    # log of the correction
    assert np.abs(recovered + log_field.ravel()).max() < 0.01
    assert np.mean(np.argmax(q, axis=1) + 1 == labels.ravel()) > 0.999
    # through refine(): the same labels, and the fitted means in units of the 99th percentile
    # (no partial-volume classes: this volume's classes meet with no mixed voxels)
    result = refine(observed, prior, np.ones((n, n, n), bool), (1.0, 1.0, 1.0),
                    RefineOptions(bias_order=1, mrf=0.0, iterations=60, partial_volume=False))
    assert np.mean(result.labels() == labels) > 0.999
    scale = np.percentile(observed, 99)
    np.testing.assert_allclose(np.ravel(result.qc["class_means"]), np.array(MEANS) / scale,
                               rtol=0.02)
    assert result.qc["flag"] is False


NOISE = 0.02


def _shells_with_partial_volume(n=32, up=4, seed=0):
    """The three shells drawn on a grid ``up`` times finer and averaged into n^3 voxels:
    each voxel's true fractions (n, n, n, 3) and its intensity, the fractions' mix of
    MEANS plus noise of sd NOISE; the prior 0.7 x fractions + 0.1."""
    fine = _shell_labels(n * up)
    fractions = np.stack([(fine == k).reshape(n, up, n, up, n, up).mean(axis=(1, 3, 5))
                          for k in (1, 2, 3)], axis=-1)
    noise = np.random.default_rng(seed).normal(0, NOISE, (n, n, n))
    image = (fractions @ np.array(MEANS) + noise).astype(np.float32)
    prior = np.zeros((n, n, n, 4), np.float32)
    prior[..., 1:] = 0.7 * fractions + 0.1
    return fractions, image, prior


def test_partial_volume_classes_recover_the_tissue_fractions_of_mixed_voxels():
    fractions, image, prior = _shells_with_partial_volume()
    mixed = fractions.max(axis=-1) < 0.99                       # ~9 % of the voxels
    truth = np.argmax(fractions, axis=-1) + 1
    inside = np.ones(image.shape, bool)
    options = RefineOptions(bias_order=0, mrf=0.0, iterations=60)
    error, right, sd = {}, {}, {}
    for pv in (False, True):
        result = refine(image, prior, inside, (1.0, 1.0, 1.0),
                        dataclasses.replace(options, partial_volume=pv))
        post = result.posteriors.reshape(image.shape + (4,))[..., 1:]
        error[pv] = (np.abs(post - fractions).sum(axis=-1) / 2)[mixed].mean()
        right[pv] = (result.labels() == truth)[mixed].mean()
        sd[pv] = np.ravel(result.qc["class_sd"]) * np.percentile(image, 99)
    # a class per pure tissue alone: mixed voxels get one class (fraction error 0.26) and
    # widen the middle class's Gaussian (sd 0.07 instead of 0.02)
    assert error[False] > 0.2 and sd[False][1] > 0.05
    assert error[True] < 0.1 and right[True] > right[False] + 0.1
    np.testing.assert_allclose(sd[True], NOISE, rtol=0.25)
    # soft volumes: the expected fractions sum to the true tissue volumes
    np.testing.assert_allclose(post.sum(axis=(0, 1, 2)), fractions.sum(axis=(0, 1, 2)),
                               rtol=0.05)


def test_no_partial_volume_class_between_two_tissues_that_imitates_a_third():
    """On a T1 (CSF 0.3, GM 0.6, WM 0.9) a CSF / WM mix looks like GM: only the pairs
    CSF / GM and GM / WM get a mixed class. With two channels and no class on the line
    between two others, every pair gets one."""
    sd = np.array(SDS).reshape(3, 1, 1, 1) ** 2
    t1 = Mixture(np.ones((3, 1)), np.array(MEANS).reshape(3, 1, 1), sd)
    assert partial_volume_pairs(t1) == [(0, 1), (1, 2)]
    off_line = Mixture(np.ones((3, 1)), np.array([[0.3, 0.3], [0.6, 0.9], [0.9, 0.3]])
                       .reshape(3, 1, 2), np.repeat(np.eye(2)[None, None] * 0.0016, 3, 0))
    assert partial_volume_pairs(off_line) == [(0, 1), (0, 2), (1, 2)]


def _phantom():
    s = make_subject(np.random.default_rng(5), shape=(40, 48, 40), spacing=4.0,
                     modalities=("T1",), head=False)
    inside = s.tissue > 0
    onehot = np.eye(4, dtype=np.float32)[s.tissue]
    prior = ndi.gaussian_filter(onehot, (1, 1, 1, 0)) + 0.2     # a blurred, unsure network
    prior[..., 0] = 0
    prior /= prior.sum(axis=-1, keepdims=True)
    return np.asarray(s.images["T1"], np.float32), s.tissue, inside, prior


def test_a_contrast_inverted_phantom_gets_the_same_labels():
    """The prior, not an intensity order, says which Gaussian is which class. (Without a
    bias field: the phantom's own field is multiplicative, its inverted copy's is not.)"""
    image, tissue, inside, prior = _phantom()
    inverted = np.where(inside, image[inside].max() + image[inside].min() - image, 0)
    flat = RefineOptions(bias_order=0, mrf=0.1)
    labels = refine(image, prior, inside, (4.0, 4.0, 4.0), flat).labels()
    labels_inv = refine(inverted, prior, inside, (4.0, 4.0, 4.0), flat).labels()
    assert np.mean(labels[inside] == labels_inv[inside]) > 0.99

    def dice(a, k):
        return 2 * ((a == k) & (tissue == k)).sum() / ((a == k).sum() + (tissue == k).sum())

    network = np.argmax(prior, axis=-1)
    for scan in (image, inverted):  # with the field (defaults): both improve on the network
        refined = refine(scan, prior, inside, (4.0, 4.0, 4.0)).labels()
        for k in (1, 2, 3):
            assert dice(refined, k) > dice(network, k) + 0.03, k


def test_predict_refines_on_the_mask_s_box_as_on_the_whole_grid(monkeypatch):
    """The predict path resamples the network's probabilities on the brain mask's box only;
    labels, probability maps and QC are those of the whole grid's probabilities."""
    from brain_tf.inference.segment import Segmenter
    from brain_tf.io import Grid
    from brain_tf.preprocess.inverse import probabilities_on_grid

    image, _, inside, prior = _phantom()
    prior[~inside] = [1, 0, 0, 0]
    network_affine = np.diag([4.0, 4.0, 4.0, 1.0])
    network_affine[:3, 3] = 1.5                    # off the file's grid: resampled linearly
    grid = Grid(inside.shape, np.diag([4.0, 4.0, 4.0, 1.0]))
    segmenter = Segmenter(num_classes=4, refine=RefineOptions())
    monkeypatch.setattr(Segmenter, "probabilities", lambda self, model, im, mask=None: prior)
    boxed = segmenter.scan_on_input_grid(None, image, network_affine, grid, image,
                                         inside=inside)
    whole = refine(image, probabilities_on_grid(prior, network_affine, grid), inside,
                   (4.0, 4.0, 4.0))
    np.testing.assert_array_equal(boxed.indices, whole.labels())
    for k in range(4):
        np.testing.assert_allclose(boxed.probability(k), whole.probability(k), atol=1e-5)
    assert boxed.qc["class_means"] == whole.qc["class_means"]


def test_qc_flags_intensities_that_contradict_the_prior():
    image, tissue, inside, prior = _phantom()
    good = refine(image, prior, inside, (4.0, 4.0, 4.0))
    assert good.qc["flag"] is False, good.qc
    noise = np.random.default_rng(0).uniform(0.2, 1.0, image.shape).astype(np.float32)
    bad = refine(noise, prior, inside, (4.0, 4.0, 4.0))
    assert bad.qc["flag"] is True and "max_separation" in bad.qc["outside_range"], bad.qc


def test_soft_volumes_are_sums_of_probabilities(tmp_path):
    affine = np.diag([2.0, 1.0, 3.0, 1.0])               # 6 mm^3 = 0.006 ml per voxel
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(3), size=(4, 5, 6)).astype(np.float32)
    p[0] = 0                                            # a slab outside the brain
    for k, name in enumerate(("CSF", "GM", "WM")):
        save_volume(p[..., k], tmp_path / f"sub-1_T1w_label-{name}_probseg.nii.gz",
                    affine=affine, dtype=np.float32)
    save_volume(np.argmax(p, -1).astype(np.uint8) + 1, tmp_path / "sub-1_T1w_seg.nii.gz",
                affine=affine)
    out = tmp_path / "soft.csv"
    assert main(["tissue-volumes", str(tmp_path / "sub-1_T1w_seg.nii.gz"), "--probseg",
                 "--out", str(out)]) == 0
    row = pd.read_csv(out).iloc[0]
    assert row["subject"] == "sub-1_T1w"
    sums = p.reshape(-1, 3).astype(np.float64).sum(axis=0) * 0.006
    assert (row["csf_ml"], row["gm_ml"], row["wm_ml"]) == pytest.approx(tuple(sums), rel=1e-5)
    assert row["brain_ml"] == pytest.approx(4 * 5 * 6 * 0.006 * 3 / 4, rel=1e-5)
    assert row["gm_fraction"] == pytest.approx(sums[1] / sums.sum(), rel=1e-5)
    # the maps given directly measure the same
    table = soft_volumes_table([("s", {n.lower(): str(tmp_path / f"sub-1_T1w_label-{n}_probseg"
                                                       ".nii.gz") for n in ("CSF", "GM", "WM")})])
    assert table.loc[0, "wm_ml"] == pytest.approx(sums[2], rel=1e-5)


def test_refined_predict_writes_probability_maps_on_the_input_grid(tmp_path):
    """pretrained:tissue (refine = "em") on a small phantom stored LAS with its mask."""
    s = make_subject(np.random.default_rng(3), shape=(48, 56, 48), spacing=3.0,
                     modalities=("T1",), head=False)
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = (s.tissue.shape[0] - 1)
    affine = s.affine @ flip                             # LAS: the x axis stored reversed
    scan = save_volume(s.images["T1"][::-1].astype(np.float32), tmp_path / "sub-1_T1w.nii.gz",
                       affine=affine)
    mask = save_volume((s.tissue[::-1] > 0).astype(np.uint8), tmp_path / "mask.nii.gz",
                       affine=affine)
    out = tmp_path / "out"
    assert main(["tissue-segmentation", "predict", "--model", "pretrained:tissue", str(scan),
                 "--mask", str(mask), "--out", str(out), "--write", "probseg"]) == 0
    inside = s.tissue[::-1] > 0
    maps = []
    for name in ("CSF", "GM", "WM"):
        img = nib.load(str(out / f"sub-1_T1w_label-{name}_probseg.nii.gz"))
        assert img.shape == inside.shape
        np.testing.assert_allclose(img.affine, affine, atol=1e-5)
        maps.append(np.asarray(img.dataobj, np.float32))
    total = np.sum(maps, axis=0)
    np.testing.assert_allclose(total[inside], 1.0, atol=1e-4)
    assert np.all(total[~inside] == 0)
    seg = np.asarray(nib.load(str(out / "sub-1_T1w_seg.nii.gz")).dataobj)
    np.testing.assert_array_equal(seg[inside], np.argmax(maps, axis=0)[inside] + 1)
    qc = json.loads((out / "sub-1_T1w_qc.json").read_text())
    assert len(qc["class_means"]) == 3 and 0 <= qc["changed"] <= 1 and "flag" in qc
    # soft volumes of those maps, detected by name
    assert main(["tissue-volumes", *(str(p) for p in sorted(out.glob("*_probseg.nii.gz"))),
                 "--out", str(tmp_path / "v.csv")]) == 0
    row = pd.read_csv(tmp_path / "v.csv").iloc[0]
    assert row["brain_ml"] == pytest.approx(inside.sum() * 27 / 1000, rel=1e-3)


def test_predict_config_replaces_the_run_s_inference_settings(tmp_path, capsys):
    """predict --config: its [inference] table over the bundle's (two EM iterations, where
    the bundle's settings take at least six: the bias steps); anything else, or a value the
    schema refuses, is a one-line error naming the file, before any output."""
    s = make_subject(np.random.default_rng(4), shape=(40, 48, 40), spacing=3.5,
                     modalities=("T1",), head=False)
    scan = save_volume(s.images["T1"].astype(np.float32), tmp_path / "sub-1_T1w.nii.gz",
                       affine=s.affine)
    mask = save_volume((s.tissue > 0).astype(np.uint8), tmp_path / "mask.nii.gz",
                       affine=s.affine)
    args = ["tissue-segmentation", "predict", "--model", "pretrained:tissue", str(scan),
            "--mask", str(mask)]
    short = tmp_path / "short.toml"
    short.write_text("[inference]\nrefine_iterations = 2\n")
    assert main(args + ["--out", str(tmp_path / "out"), "--config", str(short)]) == 0
    qc = json.loads((tmp_path / "out" / "sub-1_T1w_qc.json").read_text())
    assert qc["iterations"] == 2
    capsys.readouterr()
    for text, words in (("[training]\nepochs = 3\n", "[inference] table alone"),
                        ("[inference]\nrefine_components = 0\n", "refine_components")):
        short.write_text(text)
        assert main(args + ["--out", str(tmp_path / "bad"), "--config", str(short)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(short) in err[0] and words in err[0], err
        assert not (tmp_path / "bad").exists()


def test_bending_energy_of_hand_computed_fields():
    """c @ R @ c is the mean of the squared second derivatives: u_x^2 has d2/dx2 = 2
    (energy 4), u_x u_y has d2/dxdy = d2/dydx = 1 (energy 2), u_x^3 has 6 u_x (energy 36
    mean(u_x^2)); linear fields cost nothing."""
    rng = np.random.default_rng(0)
    points = rng.uniform(-1, 1, (500, 3))
    r = bending_energy(points, 3, np.zeros(3), np.ones(3))
    powers = monomial_powers(3)

    def field(**terms):
        c = np.zeros(len(powers))
        for key, value in terms.items():
            c[powers.index(tuple(int(v) for v in key[1:]))] = value
        return c

    assert field(p100=1, p010=-2, p001=3) @ r @ field(p100=1, p010=-2, p001=3) == 0
    np.testing.assert_allclose(field(p200=1) @ r @ field(p200=1), 4)
    np.testing.assert_allclose(field(p110=1) @ r @ field(p110=1), 2)
    np.testing.assert_allclose(field(p300=1) @ r @ field(p300=1),
                               36 * np.mean(points[:, 0] ** 2))
    np.testing.assert_allclose(field(p200=1, p020=1) @ r @ field(p200=1, p020=1), 8)
    # half-widths scale the coordinates: u = x / 2 halves each derivative's step
    r2 = bending_energy(2 * points, 3, np.zeros(3), np.full(3, 2.0))
    np.testing.assert_allclose(r2, r, atol=1e-12)


def test_a_smooth_bias_prior_keeps_linear_fields_and_damps_curved_ones():
    n = 32
    labels, image, prior = _shells(n)
    u = (np.indices((n, n, n)) - (n - 1) / 2) / ((n - 1) / 2)
    points = np.argwhere(np.ones((n, n, n), bool)).astype(float)
    centre = half = np.full(3, (n - 1) / 2)
    basis, _ = polynomial_basis(points, 2, centre, half)
    energy = bending_energy(points, 2, centre, half)
    x2 = monomial_powers(2).index((2, 0, 0))

    def correction(log_field, smoothness):
        observed = (image * np.exp(log_field)).reshape(-1, 1)
        _, coefficients, q, _, _ = fit(observed, prior.reshape(-1, 4)[:, 1:], basis, 0.5, 1, 60,
                                       penalty=smoothness * energy)
        assert np.mean(np.argmax(q, axis=1) + 1 == labels.ravel()) > 0.99
        return coefficients[:, 0]

    linear = 0.15 * u[2] - 0.10 * u[1]
    for smoothness in (0.0, 100.0):   # a linear field costs nothing: recovered either way
        assert np.abs(basis @ correction(linear, smoothness) + linear.ravel()).max() < 0.02
    curved = 0.2 * u[0] ** 2          # curvature: recovered freely, damped by the prior
    free = correction(curved, 0.0)
    assert np.abs(basis @ free + (curved - curved.mean()).ravel()).max() < 0.02
    assert abs(correction(curved, 100.0)[x2]) < 0.25 * abs(free[x2])

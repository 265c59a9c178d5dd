"""Per-scan Bayesian refinement of a softmax segmentation: the network's probabilities
are the spatial prior, the scan's own intensities the likelihood.

``posterior ∝ prior ** w × likelihood`` is fitted by EM (:mod:`brain_tf.inference.refine_em`:
a Gaussian mixture per class, optionally mixed classes for partial volume, a smooth
multiplicative bias field, optionally a mean-field MRF) inside the brain mask, on the
input's own grid (the network's probabilities are resampled there linearly,
:func:`brain_tf.preprocess.inverse.probabilities_on_grid`).

To stay within seconds on a 1 mm brain, the parameters are fitted on every ``stride``-th
voxel of the mask along each axis (the smallest stride that leaves at most
``fit_voxels``) and then applied to every voxel of the mask, where the MRF's mean field
runs a few more passes. The background class (index 0) gets probability 0 inside the
mask and 1 outside; foreground classes are the network's. With partial volume, a class's
probability is its expected fraction of the voxel (a voxel half CSF, half GM counts half
to each), so the probability maps give partial-volume soft volumes; the labels are the
largest fraction.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from brain_tf.errors import ConfigError, DataError
from brain_tf.inference.refine_em import (Neighbours, bending_energy, fit, polynomial_basis,
                                          posteriors, tempered_log_prior)
from brain_tf.inference.refine_qc import scan_qc
from brain_tf.schema import Inference

#: Voxels whose bias basis is evaluated at once when the fit is applied (bounded memory).
CHUNK = 2**18
#: Mean-field passes at full resolution after the fit (with ``mrf`` > 0).
FULL_MRF_PASSES = 3


_DEFAULT = Inference()


@dataclasses.dataclass
class RefineOptions:
    """How :func:`refine` fits a scan (``[inference] refine_*``; the defaults are the
    schema's, chosen on held-out phantoms with ``bench/refine_phantoms.py --grid``)."""

    prior_weight: float = _DEFAULT.refine_prior_weight
    components: int = _DEFAULT.refine_components
    bias_order: int = _DEFAULT.refine_bias_order
    bias_smoothness: float = _DEFAULT.refine_bias_smoothness
    mrf: float = _DEFAULT.refine_mrf
    iterations: int = _DEFAULT.refine_iterations
    partial_volume: bool = _DEFAULT.refine_partial_volume
    fit_voxels: int = 300_000

    @classmethod
    def from_config(cls, inference) -> "RefineOptions | None":
        """The options of an ``[inference]`` section; None when ``refine = "none"``."""
        if inference.refine == "none":
            return None
        return cls(prior_weight=inference.refine_prior_weight,
                   components=inference.refine_components,
                   bias_order=inference.refine_bias_order,
                   bias_smoothness=inference.refine_bias_smoothness, mrf=inference.refine_mrf,
                   iterations=inference.refine_iterations,
                   partial_volume=inference.refine_partial_volume)


@dataclasses.dataclass
class Refinement:
    """The refined class posteriors of the voxels of ``mask`` (N, K) and the scan's QC."""

    mask: np.ndarray
    posteriors: np.ndarray
    qc: dict

    def labels(self) -> np.ndarray:
        """Class indices on the whole grid (0 outside the mask)."""
        out = np.zeros(self.mask.shape, dtype=np.uint8)
        out[self.mask] = np.argmax(self.posteriors, axis=1)
        return out

    def probability(self, k: int) -> np.ndarray:
        """Class ``k``'s probability on the whole grid (float32)."""
        out = np.full(self.mask.shape, 1.0 if k == 0 else 0.0, dtype=np.float32)
        out[self.mask] = self.posteriors[:, k]
        return out


def _intensities(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, C) float32 intensities of the mask's voxels, each channel divided by its 99th
    percentile there (the fitted means are then comparable across scans)."""
    y = image[mask] if image.ndim == 3 else image[mask].reshape(int(mask.sum()), -1)
    y = y.reshape(len(y), -1).astype(np.float32)
    scale = np.percentile(y, 99, axis=0)
    scale[scale <= 0] = 1.0
    return y / scale


def _stride(count: int, fit_voxels: int) -> int:
    stride = 1
    while count / stride**3 > fit_voxels:
        stride += 1
    return stride


def refine(image: np.ndarray, probabilities: np.ndarray, mask: np.ndarray, spacing,
           options: RefineOptions | None = None) -> Refinement:
    """Refine ``probabilities`` (x, y, z, K; class 0 background) of ``image`` (x, y, z[, C])
    inside ``mask`` (x, y, z; nonzero = brain), all on one grid of voxel size ``spacing``
    (mm)."""
    options = options or RefineOptions()
    mask = np.asarray(mask) > 0
    k = probabilities.shape[-1]
    if probabilities.shape[:3] != mask.shape or image.shape[:3] != mask.shape:
        raise DataError(f"refine: image {image.shape}, probabilities {probabilities.shape} "
                        f"and mask {mask.shape} must share one grid")
    if k < 3:
        raise ConfigError("refine needs a softmax with background and at least two classes; "
                          f"this model has {k} output(s): set [inference] refine = \"none\"")
    if mask.sum() < 10 * k:
        raise DataError(f"refine: the brain mask has {int(mask.sum())} voxels; too few to fit "
                        "the scan's intensities (check the mask)")
    lo = np.argwhere(mask).min(axis=0)
    hi = np.argwhere(mask).max(axis=0) + 1
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    inside = mask[box]
    y = _intensities(np.asarray(image)[box], inside)
    prior = np.asarray(probabilities[box][inside], dtype=np.float32)
    network = np.argmax(prior, axis=1)
    fg = prior[:, 1:]
    points = np.argwhere(inside) * np.asarray(spacing, dtype=float)
    centre = (points.min(axis=0) + points.max(axis=0)) / 2
    half = np.maximum((points.max(axis=0) - points.min(axis=0)) / 2, 1e-3)

    stride = _stride(len(y), options.fit_voxels)
    sub = inside[::stride, ::stride, ::stride]
    sub_grid = np.zeros(inside.shape, dtype=bool)
    sub_grid[::stride, ::stride, ::stride] = sub
    pick = sub_grid[inside]
    basis, offsets = polynomial_basis(points[pick], options.bias_order, centre, half)
    penalty = None
    if options.bias_smoothness and options.bias_order > 1:
        penalty = options.bias_smoothness * bending_energy(points[pick], options.bias_order,
                                                           centre, half)
    mixture, coefficients, _, done, composition = fit(
        y[pick], fg[pick], basis, options.prior_weight, options.components, options.iterations,
        mrf=options.mrf, neighbours=Neighbours(sub), bias=options.bias_order > 0,
        penalty=penalty, partial_volume=options.partial_volume)

    log_b = np.empty(y.shape, dtype=np.float32)
    for start in range(0, len(y), CHUNK):
        part, _ = polynomial_basis(points[start:start + CHUNK], options.bias_order, centre,
                                   half, offsets)
        log_b[start:start + CHUNK] = part @ coefficients
    x = y * np.exp(log_b)
    log_prior = composition.log_prior(tempered_log_prior(fg, options.prior_weight))
    joint = composition.expand(mixture).log_likelihood(x) + log_prior
    _, q = posteriors(joint, composition)
    if options.mrf:
        neighbours = Neighbours(inside)
        for _ in range(FULL_MRF_PASSES):
            _, q = posteriors(joint, composition, options.mrf, neighbours, q)
    post = np.zeros((len(y), k), dtype=np.float32)
    post[:, 1:] = q
    full = np.zeros(mask.shape, dtype=bool)
    full[box] = inside
    qc = scan_qc(mixture, post, network, iterations=done, stride=stride)
    return Refinement(full, post, qc)

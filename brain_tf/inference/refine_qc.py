"""Quality control of one refined scan: values that say whether its intensities agreed
with the prior, and a flag when one falls outside the range seen on held-out phantoms.

- ``class_means``: each class's fitted mean intensity (bias-corrected, in units of the
  scan's 99th percentile inside the mask), per channel;
- ``separation``: the smallest distance between two classes' means in units of their
  pooled standard deviation (Mahalanobis with the mean covariance for several channels);
- ``changed``: the share of brain voxels whose label the refinement changed from the
  network's argmax;
- ``mean_entropy``: the mean posterior entropy over the brain, divided by log(classes)
  (0: every voxel certain, 1: every voxel undecided).
"""

from __future__ import annotations

import itertools

import numpy as np

#: (low, high) of each value: the range on 24 held-out phantom scans (3 subjects; T1w,
#: T2w, PDw and FLAIR, clean and with a bias field, Rician noise or 5 mm slices) at the
#: default settings, widened by about a quarter: separation 0.097-3.62, changed
#: 0.208-0.372, mean entropy 0.071-0.390; measured with ``python bench/refine_phantoms.py
#: --phantoms DIR --subjects 3 --qc`` (DIR: ``brain-tf synth phantoms --seed 99
#: --subjects 6 --spacing 1.5``). PDw and FLAIR phantoms have grey and white matter close
#: together, hence the low separation that still passes.
QC_RANGES = {"separation": (0.05, np.inf), "changed": (0.0, 0.45), "mean_entropy": (0.0, 0.5)}


def separation(means: np.ndarray, covariances: np.ndarray) -> float:
    """Smallest pooled-sd distance between two classes' means (K, C) / (K, C, C)."""
    best = np.inf
    for a, b in itertools.combinations(range(len(means)), 2):
        d = means[a] - means[b]
        pooled = (covariances[a] + covariances[b]) / 2
        best = min(best, float(np.sqrt(d @ np.linalg.solve(pooled, d))))
    return best


def scan_qc(mixture, posteriors: np.ndarray, network: np.ndarray, iterations: int,
            stride: int) -> dict:
    """The QC values of a refined scan: ``posteriors`` (N, K) with class 0 background,
    ``network`` the network's labels (N,) of the same voxels."""
    means, covs = mixture.class_moments()
    q = posteriors[:, 1:]
    entropy = -(q * np.log(np.clip(q, 1e-12, 1))).sum(axis=1) / np.log(q.shape[1])
    values = {"separation": separation(means, covs),
              "changed": float(np.mean(np.argmax(posteriors, axis=1) != network)),
              "mean_entropy": float(entropy.mean())}
    outside = [name for name, v in values.items()
               if not QC_RANGES[name][0] <= v <= QC_RANGES[name][1]]
    return {"class_means": np.round(means, 4).tolist(),
            "class_sd": np.round(np.sqrt(np.diagonal(covs, axis1=1, axis2=2)), 4).tolist(),
            **{k: round(v, 4) for k, v in values.items()},
            "flag": bool(outside), "outside_range": outside,
            "iterations": int(iterations), "fit_stride": int(stride)}

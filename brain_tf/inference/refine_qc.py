"""Quality control of one refined scan: values that say whether its intensities agreed
with the prior, and a flag when one falls outside the range seen on held-out phantoms.

- ``class_means``: each class's fitted mean intensity (bias-corrected, in units of the
  scan's 99th percentile inside the mask), per channel;
- ``separation``: the smallest distance between two classes' means in units of their
  pooled standard deviation (Mahalanobis with the mean covariance for several channels);
  ``max_separation`` the largest. Two classes may share an intensity in a contrast (CSF
  and WM on some PD scans: the prior tells them apart), so the flag reads the largest:
  when every pair overlaps the scan's intensities say nothing about the classes;
- ``changed``: the share of brain voxels whose label the refinement changed from the
  network's argmax;
- ``mean_entropy``: the mean posterior entropy over the brain, divided by log(classes)
  (0: every voxel certain, 1: every voxel undecided).
"""

from __future__ import annotations

import itertools

import numpy as np

#: (low, high) of each flagged value. On 96 held-out phantom scans (3 subjects; T1w, T2w,
#: PDw and FLAIR, clean and with a bias field, Rician noise or 5 mm slices, all of them
#: again with no bias field, and all again with true partial volume) at the default
#: settings: max_separation 2.73-12.66, changed 0.104-0.311, mean entropy 0.182-0.432
#: (partial-volume voxels are uncertain by design; separation, not flagged: 0.108-6.34);
#: the upper bounds lie a quarter of each range's width or more beyond it,
#: max_separation's floor 1.2 under its lowest. Measured with ``python
#: bench/refine_phantoms.py --phantoms DIR --unbiased DIR2 --partial-volume DIR3
#: --partial-volume-unbiased DIR4 --qc`` (DIR: ``brain-tf synth phantoms --seed 99
#: --subjects 3 --spacing 1.5``).
QC_RANGES = {"max_separation": (1.5, np.inf), "changed": (0.0, 0.45),
             "mean_entropy": (0.0, 0.71)}


def separations(means: np.ndarray, covariances: np.ndarray) -> list[float]:
    """Pooled-sd distance between the means (K, C) of every pair of classes."""
    out = []
    for a, b in itertools.combinations(range(len(means)), 2):
        d = means[a] - means[b]
        pooled = (covariances[a] + covariances[b]) / 2
        out.append(float(np.sqrt(d @ np.linalg.solve(pooled, d))))
    return out


def scan_qc(mixture, posteriors: np.ndarray, network: np.ndarray, iterations: int,
            stride: int) -> dict:
    """The QC values of a refined scan: ``posteriors`` (N, K) with class 0 background,
    ``network`` the network's labels (N,) of the same voxels."""
    means, covs = mixture.class_moments()
    q = posteriors[:, 1:]
    entropy = -(q * np.log(np.clip(q, 1e-12, 1))).sum(axis=1) / np.log(q.shape[1])
    pairs = separations(means, covs)
    values = {"separation": min(pairs), "max_separation": max(pairs),
              "changed": float(np.mean(np.argmax(posteriors, axis=1) != network)),
              "mean_entropy": float(entropy.mean())}
    outside = [name for name, (low, high) in QC_RANGES.items()
               if not low <= values[name] <= high]
    return {"class_means": np.round(means, 4).tolist(),
            "class_sd": np.round(np.sqrt(np.diagonal(covs, axis1=1, axis2=2)), 4).tolist(),
            **{k: round(v, 4) for k, v in values.items()},
            "flag": bool(outside), "outside_range": outside,
            "iterations": int(iterations), "fit_stride": int(stride)}

"""Probability maps of a segmentation, one NIfTI per class on the input's own grid:
``{stem}_label-{CLASS}_probseg.nii.gz`` (BIDS Derivatives' name; CLASS is the class name
upper-cased, e.g. CSF, GM, WM), float32 in 0..1. The background (class 0) is left out: it
is one minus the sum of the others."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def probseg_paths(names, stem) -> list[Path]:
    """The probability maps written for classes ``names`` (in class order, background
    first) of the scan whose outputs start with ``stem``."""
    return [Path(f"{stem}_label-{name.upper()}_probseg.nii.gz") for name in list(names)[1:]]


def write_probseg(probability, names, grid, stem) -> list[Path]:
    """Write ``probability(k)`` (class k's map on ``grid``, the input file's) of every
    class but the background."""
    from brain_tf.io import save_volume

    return [save_volume(np.asarray(probability(k), dtype=np.float32), path,
                        affine=grid.affine, header=grid.header, dtype=np.float32)
            for k, path in enumerate(probseg_paths(names, stem), start=1)]

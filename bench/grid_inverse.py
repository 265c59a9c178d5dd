"""Time and peak memory of mapping probabilities back to the input's grid (prints figures).

    python bench/grid_inverse.py [--classes 4] [--repeats 2]

The input is a 1 mm 182 x 218 x 182 scan stored L-A-S (FSL's order). Two cases:

* exact: the preprocessed grid is its RAS+ reorientation (K channels, 1 mm);
* resampled: the preprocessed grid has 2 mm voxels (91 x 109 x 91, K channels),
  axis-aligned with the scan or (oblique) rotated 10 degrees from it.

Side by side for the resampled case: :func:`labels_on_grid` (slabs of at most
``SLAB_VOXELS`` voxels times channels), the same with one slab (every channel
resampled whole, then the labels), and nearest-neighbour resampling of the
argmax label map (no probabilities: faster, but blocky at 1 mm). Peak memory is
what numpy allocates during the call (tracemalloc), not counting the inputs.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np
import scipy.ndimage as ndi

from brain_tf.io import Grid
from brain_tf.preprocess.inverse import argmax_labels, labels_on_grid, voxel_map

SHAPE = (182, 218, 182)


def measure(fn, repeats: int) -> tuple[float, float]:
    """(seconds per call, peak MB allocated during one call)."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    seconds = (time.perf_counter() - start) / repeats
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def nearest_labels(probabilities, affine, grid):
    matrix = voxel_map(affine, grid)
    return ndi.affine_transform(argmax_labels(probabilities), matrix[:3, :3],
                                offset=matrix[:3, 3], output_shape=grid.shape, order=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    las = np.diag([-1.0, 1.0, 1.0, 1.0])
    las[:3, 3] = [90.0, -126.0, -72.0]
    grid = Grid(SHAPE, las)
    ras = las @ np.array([[-1, 0, 0, SHAPE[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    step = np.diag([2.0, 2.0, 2.0, 1.0])
    step[:3, 3] = 0.5  # centres aligned, as preprocess.resample does
    coarse = ras @ step
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    turn = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    oblique = turn @ coarse
    k = args.classes
    fine = rng.random(SHAPE + (k,), dtype=np.float32)
    small = rng.random((91, 109, 91, k), dtype=np.float32)
    print(f"load average before: {os.getloadavg()[0]:.2f}; {k} classes; "
          f"input {SHAPE} = {np.prod(SHAPE) * k * 4 / 2**20:.0f} MB as K float32 channels")
    cases = [
        ("exact (RAS reorientation)", lambda: labels_on_grid(fine, ras, grid)),
        ("resampled 2 mm -> 1 mm, slabs", lambda: labels_on_grid(small, coarse, grid)),
        ("resampled, one slab", lambda: labels_on_grid(small, coarse, grid, slab_voxels=2**40)),
        ("resampled, oblique, slabs", lambda: labels_on_grid(small, oblique, grid)),
        ("nearest on the argmax labels", lambda: nearest_labels(small, coarse, grid)),
    ]
    for name, fn in cases:
        seconds, peak = measure(fn, args.repeats)
        print(f"  {name:>32}: {seconds:6.2f} s  peak {peak:7.1f} MB")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""Time of the BIDS App on the synthetic twin: per participant and for the whole twin.

Writes the twin (``brain-tf synth bids``: 3 participants, the second with two sessions,
90x110x100 voxels at 2 mm by default), runs ``brain-tf bids ... participant`` with the
shipped models at their own spacing (or ``--spacing``), then ``group``, and prints the
seconds of each participant (from the App's log), of the whole participant level and of
the group level, with the load average::

    python bench/bids_app.py [--subjects 3] [--shape 90 110 100] [--spacing MM]
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(90, 110, 100))
    parser.add_argument("--spacing", type=float, help="run the models at this voxel size")
    args = parser.parse_args()
    from brain_tf.cli import main as cli

    with tempfile.TemporaryDirectory() as tmp:
        twin, out = Path(tmp) / "twin", Path(tmp) / "out"
        assert cli(["synth", "bids", "--out", str(twin), "--subjects", str(args.subjects),
                    "--shape", *map(str, args.shape)]) == 0
        extra = ["--spacing", str(args.spacing)] if args.spacing else []
        start = time.perf_counter()
        assert cli(["bids", str(twin), str(out), "participant", *extra]) == 0
        participant = time.perf_counter() - start
        start = time.perf_counter()
        assert cli(["bids", str(twin), str(out), "group"]) == 0
        group = time.perf_counter() - start
        log = (out / "logs" / "participant.log").read_text()
        images = len(list(out.glob("sub-*/**/*_dseg.nii.gz")))
        print(f"\n{args.subjects} participants, {images} images of {args.shape} voxels"
              + (f", models at {args.spacing} mm" if args.spacing else ""))
        for sub, seconds in re.findall(r"(sub-\w+): done in ([\d.]+) s", log):
            print(f"  {sub}: {float(seconds):.1f} s")
        print(f"participant level {participant:.1f} s (model loading included), "
              f"group level {group:.1f} s; load average {os.getloadavg()}")
        _accuracy(twin, out)


def _accuracy(twin: Path, out: Path) -> None:
    """Mask Dice and CSF / GM / WM Dice of every image against the twin's truth."""
    import numpy as np

    from brain_tf.evaluation import dice
    from brain_tf.io import load_volume

    def read(path):
        return np.asarray(load_volume(path, dtype=None).array)

    print("against the twin's truth: brain-mask Dice; tissue Dice CSF / GM / WM")
    for seg in sorted(out.glob("sub-*/**/*_dseg.nii.gz")):
        if "_desc-" in seg.name:
            continue
        truth = twin / "derivatives" / "phantoms" / seg.relative_to(out)
        mask = seg.with_name(seg.name.replace("_dseg", "_desc-brain_mask"))
        true_mask = truth.with_name(truth.name.replace("_dseg", "_desc-brain_mask"))
        labels, true_labels = read(seg), read(truth)
        tissue = " / ".join(f"{dice(labels == c, true_labels == c):.3f}" for c in (1, 2, 3))
        print(f"  {seg.name.removesuffix('_dseg.nii.gz')}: mask "
              f"{dice(read(mask) > 0, read(true_mask) > 0):.3f}; tissue {tissue}")


if __name__ == "__main__":
    main()

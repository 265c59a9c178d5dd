"""Indexing a BIDS dataset: brain_tf's entity parser against pybids.

Writes a 500-participant layout (every second participant with two sessions, T1w and
T2w per session, a JSON sidecar per image, participants.tsv and sessions.tsv; the
images are tiny, since neither reader opens them), then times, alternating the two
readers in each round so the machine's load hits both alike:

- the import, in a fresh interpreter (``import bids`` against ``import
  brain_tf.bids.source``);
- indexing and listing the T1w images with the participants' metadata
  (``BIDSLayout(root)`` + ``get(suffix="T1w")`` + ``get_collections`` of
  participants.tsv, against ``bids_spec(root).manifest()``).

Needs pybids (``pip install pybids``)::

    python bench/bids_index.py [--participants 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_layout(root: Path, n: int) -> int:
    from brain_tf.io import save_volume

    tiny = root / ".tiny.nii.gz"
    save_volume(np.zeros((4, 4, 4), np.float32), tiny, affine=np.eye(4))
    data = tiny.read_bytes()
    tiny.unlink()
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "bench", "BIDSVersion": "1.9.0", "DatasetType": "raw"}))
    rows, images = ["participant_id\tage\tsex"], 0
    for i in range(n):
        sub = f"{i + 1:04d}"
        sessions = ["01", "02"] if i % 2 else ["01"]
        lines = ["session_id\tage"]
        for k, ses in enumerate(sessions):
            anat = root / f"sub-{sub}/ses-{ses}/anat"
            anat.mkdir(parents=True)
            for suffix in ("T1w", "T2w"):
                (anat / f"sub-{sub}_ses-{ses}_{suffix}.nii.gz").write_bytes(data)
                (anat / f"sub-{sub}_ses-{ses}_{suffix}.json").write_text(
                    json.dumps({"RepetitionTime": 2.3}))
                images += 1
            lines.append(f"ses-{ses}\t{30 + i % 50 + 2 * k}")
        (root / f"sub-{sub}/sub-{sub}_sessions.tsv").write_text("\n".join(lines) + "\n")
        rows.append(f"sub-{sub}\t{30 + i % 50}\t{'MF'[i % 2]}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    return images


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=300)
    return float(out.stdout.strip())


def index_pybids(root: Path) -> int:
    from bids import BIDSLayout

    layout = BIDSLayout(str(root), validate=True)
    files = layout.get(suffix="T1w", extension=[".nii", ".nii.gz"])
    layout.get_collections(level="dataset")
    return len(files)


def index_brain_tf(root: Path) -> int:
    from brain_tf.bids.source import bids_spec

    return len(bids_spec(root).manifest())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bids"
        root.mkdir()
        images = write_layout(root, args.participants)
        print(f"{args.participants} participants, {images} images (+ sidecars)")
        times = {k: [] for k in ("import pybids", "import brain_tf.bids.source",
                                 "index pybids", "index brain_tf")}
        for _ in range(args.rounds):
            times["import pybids"].append(import_seconds("bids"))
            times["import brain_tf.bids.source"].append(import_seconds("brain_tf.bids.source"))
            t = time.perf_counter()
            n_pybids = index_pybids(root)
            times["index pybids"].append(time.perf_counter() - t)
            t = time.perf_counter()
            n_ours = index_brain_tf(root)
            times["index brain_tf"].append(time.perf_counter() - t)
            assert n_pybids == n_ours, (n_pybids, n_ours)
        for name, values in times.items():
            print(f"{name:30s} median {np.median(values):6.2f} s  (rounds: "
                  + ", ".join(f"{v:.2f}" for v in values) + ")")
        print(f"T1w images found by both: {n_ours}; load average {os.getloadavg()}")


if __name__ == "__main__":
    main()

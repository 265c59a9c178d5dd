"""The synthetic BIDS twin: phantoms written as a BIDS dataset.

::

    dataset_description.json  participants.tsv  participants.json  .bidsignore  spec.toml
    sub-01/ses-01/anat/sub-01_ses-01_T1w.nii.gz, ..._T2w.nii.gz
    sub-01/sub-01_sessions.tsv                    (session_id, age at the scan)
    derivatives/phantoms/dataset_description.json
    derivatives/phantoms/sub-01/ses-01/anat/sub-01_ses-01_desc-brain_mask.nii.gz, ..._dseg.nii.gz

Every participant has a baseline session ``01``; every second one also a follow-up
``02`` two years later: the same phantom (same generator seed) rendered at the older
age. ``participants.tsv`` has the baseline age and sex; the derivatives folder holds the
true brain mask and tissue map (0 background, 1 CSF, 2 GM, 3 WM) of each image, so the
twin also trains the brain-extraction and tissue tasks. ``spec.toml`` (listed in
``.bidsignore``) is the dataset's data spec: T1w and T2w images with those derivatives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from brain_tf import __version__
from brain_tf.data.synthetic.cohort import balanced_sexes, cohort_rng, subject_rng
from brain_tf.data.synthetic.subject import make_subject
from brain_tf.io import save_volume, write_text

#: Phantom modality -> BIDS suffix.
BIDS_IMAGES = {"T1": "T1w", "T2": "T2w"}
BIDS_SCANNER = {"scale": 1000.0, "noise": 0.025, "bias": 0.10}
DERIVATIVES = "derivatives/phantoms"
FOLLOW_UP_YEARS = 2.0
BIDS_VERSION = "1.9.0"


def bids_spec() -> dict:
    """The data spec of the twin: T1w and T2w images, the true mask and tissue map."""
    return {
        "name": "bids",
        "description": "BIDS dataset: T1w and T2w per session, participants.tsv with age "
                       "and sex, true brain masks and tissue maps in derivatives/phantoms",
        "format": "bids",
        "kind": "volume",
        "root": ".",
        "bids": {"images": dict(zip(BIDS_IMAGES.values(), BIDS_IMAGES.values())),
                 "derivatives": DERIVATIVES, "mask": "desc-brain_mask", "label": "dseg"},
        "labels": {"background": 0, "csf": 1, "gm": 2, "wm": 3},
    }


def _json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def _tsv(path: Path, table: pd.DataFrame) -> None:
    write_text(path, table.to_csv(sep="\t", index=False, na_rep="n/a"))


def write_bids(out: Path, n: int, seed: int, shape: Sequence[int],
               spacing: Sequence[float], tick: Callable[[], None]) -> dict:
    """``n`` participants (ages 20-85, balanced sexes) as a BIDS dataset under ``out``."""
    rng = cohort_rng(seed)
    ages = rng.uniform(20, 85, n)
    sexes = balanced_sexes(rng, n)
    width = max(2, len(str(n)))
    participants = []
    for i, (age, sex) in enumerate(zip(ages, sexes)):
        sub = f"{i + 1:0{width}d}"
        sessions = ["01", "02"] if i % 2 == 1 else ["01"]
        rows = []
        for k, ses in enumerate(sessions):
            at = round(float(age) + k * FOLLOW_UP_YEARS, 1)
            s = make_subject(subject_rng(seed, i), shape, spacing, age=at, sex=sex,
                             modalities=tuple(BIDS_IMAGES), scanner=BIDS_SCANNER)
            stem = f"sub-{sub}_ses-{ses}"
            anat = Path(f"sub-{sub}/ses-{ses}/anat")
            for modality, suffix in BIDS_IMAGES.items():
                save_volume(s.images[modality], out / anat / f"{stem}_{suffix}.nii.gz", s.affine)
            save_volume(s.mask.astype(np.uint8),
                        out / DERIVATIVES / anat / f"{stem}_desc-brain_mask.nii.gz", s.affine)
            save_volume(s.tissue, out / DERIVATIVES / anat / f"{stem}_dseg.nii.gz", s.affine)
            rows.append({"session_id": f"ses-{ses}", "age": at})
        _tsv(out / f"sub-{sub}" / f"sub-{sub}_sessions.tsv", pd.DataFrame(rows))
        participants.append({"participant_id": f"sub-{sub}", "age": round(float(age), 1),
                             "sex": sex})
        tick()
    _tsv(out / "participants.tsv", pd.DataFrame(participants))
    _json(out / "participants.json", {
        "age": {"Description": "age at the first session", "Units": "year"},
        "sex": {"Description": "sex of the participant", "Levels": {"M": "male", "F": "female"}},
    })
    _json(out / "dataset_description.json", {
        "Name": "brain_tf synthetic BIDS twin", "BIDSVersion": BIDS_VERSION,
        "DatasetType": "raw", "License": "CC0",
        "GeneratedBy": [{"Name": "brain_tf synth bids", "Version": __version__}]})
    _json(out / DERIVATIVES / "dataset_description.json", {
        "Name": "phantom ground truth", "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "brain_tf synth bids", "Version": __version__}]})
    _tsv(out / DERIVATIVES / "dseg.tsv", pd.DataFrame(
        {"index": [0, 1, 2, 3], "name": ["background", "CSF", "GM", "WM"]}))
    write_text(out / ".bidsignore", "spec.toml\n")
    return {}

"""Writers of the NIfTI layouts: Cam-CAN, IXI, ADNI hippocampus, MSD/BraTS Task01,
and the synthetic-only ``phantoms`` layout.

Each writer makes ``n`` subjects under ``out`` in the layout its data spec in
``data_specs/`` describes and returns the changes the written spec needs
(IXI's: its metadata sheet is CSV instead of XLS). The Cam-CAN, IXI and ADNI
writers also save each subject's fine label map (see :mod:`.labels`) under
``labels/`` (IXI: ``IXI-labels/``), a file their specs do not list.
:func:`phantoms_spec` is the spec of the ``phantoms`` layout, which has no
real dataset behind it.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from brain_tf.data.synthetic.cohort import (
    balanced_sexes, cohort_rng, save_csv, subject_rng, unique_ids)
from brain_tf.data.synthetic.geometry import reorient
from brain_tf.data.synthetic.labels import LABELS
from brain_tf.data.synthetic.subject import make_subject
from brain_tf.io import save_volume, write_text

Tick = Callable[[], None]

CAMCAN_SCANNER = {"scale": 800.0, "noise": 0.02, "bias": 0.02}   # bias-corrected ("unbiased")
IXI_SITES = {  # site: (share of subjects, scanner)
    "Guys": (0.55, {"scale": 900.0, "noise": 0.035, "bias": 0.10}),   # 1.5 T
    "HH": (0.32, {"scale": 1500.0, "noise": 0.025, "bias": 0.18}),    # 3 T
    "IOP": (0.13, {"scale": 600.0, "noise": 0.040, "bias": 0.12}),    # 1.5 T, other vendor
}
#: Voxel order of the IXI files on disk (sagittal slices); readers reorient to RAS+.
IXI_ORIENTATION = "PIR"
ADNI_SCANNERS = ({"scale": 700.0, "noise": 0.035, "bias": 0.10},   # 1.5 T
                 {"scale": 1200.0, "noise": 0.025, "bias": 0.15})  # 3 T
BRATS_SCANNER = {"scale": 600.0, "noise": 0.03, "bias": 0.12}
#: MSD channel order and the phantom modality of each channel.
BRATS_CHANNELS = {"FLAIR": "FLAIR", "T1w": "T1", "T1gd": "T1gd", "T2w": "T2"}
#: Share of BraTS subjects with a high-grade, a low-grade and no tumour.
BRATS_TUMOURS = {"high": 0.75, "low": 0.15, None: 0.10}


def write_camcan(out: Path, n: int, seed: int, shape: Sequence[int],
                 spacing: Sequence[float], tick: Tick) -> dict:
    """Cam-CAN coursework: T1, brain mask, tissue labels, meta/meta_data_all.csv."""
    rng = cohort_rng(seed)
    ages = rng.integers(18, 89, n)
    sexes = balanced_sexes(rng, n)
    ids = unique_ids(rng, n, lambda r: "CC{}{:05d}".format(r.integers(1, 8), r.integers(0, 100000)),
                     sort=False)
    rows = []
    for i, (sid, age, sex) in enumerate(zip(ids, ages, sexes)):
        s = make_subject(subject_rng(seed, i), shape, spacing, age=float(age), sex=sex,
                         modalities=("T1",), scanner=CAMCAN_SCANNER)
        save_volume(s.images["T1"], out / f"images/sub-{sid}_T1w_unbiased.nii.gz", s.affine)
        save_volume(s.mask.astype(np.uint8), out / f"masks/sub-{sid}_T1w_brain_mask.nii.gz",
                    s.affine)
        save_volume(s.tissue, out / f"segs_refs/sub-{sid}_T1w_seg.nii.gz", s.affine)
        save_volume(s.labels, out / f"labels/sub-{sid}_labels.nii.gz", s.affine)
        rows.append({"subject_id": sid, "age": int(age), "gender_code": 1 if sex == "M" else 2,
                     "gender_text": "MALE" if sex == "M" else "FEMALE"})
        tick()
    save_csv(pd.DataFrame(rows).sort_values("subject_id"), out / "meta/meta_data_all.csv")
    return {}


def _ixi_row(rng: np.random.Generator, number: int, age: float, sex: str) -> dict:
    """One row of the IXI sheet, with dates that agree with ``age``."""
    study = datetime.date(2005, 6, 1) + datetime.timedelta(days=int(rng.integers(0, 700)))
    born = study - datetime.timedelta(days=int(round(age * 365.25)))
    height = rng.normal(177 if sex == "M" else 164, 7)
    return {
        "IXI_ID": number, "SEX_ID (1=m, 2=f)": 1 if sex == "M" else 2,
        "HEIGHT": int(round(height)),
        "WEIGHT": int(round(rng.normal(23.5, 3) * (height / 100) ** 2)),
        "ETHNIC_ID": int(rng.choice([1, 2, 3, 4, 5, 6], p=[.75, .05, .08, .05, .04, .03])),
        "MARITAL_ID": int(rng.integers(1, 6)), "OCCUPATION_ID": int(rng.integers(1, 9)),
        "QUALIFICATION_ID": int(rng.integers(1, 6)), "DOB": born.isoformat(),
        "DATE_AVAILABLE": 1, "STUDY_DATE": study.isoformat(),
        "AGE": round((study - born).days / 365.25, 2),
    }


def write_ixi(out: Path, n: int, seed: int, shape: Sequence[int],
              spacing: Sequence[float], tick: Tick) -> dict:
    """IXI: full-head T1 per scan (sagittal voxel order), brain masks, IXI.csv sheet."""
    rng = cohort_rng(seed)
    numbers = sorted(int(v) for v in rng.choice(np.arange(2, 663), n, replace=False))
    sites = list(IXI_SITES)
    site_of = rng.choice(sites, n, p=[IXI_SITES[s][0] for s in sites])
    ages = rng.uniform(20, 86, n)
    sexes = balanced_sexes(rng, n)
    rows = []
    for i, (number, site, age, sex) in enumerate(zip(numbers, site_of, ages, sexes)):
        row = _ixi_row(rng, number, float(age), sex)
        scan = int(rng.integers(500, 1300))
        s = make_subject(subject_rng(seed, i), shape, spacing, age=row["AGE"], sex=sex,
                         modalities=("T1",), scanner=IXI_SITES[site][1])
        stem = f"IXI{number:03d}-{site}-{scan:04d}-T1"
        image, affine = reorient(s.images["T1"], s.affine, IXI_ORIENTATION)
        save_volume(image, out / f"IXI-T1/{stem}.nii.gz", affine)
        mask, _ = reorient(s.mask.astype(np.uint8), s.affine, IXI_ORIENTATION)
        save_volume(mask, out / f"IXI-T1-masks/{stem}_mask.nii.gz", affine)
        labels, _ = reorient(s.labels, s.affine, IXI_ORIENTATION)
        save_volume(labels, out / f"IXI-labels/{stem}_labels.nii.gz", affine)
        rows.append(row)
        tick()
    save_csv(pd.DataFrame(rows), out / "IXI.csv")
    return {"metadata": {"path": "IXI.csv"}}


def write_adni(out: Path, n: int, seed: int, shape: Sequence[int],
               spacing: Sequence[float], tick: Tick) -> dict:
    """ADNI hippocampus: full-head T1 and labels right hippocampus 1, left 2."""
    rng = cohort_rng(seed)
    ids = unique_ids(rng, n, lambda r: "{:03d}_S_{:04d}".format(r.integers(2, 142),
                                                                r.integers(1, 7000)))
    ages = rng.uniform(55, 90, n)
    sexes = balanced_sexes(rng, n)
    for i, (sid, age, sex) in enumerate(zip(ids, ages, sexes)):
        scanner = ADNI_SCANNERS[int(rng.integers(0, len(ADNI_SCANNERS)))]
        s = make_subject(subject_rng(seed, i), shape, spacing, age=float(age), sex=sex,
                         modalities=("T1",), scanner=scanner)
        save_volume(s.images["T1"], out / f"images/{sid}_T1.nii.gz", s.affine)
        save_volume(s.hippocampus, out / f"labels/{sid}_hippocampus.nii.gz", s.affine)
        save_volume(s.labels, out / f"labels/{sid}_labels.nii.gz", s.affine)
        tick()
    return {}


def write_brats(out: Path, n: int, seed: int, shape: Sequence[int],
                spacing: Sequence[float], tick: Tick) -> dict:
    """MSD Task01: skull-stripped 4D FLAIR/T1w/T1gd/T2w images, labels 0-3, dataset.json."""
    rng = cohort_rng(seed)
    kinds = list(BRATS_TUMOURS)
    pick = rng.choice(len(kinds), n, p=list(BRATS_TUMOURS.values()))
    training = []
    for i in range(n):
        name = f"BRATS_{i + 1:03d}"
        s = make_subject(subject_rng(seed, i), shape, spacing, age=float(rng.uniform(30, 80)),
                         tumour=kinds[pick[i]], modalities=tuple(BRATS_CHANNELS.values()),
                         skull_strip=True, scanner=BRATS_SCANNER)
        save_volume(s.stack(BRATS_CHANNELS.values()), out / f"imagesTr/{name}.nii.gz", s.affine)
        save_volume(s.tumour, out / f"labelsTr/{name}.nii.gz", s.affine)
        training.append({"image": f"./imagesTr/{name}.nii.gz",
                         "label": f"./labelsTr/{name}.nii.gz"})
        tick()
    info = {
        "name": "BRATS", "description": "Synthetic phantom twin of MSD Task01 BrainTumour",
        "tensorImageSize": "4D", "reference": "brain_tf synthetic phantoms",
        "modality": {str(k): m for k, m in enumerate(BRATS_CHANNELS)},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor",
                   "3": "enhancing tumour"},
        "numTraining": n, "numTest": 0, "training": training, "test": [],
    }
    write_text(out / "dataset.json", json.dumps(info, indent=4) + "\n")
    return {}


#: Phantoms layout: the file of each modality (phantom modality -> file suffix).
PHANTOM_IMAGES = {"T1": "T1w", "T2": "T2w", "PD": "PDw", "FLAIR": "FLAIR"}
PHANTOM_SCANNER = {"scale": 1000.0, "noise": 0.025, "bias": 0.10}


def phantoms_spec() -> dict:
    """The data spec of the ``phantoms`` layout; its [labels] table is the fine label table."""
    return {
        "name": "phantoms",
        "description": "full-head phantoms: T1w/T2w/PDw/FLAIR, fine labels of every "
                       "structure, tissue segmentation, brain mask, age and sex",
        "kind": "volume",
        "root": ".",
        "files": {
            "images": {m: f"images/sub-{{subject}}_{m}.nii.gz" for m in PHANTOM_IMAGES.values()},
            "label": "labels/sub-{subject}_labels.nii.gz",
            "mask": "masks/sub-{subject}_brain_mask.nii.gz",
        },
        "labels": dict(LABELS),
        "metadata": {"path": "participants.csv", "id": "subject_id", "age": "age", "sex": "sex"},
    }


def write_phantoms(out: Path, n: int, seed: int, shape: Sequence[int],
                   spacing: Sequence[float], tick: Tick,
                   scanner: dict = PHANTOM_SCANNER) -> dict:
    """Full-head phantoms: images per modality, fine labels, tissue segmentation
    (``segs/``, 0-3), brain mask and participants.csv (age 18-88, sex). ``scanner``
    changes nothing but the images (the same seed gives the same subjects)."""
    rng = cohort_rng(seed)
    ages = rng.uniform(18, 88, n)
    sexes = balanced_sexes(rng, n)
    rows = []
    for i, (age, sex) in enumerate(zip(ages, sexes)):
        sid = f"{i + 1:04d}"
        s = make_subject(subject_rng(seed, i), shape, spacing, age=float(age), sex=sex,
                         modalities=tuple(PHANTOM_IMAGES), scanner=scanner)
        for modality, suffix in PHANTOM_IMAGES.items():
            save_volume(s.images[modality], out / f"images/sub-{sid}_{suffix}.nii.gz", s.affine)
        save_volume(s.labels, out / f"labels/sub-{sid}_labels.nii.gz", s.affine)
        save_volume(s.tissue, out / f"segs/sub-{sid}_seg.nii.gz", s.affine)
        save_volume(s.mask.astype(np.uint8), out / f"masks/sub-{sid}_brain_mask.nii.gz",
                    s.affine)
        rows.append({"subject_id": sid, "age": round(float(age), 1), "sex": sex})
        tick()
    save_csv(pd.DataFrame(rows), out / "participants.csv")
    return {}

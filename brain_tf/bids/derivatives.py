"""BIDS Derivatives written by the App: names, files, sidecars and tables.

``OUTPUT_DIR`` is a derivative dataset::

    dataset_description.json                DatasetType derivative, GeneratedBy brain_tf
    dseg.tsv                                 index -> tissue name of every *_dseg.nii.gz
    sub-01/ses-01/anat/sub-01_ses-01_desc-brain_mask.nii.gz
    sub-01/ses-01/anat/sub-01_ses-01_dseg.nii.gz  (+ .json: sources, volumes, QC)
    sub-01/ses-01/anat/sub-01_ses-01_label-GM_probseg.nii.gz   (and CSF, WM)
    sub-01/ses-01/anat/sub-01_ses-01_desc-MODEL_dseg.nii.gz    (other segmentation runs)
    sub-01/figures/sub-01_ses-01_overlay.png
    sub-01/sub-01_volumes.tsv (+ .json)      one row per image: volumes, fractions, QC
    volumes.tsv (+ .json), report.html       written by the group level

Image file names keep the source's entities and drop its suffix (``T1w``), as
fMRIPrep's anatomical outputs do; every output is on the source image's grid
(same shape and affine).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from brain_tf import __version__
from brain_tf.bids.predict import TISSUE_CLASSES, TissueResult
from brain_tf.bids.source import BidsFile
from brain_tf.evaluation.volumes import volume_fractions
from brain_tf.io import save_volume, write_text

BIDS_VERSION = "1.9.0"
DSEG = pd.DataFrame({"index": [0, 1, 2, 3], "name": ["background"] + list(TISSUE_CLASSES)})
#: Columns of the volume tables and what they mean (the JSON sidecars).
COLUMNS = {
    "participant_id": "participant label with its sub- prefix",
    "session_id": "session label with its ses- prefix (n/a: no sessions)",
    "source": "the image, relative to the BIDS dataset",
    "status": "ok, or failed (see error)",
    "error": "why the image or participant failed",
    "brain_ml": {"Description": "brain mask volume", "Units": "ml"},
    **{f"{c.lower()}_ml": {"Description": f"soft {c} volume: sum of the {c} probabilities "
                                         "inside the brain mask times the voxel volume",
                           "Units": "ml"} for c in TISSUE_CLASSES},
    **{f"{c.lower()}_fraction": f"{c} volume / (CSF + GM + WM)" for c in TISSUE_CLASSES},
    "qc_mean_entropy": "mean entropy of the CSF/GM/WM probabilities inside the brain, "
                       "divided by log 3 (0 certain, 1 undecided)",
    "qc_separation": "smallest distance between two tissue classes' fitted mean intensities "
                     "in pooled standard deviations",
    "qc_max_separation": "largest such distance",
    "qc_changed": "share of brain voxels whose label the per-scan refinement changed",
    "qc_flag": "the tissue prediction's own QC flag: a value outside the range seen on "
               "held-out phantoms (named in qc_outside_range)",
}


def image_stem(file: BidsFile) -> str:
    """Output name prefix of a source image: its entities (``sub-01_ses-01``)."""
    return file.stem()


def anat_folder(out: Path, file: BidsFile, bids_root: Path) -> Path:
    """Where a source image's outputs go: its folders, mirrored under ``out``."""
    return out / file.path.parent.relative_to(bids_root)


def output_paths(out: Path, file: BidsFile, bids_root: Path) -> dict[str, Path]:
    """Every file the participant level writes for one image, by kind."""
    folder, stem = anat_folder(out, file, bids_root), image_stem(file)
    paths = {"mask": folder / f"{stem}_desc-brain_mask.nii.gz",
             "dseg": folder / f"{stem}_dseg.nii.gz",
             "sidecar": folder / f"{stem}_dseg.json"}
    for c in TISSUE_CLASSES:
        paths[f"probseg_{c}"] = folder / f"{stem}_label-{c}_probseg.nii.gz"
    paths["figure"] = out / f"sub-{file.entity['sub']}" / "figures" / f"{stem}_overlay.png"
    return paths


def _dump(path: Path, data: dict) -> Path:
    return write_text(path, json.dumps(data, indent=2, default=_plain) + "\n")


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_dataset_description(out: Path, bids_root: Path, models: list[str]) -> Path:
    """``dataset_description.json`` of the derivative dataset and the ``dseg.tsv`` lookup;
    the models of earlier runs into ``out`` stay listed."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "dataset_description.json"
    if path.is_file():
        earlier = json.loads(path.read_text()).get("Models", [])
        models = list(models) + [m for m in earlier if m not in models]
    write_text(out / "dseg.tsv", DSEG.to_csv(sep="\t", index=False))
    return _dump(path, {
        "Name": "brain_tf brain extraction and tissue segmentation",
        "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "brain_tf", "Version": __version__,
                         "Description": "models: " + ", ".join(models),
                         "CodeURL": "https://pypi.org/project/brain_tf/"}],
        "SourceDatasets": [{"URL": Path(bids_root).resolve().as_uri()}],
        "Models": list(models),
    })


def soft_volumes(result: TissueResult) -> dict:
    """Brain and soft tissue volumes (ml) and fractions of one scan."""
    voxel_ml = abs(float(np.linalg.det(result.volume.file_grid.affine[:3, :3]))) / 1000.0
    inside = result.mask > 0
    volumes = {c.lower(): float(result.probabilities[c][inside].sum()) * voxel_ml
               for c in TISSUE_CLASSES}
    row = {"brain_ml": float(inside.sum()) * voxel_ml}
    row.update({f"{name}_ml": v for name, v in volumes.items()})
    if sum(volumes.values()) > 0:
        row.update({f"{n}_fraction": v for n, v in volume_fractions(volumes).items()})
    return row


def qc_columns(qc: dict, prefix: str = "qc_") -> dict:
    """QC values as flat ``qc_*`` columns (nested tables joined with ``_``)."""
    flat = {}
    for key, value in qc.items():
        if isinstance(value, dict):
            flat.update(qc_columns(value, f"{prefix}{key}_"))
        elif isinstance(value, (list, tuple)):
            flat.update({f"{prefix}{key}_{i}": v for i, v in enumerate(value)})
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def write_image_outputs(paths: dict, result: TissueResult, source: str, models: list[str],
                        extra: dict | None = None) -> dict:
    """The mask, label map, probability maps and the label map's sidecar (sources,
    volumes, QC) of one image; returns its table row (without the identifiers)."""
    grid = result.volume.file_grid
    save_volume(result.mask, paths["mask"], affine=grid.affine, header=grid.header)
    save_volume(result.labels, paths["dseg"], affine=grid.affine, header=grid.header)
    for c in TISSUE_CLASSES:
        save_volume(result.probabilities[c], paths[f"probseg_{c}"], affine=grid.affine,
                    header=grid.header, dtype=np.float32)
    row = {**soft_volumes(result), **qc_columns(result.qc), **(extra or {})}
    _dump(paths["sidecar"], {"Sources": [f"bids:raw:{source}"], "Models": list(models),
                             "Manual": False, "Measures": row})
    return row


def read_sidecar(path: Path) -> dict:
    """A label map's sidecar: ``Sources``, ``Models`` and ``Measures`` (its table row)."""
    return json.loads(Path(path).read_text())


def write_sidecar(path: Path, data: dict) -> Path:
    return _dump(path, data)


def read_row(sidecar: Path) -> dict:
    """The table row kept in a label map's sidecar (an earlier run's image)."""
    return dict(read_sidecar(sidecar).get("Measures", {}))


def columns_sidecar(table: pd.DataFrame) -> dict:
    """The JSON sidecar of a TSV table: the description of each column it has."""
    sidecar = {}
    for column in table.columns:
        if column in COLUMNS:
            sidecar[column] = COLUMNS[column]
        elif column.startswith("predicted_"):
            sidecar[column] = f"{column[10:]} predicted by the model given with --models"
        elif column.startswith("qc_"):
            sidecar[column] = "QC value of the tissue prediction"
    return {k: v if isinstance(v, dict) else {"Description": v} for k, v in sidecar.items()}


def write_tsv(table: pd.DataFrame, path: Path) -> Path:
    """A TSV table (n/a for missing values) with its JSON sidecar."""
    write_text(path, table.to_csv(sep="\t", index=False, na_rep="n/a"))
    _dump(path.with_suffix(".json"), columns_sidecar(table))
    return path


def read_tsv(path: str | os.PathLike) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False,
                       dtype={"participant_id": str, "session_id": str})

"""Structure volumes from label maps (system A's age features), and their tables.

Volumes are voxel counts times the voxel volume (mm^3 / 1000 = ml); fractions divide
each volume by their sum over the labels measured (CSF + GM + WM: system A's features).

Soft volumes come from probability maps (``{stem}_label-{CLASS}_probseg.nii.gz``, as
``predict --write probseg`` writes them): the sum of each class's probabilities times the
voxel volume, as SPM and SynthSeg measure; ``brain_ml`` is their sum (the intracranial
volume inside the brain mask) and each fraction divides by it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from brain_tf.errors import ConfigError, DataError

TISSUE_LABELS = {"csf": 1, "gm": 2, "wm": 3}
"""System A's tissue labels (0 is background)."""


def tissue_volumes(label_map, spacing, labels: Mapping[str, int] | Sequence[int] = TISSUE_LABELS,
                   ) -> dict[str, float]:
    """Volume in ml of each label: voxel count x voxel volume (``spacing`` in mm) / 1000.

    ``labels`` maps names to label values (default CSF 1, GM 2, WM 3) or is a
    sequence of values, then named by their string value.
    """
    label_map = np.asarray(label_map)
    spacing = tuple(float(s) for s in np.atleast_1d(spacing))
    if len(spacing) != label_map.ndim or min(spacing) <= 0:
        raise DataError(f"spacing {spacing} must give {label_map.ndim} positive voxel sizes "
                        f"for a label map of shape {label_map.shape}")
    if not isinstance(labels, Mapping):
        labels = {str(v): v for v in labels}
    values, counts = np.unique(label_map, return_counts=True)
    count_of = dict(zip(values.tolist(), counts.tolist()))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {str(name): count_of.get(int(value), 0) * voxel_ml for name, value in labels.items()}


def volume_fractions(volumes: Mapping[str, float]) -> dict[str, float]:
    """Each volume divided by their sum (system A's regression features); a
    sum of 0 raises DataError."""
    total = float(sum(volumes.values()))
    if total <= 0:
        raise DataError("all volumes are 0: the label map has none of the labels; "
                        "check the segmentation and the label values")
    return {name: float(v) / total for name, v in volumes.items()}


def foreground_labels(labels: Mapping[str, int]) -> dict[str, int]:
    """``labels`` without the background (value 0)."""
    return {str(name): int(value) for name, value in labels.items() if int(value) != 0}


def volume_row(label_map, spacing, labels: Mapping[str, int], where: str = "label map"
               ) -> dict[str, float]:
    """``{name}_ml`` for each label, then ``{name}_fraction``; DataError naming ``where``
    when the map has none of the labels."""
    volumes = tissue_volumes(label_map, spacing, labels)
    if not any(volumes.values()):
        raise DataError(f"{where}: the label map has none of the labels {dict(labels)}; "
                        "check the file and the label values")
    row = {f"{name}_ml": value for name, value in volumes.items()}
    row.update({f"{name}_fraction": value for name, value in volume_fractions(volumes).items()})
    return row


def subject_name(path: str | os.PathLike) -> str:
    """``sub-01_T1w_seg.nii.gz`` -> ``sub-01_T1w``: the file name without ``_seg`` and extension."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".mgz", ".mgh"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return name[:-4] if name.endswith("_seg") else name


def tissue_volumes_table(items: Sequence[tuple[str, str]], labels: Mapping[str, int] | None = None
                         ) -> pd.DataFrame:
    """One row per ``(subject, label-map path)``: ``subject, path, {name}_ml...,
    {name}_fraction...`` for the foreground ``labels`` (default CSF 1, GM 2, WM 3)."""
    from brain_tf.io import load_label

    labels = foreground_labels(labels or TISSUE_LABELS)
    if not labels:
        raise ConfigError("no foreground labels to measure; give e.g. {'csf': 1, 'gm': 2, 'wm': 3}")
    if not items:
        raise DataError("no label maps to measure: the manifest has no label files, "
                        "or no paths were given")
    rows = []
    for subject, path in items:
        volume = load_label(path)
        rows.append({"subject": subject, "path": str(path),
                     **volume_row(volume.array, volume.spacing, labels, where=str(path))})
    return pd.DataFrame(rows)


def predicted_and_reference(per_item: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Per test subject, predicted and reference volumes (ml) and fractions of ``names``
    from a segmentation evaluation's per-item table (its ``pred_ml`` and ``ref_ml``)."""
    rows = []
    for (item, subject), group in per_item.groupby(["item", "subject"], sort=False):
        by_label = group.set_index("label")
        row = {"item": item, "subject": subject}
        for kind in ("pred", "ref"):
            volumes = {n: float(by_label.at[n, f"{kind}_ml"]) for n in names}
            total = sum(volumes.values())
            for n in names:
                row[f"{n}_ml_{kind}"] = volumes[n]
                row[f"{n}_fraction_{kind}"] = volumes[n] / total if total else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def volume_errors(table: pd.DataFrame, names: Sequence[str]) -> dict:
    """Mean absolute volume (ml) and fraction errors, and mean reference volumes."""
    out = {}
    for n in names:
        for kind in ("ml", "fraction"):
            out[f"volume_mae_{kind}_{n}"] = float(np.nanmean(
                np.abs(table[f"{n}_{kind}_pred"] - table[f"{n}_{kind}_ref"])))
        out[f"volume_ref_mean_ml_{n}"] = float(table[f"{n}_ml_ref"].mean())
    return out


PROBSEG = re.compile(r"^(?P<stem>.+)_label-(?P<label>[A-Za-z0-9]+)_probseg\.nii(\.gz)?$")
"""A probability map's file name: ``{stem}_label-{CLASS}_probseg.nii[.gz]``."""


def probseg_groups(paths) -> dict[str, dict[str, str]]:
    """``{stem: {class (lower case): path}}`` of the probability maps among ``paths``
    (file names matching :data:`PROBSEG`; stems keep their folder)."""
    groups: dict[str, dict[str, str]] = {}
    for path in paths:
        match = PROBSEG.match(Path(path).name)
        if match:
            stem = str(Path(path).parent / match["stem"])
            groups.setdefault(stem, {})[match["label"].lower()] = str(path)
    return groups


def probseg_beside(label_map) -> dict[str, str]:
    """The probability maps written beside a predicted ``{stem}_seg.nii.gz``; DataError
    when there are none."""
    path = Path(label_map)
    stem = subject_name(path)
    found = probseg_groups(sorted(path.parent.glob(f"{stem}_label-*_probseg.nii*")))
    if not found:
        raise DataError(f"{label_map}: no {stem}_label-CLASS_probseg.nii.gz beside it; "
                        "predict with --write probseg to write them")
    return found[str(path.parent / stem)]


def soft_volumes(maps: Mapping[str, np.ndarray], spacing) -> dict[str, float]:
    """``{name}_ml`` (sum of probabilities x voxel volume), ``brain_ml`` (their sum) and
    ``{name}_fraction`` (each over ``brain_ml``) of probability maps on one grid."""
    shapes = {np.shape(m) for m in maps.values()}
    if len(shapes) != 1:
        raise DataError(f"probability maps {sorted(maps)} are on different grids {shapes}")
    voxel_ml = float(np.prod(np.asarray(spacing, dtype=float))) / 1000.0
    volumes = {name: float(np.sum(m, dtype=np.float64)) * voxel_ml for name, m in maps.items()}
    brain = sum(volumes.values())
    if brain <= 0:
        raise DataError(f"probability maps {sorted(maps)} are all 0; check the files")
    return {**{f"{n}_ml": v for n, v in volumes.items()}, "brain_ml": brain,
            **{f"{n}_fraction": v / brain for n, v in volumes.items()}}


def soft_volumes_table(items: Sequence[tuple[str, Mapping[str, str]]]) -> pd.DataFrame:
    """One row per ``(subject, {class: probability-map path})``: ``subject, path,
    {class}_ml..., brain_ml, {class}_fraction...`` (:func:`soft_volumes`)."""
    from brain_tf.io import load_volume

    if not items:
        raise DataError("no probability maps to measure")
    rows = []
    for subject, paths in items:
        maps, spacing = {}, None
        for name, path in sorted(paths.items()):
            volume = load_volume(path, dtype=np.float32)
            maps[name], spacing = np.asarray(volume.array), volume.spacing
        rows.append({"subject": subject, "path": str(next(iter(sorted(paths.values())))),
                     **soft_volumes(maps, spacing)})
    return pd.DataFrame(rows)

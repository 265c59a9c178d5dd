"""tissue-volumes: per-subject CSF/GM/WM volumes (ml) and fractions from label maps.

System A's age features are the tissue volumes divided by their sum. This
module turns label maps into that table, from either

- label-map files, e.g. the ``*_seg.nii.gz`` files that
  ``brain-tf tissue-segmentation predict`` writes (subject = file name
  without ``_seg`` and the NIfTI extension), or
- a data spec's manifest (its reference segmentations, the ``label`` column;
  rows without a label file are skipped).

Volumes are voxel counts times the voxel volume read from each file's header
(mm^3 / 1000 = ml); fractions divide each volume by the sum over the labels
(CSF + GM + WM). Command line::

    brain-tf tissue-volumes --spec data_specs/camcan.toml [--root DIR] --out volumes.csv
    brain-tf tissue-volumes runs/pred/*_seg.nii.gz --out volumes.csv
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from brain_tf.errors import ConfigError, DataError
from brain_tf.evaluation import TISSUE_LABELS, tissue_volumes, volume_fractions
from brain_tf.io import load_label
from brain_tf.io.atomic import atomic_path


def foreground_labels(labels: Mapping[str, int]) -> dict[str, int]:
    """``labels`` without the background (value 0)."""
    return {str(name): int(value) for name, value in labels.items() if int(value) != 0}


def volume_row(label_map, spacing, labels: Mapping[str, int]) -> dict[str, float]:
    """``{name}_ml`` for each label, then ``{name}_fraction`` (NaN when all volumes are 0)."""
    volumes = tissue_volumes(label_map, spacing, labels)
    if sum(volumes.values()) > 0:
        fractions = volume_fractions(volumes)
    else:
        fractions = {name: float("nan") for name in volumes}
    row = {f"{name}_ml": value for name, value in volumes.items()}
    row.update({f"{name}_fraction": value for name, value in fractions.items()})
    return row


def subject_name(path: str | os.PathLike) -> str:
    """``sub-01_T1w_seg.nii.gz`` -> ``sub-01_T1w``: the file name without ``_seg`` and extension."""
    name = Path(path).name
    for ext in (".nii.gz", ".nii", ".mgz", ".mgh"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return name[:-4] if name.endswith("_seg") else name


def _items(paths_or_manifest) -> list[tuple[str, str]]:
    """(subject, label-map path) pairs from file paths or a manifest's ``label`` column."""
    if isinstance(paths_or_manifest, pd.DataFrame):
        manifest = paths_or_manifest
        if "label" not in manifest.columns:
            raise DataError("the manifest has no label column; the data spec needs a "
                            "[files] label pattern for reference segmentations")
        ids = manifest["sample"] if "sample" in manifest.columns else manifest["subject"]
        return [(str(s), str(p)) for s, p in zip(ids, manifest["label"])
                if isinstance(p, (str, os.PathLike)) and str(p)]
    if isinstance(paths_or_manifest, (str, os.PathLike)):
        paths_or_manifest = [paths_or_manifest]
    return [(subject_name(p), str(p)) for p in paths_or_manifest]


def tissue_volumes_table(paths_or_manifest, labels: Mapping[str, int] | None = None
                         ) -> pd.DataFrame:
    """One row per label map: ``subject, path, {name}_ml..., {name}_fraction...``.

    Args:
        paths_or_manifest: label-map paths, or a manifest DataFrame (columns
            ``sample`` or ``subject``, and ``label``).
        labels: name -> label value (a background entry with value 0 is
            ignored); default CSF 1, GM 2, WM 3.

    Raises DataError naming the file when a map is unreadable or contains
    none of the labels.
    """
    labels = foreground_labels(labels or TISSUE_LABELS)
    if not labels:
        raise ConfigError("no foreground labels to measure; give e.g. {'csf': 1, 'gm': 2, 'wm': 3}")
    items = _items(paths_or_manifest)
    if not items:
        raise DataError("no label maps to measure: the manifest has no label files, "
                        "or no paths were given")
    rows = []
    for subject, path in items:
        volume = load_label(path)
        row = volume_row(np.asarray(volume.array), volume.spacing, labels)
        if not any(row[f"{name}_ml"] for name in labels):
            raise DataError(f"{path}: the label map has none of the labels "
                            f"{dict(labels)}; check the file and the label values")
        rows.append({"subject": subject, "path": path, **row})
    return pd.DataFrame(rows)


def write_table(table: pd.DataFrame, out: str | os.PathLike) -> Path:
    """Write ``table`` to CSV atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``brain-tf tissue-volumes`` options."""
    parser.add_argument("labelmaps", nargs="*", metavar="LABELMAP",
                        help="label-map NIfTI files (e.g. predicted *_seg.nii.gz)")
    parser.add_argument("--spec", help="data spec TOML: measure its reference segmentations")
    parser.add_argument("--root", help="dataset folder (overrides the spec's root)")
    parser.add_argument("--out", required=True, help="CSV to write")


def run(args: argparse.Namespace) -> int:
    """Measure the label maps named by ``args`` and write the CSV."""
    from brain_tf.data import load_spec

    if bool(args.spec) == bool(args.labelmaps):
        raise ConfigError("tissue-volumes: give either --spec SPEC or label-map files, not both "
                          "(and not neither)")
    labels = None
    if args.spec:
        spec = load_spec(args.spec, root=args.root)
        labels = spec.labels or None
        source = spec.manifest()
    else:
        source = list(args.labelmaps)
    table = tissue_volumes_table(source, labels)
    write_table(table, args.out)
    names = [c[:-3] for c in table.columns if c.endswith("_ml")]
    means = ", ".join(f"{n} {table[f'{n}_ml'].mean():.1f} ml" for n in names)
    print(f"wrote {args.out}: {len(table)} subjects; mean volumes {means}")
    return 0

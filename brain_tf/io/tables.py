"""CSV outputs: tables written atomically, and the ``predictions.csv`` of every task."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from brain_tf.io.atomic import atomic_path, full_suffix


def write_table(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` to a CSV file atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return path


def write_predictions(table: pd.DataFrame, out: str | os.PathLike) -> Path:
    """``predictions.csv`` in the folder ``out``, or ``out`` itself when it ends in .csv."""
    out = Path(out)
    path = write_table(table, out if out.suffix == ".csv" else out / "predictions.csv")
    print(f"wrote {len(table)} predictions to {path}")
    return path


def input_name(path: str | os.PathLike) -> str:
    """The name an input file is listed under: its file name without the extension
    (``.nii.gz``, ``.nii``, ``.tif``, ...)."""
    name = Path(path).name
    suffix = full_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name

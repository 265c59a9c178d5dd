"""Patient-level train/validation/test splits.

Splits assign whole subjects (patients), never single slices or patches, so a
patient's images are all in one split. They are deterministic for a seed
whatever order the files were listed in, can be stratified by age bins or a
label column, and round-trip through a CSV so a run can be reproduced.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from brain_tf.errors import SplitError
from brain_tf.io.atomic import atomic_path

DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
SKIPPED = "skipped"
"""The split of samples a run left out on purpose (``data.skip_bad``: their files failed
the check). A splits file lists them so that every sample of the dataset is accounted
for; they are in no patient's train/val/test split and are never used."""


def _allocate(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Split n items by fractions with largest-remainder rounding.

    Every split with a positive fraction gets at least one item when n allows.
    """
    names = list(fractions)
    raw = np.array([fractions[k] for k in names], float) * n
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    for i in order[: n - counts.sum()]:
        counts[i] += 1
    for i, name in enumerate(names):
        if counts[i] == 0 and fractions[name] > 0 and n >= len(names):
            donor = int(np.argmax(counts))
            counts[donor] -= 1
            counts[i] += 1
    return dict(zip(names, counts.tolist()))


def _strata(subjects: pd.DataFrame, stratify: str | None, bins: int) -> pd.Series:
    if stratify is None:
        return pd.Series("all", index=subjects.index)
    if stratify not in subjects.columns:
        raise SplitError(f"cannot stratify by {stratify!r}: not a manifest column "
                         f"({sorted(subjects.columns)})")
    values = subjects[stratify]
    if values.isna().any():
        missing = subjects.index[values.isna()].tolist()[:5]
        raise SplitError(f"cannot stratify by {stratify!r}: no value for subjects {missing}")
    if pd.api.types.is_float_dtype(values) or (
        pd.api.types.is_numeric_dtype(values) and values.nunique() > bins
    ):
        ranks = values.rank(method="first")
        return pd.qcut(ranks, q=min(bins, len(values)), labels=False).astype(str)
    return values.astype(str)


def split_subjects(
    manifest: pd.DataFrame,
    fractions: Mapping[str, float] | None = None,
    seed: int = 0,
    stratify: str | None = None,
    bins: int = 4,
    group: str = "subject",
) -> pd.DataFrame:
    """Assign every row of ``manifest`` to a split, by subject.

    Args:
        fractions: split name -> fraction (normalised to sum 1), default 70/15/15.
        seed: the same seed gives the same split for the same subjects, in any row order.
        stratify: a column to balance across splits: numeric columns (e.g. ``age``)
            are cut into ``bins`` quantile bins, others are used as categories.
        group: the patient-id column; all rows of one patient share a split.

    Returns a copy of the manifest with a ``split`` column.
    """
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    if not fractions or any(v < 0 for v in fractions.values()) or sum(fractions.values()) <= 0:
        raise SplitError(f"split fractions must be non-negative with a positive sum: {fractions}")
    total = sum(fractions.values())
    fractions = {k: v / total for k, v in fractions.items()}
    if len(manifest) == 0:
        raise SplitError("cannot split an empty manifest; check the data spec and its root")
    if group not in manifest.columns:
        raise SplitError(f"manifest has no {group!r} column to split by")
    first = manifest.sort_values(group, kind="stable").groupby(group, sort=True).first()
    strata = _strata(first, stratify, bins)
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    # Visit strata in sorted order and subjects sorted by id, then permute with the
    # seeded generator: the result does not depend on the manifest's row order.
    for _, ids in sorted(strata.groupby(strata).groups.items()):
        ids = sorted(ids)
        perm = rng.permutation(len(ids))
        counts = _allocate(len(ids), fractions)
        start = 0
        for name, count in counts.items():
            for j in perm[start : start + count]:
                assignment[ids[j]] = name
            start += count
    out = manifest.copy()
    out["split"] = out[group].map(assignment)
    check_no_leak(out, group=group)
    return out


def _listed(values, limit: int = 10) -> str:
    values = list(values)
    more = f" and {len(values) - limit} more" if len(values) > limit else ""
    return ", ".join(str(v) for v in values[:limit]) + more


def check_no_leak(manifest: pd.DataFrame, group: str = "subject", split: str = "split") -> None:
    """Raise :class:`SplitError` unless every row has one split and no patient (``group``)
    or sample is in more than one split or listed twice."""
    if split not in manifest.columns:
        raise SplitError(f"manifest has no {split!r} column")
    if manifest[split].isna().any():
        rows = manifest.loc[manifest[split].isna(), group].unique().tolist()
        raise SplitError(f"{len(rows)} subject(s) have no split ({_listed(rows)}); every row "
                         "needs one")
    if "sample" in manifest.columns:
        twice = manifest[manifest["sample"].duplicated(keep=False)]
        if len(twice):
            detail = [f"{sample} in {'+'.join(sorted(splits))}" if splits.nunique() > 1
                      else f"{sample} {len(splits)} times in {splits.iloc[0]}"
                      for sample, splits in twice.groupby("sample", sort=True)[split]]
            raise SplitError(f"{len(detail)} sample(s) are listed more than once "
                             f"({_listed(detail)}); list each sample once, in one split")
    used = manifest[manifest[split] != SKIPPED]
    per_subject = used.groupby(group)[split].nunique()
    leaked = per_subject[per_subject > 1]
    if len(leaked):
        detail = []
        for subject in leaked.index:
            names = sorted(used.loc[used[group] == subject, split].unique())
            detail.append(f"{subject} in {'+'.join(names)}")
        raise SplitError(
            f"{len(leaked)} subject(s) appear in more than one split ({_listed(detail)}); "
            "split by subject so each patient's images stay together"
        )


def save_splits(manifest: pd.DataFrame, path: str | os.PathLike,
                skipped: pd.DataFrame | None = None) -> Path:
    """Write ``sample, subject, split`` to a CSV (atomically); the rows of ``skipped``
    (samples left out on purpose) are listed with the split :data:`SKIPPED`."""
    if skipped is not None and len(skipped):
        manifest = pd.concat([manifest, skipped.assign(split=SKIPPED)], ignore_index=True)
    check_no_leak(manifest)
    cols = [c for c in ("sample", "subject", "split") if c in manifest.columns]
    with atomic_path(path) as tmp:
        manifest[cols].to_csv(tmp, index=False)
    return Path(path)


def apply_splits(manifest: pd.DataFrame, path: str | os.PathLike) -> pd.DataFrame:
    """Read a splits CSV (``sample, [subject,] split``) and attach its ``split`` column.

    The file is checked as a split made here would be: each sample listed once,
    no patient in two splits, every sample of the dataset listed, every sample
    listed in the dataset, and the same patient as in the dataset. Samples the file
    lists as :data:`SKIPPED` keep that split (and may have left the dataset since).
    """
    path = Path(path)
    if not path.exists():
        raise SplitError(f"{path}: splits file not found")
    table = pd.read_csv(path, dtype=str)
    missing_cols = {"sample", "split"} - set(table.columns)
    if missing_cols:
        raise SplitError(f"{path}: needs columns sample and split (missing {sorted(missing_cols)})")
    table = table.apply(lambda column: column.str.strip())
    try:
        check_no_leak(table, group="subject" if "subject" in table.columns else "sample")
    except SplitError as exc:
        raise SplitError(f"{path}: {exc}") from None
    skipped = set(table.loc[table["split"] == SKIPPED, "sample"])
    samples = manifest["sample"].astype(str)
    unknown = sorted(set(table["sample"]) - skipped - set(samples))
    if unknown:
        raise SplitError(f"{path}: {len(unknown)} listed sample(s) are not in the dataset "
                         f"({_listed(unknown)}); the splits file is for another dataset, or "
                         "their files are gone")
    absent = manifest.loc[~samples.isin(table["sample"])]
    if len(absent):
        subjects = absent["subject"].astype(str).unique()
        raise SplitError(f"{path}: {len(absent)} sample(s) of the dataset are not listed, "
                         f"of subject(s) {_listed(subjects)}; make a new split (brain-tf split) "
                         "or use the matching dataset")
    lookup = dict(zip(table["sample"], table["split"]))
    out = manifest.copy()
    out["split"] = samples.map(lookup)
    if "subject" in table.columns:
        subj = dict(zip(table["sample"], table["subject"]))
        wrong = [s for s, g in zip(samples, out["subject"].astype(str)) if subj.get(s) != g]
        if wrong:
            raise SplitError(f"{path}: samples {_listed(wrong)} belong to a different subject "
                             "than in the dataset; the splits file is for another dataset")
    try:
        check_no_leak(out)
    except SplitError as exc:
        raise SplitError(f"{path}: {exc}") from None
    return out

"""Who is in a synthetic dataset: ids, ages, sexes, per-subject generators, tables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from brain_tf.io.atomic import atomic_path


def subject_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of subject ``index``: independent of how many subjects are made."""
    return np.random.default_rng([int(seed), int(index)])


def cohort_rng(seed: int) -> np.random.Generator:
    """The generator of dataset-level draws (ids, ages, sexes)."""
    return np.random.default_rng([int(seed), 2**31 - 1])


def balanced_sexes(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` sexes, half "M" and half "F" (one more "M" when odd), in random order."""
    return ["M" if male else "F" for male in rng.permutation(np.arange(n) % 2 == 0)]


def unique_ids(rng: np.random.Generator, n: int, draw: Callable[[np.random.Generator], str],
               sort: bool = True) -> list[str]:
    """``n`` distinct ids from ``draw`` (sorted unless ``sort=False``)."""
    ids: list[str] = []
    seen: set[str] = set()
    for _ in range(100 * n + 100):
        new = draw(rng)
        if new not in seen:
            seen.add(new)
            ids.append(new)
            if len(ids) == n:
                return sorted(ids) if sort else ids
    raise ValueError(f"could not draw {n} distinct ids; ask for fewer subjects")


def save_csv(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a table as CSV atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
    return Path(path)

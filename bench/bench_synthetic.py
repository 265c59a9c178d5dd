"""Speed and statistics of the synthetic phantoms (prints figures; asserts nothing).

    python bench/bench_synthetic.py [--oracle-subjects 300]

1. Time to make one 64^3 four-modality subject with a tumour (in memory), and
   one full-head T1 subject (180x220x200 mm) at 2 mm and at 1 mm.
2. Time per subject to write each layout at its default size.
3. Age and sex statistics of the anatomy: correlation of age with the tissue
   fractions, brain volume by sex, and the irreducible age error: the mean
   absolute error of an oracle that knows each subject's true CSF/GM/WM
   fractions (linear and degree-3 polynomial regression, 5-fold CV).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures

from brain_tf.data.synthetic import (
    LAYOUTS, Phantom, grid_axes, make_subject, render_anatomy, sample_anatomy, synthesize)


def time_subject(repeats: int = 5) -> float:
    rng = np.random.default_rng(0)
    mods = ("FLAIR", "T1", "T1gd", "T2")
    make_subject(rng, (64, 64, 64), 3.0, tumour="high", modalities=mods)
    start = time.perf_counter()
    for _ in range(repeats):
        make_subject(rng, (64, 64, 64), 3.0, tumour="high", modalities=mods)
    return (time.perf_counter() - start) / repeats


def time_full_head(spacing: float, repeats: int = 2) -> float:
    """Seconds per full-head (180x220x200 mm) T1 subject at ``spacing`` mm."""
    shape = tuple(int(round(f / spacing)) for f in (180, 220, 200))
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(repeats):
        make_subject(rng, shape, spacing, modalities=("T1",))
    return (time.perf_counter() - start) / repeats


def time_layouts(subjects: int = 2) -> dict[str, float]:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in LAYOUTS:
            start = time.perf_counter()
            synthesize(name, f"{tmp}/{name}", subjects=subjects, seed=0)
            out[name] = (time.perf_counter() - start) / subjects
    return out


def cohort(n: int, shape=(64, 72, 56), spacing=3.0, seed=0) -> np.ndarray:
    """Rows of age, male, CSF, GM, WM fraction, brain volume (ml)."""
    rng = np.random.default_rng(seed)
    axes = grid_axes(shape, (spacing,) * 3)
    rows = []
    for i in range(n):
        age, sex = rng.uniform(18, 88), "M" if i % 2 else "F"
        anat = sample_anatomy(rng, age, sex)
        maps = render_anatomy(anat, Phantom(anat, None, None, np.zeros(3)).frame(axes), head=False)
        counts = np.bincount(maps.tissue.ravel(), minlength=4)[1:].astype(float)
        rows.append([age, sex == "M", *(counts / counts.sum()), maps.mask.sum() * spacing**3 / 1e3])
    return np.array(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle-subjects", type=int, default=300)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"64^3 subject, 4 modalities + tumour: {time_subject():.3f} s")
    for spacing in (2.0, 1.0):
        print(f"full head {spacing:g} mm, T1: {time_full_head(spacing):.2f} s/subject")
    for name, seconds in time_layouts().items():
        print(f"write {name:17s} default size: {seconds:.2f} s/subject")
    for spacing, shape in ((3.0, (64, 72, 56)), (4.0, (48, 56, 40))):
        start = time.perf_counter()
        data = cohort(args.oracle_subjects, shape, spacing)
        took = (time.perf_counter() - start) / len(data)
        age, male, fractions, volume = data[:, 0], data[:, 1] == 1, data[:, 2:5], data[:, 5]
        corr = [np.corrcoef(age, fractions[:, k])[0, 1] for k in range(3)]
        print(f"\n{len(data)} subjects at {spacing} mm ({took:.3f} s each, anatomy only)")
        print("  corr(age, CSF/GM/WM fraction): " + " / ".join(f"{c:+.3f}" for c in corr))
        print(f"  brain volume ml: male {volume[male].mean():.0f} +- {volume[male].std():.0f}, "
              f"female {volume[~male].mean():.0f} +- {volume[~male].std():.0f}")
        for label, model in (("linear", LinearRegression()),
                             ("poly3", make_pipeline(PolynomialFeatures(3), LinearRegression()))):
            pred = cross_val_predict(model, fractions, age, cv=5)
            mae = np.abs(pred - age).mean()
            print(f"  oracle age MAE from true fractions ({label}): {mae:.2f} y")
        print(f"  baseline (predict the mean age): {np.abs(age - age.mean()).mean():.2f} y")
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

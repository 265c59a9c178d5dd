"""Patient-level splits: deterministic, stratified, leak-free, reproducible from CSV."""

import numpy as np
import pandas as pd
import pytest

from brain_tf.data import apply_splits, check_no_leak, save_splits, split_subjects
from brain_tf.errors import SplitError


def manifest(n_subjects=40, slices=3, seed=0):
    rng = np.random.default_rng(seed)
    ages = rng.uniform(20, 80, n_subjects)
    rows = [{"sample": f"P{i:03d}_{k}", "subject": f"P{i:03d}", "age": ages[i],
             "sex": "MF"[i % 2]} for i in range(n_subjects) for k in range(slices)]
    return pd.DataFrame(rows)


def test_same_seed_same_split_whatever_the_row_order():
    m = manifest()
    a = split_subjects(m, seed=3)
    shuffled = m.sample(frac=1.0, random_state=11)
    b = split_subjects(shuffled, seed=3)
    pd.testing.assert_series_equal(a.set_index("sample")["split"].sort_index(),
                                   b.set_index("sample")["split"].sort_index())
    c = split_subjects(m, seed=4)
    assert not a["split"].equals(c["split"])


def test_fractions_are_respected_by_subject():
    out = split_subjects(manifest(40), {"train": 0.7, "val": 0.1, "test": 0.2}, seed=0)
    per_subject = out.groupby("subject")["split"].first().value_counts()
    assert per_subject.to_dict() == {"train": 28, "test": 8, "val": 4}
    check_no_leak(out)  # all slices of a patient in one split


def test_stratified_by_age_balances_bins():
    m = manifest(80, slices=1)
    out = split_subjects(m, {"train": 0.5, "test": 0.5}, seed=1, stratify="age", bins=4)
    quartile = pd.qcut(out["age"], 4, labels=False)
    counts = pd.crosstab(quartile, out["split"])
    assert (counts["train"] == counts["test"]).all()
    by_sex = split_subjects(m, {"train": 0.5, "test": 0.5}, seed=1, stratify="sex")
    assert (pd.crosstab(by_sex["sex"], by_sex["split"]) == 20).all().all()


def test_every_split_gets_a_subject_when_possible():
    out = split_subjects(manifest(3, slices=1), seed=0)
    assert sorted(out["split"]) == ["test", "train", "val"]


def test_leak_check_names_the_subject():
    m = split_subjects(manifest(10), seed=0)
    row = m.index[(m["subject"] == "P004")][0]
    m.loc[row, "split"] = "test" if m.loc[row, "split"] != "test" else "train"
    with pytest.raises(SplitError, match=r"1 subject\(s\) appear in more than one split \(P004 in"):
        check_no_leak(m)


def test_csv_round_trip_and_mismatch(tmp_path):
    m = split_subjects(manifest(12), seed=5)
    path = save_splits(m, tmp_path / "splits.csv")
    again = apply_splits(m.drop(columns="split").sample(frac=1, random_state=0), path)
    pd.testing.assert_series_equal(again.set_index("sample")["split"].sort_index(),
                                   m.set_index("sample")["split"].sort_index())
    bigger = manifest(13)
    with pytest.raises(SplitError,
                       match=r"3 sample\(s\) of the dataset are not listed, of subject\(s\) P012;"):
        apply_splits(bigger, path)


def test_empty_manifest_and_bad_stratify():
    with pytest.raises(SplitError, match="empty manifest"):
        split_subjects(manifest(0))
    with pytest.raises(SplitError, match="cannot stratify by 'site'"):
        split_subjects(manifest(5), stratify="site")

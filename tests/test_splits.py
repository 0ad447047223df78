import numpy as np
import pandas as pd

from ctbench.splits import OTHER, coarsen, holdout_fold, make_splits, split_hash, split_with_report


def test_patient_level_stratified_and_seeded():
    rng = np.random.default_rng(0)
    patients = pd.Series(np.repeat([f"p{i}" for i in range(100)], 2))
    label = pd.Series(np.repeat(rng.integers(0, 2, 100), 2))
    s = make_splits(patients, label, seed=7)
    assert (s == make_splits(patients, label, seed=7)).all()
    assert not (s == make_splits(patients, label, seed=8)).all()
    # no patient spans two splits
    assert (pd.DataFrame({"p": patients, "s": s}).groupby("p")["s"].nunique() == 1).all()
    frac = s.value_counts(normalize=True)
    assert abs(frac["test"] - 0.2) < 0.05 and abs(frac["val"] - 0.2) < 0.05
    # positives spread evenly: each split's prevalence within 10 points of the overall one
    prev = label.groupby(s).mean()
    assert (abs(prev - label.mean()) < 0.1).all()


def test_split_hash_ignores_row_order():
    ids = pd.Series(["a", "b", "c"])
    sp = pd.Series(["train", "val", "test"])
    assert split_hash(ids, sp) == split_hash(ids[::-1], sp[::-1])
    assert split_hash(ids, sp) != split_hash(ids, pd.Series(["val", "train", "test"]))


def _with_rare_stratum(seed: int = 0, n: int = 150) -> tuple[pd.Series, pd.Series]:
    """One scan per patient, a 30% binary label, and three patients of a third, rare class."""
    rng = np.random.default_rng(seed)
    label = (rng.random(n) < 0.3).astype(int)
    label[:3] = 2  # fewer rows than the 5 test folds
    return pd.Series([f"p{i}" for i in range(n)]), pd.Series(label)


def test_a_rare_stratum_is_merged_not_the_whole_stratification_dropped():
    patients, label = _with_rare_stratum()
    s = make_splits(patients, label, seed=0)
    positive = (label == 1).groupby(s).mean()
    # the common classes stay balanced (dropping stratification put the test split 12 points off)
    assert (abs(positive - (label == 1).mean()) < 0.03).all()
    splits, report = split_with_report(patients, label, seed=0, by="label")
    assert (splits == s).all()
    assert report.by == "label" and {m["stratum"] for m in report.merged} == {"2"}
    first = report.merged[0]
    assert first["rows"] == 3 and first["step"] == "test" and first["into"] == "0"  # 'other' too small: largest
    record = report.as_dict()
    assert set(record) == {"by", "merged", "note"} and "'2' (3 rows) -> '0'" in record["note"]


def test_without_rare_strata_nothing_is_merged_and_splits_are_unchanged():
    rng = np.random.default_rng(0)
    patients = pd.Series(np.repeat([f"p{i}" for i in range(100)], 2))
    label = pd.Series(np.repeat(rng.integers(0, 2, 100), 2))
    splits, report = split_with_report(patients, label, seed=7, by="label")
    assert (splits == make_splits(patients, label, seed=7)).all() and report.merged == []
    assert "every stratum reached every fold" in report.note
    assert split_with_report(patients, None)[1].as_dict() == {
        "by": None, "merged": [], "note": "not stratified (split by patient only)"}


def test_a_rare_label_pair_falls_back_to_its_first_label():
    """Two stratification columns: a pair too rare for the folds keeps the first label's balance."""
    rng = np.random.default_rng(1)
    n = 200
    first = (rng.random(n) < 0.4).astype(int)
    second = np.where(first == 1, (rng.random(n) < 0.5).astype(int), 0)
    second[np.flatnonzero(first == 0)[:2]] = 1  # the pair 0/1: two rows only
    strata = pd.DataFrame({"first": first, "second": second})
    patients = pd.Series([f"p{i}" for i in range(n)])
    splits, report = split_with_report(patients, strata, seed=0)
    assert report.by == "first/second"
    assert [(m["stratum"], m["into"]) for m in report.merged if m["step"] == "test"] == [("0/1", "0/0")]
    assert (abs(pd.Series(first).groupby(splits).mean() - first.mean()) < 0.03).all()
    assert (splits == make_splits(patients, strata, seed=0)).all()


def test_coarsen_prefers_the_prefix_then_other():
    parts = pd.DataFrame({"a": list("xxxxxxxxyyz"), "b": list("11112222334")})
    labels, moves = coarsen(parts, 3)
    assert moves == {"y/3": OTHER, "z/4": OTHER}  # no y/ peer large enough: one 'other' of 3 rows
    assert list(labels[:8]) == ["x/1"] * 4 + ["x/2"] * 4


def test_holdout_fold_reports_its_stratification():
    patients, label = _with_rare_stratum()
    mask, report = holdout_fold(patients, label, seed=0, fraction=0.2, by="label")
    assert mask.sum() == 30 and [m["step"] for m in report.merged] == ["holdout"]

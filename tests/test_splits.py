import numpy as np
import pandas as pd

from ctbench.splits import make_splits, split_hash


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

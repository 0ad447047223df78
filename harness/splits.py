"""Patient-level, seeded, stratified train/val/test splits, identical for every model."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

SPLITS = ("train", "val", "test")


def _strata(labels: pd.Series | None, n: int) -> np.ndarray:
    if labels is None:
        return np.zeros(n, dtype=int)
    codes, _ = pd.factorize(labels.astype(str))
    return codes


def make_splits(
    patient_ids: pd.Series,
    strata: pd.Series | None = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
) -> pd.Series:
    """Assign every row to train/val/test so that no patient spans two splits.

    ``strata`` (one value per row; e.g. a label or a label combination) is balanced across the
    splits where the group structure allows. Same inputs and seed give the same assignment.
    """
    patient_ids = patient_ids.astype(str).reset_index(drop=True)
    y = _strata(None if strata is None else strata.reset_index(drop=True), len(patient_ids))
    out = np.full(len(patient_ids), "train", dtype=object)
    n_test_folds = max(2, round(1.0 / fractions[2]))
    test_idx = _first_fold(y, patient_ids, n_test_folds, seed)
    out[test_idx] = "test"
    rest = np.setdiff1d(np.arange(len(patient_ids)), test_idx)
    val_share = fractions[1] / (fractions[0] + fractions[1])
    n_val_folds = max(2, round(1.0 / val_share))
    val_local = _first_fold(y[rest], patient_ids.iloc[rest].reset_index(drop=True), n_val_folds, seed + 1)
    out[rest[val_local]] = "val"
    return pd.Series(out, name="split")


def _first_fold(y: np.ndarray, groups: pd.Series, n_splits: int, seed: int) -> np.ndarray:
    n_groups = groups.nunique()
    n_splits = min(n_splits, n_groups)
    # Stratification needs every stratum to reach each fold; fall back to groups only.
    counts = np.bincount(y) if len(y) else np.array([0])
    if counts[counts > 0].min() < n_splits:
        y = np.zeros_like(y)
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = next(iter(cv.split(np.zeros(len(y)), y, groups)))
    return held


def split_hash(case_ids: pd.Series, splits: pd.Series) -> str:
    """sha256 over the sorted ``case_id,split`` lines: the identity of a split in result files."""
    lines = sorted(f"{c},{s}" for c, s in zip(case_ids.astype(str), splits.astype(str)))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()

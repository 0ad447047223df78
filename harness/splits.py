"""Patient-level, seeded, stratified train/val/test splits, identical for every model.

Stratification needs every stratum to reach every fold. A stratum with fewer rows than folds is
not thrown away with the whole stratification: it is coarsened step by step (for strata made of
several columns, its last column is dropped first, ``1/1`` -> ``1/*``, and a coarse stratum
still too small joins the largest one sharing its prefix), down to one ``other`` stratum, which
joins the largest stratum when it is still too small. The :class:`Stratification` returned by
:func:`split_with_report` says which strata were merged, so that a recipe can record it in
``prepare.json``. Strata that are large enough are used as given:
the same inputs and seed give the same splits as before this fallback existed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
OTHER = "other"
Strata = pd.Series | pd.DataFrame | None


@dataclass(frozen=True)
class Stratification:
    """What stratified a split and which strata were too rare to keep their own stratum.

    ``merged`` holds one entry per merged stratum and split step: ``stratum`` (its label, columns
    joined by ``/``), ``rows``, ``into`` (the stratum it joined) and ``step`` (``test``: the test
    fold drawn from all rows; ``val``: the validation fold drawn from the rest; ``holdout``).
    """

    by: str | None
    merged: list[dict[str, Any]] = field(default_factory=list)

    @property
    def note(self) -> str:
        """One sentence for provenance files."""
        if self.by is None:
            return "not stratified (split by patient only)"
        if not self.merged:
            return f"stratified by {self.by}; every stratum reached every fold"
        moves = "; ".join(f"{m['step']}: {m['stratum']!r} ({m['rows']} rows) -> {m['into']!r}" for m in self.merged)
        return (f"stratified by {self.by}; strata with fewer rows than folds were merged so that every "
                f"stratum reaches every fold ({moves})")

    def as_dict(self) -> dict[str, Any]:
        """``{"by", "merged", "note"}``: the ``stratification`` field of ``prepare.json``."""
        return {"by": self.by, "merged": [dict(m) for m in self.merged], "note": self.note}


def _parts(strata: Strata) -> pd.DataFrame | None:
    """The strata as a frame of strings (one column per stratification variable), or None."""
    if strata is None:
        return None
    if isinstance(strata, pd.Series):
        frame = strata.to_frame(name="strata" if strata.name is None else strata.name)
    else:
        frame = strata
    return frame.reset_index(drop=True).astype(str)


def _join(parts: pd.DataFrame, level: int) -> pd.Series:
    """Labels of the first ``level`` columns, the others written ``*`` (level 0: ``other``)."""
    if level == 0:
        return pd.Series(OTHER, index=parts.index)
    k = parts.shape[1]
    head = parts.iloc[:, 0] if level == 1 else parts.iloc[:, :level].agg("/".join, axis=1)
    return head + "/*" * (k - level)


def coarsen(parts: pd.DataFrame, n_splits: int) -> tuple[pd.Series, dict[str, str]]:
    """Stratum label per row such that every stratum holds at least ``n_splits`` rows.

    From the finest level down, a rare stratum drops its last column (``1/0`` -> ``1/*``); a
    coarse stratum still too small joins the largest stratum that shares its prefix (``1/*``
    joins ``1/1``), so a rare label combination still counts towards its first label's balance.
    Returns the labels and ``{original label: final label}`` of every merged stratum (empty when
    every stratum was large enough, and then the labels are the original ones).
    """
    full = _join(parts, parts.shape[1])
    label = full.copy()
    for level in range(parts.shape[1] - 1, -1, -1):
        counts = label.value_counts()
        rare = counts.index[counts < n_splits]
        if not len(rare):
            break
        mask = label.isin(rare)
        label[mask] = _join(parts[mask], level)
        prefix, counts = _join(parts, level), label.value_counts()
        for coarse in sorted(set(label[mask])):
            if counts[coarse] >= n_splits:
                continue
            peers = counts[counts.index.isin(label[(prefix == coarse) & (label != coarse)])]
            if len(peers):
                target = sorted(peers.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
                label[label == coarse] = target
                counts = label.value_counts()
    moved = full != label
    return label, dict(zip(full[moved], label[moved]))


def first_fold(
    parts: pd.DataFrame | None, codes: np.ndarray, groups: pd.Series, n_splits: int, seed: int, step: str,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Row indices of the first of ``n_splits`` stratified group folds, and the strata merged."""
    n_splits = min(n_splits, groups.nunique())
    merged: list[dict[str, Any]] = []
    y = codes
    if parts is not None:
        labels, moves = coarsen(parts, n_splits)
        if moves:
            sizes = _join(parts, parts.shape[1]).value_counts()
            merged = [{"stratum": a, "rows": int(sizes[a]), "into": b, "step": step}
                      for a, b in sorted(moves.items())]
            y = pd.factorize(labels)[0]
    from sklearn.model_selection import StratifiedGroupKFold  # only when splitting: keeps the CLI quick

    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = next(iter(cv.split(np.zeros(len(y)), y, groups)))
    return held, merged


def _codes(parts: pd.DataFrame | None, n: int) -> np.ndarray:
    if parts is None:
        return np.zeros(n, dtype=int)
    return pd.factorize(_join(parts, parts.shape[1]))[0]


def split_with_report(
    patient_ids: pd.Series,
    strata: Strata = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    by: str | None = None,
) -> tuple[pd.Series, Stratification]:
    """:func:`make_splits` plus a record of the stratification (``by`` names the strata)."""
    patient_ids = patient_ids.astype(str).reset_index(drop=True)
    n = len(patient_ids)
    parts = _parts(strata)
    y = _codes(parts, n)
    out = np.full(n, "train", dtype=object)
    n_test_folds = max(2, round(1.0 / fractions[2]))
    test_idx, merged = first_fold(parts, y, patient_ids, n_test_folds, seed, "test")
    out[test_idx] = "test"
    rest = np.setdiff1d(np.arange(n), test_idx)
    val_share = fractions[1] / (fractions[0] + fractions[1])
    n_val_folds = max(2, round(1.0 / val_share))
    rest_parts = None if parts is None else parts.iloc[rest].reset_index(drop=True)
    val_local, merged_val = first_fold(rest_parts, y[rest], patient_ids.iloc[rest].reset_index(drop=True),
                                       n_val_folds, seed + 1, "val")
    out[rest[val_local]] = "val"
    name = None if parts is None else (by or "/".join(map(str, parts.columns)))
    return pd.Series(out, name="split"), Stratification(name, merged + merged_val)


def make_splits(
    patient_ids: pd.Series,
    strata: Strata = None,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
) -> pd.Series:
    """Assign every row to train/val/test so that no patient spans two splits.

    ``strata`` (one value per row, e.g. a label; or one column per variable, e.g. two labels)
    is balanced across the splits where the group structure allows; strata too rare for the
    folds are merged (see the module docstring). Same inputs and seed give the same assignment.
    """
    return split_with_report(patient_ids, strata, seed, fractions)[0]


def holdout_fold(
    patient_ids: pd.Series, strata: Strata, seed: int, fraction: float, by: str | None = None,
) -> tuple[np.ndarray, Stratification]:
    """Boolean mask of a seeded, stratified ``fraction`` of the patients, and its stratification."""
    groups = patient_ids.astype(str).reset_index(drop=True)
    n_splits = min(max(2, round(1.0 / fraction)), groups.nunique())
    parts = _parts(strata)
    name = None if parts is None else (by or "/".join(map(str, parts.columns)))
    mask = np.zeros(len(groups), dtype=bool)
    if n_splits < 2:
        return mask, Stratification(name)
    held, merged = first_fold(parts, _codes(parts, len(groups)), groups, n_splits, seed, "holdout")
    mask[held] = True
    return mask, Stratification(name, merged)


def split_hash(case_ids: pd.Series, splits: pd.Series) -> str:
    """sha256 over the sorted ``case_id,split`` lines: the identity of a split in result files."""
    lines = sorted(f"{c},{s}" for c, s in zip(case_ids.astype(str), splits.astype(str)))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()

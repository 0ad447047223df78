"""Checks of a manifest's target columns, run when a task is built (before any extraction).

A bad label must stop the run with one message naming the dataset, column, case, split, value,
the rule and the fix, instead of surfacing later as a scikit-learn traceback or a silent null
metric. Task categories call these from their ``validate_targets`` (see :mod:`ctbench.task`).
Empty cells are never refused here: they mean "no target" and the case is left out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .datasets import Dataset
from .errors import CTBenchError


def _show(value: object) -> str:
    """A cell as the user typed it: ``2`` not ``2.0``, ``'yes'`` quoted."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def refuse(dataset: Dataset, rows: pd.DataFrame, column: str, bad: pd.Series | np.ndarray, rule: str) -> None:
    """Raise for the first row where ``bad`` is True: dataset, column, value, case, split, how
    many more, ``rule`` and the fix. Nothing happens when no row is bad."""
    bad = np.asarray(bad, dtype=bool)
    if not bad.any():
        return
    i = int(bad.nonzero()[0][0])
    row = rows.iloc[i]
    case = f" for case {row['case_id']!r}" if "case_id" in rows.columns else f" in row {i + 1}"
    split = f" ({row['split']} split)" if "split" in rows.columns else ""
    more = f" ({int(bad.sum()) - 1} more case(s) likewise)" if bad.sum() > 1 else ""
    value = row[column]
    holds = "is empty" if pd.isna(value) else f"holds {_show(value)}"
    raise CTBenchError(
        f"dataset {dataset.card.name!r}: column {column!r} {holds}{case}{split}{more}; "
        f"{rule}. Fix the column in {dataset.manifest_file} (an empty cell leaves the case out)"
    )


def numbers_in(dataset: Dataset, rows: pd.DataFrame, column: str, what: str, expected: str = "numbers") -> pd.Series:
    """The column as floats (NaN where empty); refuses text (``what`` must be ``expected``) and
    infinite values. Text that spells a number ("1", " 2.5") counts as that number: one stray
    word makes pandas read a whole CSV column as text, and only that word is the user's mistake."""
    values = rows[column]
    present = values.notna().to_numpy()
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        num = values.astype(float)
    else:
        num = pd.to_numeric(values.astype(object), errors="coerce").astype(float)
    refuse(dataset, rows, column, present & num.isna().to_numpy(), f"{what} must be {expected}, not text")
    refuse(dataset, rows, column, present & np.isinf(num.to_numpy()), f"{what} must be finite numbers")
    return num


def binary_in(dataset: Dataset, rows: pd.DataFrame, column: str, what: str, hint: str = "") -> None:
    """Refuse any non-empty value of the column other than 0 or 1 (text included)."""
    num = numbers_in(dataset, rows, column, what, "0 or 1")
    refuse(dataset, rows, column, num.notna() & ~num.isin([0.0, 1.0]), f"{what} must be 0 or 1{hint}")


def class_indices_in(dataset: Dataset, rows: pd.DataFrame, column: str) -> None:
    """Refuse multi-class labels that are not whole numbers >= 0 (class indices)."""
    what, expected = "multi-class labels", "whole numbers 0, 1, 2, ... (class indices)"
    num = numbers_in(dataset, rows, column, what, expected)
    refuse(dataset, rows, column, num.notna() & ((num != np.round(num)) | (num < 0)), f"{what} must be {expected}")

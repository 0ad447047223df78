"""Which cells of a report column are report text, for the report-generation task.

Decision: a missing, empty or blank report (NaN, ``None``, ``""``, spaces) means "no target":
the case is left out (``usable`` False) and counted in the result's ``excluded_without_target``,
like an empty label of the other tasks. A value that is not text at all (a number, a boolean:
a wrong column, or a spreadsheet that turned "0" into 0) is refused when the task is built,
before any feature is extracted, with one message naming the column, case and fix
(:func:`check_report_text`): scoring generated reports against ``"3.0"`` would be silently wrong.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctbench.datasets import Dataset
from ctbench.target_checks import refuse

RULE = ("report generation needs the free-text report there, not a number or other value; write "
        "it as text, or name the report column in the task's targets")


def _missing(value: object) -> bool:
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def non_text(col: pd.Series) -> np.ndarray:
    """True where a cell holds a value that is neither missing nor a string."""
    return np.array([not (_missing(v) or isinstance(v, str)) for v in col.to_numpy(dtype=object)], dtype=bool)


def check_report_text(dataset: Dataset, rows: pd.DataFrame, column: str) -> None:
    """Refuse (one :class:`~ctbench.errors.CTBenchError`) a report column holding non-text values."""
    refuse(dataset, rows, column, non_text(rows[column]), RULE)


def report_mask(col: pd.Series) -> np.ndarray:
    """True where ``col`` holds report text; missing, blank and non-text cells are False."""
    return np.array([isinstance(v, str) and bool(v.strip()) for v in col.to_numpy(dtype=object)], dtype=bool)


def report_texts(col: pd.Series) -> np.ndarray:
    """``col`` as an object array of report strings ("" where there is none, never "nan")."""
    out = np.empty(len(col), dtype=object)
    out[:] = [v if isinstance(v, str) else "" for v in col.to_numpy(dtype=object)]
    return out

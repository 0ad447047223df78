"""Segmentation metrics re-scored from predictions.csv (the leaderboards' paired bootstrap).

Masks are not read again: every metric of :mod:`ctbench.tasks.segmentation` is a function of
per-case, per-structure values that predictions.csv holds, for each foreground structure
``<name>`` (``SegmentationTask.prediction_columns``):

- ``dice_<name>``: the case's Dice; empty (NaN) where its truth lacks the structure;
- ``fp_ml_<name>``: the volume (mL) predicted as the structure where the truth lacks it; empty
  where the truth holds it, and where the structure was not scored on the case at all (a label
  beyond both the head's classes and that case's truth). Both empty: not scored.

The scoring layout, ``(n, 2K)`` each for K structures in column order:
``y = [present | scored]`` (0/1, from the truth alone, so the same for every model) and
``pred = [dice | fp_ml]``. Its metrics reproduce the task's on any subset of cases, including
which structures a subset's table holds (those scored on one of its cases).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ctbench.bootstrap import MetricFn
from ctbench.errors import CTBenchError

DICE, FP_ML = "dice_", "fp_ml_"
MACRO = "macro"


def structure_names(columns: pd.Index | list[str]) -> tuple[str, ...]:
    """Structures with a per-case Dice column (``dice_<name>``, not ``dice_macro``), in order."""
    return tuple(c[len(DICE):] for c in columns if c.startswith(DICE) and c != DICE + MACRO)


def read_layout(frame: pd.DataFrame, names: tuple[str, ...], where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(y, pred)`` of ``names`` from a predictions frame (see the module docstring)."""
    cols = [DICE + n for n in names] + [FP_ML + n for n in names]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise CTBenchError(f"predictions lack column(s) {', '.join(missing)} for task {where!r}; "
                           f"re-run the result with this ctbench version")
    values = frame[cols].to_numpy(dtype=np.float64)
    dice, fp = values[:, : len(names)], values[:, len(names):]
    present = np.isfinite(dice)
    scored = present | np.isfinite(fp)
    return np.hstack([present, scored]).astype(np.float64), values


def _parts(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """present, scored (bool), dice, false-positive mL (0 where not scored) of a layout."""
    k = y.shape[1] // 2
    present, scored = y[:, :k] > 0, y[:, k:] > 0
    fp = np.where(scored, pred[:, k:], 0.0)  # a case narrower than the table counts no voxel
    return present, scored, pred[:, :k], fp


def dice_macro(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean over the structures present in some case of their mean Dice over those cases."""
    present, _, dice, _ = _parts(y, pred)
    seen = present.any(axis=0)
    if not seen.any():
        raise ValueError("no foreground label in these cases' ground truth")
    return float(np.mean(np.nanmean(dice[:, seen], axis=0)))


def dice_of(j: int) -> MetricFn:
    """Mean Dice of structure ``j`` over the cases whose truth holds it."""

    def fn(y: np.ndarray, pred: np.ndarray) -> float:
        present, _, dice, _ = _parts(y, pred)
        if not present[:, j].any():
            raise ValueError("this label is absent from these cases' ground truth")
        return float(np.nanmean(dice[:, j]))

    return fn


def _fp_table(y: np.ndarray, pred: np.ndarray, rate: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per case and structure: false-positive mL (or 0/1 with ``rate``), NaN where the truth
    holds the structure; and which structures the subset's table holds."""
    present, scored, _, fp = _parts(y, pred)
    table = np.where(present, np.nan, (fp > 0).astype(np.float64) if rate else fp)
    return table, scored.any(axis=0)


def fp_of(j: int | None, rate: bool) -> MetricFn:
    """False-positive case rate (``rate``) or mean volume of structure ``j`` over the cases
    without it; ``j=None``: their mean over the structures that have such cases."""

    def fn(y: np.ndarray, pred: np.ndarray) -> float:
        table, in_table = _fp_table(y, pred, rate)
        if j is not None:
            col = table[:, j] if in_table[j] else np.zeros(len(table))
            if np.all(np.isnan(col)):
                raise ValueError("every case holds this label: no false positive can be scored")
            return float(np.nanmean(col))
        table = table[:, in_table]
        seen = ~np.all(np.isnan(table), axis=0)
        if not seen.any():
            raise ValueError("every case holds every foreground label: no false positive can be scored")
        return float(np.mean(np.nanmean(table[:, seen], axis=0)))

    return fn


def layout_metrics(names: tuple[str, ...]) -> dict[str, MetricFn]:
    """The task's metrics, by name, on the layout of ``names``."""
    out: dict[str, MetricFn] = {"dice_macro": dice_macro, "fp_rate_macro": fp_of(None, True),
                                "fp_ml_macro": fp_of(None, False)}
    for j, name in enumerate(names):
        out |= {f"dice_{name}": dice_of(j), f"fp_rate_{name}": fp_of(j, True), f"fp_ml_{name}": fp_of(j, False)}
    return out

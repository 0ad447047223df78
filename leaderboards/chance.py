"""The chance level of a main metric: what a model that knows nothing scores, drawn on charts.

Derived from the metric, never tuned per board: AUROC, C-index and time-dependent AUC are 0.5
(a random score orders a positive/event pair correctly half the time); AUPRC is the prevalence
of the positives in the test set (macro: the mean prevalence over classes); balanced accuracy is
1/k for k classes; R^2 and Pearson r are 0 (predicting the mean, or noise). Evaluation tasks
that record their own chance in the result (retrieval's ``protocol.chance``: the score of a
collapsed encoder on its very queries) are taken as recorded. Metrics without a chance level
that holds for every data set (F1, errors in mm or in target units, Dice, BLEU, ROUGE) get
none; their boards lean on the reference rows (``chance``, ``hu-histogram``...) instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

HALF = {"auroc": "a random score ranks a positive above a negative half the time",
        "c_index": "a random risk orders a comparable pair correctly half the time",
        "td_auc": "a random risk ranks an event before the horizon above a survivor half the time"}
ZERO = {"r2": "predicting the mean of the targets scores 0",
        "pearson_r": "predictions unrelated to the targets correlate 0"}


@dataclass(frozen=True)
class Chance:
    """A chance level and the sentence that says where it comes from."""

    value: float
    reason: str


def chance_level(metric: str, y: np.ndarray | None = None, n_classes: int | None = None,
                 recorded: Mapping[str, Any] | None = None) -> Chance | None:
    """Chance of ``metric`` (None where no data-free level exists).

    ``y``: the test targets as the metric reads them (0/1 vector, 0/1 matrix for several
    labels, or class indices with ``n_classes``), needed for AUPRC; ``recorded``: the chance
    values a result wrote itself (metric -> value)."""
    if recorded and isinstance(recorded.get(metric), (int, float)) and np.isfinite(recorded[metric]):
        return Chance(float(recorded[metric]),
                      "the expected score of a collapsed encoder on these queries, as recorded")
    base = metric.split("@", 1)[0]
    if base in HALF:
        return Chance(0.5, HALF[base])
    if base in ZERO:
        return Chance(0.0, ZERO[base])
    if base == "balanced_accuracy":
        k = _classes(y, n_classes)
        return None if k is None else Chance(1.0 / k, f"guessing one of {k} classes is right 1/{k} of the time")
    if base == "auprc":
        prevalence = _prevalence(y, n_classes)
        if prevalence is None:
            return None
        return Chance(prevalence, "the prevalence of positives in the test set (mean over classes)")
    return None


def _classes(y: np.ndarray | None, n_classes: int | None) -> int | None:
    """Classes a balanced accuracy averages over: ``n_classes`` for class indices, 2 per 0/1 label."""
    if n_classes:
        return int(n_classes)
    if y is None:
        return None
    return 2 if np.isin(np.asarray(y, dtype=float)[np.isfinite(np.asarray(y, dtype=float))], (0, 1)).all() else None


def _prevalence(y: np.ndarray | None, n_classes: int | None) -> float | None:
    """Mean share of positives per label (one-vs-rest classes for class indices)."""
    if y is None:
        return None
    y = np.asarray(y, dtype=float)
    if n_classes and y.ndim == 1:
        y = (y[:, None] == np.arange(n_classes)[None, :]).astype(float)
    y = y.reshape(len(y), -1)
    shares = [float(np.nanmean(col)) for col in y.T if np.isfinite(col).any()]
    shares = [s for s in shares if 0.0 < s < 1.0]  # labels AUPRC leaves out (one class only)
    return float(np.mean(shares)) if shares else None

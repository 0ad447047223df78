"""Recompute a task's main metric from saved predictions, for any task category.

The paired bootstrap needs ``(y, pred)`` arrays back from ``predictions.csv``. What a category
can do is read from its registered class, never guessed: every :class:`~ctbench.task.ProbeTask`
writes one row per test case and reads it back (``from_prediction_frame``) in the layout its
``rescoring_metrics`` score; an :class:`~ctbench.task.EvalTask` first turns its rows into one
row per case (``per_case_frame``; retrieval sums its per-query values) and is re-scored when its
``rescoring_metrics`` hold the main metric. Any other category (or one from a package that is not
installed here) gets no paired test, and its table says so, instead of a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from pydantic import ValidationError

from ctbench.bootstrap import MetricFn
from ctbench.datasets import TaskSpec
from ctbench.errors import CTBenchError
from ctbench.registry import TASKS
from ctbench.task import EvalTask, ProbeTask

from .schema import TaskInfo

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Scorer:
    """Re-scores one table's saved predictions with its task's main metric: ``cases`` turns a
    predictions frame into one row per case (what the table aligns across models), ``readback``
    reads ``(y, pred)`` from the aligned rows and ``metric`` scores them."""

    cases: Callable[[pd.DataFrame], pd.DataFrame]
    readback: Callable[[pd.DataFrame], Arrays]
    metric: MetricFn

    def arrays(self, frame: pd.DataFrame) -> Arrays:
        return self.readback(frame)


def _registered(category: str) -> type | None:
    try:
        return TASKS.get(category)
    except CTBenchError:
        return None  # a category from a package that is not installed here


def can_score(info: TaskInfo) -> bool:
    """Whether ``info``'s category is one whose predictions may be re-scored (a probe or
    evaluation task of this installation; checked before reading them)."""
    cls = _registered(info.category)
    return isinstance(cls, type) and issubclass(cls, (ProbeTask, EvalTask))


def _spec(info: TaskInfo, frame: pd.DataFrame) -> TaskSpec | None:
    try:
        spec = TaskSpec(name=info.name, category=info.category, targets=info.targets, main_metric=info.main_metric,
                        version=info.version, kind=info.kind, horizons=info.horizons)
    except ValidationError:
        return None
    if spec.category == "classification" and not spec.kind and any(c.startswith("p_class") for c in frame.columns):
        spec = spec.model_copy(update={"kind": "multiclass"})  # files written before kind was recorded
    return spec


def make_scorer(info: TaskInfo, frame: pd.DataFrame) -> Scorer | None:
    """A scorer for ``info``'s main metric, or None when its predictions cannot be re-scored.

    ``frame`` is one of the table's predictions frames, as written. A probe task's scoring
    instance reads it once here (categories such as segmentation take the structures they score
    from the first frame they read)."""
    cls = _registered(info.category)
    spec = _spec(info, frame) if cls is not None else None
    if spec is None:
        return None
    if issubclass(cls, ProbeTask):
        task = cls.for_scoring(spec)
        task.from_prediction_frame(frame)
        cases: Callable[[pd.DataFrame], pd.DataFrame] = _as_written
    elif issubclass(cls, EvalTask):
        task = cls.for_scoring(spec)
        cases = task.per_case_frame
    else:
        return None
    metric = task.rescoring_metrics().get(info.main_metric)
    return None if metric is None else Scorer(cases, task.from_prediction_frame, metric)


def _as_written(frame: pd.DataFrame) -> pd.DataFrame:
    """A probe task's predictions: one row per test case already."""
    return frame

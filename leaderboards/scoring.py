"""Recompute a task's main metric from saved predictions, for any task category.

The paired bootstrap needs ``(y, pred)`` arrays back from ``predictions.csv``; task classes give
them through ``ProbeTask.for_scoring`` and ``from_prediction_frame`` and score them with their own
``metrics()``. A category without them (e.g. retrieval, which trains nothing and writes per-query
rows) gets no paired test, and its table says so, instead of a guess.
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

from .schema import TaskInfo

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Scorer:
    """Reads ``(y, pred)`` from a predictions frame and scores them with the main metric."""

    readback: Callable[[pd.DataFrame], Arrays]
    metric: MetricFn

    def arrays(self, frame: pd.DataFrame) -> Arrays:
        return self.readback(frame)


def can_score(info: TaskInfo) -> bool:
    """Whether ``info``'s predictions can be read back at all (checked before reading them)."""
    try:
        return hasattr(TASKS.get(info.category), "from_prediction_frame")
    except CTBenchError:
        return False


def make_scorer(info: TaskInfo, frame: pd.DataFrame) -> Scorer | None:
    """A scorer for ``info``'s main metric, or None when its predictions cannot be read back."""
    try:
        cls = TASKS.get(info.category)
    except CTBenchError:
        return None  # a category from a package that is not installed here
    if not hasattr(cls, "for_scoring"):
        return None  # e.g. retrieval: nothing trained, per-query rows
    try:
        spec = TaskSpec(name=info.name, category=info.category, targets=info.targets, main_metric=info.main_metric,
                        version=info.version, kind=info.kind, horizons=info.horizons)
    except ValidationError:
        return None
    if spec.category == "classification" and not spec.kind and any(c.startswith("p_class") for c in frame.columns):
        spec = spec.model_copy(update={"kind": "multiclass"})  # files written before kind was recorded
    task = cls.for_scoring(spec)
    metric = task.metrics().get(info.main_metric)
    return None if metric is None else Scorer(task.from_prediction_frame, metric)

"""The contract a task category implements so the shared engine can tune, refit and score it.

A task module owns its targets, probe head, metrics and prediction columns; the engine owns
splitting, tuning, refitting, bootstrap and result writing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import numpy as np
import pandas as pd

from .bootstrap import MetricFn
from .datasets import Dataset, TaskSpec


class ProbeTask(ABC):
    """A task scored with a tuned probe on global embeddings."""

    category: str
    uses_tokens: bool = False
    direction: Literal["maximize", "minimize"] = "maximize"

    def __init__(self, spec: TaskSpec, dataset: Dataset) -> None:
        self.spec = spec
        self.dataset = dataset
        dataset.require_columns(list(self.required_columns()))

    def required_columns(self) -> tuple[str, ...]:
        return self.spec.targets

    @property
    def main_metric(self) -> str:
        return self.spec.main_metric

    @abstractmethod
    def targets(self, rows: pd.DataFrame) -> np.ndarray:
        """Targets of ``rows`` in the layout ``fit``/``metrics`` expect."""

    def usable(self, rows: pd.DataFrame) -> np.ndarray:
        """Boolean mask of rows that have a target (others are left out, and counted)."""
        return rows[list(self.spec.targets)].notna().all(axis=1).to_numpy()

    @abstractmethod
    def suggest(self, trial: Any, seed: int) -> dict:
        """Draw probe hyperparameters from this category's (shared) search space."""

    @abstractmethod
    def fit_predict(
        self, params: dict, X_train: np.ndarray, y_train: np.ndarray, X_eval: np.ndarray, seeds: list[int]
    ) -> np.ndarray:
        """Fit the probe on train (once per seed) and return predictions on ``X_eval``."""

    @abstractmethod
    def metrics(self) -> dict[str, MetricFn]:
        """Metric name -> fn(y_true, prediction); must include ``main_metric``."""

    @abstractmethod
    def prediction_columns(self, y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
        """Per-case columns written to predictions.csv beside the result."""

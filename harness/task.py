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
from .datasets import ID_COLUMNS, Dataset, TaskSpec
from .errors import CTBenchError
from .target_checks import numbers_in
from .types import Features


def numeric_targets(task: "ProbeTask | EvalTask", rows: pd.DataFrame) -> None:
    """The default target check: every target column except the id columns (which retrieval
    lists as a target) holds numbers; empty cells are fine (those cases are left out)."""
    for col in task.spec.targets:
        if col not in ID_COLUMNS:
            numbers_in(task.dataset, rows, col, f"{task.category} targets")


class ProbeTask(ABC):
    """A task scored with a tuned probe on global embeddings."""

    category: str
    uses_tokens: bool = False
    lower_is_better: frozenset[str] = frozenset()  # metrics where smaller values win
    #: modules besides the task's own classes (and the shared engine and probes) whose code
    #: defines its probe: their source is part of the run's probe-code fingerprint
    probe_modules: tuple[str, ...] = ()

    def __init__(self, spec: TaskSpec, dataset: Dataset) -> None:
        self.spec = spec
        self.dataset = dataset
        dataset.require_columns(list(self.required_columns()))
        self.validate_targets(dataset.manifest)
        if spec.main_metric not in self.metrics():
            raise CTBenchError(
                f"task {spec.name!r}: main metric {spec.main_metric!r} is not one of "
                f"{', '.join(self.metrics())}; fix the dataset card"
            )

    def required_columns(self) -> tuple[str, ...]:
        return self.spec.targets

    def validate_targets(self, rows: pd.DataFrame) -> None:
        """Refuse target values this category cannot learn from, before any feature is extracted,
        with one message naming the column, case, split, value and fix (see
        :mod:`ctbench.target_checks`). Default: every target column holds numbers (empty cells
        are fine: those cases are left out). Categories whose targets are text or file paths
        (report generation, segmentation) override it; stricter categories add their rules."""
        numeric_targets(self, rows)

    @property
    def main_metric(self) -> str:
        return self.spec.main_metric

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """Optimisation direction of the main metric (for tuning and ranking)."""
        return "minimize" if self.main_metric in self.lower_is_better else "maximize"

    @abstractmethod
    def targets(self, rows: pd.DataFrame) -> np.ndarray:
        """Targets of ``rows`` in the layout ``fit``/``metrics`` expect (an object array for
        per-case structures such as masks)."""

    def inputs(self, feats: list[Features]) -> np.ndarray:
        """Probe inputs from cached features: stacked embeddings by default; dense tasks return
        an object array of ``Features`` (tokens + token_affine)."""
        return np.stack([f.embedding for f in feats])

    def usable(self, rows: pd.DataFrame) -> np.ndarray:
        """Boolean mask of rows that have a target (others are left out, and counted)."""
        return rows[list(self.spec.targets)].notna().all(axis=1).to_numpy()

    @abstractmethod
    def suggest(self, trial: Any, seed: int) -> dict:
        """Draw probe hyperparameters from this category's (shared) search space."""

    @abstractmethod
    def is_stochastic(self, params: dict) -> bool:
        """Whether refitting the probe ``params`` with another seed can change its predictions:
        the engine then refits with several seeds and ``fit_predict`` combines them. Every task
        declares it for each of its probe families."""

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

    def from_prediction_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(y, pred)`` read back from predictions.csv: the inverse of ``prediction_columns``
        (leaderboards re-score saved predictions with it for paired bootstrap)."""
        raise NotImplementedError(f"{type(self).__name__} cannot read back its predictions")

    @classmethod
    def for_scoring(cls, spec: TaskSpec) -> "ProbeTask":
        """An instance that scores saved predictions without a dataset (no probe is fitted)."""
        task = cls.__new__(cls)
        task.spec, task.dataset = spec, None
        return task

    def _columns(self, frame: pd.DataFrame, cols: list[str]) -> np.ndarray:
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise CTBenchError(
                f"predictions lack column(s) {', '.join(missing)} for task {self.spec.name!r}; "
                f"re-run the result with this ctbench version"
            )
        return frame[cols].to_numpy()


class EvalTask(ABC):
    """A task scored directly on frozen embeddings, with nothing trained (e.g. retrieval)."""

    category: str
    uses_tokens: bool = False
    lower_is_better: frozenset[str] = frozenset()

    def __init__(self, spec: TaskSpec, dataset: Dataset) -> None:
        self.spec = spec
        self.dataset = dataset
        dataset.require_columns(list(spec.targets))
        self.validate_targets(dataset.manifest)

    def validate_targets(self, rows: pd.DataFrame) -> None:
        """As :meth:`ProbeTask.validate_targets`: by default every target column other than the
        id columns holds numbers; categories add their rules."""
        numeric_targets(self, rows)

    @property
    def main_metric(self) -> str:
        return self.spec.main_metric

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "minimize" if self.main_metric in self.lower_is_better else "maximize"

    def usable(self, rows: pd.DataFrame) -> np.ndarray:
        return np.ones(len(rows), dtype=bool)

    @abstractmethod
    def evaluate(
        self, rows: pd.DataFrame, embeddings: np.ndarray, *, seed: int, n_boot: int
    ) -> tuple[dict, pd.DataFrame, dict]:
        """Score ``rows`` (aligned with ``embeddings``): returns (metric estimates,
        per-query predictions frame, protocol information for the result file)."""

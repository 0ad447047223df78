"""The contract a task category implements, in one place (in the style of mteb's ``AbsTask``).

A category is a class registered under its name (built-ins in ``ctbench.tasks.BUILTIN_TASKS``,
third-party ones through the ``ctbench.tasks`` entry point). The runner, engine, command line
and leaderboards use only what :class:`Task`, :class:`ProbeTask` and :class:`EvalTask` declare:

- identity: :attr:`Task.category`, :attr:`Task.uses_tokens`;
- targets: :meth:`Task.validate_targets`, :meth:`Task.usable`, ``required_columns``;
- metrics: :meth:`Task.metric_table` (name, function, direction, what it scores) with the main
  metric from the dataset card, and the direction of any metric from :meth:`Task.direction_of`;
- options: :attr:`Task.options` (name, type, default, help; the command line turns each into a
  ``--flag`` for this category), :attr:`Task.takes_device` (the run's ``--device`` reaches the
  task), :meth:`Task.probe_settings` (what changes the probe; recorded, and hashed into the
  study name and result folder when it differs from :meth:`Task.default_probe_settings`);
- what the result file records beyond the common fields: :attr:`Task.kind`, :attr:`Task.horizons`;
- artifacts written beside the result: :meth:`Task.write_artifacts`;
- for trained probes (:class:`ProbeTask`): search space, stochasticity, fit and predict,
  predictions written (``prediction_columns``) and read back (``from_prediction_frame``) and
  re-scored (``rescoring_metrics``) for the leaderboards' paired bootstrap;
- for evaluation-only tasks (:class:`EvalTask`): ``evaluate``.

A task module owns its targets, probe head, metrics and prediction columns; the engine owns
splitting, tuning, refitting, bootstrap and result writing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd

from .bootstrap import MetricFn
from .datasets import ID_COLUMNS, Dataset, TaskSpec
from .errors import CTBenchError
from .target_checks import numbers_in
from .types import Features

Direction = Literal["maximize", "minimize"]


@dataclass(frozen=True)
class Metric:
    """One metric of a task: its function ``fn(y, prediction) -> float`` (ValueError where
    undefined), whether larger or smaller values are better, and what it scores (``needs``: a
    short name of the prediction it reads, e.g. ``"probabilities"``, ``"risk"``, ``"centres"``)."""

    name: str
    fn: MetricFn
    direction: Direction = "maximize"
    needs: str = "predictions"


@dataclass(frozen=True)
class TaskOption:
    """A setting of a task category, given on the command line as ``--<name>`` (``_`` -> ``-``)
    or, when absent, read from ``env``. The task constructor takes it as keyword ``name``."""

    name: str
    type: type
    default: Any
    help: str
    env: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def parse(self, text: str) -> Any:
        """The value of ``text`` given on the command line, or a CTBenchError naming the flag."""
        try:
            return self.type(text)
        except (TypeError, ValueError):
            raise CTBenchError(f"{self.flag} takes a {self.type.__name__}, got {text!r}") from None


def numeric_targets(task: "Task", rows: pd.DataFrame) -> None:
    """The default target check: every target column except the id columns (which retrieval
    lists as a target) holds numbers; empty cells are fine (those cases are left out)."""
    for col in task.spec.targets:
        if col not in ID_COLUMNS:
            numbers_in(task.dataset, rows, col, f"{task.category} targets")


class Task(ABC):
    """What every task category declares (see the module docstring)."""

    category: ClassVar[str]
    uses_tokens: ClassVar[bool] = False  # reads token grids (dense tasks), not only embeddings
    options: ClassVar[tuple[TaskOption, ...]] = ()
    takes_device: ClassVar[bool] = False  # the constructor takes the run's --device as ``device``
    #: modules besides the task's own classes (and the shared engine and probes) whose code
    #: defines its probe: their source is part of the run's probe-code fingerprint
    probe_modules: ClassVar[tuple[str, ...]] = ()
    kind: str | None = None  # a sub-kind recorded in results (classification: binary, ...)
    horizons: tuple[float, ...] = ()  # time horizons of time-dependent metrics (survival)

    def __init__(self, spec: TaskSpec, dataset: Dataset) -> None:
        self.spec = spec
        self.dataset = dataset
        dataset.require_columns(list(self.required_columns()))
        self.validate_targets(dataset.manifest)
        if spec.main_metric not in self.metric_table():
            raise CTBenchError(
                f"task {spec.name!r}: main metric {spec.main_metric!r} is not one of "
                f"{', '.join(self.metric_table())}; fix the dataset card"
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

    def usable(self, rows: pd.DataFrame) -> np.ndarray:
        """Boolean mask of rows that have a target (others are left out, and counted)."""
        return rows[list(self.spec.targets)].notna().all(axis=1).to_numpy()

    @abstractmethod
    def metric_table(self) -> dict[str, Metric]:
        """Every metric of this task by name; must include the card's ``main_metric``."""

    def metrics(self) -> dict[str, MetricFn]:
        """Metric name -> ``fn(y, prediction)``, from :meth:`metric_table`."""
        return {name: m.fn for name, m in self.metric_table().items()}

    def direction_of(self, metric: str) -> Direction:
        """Whether larger or smaller values of ``metric`` are better (maximize if unknown)."""
        m = self.metric_table().get(metric)
        return m.direction if m is not None else "maximize"

    @property
    def main_metric(self) -> str:
        return self.spec.main_metric

    @property
    def direction(self) -> Direction:
        """Optimisation direction of the main metric (for tuning and ranking)."""
        return self.direction_of(self.main_metric)

    def probe_settings(self) -> dict[str, Any]:
        """Settings that change what is fitted or scored (e.g. a decoding beam), recorded in the
        result; empty for tasks with none."""
        return {}

    def default_probe_settings(self) -> dict[str, Any]:
        """:meth:`probe_settings` as they are when no option is given."""
        return self.probe_settings()

    def write_artifacts(self, folder: Path, y: np.ndarray, pred: np.ndarray) -> list[str]:
        """Write extra files about the test predictions into ``folder`` (e.g. a Kaplan-Meier
        plot); returns their names. Default: none."""
        return []

    @classmethod
    def for_scoring(cls, spec: TaskSpec) -> "Task":
        """An instance that scores saved predictions without a dataset (nothing is fitted).
        Categories whose metrics depend on more than the spec extend it."""
        task = cls.__new__(cls)
        task.spec, task.dataset = spec, None
        return task


class ProbeTask(Task):
    """A task scored with a probe tuned on train -> validation and refitted (see the engine)."""

    @abstractmethod
    def targets(self, rows: pd.DataFrame) -> np.ndarray:
        """Targets of ``rows`` in the layout ``fit``/``metrics`` expect (an object array for
        per-case structures such as masks)."""

    def inputs(self, feats: list[Features]) -> np.ndarray:
        """Probe inputs from cached features: stacked embeddings by default; dense tasks return
        an object array of ``Features`` (tokens + token_affine)."""
        return np.stack([f.embedding for f in feats])

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
    def prediction_columns(self, y: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
        """Per-case columns written to predictions.csv beside the result."""

    @abstractmethod
    def from_prediction_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(y, pred)`` read back from predictions.csv, in the layout :meth:`rescoring_metrics`
        scores (the leaderboards re-score saved predictions with it for paired bootstrap);
        ``y`` must come from the truth alone (it is checked to be equal across models)."""

    def rescoring_metrics(self) -> dict[str, MetricFn]:
        """Metrics of the arrays :meth:`from_prediction_frame` returns; they must give the
        result's values on the full test set (they may depend on the frames read so far:
        segmentation learns its structures from the first). Default: :meth:`metrics` (read-back
        returns the prediction layout itself)."""
        return self.metrics()

    def _columns(self, frame: pd.DataFrame, cols: list[str]) -> np.ndarray:
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise CTBenchError(
                f"predictions lack column(s) {', '.join(missing)} for task {self.spec.name!r}; "
                f"re-run the result with this ctbench version"
            )
        return frame[cols].to_numpy()


class EvalTask(Task):
    """A task scored directly on frozen embeddings, with nothing trained (e.g. retrieval)."""

    def usable(self, rows: pd.DataFrame) -> np.ndarray:
        return np.ones(len(rows), dtype=bool)

    @abstractmethod
    def evaluate(
        self, rows: pd.DataFrame, embeddings: np.ndarray, *, seed: int, n_boot: int
    ) -> tuple[dict, pd.DataFrame, dict]:
        """Score ``rows`` (aligned with ``embeddings``): returns (metric estimates,
        per-query predictions frame, protocol information for the result file)."""

    def per_case_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """predictions.csv as one row per case (unique ``case_id``, with its ``patient_id``): the
        rows the leaderboards align across models before :meth:`from_prediction_frame`.
        Default: the frame as written (one row per case already)."""
        return frame

    def from_prediction_frame(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """``(y, pred)`` from :meth:`per_case_frame`'s rows, in the layout
        :meth:`rescoring_metrics` scores; ``y`` must come from the truth alone. Called only when
        :meth:`rescoring_metrics` holds the main metric."""
        raise CTBenchError(f"{type(self).__name__} does not read back its predictions")

    def rescoring_metrics(self) -> dict[str, MetricFn]:
        """Metrics of the arrays :meth:`from_prediction_frame` returns, by name; on the full test
        set they must give the result's values. A table is paired-tested when its main metric is
        here, else ranked by point values and marked "not tested". Default: none."""
        return {}

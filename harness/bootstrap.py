"""Patient-level bootstrap confidence intervals for test metrics.

Patients, not scans, are resampled with replacement (all scans of a drawn patient come along),
so repeat scans of one patient never make an interval look tighter than it is.

A resample is scored as the test set with integer case weights (how often each case's patient
was drawn): metrics that implement :class:`~ctbench.metrics_batch.ResampledMetric` score all
resamples at once from that count matrix; other metrics are called once per resample.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from .metrics_batch import ResampledMetric, batch_values, chunk_rows

MetricFn = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Estimate:
    """A metric's point value with its percentile bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float
    n_boot: int  # resamples where the metric was defined
    n_boot_requested: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "value": self.value,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "n_boot": self.n_boot,
            "n_boot_requested": self.n_boot_requested,
        }


def _patient_draws(groups: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each case's patient index ``(n_cases,)`` and the patients drawn ``(n_boot, n_patients)``.

    The single place the seed is turned into draws, so the resamples and the count matrix agree."""
    groups = np.asarray(groups).astype(str)
    uniq, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniq), size=(n_boot, len(uniq)))
    return inverse.ravel(), draws


def patient_resamples(groups: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n_boot`` patient-level resamples (same seed -> same resamples)."""
    return _rows(*_patient_draws(groups, n_boot, seed))


def _rows(inverse: np.ndarray, draws: np.ndarray) -> list[np.ndarray]:
    members = [np.flatnonzero(inverse == g) for g in range(draws.shape[1])]
    return [np.concatenate([members[g] for g in row]) for row in draws]


def _count_chunks(inverse: np.ndarray, draws: np.ndarray) -> Iterator[np.ndarray]:
    """Chunks of the ``(n_boot, n_cases)`` matrix: how often each case is in each resample."""
    n_patients = draws.shape[1]
    step = chunk_rows(len(inverse))
    for start in range(0, len(draws), step):
        d = draws[start:start + step]
        flat = (d + (np.arange(len(d)) * n_patients)[:, None]).ravel()
        per_patient = np.bincount(flat, minlength=len(d) * n_patients).reshape(len(d), n_patients)
        yield per_patient[:, inverse].astype(np.float64)


def resample_counts(groups: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of the count matrix of :func:`patient_resamples` (same seed, same resamples):
    row ``b`` counts how often each case is in resample ``b``."""
    return _count_chunks(*_patient_draws(groups, n_boot, seed))


def _safe(fn: MetricFn, y: np.ndarray, p: np.ndarray) -> float:
    """The metric, or NaN where it is undefined (e.g. AUROC on a resample with one class)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _value(fn, y, p)


def _value(fn: MetricFn, y: np.ndarray, p: np.ndarray) -> float:
    try:
        return float(fn(y, p))
    except ValueError:
        return float("nan")


def loop_draws(fn: MetricFn, y: np.ndarray, pred: np.ndarray, samples: Sequence[np.ndarray]) -> np.ndarray:
    """The metric on every resample of row indices, one call each (for metrics without a batch)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([_value(fn, y[idx], pred[idx]) for idx in samples], dtype=np.float64)


def bootstrap_draws(
    metrics: dict[str, MetricFn],
    y: np.ndarray,
    pred: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, tuple[float, np.ndarray]]:
    """Point value and ``(n_boot,)`` resample values (NaN where undefined) of every metric.

    A :class:`ResampledMetric` scores all resamples at once from the count matrix; any other
    metric (or one whose kernel declines the inputs) is called once per resample."""
    y, pred = np.asarray(y), np.asarray(pred)
    inverse, draws = _patient_draws(groups, n_boot, seed)
    small = chunk_rows(len(inverse)) >= n_boot  # one chunk: build it once for every metric
    cached = list(_count_chunks(inverse, draws)) if small and any(
        isinstance(fn, ResampledMetric) for fn in metrics.values()) else None
    samples: list[np.ndarray] | None = None
    out: dict[str, tuple[float, np.ndarray]] = {}
    for i, (name, fn) in enumerate(metrics.items()):
        vals = None
        if isinstance(fn, ResampledMetric):
            vals = batch_values(fn, y, pred, cached if cached is not None else _count_chunks(inverse, draws))
        if vals is None:
            samples = samples if samples is not None else _rows(inverse, draws)
            vals = loop_draws(fn, y, pred, samples)
        out[name] = (_safe(fn, y, pred), vals)
        if progress is not None:
            progress(i + 1, len(metrics))
    return out


def bootstrap_metrics(
    metrics: dict[str, MetricFn],
    y: np.ndarray,
    pred: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Estimate]:
    """Point value and patient-level percentile CI of every metric on the same resamples.

    ``progress(done, total)`` is called after each metric (for a "bootstrap" stage display)."""
    out: dict[str, Estimate] = {}
    for name, (point, vals) in bootstrap_draws(metrics, y, pred, groups, n_boot, seed, progress).items():
        ok = vals[np.isfinite(vals)]
        if len(ok):
            lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
        else:
            lo = hi = float("nan")
        out[name] = Estimate(point, float(lo), float(hi), int(len(ok)), n_boot)
    return out

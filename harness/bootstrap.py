"""Patient-level bootstrap confidence intervals for test metrics.

Patients, not scans, are resampled with replacement (all scans of a drawn patient come along),
so repeat scans of one patient never make an interval look tighter than it is.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

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


def patient_resamples(groups: np.ndarray, n_boot: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n_boot`` patient-level resamples (same seed -> same resamples)."""
    groups = np.asarray(groups).astype(str)
    uniq, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniq), size=(n_boot, len(uniq)))
    return [np.concatenate([members[g] for g in row]) for row in draws]


def _safe(fn: MetricFn, y: np.ndarray, p: np.ndarray) -> float:
    """The metric, or NaN where it is undefined (e.g. AUROC on a resample with one class)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(fn(y, p))
        except ValueError:
            return float("nan")


def bootstrap_metrics(
    metrics: dict[str, MetricFn],
    y: np.ndarray,
    pred: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Estimate]:
    """Point value and patient-level percentile CI of every metric on the same resamples."""
    y, pred = np.asarray(y), np.asarray(pred)
    samples = patient_resamples(groups, n_boot, seed)
    out: dict[str, Estimate] = {}
    for name, fn in metrics.items():
        point = _safe(fn, y, pred)
        vals = np.array([_safe(fn, y[idx], pred[idx]) for idx in samples])
        ok = vals[np.isfinite(vals)]
        if len(ok):
            lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
        else:
            lo = hi = float("nan")
        out[name] = Estimate(point, float(lo), float(hi), int(len(ok)), n_boot)
    return out

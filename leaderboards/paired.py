"""Paired patient-level bootstrap between models scored on the same test cases.

Every model of one table is scored on the *same* patient resamples (``patient_resamples`` with
one seed), so the difference of two models on a resample cancels the case mix both share: the
paired interval is what decides whether two models are distinguishable.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ctbench.bootstrap import MetricFn
from ctbench.errors import CTBenchError
from ctbench.metrics_batch import ResampledMetric, batch_values, counts_from_samples


@dataclass(frozen=True)
class Draws:
    """A model's metric on the common cases and on every resample (mean over its seeds)."""

    point: float
    draws: np.ndarray  # (n_boot,), NaN where the metric is undefined on a resample


@dataclass(frozen=True)
class Difference:
    """Paired difference ``a - b`` of one metric with its percentile 95% interval."""

    value: float
    ci_low: float
    ci_high: float
    n_boot: int  # resamples where both models were defined

    @property
    def covers_zero(self) -> bool:
        """True when the interval contains 0 (or is undefined): the pair is indistinguishable."""
        if not (np.isfinite(self.ci_low) and np.isfinite(self.ci_high)):
            return True
        return self.ci_low <= 0.0 <= self.ci_high


def _score(metric: MetricFn, y: np.ndarray, pred: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return float(metric(y, pred))
        except ValueError:  # e.g. AUROC on a resample holding one class
            return float("nan")


def model_draws(metric: MetricFn, y: np.ndarray, preds: list[np.ndarray], samples: list[np.ndarray]) -> Draws:
    """Point value and per-resample values of ``metric``, averaged over the seeds in ``preds``.

    A :class:`ResampledMetric` scores all resamples at once from their count matrix (chunk by
    chunk, every seed on each chunk); any other metric is called once per resample and seed."""
    y = np.asarray(y)
    preds = [np.asarray(p) for p in preds]
    point = float(np.mean([_score(metric, y, p) for p in preds]))
    if isinstance(metric, ResampledMetric) and preds:
        draws = _batched_draws(metric, y, preds, samples)
        if draws is not None:
            return Draws(point, draws)
    draws = np.array([np.mean([_score(metric, y[idx], p[idx]) for p in preds]) for idx in samples])
    return Draws(point, draws)


def _batched_draws(metric: ResampledMetric, y: np.ndarray, preds: list[np.ndarray],
                   samples: list[np.ndarray]) -> np.ndarray | None:
    """Mean over seeds of ``metric.batch`` on every resample; None when the kernel declines."""
    parts = [np.zeros(0)]
    for counts in counts_from_samples(samples, len(y)):
        per_seed = [batch_values(metric, y, p, [counts]) for p in preds]
        if any(v is None for v in per_seed):
            return None
        parts.append(np.mean(per_seed, axis=0))
    return np.concatenate(parts)


def paired_difference(a: Draws, b: Draws, alpha: float = 0.05) -> Difference:
    """Percentile interval of ``a - b`` over the shared resamples."""
    d = a.draws - b.draws
    ok = d[np.isfinite(d)]
    if not len(ok):
        return Difference(a.point - b.point, float("nan"), float("nan"), 0)
    lo, hi = np.quantile(ok, [alpha / 2, 1 - alpha / 2])
    return Difference(a.point - b.point, float(lo), float(hi), int(len(ok)))


def align(frames: dict[str, list[pd.DataFrame]], where: str) -> tuple[np.ndarray, dict[str, list[pd.DataFrame]]]:
    """Restrict every frame to the cases all of them share, in one order.

    Returns the patient ids of those cases and the aligned frames. Cases a model failed on are
    dropped for everyone, so each model is compared on exactly the same patients.
    """
    for k, fs in frames.items():
        for f in fs:
            if f["case_id"].duplicated().any():
                dup = f.loc[f["case_id"].duplicated(), "case_id"].iloc[0]
                raise CTBenchError(f"{where}: {k!r} lists case_id {dup!r} twice in its predictions; re-run it")
    all_frames = [f for fs in frames.values() for f in fs]
    common = set(all_frames[0]["case_id"])
    for f in all_frames[1:]:
        common &= set(f["case_id"])
    if not common:
        raise CTBenchError(f"{where}: the results share no test case; check they come from the same dataset")
    order = sorted(common)
    out = {k: [f.set_index("case_id").loc[order].reset_index() for f in fs] for k, fs in frames.items()}
    patients = out[next(iter(out))][0]["patient_id"].to_numpy()
    for k, fs in out.items():
        for f in fs:
            if not np.array_equal(f["patient_id"].to_numpy(), patients):
                raise CTBenchError(
                    f"{where}: {k!r} assigns the same case_id to another patient_id; "
                    f"the results were not computed on the same manifest"
                )
    return patients, out


def same_targets(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two target arrays read back from two results agree (NaN equals NaN)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    try:
        return bool(np.allclose(a.astype(float), b.astype(float), equal_nan=True))
    except (TypeError, ValueError):
        return bool(np.array_equal(a, b))

"""Tuning curves: what a probe's validation score would have been with fewer trials.

A tuned result reports only its final number; these curves show whether it was still climbing
when the budget ran out, so a reader can tell whether a ranking could change with more tuning.
For the budget's validation scores in trial-number order:

- ``best_so_far[n-1]``: the best score among the first ``n`` trials (max when maximising, min
  when minimising);
- ``expected_max[n-1]``: the expected best of ``n`` trials drawn with replacement from the
  observed scores (Dodge et al. 2019, "Show Your Work", closed form): with the scores sorted
  ``v_(1) <= ... <= v_(N)``, ``E[max of n] = sum_i v_(i) * ((i/N)^n - ((i-1)/N)^n)``; the mirror
  image (expected minimum) for a minimised metric. It equals the mean at ``n = 1`` and tends to
  the best observed score as ``n`` grows; unlike ``best_so_far`` it does not depend on the order
  in which TPE happened to propose the trials.

Per-trial fit seconds are summarised by their median (robust to the first trial's warm-up).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

import numpy as np

DIRECTIONS = ("maximize", "minimize")


def _scores(values: Sequence[float], direction: str) -> np.ndarray:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or not np.isfinite(v).all():
        raise ValueError("tuning curves need a 1-D sequence of finite validation scores")
    return v


def best_so_far(values: Sequence[float], direction: str) -> list[float]:
    """Best validation score among the first ``n`` trials, for ``n = 1..len(values)``."""
    v = _scores(values, direction)
    acc = np.maximum.accumulate if direction == "maximize" else np.minimum.accumulate
    return [float(x) for x in acc(v)] if len(v) else []


def expected_max(values: Sequence[float], direction: str, budget: int | None = None) -> list[float]:
    """Expected best validation score of ``n`` trials drawn with replacement from ``values``,
    for ``n = 1..budget`` (default ``len(values)``): Dodge et al. (2019)'s closed form."""
    v = _scores(values, direction)
    n_obs = len(v)
    if n_obs == 0:
        return []
    oriented = np.sort(v if direction == "maximize" else -v)  # larger = better
    cdf = np.arange(n_obs + 1) / n_obs  # P(draw <= v_(i)) = i / N
    out = []
    for n in range(1, (budget or n_obs) + 1):
        weights = np.diff(cdf ** n)  # P(max of n draws is v_(i))
        e = float(weights @ oriented)
        out.append(e if direction == "maximize" else -e)
    return out


def tuning_curve(values: Sequence[float], direction: str) -> dict[str, list[float]]:
    """``{"best_so_far": [...], "expected_max": [...]}`` indexed by ``n = 1..len(values)``, from
    the budget's validation scores in trial-number order (``probe.tuning_curve`` of a result)."""
    return {"best_so_far": best_so_far(values, direction), "expected_max": expected_max(values, direction)}


def fit_seconds(seconds: Sequence[float | None]) -> dict[str, Any]:
    """``{"per_trial": [...], "median": ...}``: per-trial fit seconds in trial-number order (None
    where unknown) and the median of the known ones, None when there is none
    (``probe.trial_fit_s`` of a result)."""
    per_trial = [None if s is None else float(s) for s in seconds]
    known = [s for s in per_trial if s is not None]
    return {"per_trial": per_trial, "median": float(np.median(known)) if known else None}


def trial_seconds(fit_s: Any, start: datetime | None, complete: datetime | None) -> float | None:
    """A trial's fit seconds: as timed around the probe fit (``fit_s``, a trial user attribute),
    else, for trials of a study tuned before that was recorded, its wall time from Optuna's
    start and completion times; None when neither is known."""
    if isinstance(fit_s, (int, float)) and np.isfinite(fit_s):
        return float(fit_s)
    if start is not None and complete is not None:
        return max(0.0, (complete - start).total_seconds())
    return None

"""Survival metrics on all bootstrap resamples at once, from integer case weights.

A patient resample is the test set with each case repeated ``counts[b, i]`` times. Both kernels
reproduce the per-resample computation of :mod:`ctbench.tasks.survival_metrics` on the repeated
rows (to float rounding):

- Harrell's C as lifelines counts it: a pair (i, j) is comparable when i has an event and j
  leaves later (``T_j > T_i``) or is censored at the same time; it is concordant when i has the
  higher risk, and a risk tie counts 1/2. Repeats of one case are never comparable with each
  other (same time, same status), so the weighted count equals the count on repeated rows.
- Cumulative/dynamic AUC with IPCW: the censoring Kaplan-Meier estimate is built from the
  weighted at-risk and censoring counts of each resample, and cases and controls carry their
  repeat counts.

Inputs the kernels cannot mirror (non-finite values) raise ``ValueError``: the bootstrap then
calls the plain metric once per resample instead.
"""

from __future__ import annotations

import numpy as np

#: most cases for the pairwise C-index kernel (its pair matrix is ``n x n``)
MAX_PAIRWISE_CASES = 4000


def _checked(y: np.ndarray, risk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y, risk = np.asarray(y, dtype=np.float64), np.asarray(risk, dtype=np.float64).reshape(-1)
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(risk))):
        raise ValueError("non-finite input")
    return y[:, 0], y[:, 1].astype(bool), risk


def c_index_batch(y: np.ndarray, risk: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Harrell's C of every resample ``(B,)``; NaN without events or comparable pairs."""
    time, event, risk = _checked(y, risk)
    if len(time) > MAX_PAIRWISE_CASES:
        raise ValueError("too many cases for the pairwise kernel")
    later = (time[None, :] > time[:, None]) | ((time[None, :] == time[:, None]) & ~event[None, :])
    comparable = later & event[:, None]  # row i: the event case, column j: the one leaving later
    score = np.where(risk[:, None] > risk[None, :], 1.0, np.where(risk[:, None] == risk[None, :], 0.5, 0.0))
    w = np.asarray(counts, dtype=np.float64)
    pairs = np.einsum("bi,ij,bj->b", w, comparable.astype(np.float64), w)
    good = np.einsum("bi,ij,bj->b", w, comparable * score, w)
    has_event = (w @ event.astype(np.float64)) > 0
    ok = has_event & (pairs > 0)
    return np.where(ok, good / np.where(ok, pairs, 1.0), np.nan)


def _censoring_survival_before(time: np.ndarray, event: np.ndarray, w: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Kaplan-Meier estimate of P(censoring time >= t) just before each time in ``at``, per
    resample ``(B, len(at))``: the product over censoring times s < t of (1 - censored(s) /
    at risk(s)), with weighted counts."""
    grid = np.unique(time)
    idx = np.searchsorted(grid, time)
    censored = np.zeros((w.shape[0], len(grid)))
    leaving = np.zeros((w.shape[0], len(grid)))
    np.add.at(censored.T, idx[~event], w[:, ~event].T)
    np.add.at(leaving.T, idx, w.T)
    at_risk = leaving[:, ::-1].cumsum(axis=1)[:, ::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(at_risk > 0, 1.0 - censored / np.where(at_risk > 0, at_risk, 1.0), 1.0)
    surv = np.cumprod(factor, axis=1)  # S(grid[k]) after the step at grid[k]
    before = np.searchsorted(grid, at, side="left") - 1  # last grid time strictly below t
    return np.where(before[None, :] >= 0, surv[:, np.maximum(before, 0)], 1.0)


def td_auc_batch(y: np.ndarray, risk: np.ndarray, counts: np.ndarray, horizon: float) -> np.ndarray:
    """Cumulative/dynamic AUC at ``horizon`` of every resample ``(B,)``; NaN without cases or
    controls."""
    time, event, risk = _checked(y, risk)
    w = np.asarray(counts, dtype=np.float64)
    cases = (time <= horizon) & event
    controls = time > horizon
    G = _censoring_survival_before(time, event, w, time[cases])
    wc = w[:, cases] / np.clip(G, 1e-12, None)  # repeat count x inverse censoring weight
    rc, rk = risk[cases][:, None], risk[controls][None, :]
    concordant = (rc > rk) + 0.5 * (rc == rk)
    n_controls = w[:, controls].sum(axis=1)
    num = np.einsum("bi,ij,bj->b", wc, concordant, w[:, controls])
    den = wc.sum(axis=1) * n_controls
    ok = (w[:, cases].sum(axis=1) > 0) & (n_controls > 0)
    return np.where(ok, num / np.where(ok, den, 1.0), np.nan)

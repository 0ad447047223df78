"""Survival metrics: Harrell's C-index (lifelines) and cumulative/dynamic time-dependent AUC.

``y`` is an ``(n, 2)`` array of (time, event); ``risk`` is higher for earlier expected events.
"""

from __future__ import annotations

import numpy as np
from lifelines import KaplanMeierFitter
from lifelines.utils import concordance_index


def c_index(y: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C; raises ValueError when no pair is comparable (e.g. no events)."""
    time, event = y[:, 0], y[:, 1].astype(bool)
    if not event.any():
        raise ValueError("C-index is undefined without events")
    try:
        return float(concordance_index(time, -np.asarray(risk).reshape(-1), event))
    except ZeroDivisionError:
        raise ValueError("C-index is undefined: no admissible pairs") from None


def _censoring_survival(time: np.ndarray, event: np.ndarray):
    """G(t) = P(censoring time > t), Kaplan-Meier with censoring as the event."""
    km = KaplanMeierFitter().fit(time, event_observed=~event)
    return lambda t: km.survival_function_at_times(t).to_numpy()


def time_dependent_auc(y: np.ndarray, risk: np.ndarray, horizon: float) -> float:
    """Cumulative/dynamic AUC at ``horizon`` with inverse-probability-of-censoring weights
    (Uno et al. 2007; censoring distribution estimated on the evaluated cases).

    Cases: event at or before the horizon; controls: still event-free after it.
    """
    time, event = y[:, 0], y[:, 1].astype(bool)
    risk = np.asarray(risk).reshape(-1)
    cases = (time <= horizon) & event
    controls = time > horizon
    if not cases.any() or not controls.any():
        raise ValueError(f"time-dependent AUC at {horizon} needs cases and controls")
    G = _censoring_survival(time, event)
    # G(T_i-) : censoring survival just before the case's event time
    w = 1.0 / np.clip(G(np.nextafter(time[cases], -np.inf)), 1e-12, None)
    rc, rk = risk[cases][:, None], risk[controls][None, :]
    concordant = (rc > rk) + 0.5 * (rc == rk)
    return float((w[:, None] * concordant).sum() / (w.sum() * controls.sum()))

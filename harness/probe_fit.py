"""One probe fit, as the engine runs it: single-threaded, with convergence warnings counted
rather than printed, and a fixed set of exceptions that mean "this fit failed" (numerical
trouble) as opposed to a bug in the code, which still stops the run.

Numeric predictions are rounded to :data:`SIGNIFICANT_BITS` significant bits (about 6 decimal
digits, below float32's 24): a probe that scores two cases equally can differ in the last bits
of float32 arithmetic (batched matrix products take other kernel paths for other rows), and
rank metrics such as AUROC and the C-index would read that noise as an ordering. After rounding,
such scores are ties and count as ties.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from lifelines.exceptions import ConvergenceWarning as LifelinesConvergenceWarning
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning

from .task import ProbeTask
from .threads import single_threaded

#: a probe fit raising one of these fails its trial (lifelines' ConvergenceError and numpy's
#: LinAlgError are ValueErrors; a NaN loss in torch raises RuntimeError)
FIT_ERRORS: tuple[type[BaseException], ...] = (ValueError, ArithmeticError, RuntimeError)
CONVERGENCE_WARNINGS: tuple[type[Warning], ...] = (SklearnConvergenceWarning, LifelinesConvergenceWarning)
SIGNIFICANT_BITS = 20


def round_significant(pred: np.ndarray, bits: int = SIGNIFICANT_BITS) -> np.ndarray:
    """Float predictions rounded to ``bits`` significant bits (float64); others unchanged."""
    pred = np.asarray(pred)
    if not np.issubdtype(pred.dtype, np.floating):
        return pred
    mantissa, exponent = np.frexp(pred.astype(np.float64))
    return np.ldexp(np.round(mantissa * 2.0**bits) / 2.0**bits, exponent)


@dataclass(frozen=True)
class FitResult:
    """Predictions of one fit and the convergence warnings it raised."""

    predictions: np.ndarray
    convergence_warnings: int


def fit_quietly(task: ProbeTask, params: dict, X_train: np.ndarray, y_train: np.ndarray, X_eval: np.ndarray,
                seeds: list[int]) -> FitResult:
    """``task.fit_predict`` single-threaded; convergence warnings are counted, other warnings
    (library chatter) dropped; exceptions propagate."""
    with warnings.catch_warnings(record=True) as caught, single_threaded():
        warnings.simplefilter("always")
        pred = task.fit_predict(params, X_train, y_train, X_eval, seeds)
    n = sum(issubclass(w.category, CONVERGENCE_WARNINGS) for w in caught)
    return FitResult(round_significant(pred), n)

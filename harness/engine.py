"""The shared probe engine: Optuna tuning on train -> validation, refit, one test evaluation,
patient-level bootstrap. Every task category and every model goes through this one path."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import optuna
from optuna.trial import TrialState

from .bootstrap import Estimate, bootstrap_metrics
from .errors import CTBenchError
from .task import ProbeTask
from .threads import single_threaded

N_PROBE_SEEDS = 3


@dataclass
class Split:
    """Features, targets and patient ids of one split."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    case_ids: list[str]


@dataclass
class ProbeOutcome:
    best_params: dict
    best_value: float
    trials: int
    seeds: list[int]
    predictions: np.ndarray
    estimates: dict[str, Estimate]
    study_name: str
    seconds_tuning: float
    seconds_refit: float


def _quiet(fn: Callable) -> Callable:
    """Run a probe fit single-threaded and without convergence chatter."""

    def wrapped(*a, **k):
        with warnings.catch_warnings(), single_threaded():
            warnings.simplefilter("ignore")
            return fn(*a, **k)

    return wrapped


def _storage(url: str | None):
    """An Optuna storage for ``url``; SQLite waits for locks instead of failing under
    concurrent workers."""
    if url is None:
        return None
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def open_study(name: str, storage: str | None, direction: str, seed: int, attempts: int = 5) -> optuna.Study:
    """Create or resume the study ``name``. Workers started together may race to create the
    storage schema or the study itself; the loser retries and joins the winner's study."""
    for attempt in range(attempts):
        try:
            return optuna.create_study(
                study_name=name, storage=_storage(storage), load_if_exists=True,
                direction=direction, sampler=optuna.samplers.TPESampler(seed=seed),
            )
        except Exception as e:  # sqlalchemy IntegrityError / OperationalError while racing
            if attempt == attempts - 1 or "sqlalchemy" not in type(e).__module__:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def tune(
    task: ProbeTask,
    train: Split,
    val: Split,
    *,
    trials: int,
    seed: int,
    study_name: str,
    storage: str | None = None,
    on_trial: Callable[[int, int], None] | None = None,
) -> optuna.Study:
    """Run (or resume) a seeded TPE study whose objective is the validation main metric."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(study_name, storage, task.direction, seed)
    metric = task.metrics()[task.main_metric]
    fit_predict = _quiet(task.fit_predict)

    def objective(trial: optuna.Trial) -> float:
        params = task.suggest(trial, seed)
        pred = fit_predict(params, train.X, train.y, val.X, [seed])
        try:
            return float(metric(val.y, pred))
        except ValueError:
            return float("nan")  # undefined on this split: Optuna records the trial as failed

    # Trials already in the study count, including those other workers are running on the same
    # storage: several `ctbench run` processes share one budget instead of each spending it.
    counted = (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, TrialState.PRUNED)
    while (n := len(study.get_trials(deepcopy=False, states=counted))) < trials:
        study.optimize(objective, n_trials=1)
        if on_trial is not None:
            on_trial(min(n + 1, trials), trials)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise CTBenchError(
            f"no tuning trial produced a finite validation {task.main_metric}; the validation "
            f"split may hold a single class or too few cases"
        )
    return study


def run_probe(
    task: ProbeTask,
    train: Split,
    val: Split,
    test: Split,
    *,
    trials: int,
    seed: int,
    study_name: str,
    storage: str | None = None,
    n_boot: int = 1000,
    on_trial: Callable[[int, int], None] | None = None,
) -> ProbeOutcome:
    """Tune on train/val, refit on train+val with the best parameters, score test once."""
    t0 = time.perf_counter()
    study = tune(task, train, val, trials=trials, seed=seed, study_name=study_name, storage=storage, on_trial=on_trial)
    t1 = time.perf_counter()
    params = {**study.best_trial.params}
    params = task.suggest(optuna.trial.FixedTrial(params), seed)
    from .probes import is_stochastic

    seeds = [seed + i for i in range(N_PROBE_SEEDS)] if is_stochastic(params) else [seed]
    X_fit = np.concatenate([train.X, val.X])  # object arrays (dense tasks) concatenate too
    y_fit = np.concatenate([train.y, val.y])
    pred = _quiet(task.fit_predict)(params, X_fit, y_fit, test.X, seeds)
    t2 = time.perf_counter()
    estimates = bootstrap_metrics(task.metrics(), test.y, pred, test.groups, n_boot=n_boot, seed=seed)
    return ProbeOutcome(
        best_params=params,
        best_value=float(study.best_value),
        trials=len(study.trials),
        seeds=seeds,
        predictions=pred,
        estimates=estimates,
        study_name=study_name,
        seconds_tuning=t1 - t0,
        seconds_refit=t2 - t1,
    )

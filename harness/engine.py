"""The shared probe engine: Optuna tuning on train -> validation, refit, one test evaluation,
patient-level bootstrap. Every task category and every model goes through this one path.

Refit seeds: a stochastic probe (see :func:`refit_seeds`) is refitted with ``N_PROBE_SEEDS``
consecutive seeds and the task's ``fit_predict`` combines their predictions; tuning trials use
the run's seed alone.

Shared studies: on a database storage every trial sends a heartbeat; a trial whose worker died
(no heartbeat for ``HEARTBEAT_GRACE_S``) is failed and queued again with the same parameters, so
it does not use up the trial budget (:func:`budget_trials`); after ``STALE_RETRIES`` retries it
counts as a failed trial. The dead worker's trial is reclaimed only once ``HEARTBEAT_GRACE_S``
(10 minutes) has passed since its last heartbeat: until then it still counts towards the budget
as a running trial, so a worker that resumes the study sooner may end it with that trial never
completed. In-memory studies (no storage) have no heartbeat.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from .bootstrap import Estimate, bootstrap_metrics
from .errors import CTBenchError
from .task import ProbeTask
from .threads import single_threaded

N_PROBE_SEEDS = 3
HEARTBEAT_INTERVAL_S = 60  # a running trial records a heartbeat this often (database storages)
# ... and is failed as stale after this long without one: generous, since a live trial failed by
# mistake (heartbeats held up by database locks) would end its worker with an error at the end
HEARTBEAT_GRACE_S = 600
STALE_RETRIES = 2  # a trial that goes stale is queued again at most this many times
BUDGET_STATES = (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING, TrialState.PRUNED)


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


# Optuna's callback that queues a stale trial again: renamed in Optuna 4.9, with its keyword
_RETRY = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
_RETRY_KEYWORD = "heartbeat_stale_trial_callback"
if _RETRY is None:
    _RETRY, _RETRY_KEYWORD = optuna.storages.RetryFailedTrialCallback, "failed_trial_callback"


@contextmanager
def _heartbeat_api() -> Iterator[None]:
    """Optuna's heartbeat and stale-trial API without its ExperimentalWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


def _storage(url: str | None):
    """An Optuna storage for ``url``; SQLite waits for locks instead of failing under
    concurrent workers. Database storages run trials with a heartbeat, and a trial left
    running by a dead worker is failed and queued again (``None``, in memory: unchanged)."""
    if url is None:
        return None
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    with _heartbeat_api():
        return optuna.storages.RDBStorage(
            url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_INTERVAL_S,
            grace_period=HEARTBEAT_GRACE_S, **{_RETRY_KEYWORD: _RETRY(max_retry=STALE_RETRIES)},
        )


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the running trials whose heartbeat is older than the grace period (their worker
    died) and queue them again; a no-op for storages without a heartbeat."""
    with _heartbeat_api():
        optuna.storages.fail_stale_trials(study)


def budget_trials(study: optuna.Study) -> int:
    """Trials that use up the shared budget: complete, failed, pruned or running (other workers'
    trials included), except a stale trial that was queued again (its retry counts once it runs)."""
    trials = study.get_trials(deepcopy=False)
    with _heartbeat_api():
        retried = {n for t in trials for n in _RETRY.retry_history(t)}
    return sum(t.state in BUDGET_STATES and t.number not in retried for t in trials)


def refit_seeds(task: ProbeTask, params: dict, seed: int) -> list[int]:
    """Seeds of the final refit: ``N_PROBE_SEEDS`` consecutive seeds from ``seed`` when the tuned
    probe is stochastic, else ``[seed]``. A task with an ``is_stochastic(params)`` method decides
    for its own heads (the dense heads: always); otherwise the shared probe family decides
    (:func:`ctbench.probes.is_stochastic`). ``fit_predict`` then combines the seeds' predictions
    (scores, centres and class probabilities are averaged per case)."""
    from .probes import is_stochastic  # scikit-learn is imported only when a probe is refitted

    own = getattr(task, "is_stochastic", None)
    stochastic = own(params) if callable(own) else is_stochastic(params)
    return [seed + i for i in range(N_PROBE_SEEDS)] if stochastic else [seed]


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
    # Trials of dead workers are failed first and, queued again, are not counted twice.
    while True:
        fail_stale_trials(study)
        if (n := budget_trials(study)) >= trials:
            break
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
    seeds = refit_seeds(task, params, seed)
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

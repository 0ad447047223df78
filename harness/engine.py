"""The shared probe engine: Optuna tuning on train -> validation, refit, one test evaluation,
patient-level bootstrap. Every task category and every model goes through this one path.

Budget: a study ends with exactly ``trials`` completed trials. A probe fit that raises a
numerical error (:data:`FIT_ERRORS`, e.g. a Cox model that does not converge) or gives an
undefined validation metric fails its trial, with the reason recorded; it does not end the run
and does not use the budget, up to :func:`max_failures` failed trials. Convergence warnings are
counted per trial and at the refit, and recorded in the result.

Refit seeds: a stochastic probe (see :func:`refit_seeds`) is refitted with ``N_PROBE_SEEDS``
consecutive seeds and the task's ``fit_predict`` combines their predictions; tuning trials use
the run's seed alone.

Shared studies: every trial records its worker (``host:pid``) and, on a database storage, sends a
heartbeat. A trial whose worker died is failed and queued again with the same parameters, so it
does not use up the trial budget (:func:`budget_state`); after ``STALE_RETRIES`` retries it stays
failed. A worker of this machine is known dead at once (its process is gone: a run killed and
started again goes on without waiting); one of another machine once it has sent no heartbeat
for ``HEARTBEAT_GRACE_S`` (10 minutes), and until then its trial counts as running: the other
workers wait for it rather than end the study short of its budget. In-memory studies (no
storage) have neither.
"""

from __future__ import annotations

import os
import socket
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
from .probe_fit import FIT_ERRORS, fit_quietly
from .errors import CTBenchError
from .study import describe
from .task import ProbeTask
from .tuning_curve import trial_seconds

N_PROBE_SEEDS = 3
HEARTBEAT_INTERVAL_S = 60  # a running trial records a heartbeat this often (database storages)
# ... and is failed as stale after this long without one: generous, since a live trial failed by
# mistake (heartbeats held up by database locks) would end its worker with an error at the end
HEARTBEAT_GRACE_S = 600
STALE_RETRIES = 2  # a trial that goes stale is queued again at most this many times
POLL_S = 1.0  # how often a worker looks again while other workers finish the budget's last trials


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
    seconds_bootstrap: float
    tuning: "TuningRecord"
    refit_convergence_warnings: int


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
    """Fail the running trials whose worker died and queue them again: a worker of this
    machine whose process is gone at once (a run killed and started again does not wait), any
    other when its heartbeat is older than the grace period (a no-op without a heartbeat)."""
    with _heartbeat_api():
        optuna.storages.fail_stale_trials(study)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if _dead_local_worker(trial.user_attrs.get("worker")):
                try:
                    study.tell(trial.number, state=TrialState.FAIL)
                except (ValueError, RuntimeError):
                    continue  # finished or failed meanwhile by another worker
                _RETRY(max_retry=STALE_RETRIES)(study, study.get_trials(deepcopy=False)[trial.number])


def worker_id() -> str:
    """``host:pid`` of this process, recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_local_worker(worker: str | None) -> bool:
    """Whether ``worker`` (``host:pid``) is a process of this machine that no longer exists."""
    if not worker or ":" not in worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def max_failures(trials: int) -> int:
    """Failed trials (fit errors, undefined validation metric) a study tolerates before the run
    stops: as many as its budget, at least 10."""
    return max(10, trials)


def _retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of stale trials that were queued again (their retry stands in for them)."""
    with _heartbeat_api():
        return {n for t in trials for n in _RETRY.retry_history(t)}


def budget_state(study: optuna.Study) -> tuple[int, int, int]:
    """``(completed, running, failed)`` trials of the study, every worker's included. ``failed``
    counts only probe failures (fit error, undefined metric): neither surplus trials nor stale
    trials of dead workers, which were queued again."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    done = sum(t.state == TrialState.COMPLETE for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    failed = sum(t.state == TrialState.FAIL and "failure" in t.user_attrs and t.number not in retried
                 for t in trials)
    return done, running, failed


class _Surplus(Exception):
    """Raised by a trial started after the budget was already taken by other workers."""


class _ProbeFailed(Exception):
    """Raised by a trial whose probe fit failed (the reason is in its ``failure`` user attr)."""


def _is_surplus(study: optuna.Study, number: int, budget: int) -> bool:
    """Whether ``budget`` trials numbered before ``number`` have completed or are running."""
    ahead = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    return sum(t.number < number for t in ahead) >= budget


def budget_trials_of(study: optuna.Study, trials: int) -> list[optuna.trial.FrozenTrial]:
    """The completed trials that form the budget: the first ``trials`` by number."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(done, key=lambda t: t.number)[:trials]


def refit_seeds(task: ProbeTask, params: dict, seed: int) -> list[int]:
    """Seeds of the final refit: ``N_PROBE_SEEDS`` consecutive seeds from ``seed`` when the task
    declares the tuned probe stochastic (:meth:`ProbeTask.is_stochastic`), else ``[seed]``.
    ``fit_predict`` then combines the seeds' predictions (scores, centres and class
    probabilities are averaged per case; reports take a consensus)."""
    return [seed + i for i in range(N_PROBE_SEEDS)] if task.is_stochastic(params) else [seed]


class ReportedSeeds(list):
    """The refit's seeds, reporting ``(done, total)`` as the task's ``fit_predict`` iterates them:
    asking for seed ``i`` means seeds ``0..i-1`` are done, and the end of the iteration means all
    are. Tasks fit once per seed in a loop over ``seeds``, so the refit's progress is per seed
    with no change to task code; a second iteration reports nothing new. It pickles and copies
    as a plain list."""

    def __init__(self, seeds: list[int], report: Callable[[int, int], None]) -> None:
        super().__init__(seeds)
        self._report = report
        self._done = 0

    def __iter__(self) -> Iterator[int]:
        for i, s in enumerate(list.__iter__(self)):
            self.mark(i)
            yield s
        self.mark(len(self))

    def mark(self, done: int) -> None:
        """Report ``done`` seeds finished, unless as many were already reported."""
        if done > self._done:
            self._done = done
            self._report(done, len(self))

    def __reduce__(self):
        return list, (list(list.__iter__(self)),)


def open_study(name: str, storage: str | None, direction: str, seed: int, attempts: int = 5,
               metric: str | None = None, attrs: dict | None = None, budget: int | None = None) -> optuna.Study:
    """Create or resume the study ``name``, naming its ``metric`` and recording ``attrs`` and the
    ``budget`` (:func:`ctbench.study.describe`). Workers started together may race to create the
    storage schema or the study itself; the loser retries and joins the winner's study."""
    for attempt in range(attempts):
        try:
            study = optuna.create_study(
                study_name=name, storage=_storage(storage), load_if_exists=True,
                direction=direction, sampler=optuna.samplers.TPESampler(seed=seed),
            )
            describe(study, metric, attrs, budget)
            return study
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
    study_attrs: dict | None = None,
) -> optuna.Study:
    """Run (or resume) a seeded TPE study whose objective is the validation main metric, until
    it holds exactly ``trials`` completed trials; ``study_attrs`` are recorded on the study."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are recorded, not printed
    study = open_study(study_name, storage, task.direction, seed, metric=task.main_metric, attrs=study_attrs,
                       budget=trials)
    metric = task.metrics()[task.main_metric]

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker_id())
        if _is_surplus(study, trial.number, trials):
            trial.set_user_attr("surplus", True)
            raise _Surplus
        params = task.suggest(trial, seed)
        started = time.perf_counter()
        try:
            fit = fit_quietly(task, params, train.X, train.y, val.X, [seed])
        except FIT_ERRORS as e:
            trial.set_user_attr("failure", f"{type(e).__name__}: {e}"[:300])
            raise _ProbeFailed from e
        trial.set_user_attr("fit_s", time.perf_counter() - started)  # fit + validation predictions
        trial.set_user_attr("convergence_warnings", fit.convergence_warnings)
        try:
            value = float(metric(val.y, fit.predictions))
        except ValueError as e:
            value, reason = float("nan"), str(e)
        else:
            reason = "not finite"
        if not np.isfinite(value):
            trial.set_user_attr("failure", f"validation {task.main_metric} undefined: {reason}"[:300])
        return value  # NaN: Optuna records the trial as failed

    # Trials already in the study count, including those other workers are running on the same
    # storage: several `ctbench run` processes share one budget instead of each spending it.
    # Trials of dead workers are failed first and, queued again, are not counted twice.
    if on_trial is not None:  # the stage starts: 0, or the trials a resumed study already holds
        on_trial(min(budget_state(study)[0], trials), trials)
    while True:
        fail_stale_trials(study)
        done, running, failed = budget_state(study)
        if done >= trials:
            break
        if failed >= max_failures(trials):
            raise CTBenchError(
                f"{failed} probe fits failed while tuning {task.spec.name!r} ({done} of {trials} trials "
                f"completed); first reason: {_first_failure(study)}. Check the features and the "
                f"validation split (it may hold a single class or too few cases)"
            )
        if done + running >= trials:  # other workers are running the budget's last trials
            time.sleep(POLL_S)
            continue
        study.optimize(objective, n_trials=1, catch=(_Surplus, _ProbeFailed))
        if on_trial is not None:
            on_trial(min(budget_state(study)[0], trials), trials)
    return study


def _first_failure(study: optuna.Study) -> str:
    reasons = [t.user_attrs["failure"] for t in study.get_trials(deepcopy=False) if "failure" in t.user_attrs]
    return reasons[0] if reasons else "unknown"


@dataclass
class TuningRecord:
    """What tuning did, for the result file."""

    trials: int  # completed trials forming the budget (== the budget)
    failed: int  # probe fits that failed (not counted in the budget)
    failures: list[str]  # their distinct reasons (at most 5)
    convergence_warnings: dict[int, int]  # trial number -> warnings, trials with any
    values: list[float]  # validation scores of the budget's trials, in trial-number order
    fit_s: list[float | None]  # their fit seconds (:func:`ctbench.tuning_curve.trial_seconds`)


def tuning_record(study: optuna.Study, trials: int) -> TuningRecord:
    """Summarise the budget trials and the failed trials of ``study``."""
    budget = budget_trials_of(study, trials)
    all_trials = study.get_trials(deepcopy=False)
    retried = _retried(all_trials)
    failed = [t for t in all_trials if t.state == TrialState.FAIL and "failure" in t.user_attrs
              and t.number not in retried]
    reasons = list(dict.fromkeys(t.user_attrs["failure"] for t in failed))[:5]
    warned = {t.number: int(t.user_attrs.get("convergence_warnings", 0)) for t in budget}
    return TuningRecord(len(budget), len(failed), reasons, {k: v for k, v in warned.items() if v},
                        [float(t.value) for t in budget],
                        [trial_seconds(t.user_attrs.get("fit_s"), t.datetime_start, t.datetime_complete)
                         for t in budget])


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
    on_refit: Callable[[int, int], None] | None = None,
    on_bootstrap: Callable[[int, int], None] | None = None,
    study_attrs: dict | None = None,
) -> ProbeOutcome:
    """Tune on train/val, refit on train+val with the best of the budget's trials, score test
    once. Progress, each ``(done, total)`` from ``(0, total)``: ``on_trial`` per completed trial,
    ``on_refit`` per refit seed (:class:`ReportedSeeds`), ``on_bootstrap`` per metric."""
    t0 = time.perf_counter()
    study = tune(task, train, val, trials=trials, seed=seed, study_name=study_name, storage=storage, on_trial=on_trial,
                 study_attrs=study_attrs)
    t1 = time.perf_counter()
    budget = budget_trials_of(study, trials)
    best = (max if task.direction == "maximize" else min)(budget, key=lambda t: t.value)
    params = task.suggest(optuna.trial.FixedTrial(dict(best.params)), seed)
    seeds = refit_seeds(task, params, seed)
    X_fit = np.concatenate([train.X, val.X])  # object arrays (dense tasks) concatenate too
    y_fit = np.concatenate([train.y, val.y])
    refit = on_refit or (lambda done, total: None)
    refit(0, len(seeds))
    reported = ReportedSeeds(seeds, refit)
    try:
        fit = fit_quietly(task, params, X_fit, y_fit, test.X, reported)
    except FIT_ERRORS as e:
        raise CTBenchError(f"the final probe fit of {task.spec.name!r} with the tuned parameters {params} "
                           f"failed on train+val ({type(e).__name__}: {e})") from None
    reported.mark(len(seeds))  # a task that did not iterate its seeds
    t2 = time.perf_counter()
    metrics = task.metrics()
    if on_bootstrap is not None:
        on_bootstrap(0, len(metrics))
    estimates = bootstrap_metrics(metrics, test.y, fit.predictions, test.groups, n_boot=n_boot, seed=seed,
                                  progress=on_bootstrap)
    t3 = time.perf_counter()
    return ProbeOutcome(
        best_params=params,
        best_value=float(best.value),
        trials=len(budget),
        seeds=seeds,
        predictions=fit.predictions,
        estimates=estimates,
        study_name=study_name,
        seconds_tuning=t1 - t0,
        seconds_refit=t2 - t1,
        seconds_bootstrap=t3 - t2,
        tuning=tuning_record(study, trials),
        refit_convergence_warnings=fit.convergence_warnings,
    )

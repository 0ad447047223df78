"""Scale-out: torchrun-sharded extraction equals a single process, concurrent `run` workers
share one Optuna study on one SQLite storage, and a dead worker's trial does not use up the
shared budget."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from ctbench.engine import Split
from ctbench.extract import shard

REPO = Path(__file__).resolve().parents[1]


def test_shards_are_disjoint_and_cover_all():
    cases = pd.DataFrame({"case_id": [f"c{i}" for i in range(7)]})
    parts = [shard(cases, r, 3)["case_id"].tolist() for r in range(3)]
    assert sorted(sum(parts, [])) == cases["case_id"].tolist()
    assert parts[0] == ["c0", "c3", "c6"]


def _few_cases(src: Path, dst: Path, n: int) -> Path:
    import shutil

    shutil.copytree(src, dst)
    pd.read_csv(dst / "manifest.csv").head(n).to_csv(dst / "manifest.csv", index=False)
    return dst


def _feature_files(home: Path) -> dict[str, bytes]:
    root = home / "features"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.safetensors"))}


def test_torchrun_two_ranks_leave_the_single_process_cache(small_phantom, tmp_path):
    data = _few_cases(small_phantom, tmp_path / "data", 6)
    args = ["extract", "--model", "voxelfm", "--variant", "tiny", "--weights", "random",
            "--dataset", str(data), "--batch-size", "1", "--workers", "0", "--device", "cpu"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    single = subprocess.run([sys.executable, "-m", "ctbench", *args], capture_output=True, text=True,
                            env={**env, "CTBENCH_HOME": str(tmp_path / "one")}, timeout=300)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "ctbench", *args],
        capture_output=True, text=True, env={**env, "CTBENCH_HOME": str(tmp_path / "two")}, timeout=300,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert "rank 0/2: 3 extracted" in multi.stdout and "rank 1/2: 3 extracted" in multi.stdout
    one, two = _feature_files(tmp_path / "one"), _feature_files(tmp_path / "two")
    assert len(one) == 6 and one == two  # same names, byte-identical contents


WORKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from ctbench.registry import MODELS
    from ctbench.runner import RunConfig, run
    from tests.fakes import HistogramEncoder
    MODELS.register("test-histogram")(HistogramEncoder)
    _, r = run(RunConfig(model="test-histogram", task="classification", dataset={data!r},
                         weights="random", trials={trials}, storage={storage!r}, n_boot=20,
                         out={out!r}))
    print(r["probe"]["trials"])
    """
)


def test_two_run_workers_share_one_study(small_phantom, tmp_path):
    """Started together, the workers also extract the same cases at once: atomic cache writes
    keep that safe."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    env = {**os.environ, "CTBENCH_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER.format(repo=str(REPO), data=str(small_phantom), trials=12,
                                                               storage=storage, out=str(tmp_path / f"r{i}"))],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    # one budget for both workers: exactly 12 completed trials; a trial that lost the race for
    # the last places gave way before sampling anything
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 12
    assert all(t.user_attrs.get("surplus") for t in study.trials if t.state != TrialState.COMPLETE)
    results = [json.loads((tmp_path / f"r{i}" / "result.json").read_text()) for i in range(2)]
    assert [r["probe"]["trials"] for r in results] == [12, 12]
    assert results[0]["probe"]["best_params"] == results[1]["probe"]["best_params"]
    assert results[0]["metrics"] == results[1]["metrics"]


class _ConstantTask:
    """A minimal probe task for the engine: predicts its one tuned parameter ``c``."""

    main_metric, direction = "neg_abs_error", "maximize"
    spec = SimpleNamespace(name="constant")

    def is_stochastic(self, params):
        return False

    def suggest(self, trial, seed):
        return {"probe": "constant", "c": trial.suggest_float("c", 0.0, 1.0)}

    def fit_predict(self, params, X_train, y_train, X_eval, seeds):
        return np.full(len(X_eval), params["c"])

    def metrics(self):
        return {"neg_abs_error": lambda y, p: -float(np.mean(np.abs(y - p)))}


def _killed_mid_trial(trial):
    """A worker killed mid-trial: the trial is left RUNNING with its last heartbeat."""
    trial.suggest_float("c", 0.0, 1.0)
    raise SystemExit(137)  # not caught by Optuna, unlike an exception of the objective


def test_a_dead_workers_trial_goes_stale_and_does_not_use_up_the_budget(tmp_path, monkeypatch):
    from ctbench import engine

    monkeypatch.setattr(engine, "HEARTBEAT_INTERVAL_S", 1)
    monkeypatch.setattr(engine, "HEARTBEAT_GRACE_S", 1)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = engine.open_study("shared", url, "maximize", seed=0)
    with pytest.raises(SystemExit):
        study.optimize(_killed_mid_trial, n_trials=1)
    (dead,) = study.trials
    assert dead.state == TrialState.RUNNING
    assert engine.budget_state(study) == (0, 1, 0)  # still running as far as anyone can tell
    time.sleep(2.2)  # > grace period (the database clock has whole seconds)

    split = Split(np.zeros((4, 1)), np.full(4, 0.25), np.arange(4), list("abcd"))
    study = engine.tune(_ConstantTask(), split, split, trials=3, seed=0, study_name="shared", storage=url)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3
    assert engine.budget_state(study) == (3, 0, 0)  # three trials ran: the stale one is not a failure
    retry = trials[1]  # queued again with the dead trial's parameters, and run first
    assert retry.params == dead.params and retry.system_attrs["retry_history"] == [0]
    assert [t.number for t in trials if t.state == TrialState.COMPLETE] == [1, 2, 3]


def test_budget_state_counts_completed_running_and_probe_failures():
    """Completed and running trials of every worker count; a failed trial counts as a probe
    failure only when the objective recorded why (not a stale trial of a dead worker, nor a
    surplus trial)."""
    from optuna.distributions import FloatDistribution

    from ctbench import engine

    study = engine.open_study("memory", None, "maximize", seed=0)
    dist = {"c": FloatDistribution(0.0, 1.0)}
    for state, value, attrs in ((TrialState.COMPLETE, 0.5, {}), (TrialState.FAIL, None, {"failure": "x"}),
                                (TrialState.FAIL, None, {}), (TrialState.FAIL, None, {"surplus": True})):
        study.add_trial(optuna.trial.create_trial(state=state, value=value, params={"c": 0.1}, distributions=dist,
                                                  user_attrs=attrs))
    study.ask(dist)  # running
    study.enqueue_trial({"c": 0.2})  # waiting: not counted
    assert engine.budget_state(study) == (1, 1, 1)
    study.add_trial(optuna.trial.create_trial(  # a retry of trial 1: trial 1 no longer counts as failed
        state=TrialState.COMPLETE, value=0.4, params={"c": 0.1}, distributions=dist,
        system_attrs={"failed_trial": 1, "retry_history": [1]}))
    assert engine.budget_state(study) == (2, 1, 0)
    engine.fail_stale_trials(study)  # in memory: no heartbeat, nothing changes
    assert engine.budget_state(study) == (2, 1, 0)


def test_a_killed_runs_trial_is_retried_at_once_and_the_budget_completes(tmp_path):
    """A run killed mid-trial (its process is gone) and started again: the dead trial is failed
    and queued again without waiting for the heartbeat grace period, and the study ends with
    exactly its budget of completed trials."""
    import socket

    from ctbench import engine

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    study = engine.open_study("killed", url, "maximize", seed=0)
    trial = study.ask()
    trial.suggest_float("c", 0.0, 1.0)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{dead.stdout.strip()}")
    started = time.perf_counter()
    split = Split(np.zeros((4, 1)), np.full(4, 0.25), np.arange(4), list("abcd"))
    study = engine.tune(_ConstantTask(), split, split, trials=3, seed=0, study_name="killed", storage=url)
    assert time.perf_counter() - started < 30  # not the 10-minute heartbeat grace
    states = [t.state for t in study.trials]
    assert states == [TrialState.FAIL] + [TrialState.COMPLETE] * 3
    assert study.trials[1].params == study.trials[0].params  # the killed trial, run again
    assert engine.budget_state(study) == (3, 0, 0)

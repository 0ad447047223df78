"""Real results of every built-in category on the small phantom, each with a model that is better
on purpose (an oracle encoder) and one that cannot learn (a collapsed, constant encoder).

Built once per test session (``category_results`` in conftest) and shared by the leaderboard
tests of every category and the browser tests of the published site."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import ctbench.engine as engine
from ctbench.registry import MODELS
from ctbench.runner import RunConfig, run
from ctbench.tasks.localisation import LocalisationTask
from ctbench.tasks.report_generation import ReportGenerationTask
from ctbench.tasks.segmentation import SegmentationTask
from tests.dense_fakes import DenseOracleEncoder, register
from tests.fakes import ConstantEncoder, OracleEncoder, oracle_table, strong_survival

COLUMNS = ("lung_nodule", "liver_lesion", "kidney_cyst", "pleural_effusion", "liver_volume_ml", "lesion_burden_ml")
ORACLE, CONSTANT = "test-oracle", "test-constant"
DENSE = "test-dense-oracle-12mm"
# task (named after its category on the phantom) -> (dataset, better model, Optuna trials)
RUNS = {
    "classification": ("phantom", ORACLE, 2),
    "regression": ("phantom", ORACLE, 2),
    "survival": ("strong", ORACLE, 2),
    "retrieval": ("phantom", ORACLE, 1),
    "localisation": ("phantom", DENSE, 1),
    "segmentation": ("phantom", DENSE, 1),
    "report-generation": ("phantom", ORACLE, 1),
}


def _fixed(**params):
    """A one-point search space (quick; the real spaces have their own tests)."""
    def suggest(self, trial, seed):
        return {k: trial.suggest_categorical(k, [v]) for k, v in params.items()}

    return suggest


FIXED_PROBES = {  # small, quick heads that still separate the oracle from the constant encoder
    ReportGenerationTask: _fixed(probe="perceiver-decoder", lr=5e-3, width=64, depth=1, epochs=20),
    LocalisationTask: _fixed(probe="attention-pool", lr=1e-2, weight_decay=1e-4, width=16, epochs=10),
    SegmentationTask: _fixed(probe="linear", lr=1e-2, weight_decay=1e-4, epochs=10),
}


def build_category_results(small_phantom: Path, root: Path) -> Path:
    """Result folders of every category (one per task and model) under ``root``/runs."""
    datasets = {"phantom": small_phantom, "strong": strong_survival(small_phantom, root / "strong")}
    for name, cls in ((ORACLE, OracleEncoder), (CONSTANT, ConstantEncoder)):
        if name not in MODELS:
            MODELS.register(name)(cls)
    register(DENSE, DenseOracleEncoder, 12.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CTBENCH_HOME", str(root / "home"))
        mp.setattr(OracleEncoder, "table", oracle_table(pd.read_csv(small_phantom / "manifest.csv"), COLUMNS))
        mp.setattr(engine, "N_PROBE_SEEDS", 1)  # quick: one refit seed per stochastic head
        for cls, suggest in FIXED_PROBES.items():
            mp.setattr(cls, "suggest", suggest)
        for task, (data, better, trials) in RUNS.items():
            for model in (better, CONSTANT):
                run(RunConfig(model=model, task=task, dataset=str(datasets[data]), weights="random", trials=trials,
                              seed=0, device="cpu", out=str(root / "runs" / task / model), n_boot=50))
    return root / "runs"



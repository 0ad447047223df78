"""A leaderboard from real results of every built-in category, each with a model that is better
on purpose (an oracle encoder) and one that cannot learn (a collapsed, constant encoder): every
table is ranked by the paired bootstrap on re-scored predictions, and the re-scored main metric
on the full test set is the result's own value."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest


import ctbench.engine as engine
from ctbench.leaderboards import build_board, collect, write_board
from ctbench.leaderboards.scoring import make_scorer
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


@pytest.fixture(scope="module")
def results(small_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Result folders of every category (one per task and model) under one root."""
    root = tmp_path_factory.mktemp("categories")
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


@pytest.fixture(scope="module")
def board(results: Path):
    return build_board(results, n_boot=200, seed=0)


def test_every_category_is_ranked_by_a_paired_test(board):
    tables = {t.category: t for t in board.tables}
    assert set(tables) == set(RUNS)
    for category, (_, model, _) in RUNS.items():
        t = tables[category]
        better, worse = f"{model} (random)", f"{CONSTANT} (random)"
        assert t.tested and not any("not tested" in n for n in t.notes), (category, t.notes)
        assert [(r.label, r.rank, r.tie_size) for r in t.rows] == [(better, 1, 1), (worse, 2, 1)], category
        assert t.rows[0].better_than == [worse] and t.rows[1].better_than == [], category
        (c,) = t.comparisons  # the paired interval decides, oriented by the metric's direction
        sign = 1 if c["a"] == better else -1
        assert not c["covers_zero"] and c["verdict"] == sign and c["n_boot"] > 100, (category, c)
        lo, hi = sorted((sign * c["ci_low"], sign * c["ci_high"]))
        assert (0 < lo <= hi) if t.direction == "maximize" else (lo <= hi < 0), (category, c)
        for r in t.rows:
            main = r.main
            assert main.ci_low is not None and main.ci_low <= main.value <= main.ci_high, (category, r.label)
        values = {r.label: r.main.value for r in t.rows}
        assert sign * c["value"] == pytest.approx(values[better] - values[worse], abs=1e-9), category
    constant = next(r for r in board.mean_ranks if r["model"] == f"{CONSTANT} (random)")
    assert constant["tasks"] == len(RUNS) and constant["overall"] == 2.0
    assert set(constant["categories"]) == set(RUNS)


def test_rescored_main_metric_is_the_results_value(results):
    """On the full test set, the main metric read back from predictions.csv and re-scored in each
    category's scoring layout is the value in result.json (the paired draws start from it)."""
    seen = set()
    for entry in collect(results):
        info = entry.result.task
        scorer = make_scorer(info, entry.predictions)
        assert scorer is not None, info.category
        y, pred = scorer.arrays(scorer.cases(entry.predictions))
        value = entry.result.metrics[info.main_metric].value
        assert scorer.metric(y, pred) == pytest.approx(value, abs=1e-9, rel=0), (info.category, entry.path)
        seen.add(info.category)
    assert seen == set(RUNS)


def test_board_of_every_category_renders(board, tmp_path):
    written = write_board(board, "html", tmp_path / "board")
    html = "\n".join(p.read_text() for p in written if p.suffix == ".html")
    for category in RUNS:
        assert category in html
    assert "ranks follow point values" not in html  # no table fell back to untested ranks

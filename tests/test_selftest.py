"""``ctbench selftest``: the ladder oracle > chance holds through the real runner, and a broken
probe (training labels shuffled inside the engine) makes it fail, naming the task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ctbench import engine
from ctbench.errors import CTBenchError
from ctbench.selftest import TOP, BOTTOM, Rung, judge, ladder_models
from tests.cli_helpers import run_cli

FAST = ("--category", "classification", "--models", "oracle,chance", "--trials", "2", "--bootstrap", "200")


def test_ladder_holds_on_the_phantom(small_phantom: Path, monkeypatch, capsys, ctbench_home: Path) -> None:
    code, out, err = run_cli(monkeypatch, capsys, "selftest", "--dataset", str(small_phantom), *FAST)
    assert code == 0, out + err
    assert "ladder holds on 1 of 1 task(s)" in out
    line = next(x for x in out.splitlines() if x.startswith("classification"))
    assert "auroc (higher is better)  2 trials  " in line and line.rstrip().endswith("holds")
    oracle, chance = (float(v) for v in (line.split("trials")[1].split()[0], line.split("] ")[1].split()[0]))
    assert oracle > 0.95 and 0.2 < chance < 0.8
    assert (ctbench_home / "selftest" / "phantom-n40" / "classification" / "oracle" / "result.json").is_file()


def test_a_probe_fitted_on_shuffled_labels_fails_the_ladder(small_phantom: Path, monkeypatch, capsys) -> None:
    fit = engine.fit_quietly

    def shuffled(task, params, X, y, X_eval, seeds):
        return fit(task, params, X, y[np.random.default_rng(1).permutation(len(y))], X_eval, seeds)

    monkeypatch.setattr(engine, "fit_quietly", shuffled)
    code, out, err = run_cli(monkeypatch, capsys, "selftest", "--dataset", str(small_phantom), *FAST,
                             "--seed", "1")
    assert code == 1, out + err
    assert "ladder holds on 0 of 1 task(s)" in out
    line = next(x for x in out.splitlines() if x.startswith("classification"))
    assert "FAILS: oracle CI" in line and "overlaps chance CI" in line


def test_usage_errors_name_the_fix(small_phantom: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    code, _, err = run_cli(monkeypatch, capsys, "selftest", "--dataset", str(small_phantom), "--category",
                           "segmentaton")
    assert code == 2 and "Did you mean 'segmentation'" in err
    code, _, err = run_cli(monkeypatch, capsys, "selftest", "--dataset", str(small_phantom), "--models",
                           "thumbnail,chance")
    assert code == 2 and "needs 'oracle' and 'chance'" in err and "--models oracle,thumbnail,chance" in err


def _rung(model: str, value: float, low: float, high: float) -> Rung:
    return Rung(model, value, low, high)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_judge_rules(direction: str) -> None:
    s = 1 if direction == "maximize" else -1  # values mirrored for a metric to minimise
    ok = [_rung(TOP, s * 0.9, s * 0.85, s * 0.95), _rung("b", s * 0.7, s * 0.6, s * 0.8),
          _rung(BOTTOM, s * 0.5, s * 0.4, s * 0.6)]
    fix = (lambda r: r) if direction == "maximize" else (lambda r: Rung(r.model, r.value, r.ci_high, r.ci_low))
    ok = [fix(r) for r in ok]
    assert judge(ok, direction) == []
    overlap = [ok[0], ok[1], fix(_rung(BOTTOM, s * 0.5, s * 0.4, s * 0.86))]
    assert any("overlaps chance CI" in p for p in judge(overlap, direction))
    above = [ok[0], fix(_rung("b", s * 0.95, s * 0.9, s * 0.99)), ok[2]]
    assert judge(above, direction) == [f"b {s * 0.95:.3f} beats the oracle {s * 0.9:.3f}"]
    at_chance = [ok[0], fix(_rung("b", s * 0.45, s * 0.3, s * 0.6)), ok[2]]  # blind, not broken
    assert judge(at_chance, direction) == []
    below = [ok[0], fix(_rung("b", s * 0.3, s * 0.2, s * 0.39)), ok[2]]
    (problem,) = judge(below, direction)
    assert problem.startswith(f"b {s * 0.3:.3f} is worse than chance (CI [")
    failed = [ok[0], Rung("b", error="boom"), ok[2]]
    assert judge(failed, direction) == ["b failed: boom"]


def test_ladder_models_order() -> None:
    assert ladder_models(["voxelfm", "chance", "thumbnail", "oracle"]) == ["oracle", "thumbnail", "chance"]
    with pytest.raises(CTBenchError):
        from ctbench.selftest import phantom_tasks

        class Card:
            name, tasks = "x", ()

        class DS:
            card = Card()

        phantom_tasks(DS(), ["regression"])


def test_dense_tasks_get_their_budget_and_options(small_phantom: Path, monkeypatch, capsys) -> None:
    """Tasks training a neural head run with --head-trials (segmentation with its linear head
    only), the other tasks with --trials; the table states each task's budget."""
    import ctbench.runner
    from ctbench.selftest_cli import table_rows

    seen = []

    def fake_run(cfg, progress=None):
        seen.append(cfg)
        value = {"oracle": 0.9, "thumbnail": 0.6, "chance": 0.5}[cfg.model]
        return None, {"task": {"direction": "maximize"},
                      "metrics": {m: {"value": value, "ci_low": value - 0.05, "ci_high": value + 0.05}
                                  for m in ("auroc", "r2", "label_recall@5", "dice_macro", "centre_error_mm",
                                            "finding_f1")}}

    monkeypatch.setattr(ctbench.runner, "run", fake_run)
    from ctbench.selftest import selftest

    checks = selftest(str(small_phantom), ["classification", "segmentation", "localisation"], trials=3,
                      head_trials=2, models=["oracle", "thumbnail", "chance"])
    budget = {(c.task, c.model): (c.trials, c.task_options) for c in seen}
    assert budget[("classification", "thumbnail")] == (3, {})
    assert budget[("localisation", "chance")] == (2, {})
    assert budget[("segmentation", "oracle")] == (2, {"head": "linear"})
    assert len(seen) == 9
    header, rows = table_rows(checks)
    assert header[2] == "budget"
    assert [r[2] for r in rows] == ["3 trials", "2 trials", "2 trials, --head linear"]
    checks = selftest(str(small_phantom), ["segmentation", "report-generation", "regression", "retrieval"],
                      models=["oracle", "chance"])  # default budgets
    assert [(c.task, c.trials) for c in checks] == [("regression", 20), ("retrieval", 0), ("segmentation", 1),
                                                     ("report-generation", 3)]
    assert table_rows(checks)[1][1][2] == "no tuning"


def test_segmentation_head_option_restricts_the_search(small_phantom: Path) -> None:
    import optuna

    from ctbench.datasets import load_dataset_folder
    from ctbench.tasks.segmentation import SegmentationTask

    ds = load_dataset_folder(small_phantom)
    spec = ds.card.task("segmentation")
    task = SegmentationTask(spec, ds, head="linear")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    probes = {task.suggest(study.ask(), 0)["probe"] for _ in range(8)}
    assert probes == {"linear"}
    assert task.probe_settings() != task.default_probe_settings()  # its own study and result folder
    default, study = SegmentationTask(spec, ds), optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assert {default.suggest(study.ask(), 0)["probe"] for _ in range(12)} == {"linear", "decoder"}
    with pytest.raises(CTBenchError, match="not a segmentation head"):
        SegmentationTask(spec, ds, head="unet")

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
    assert "auroc (higher is better)" in line and line.rstrip().endswith("holds")
    oracle, chance = (float(v) for v in (line.split("better)")[1].split()[0], line.split("] ")[1].split()[0]))
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

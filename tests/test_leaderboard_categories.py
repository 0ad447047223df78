"""A leaderboard from real results of every built-in category, each with a model that is better
on purpose (an oracle encoder) and one that cannot learn (a collapsed, constant encoder): every
table is ranked by the paired bootstrap on re-scored predictions, and the re-scored main metric
on the full test set is the result's own value."""

from __future__ import annotations

from pathlib import Path

import pytest

from ctbench.leaderboards import build_board, collect, write_board
from ctbench.leaderboards.scoring import make_scorer
from tests.category_results import CONSTANT, RUNS


@pytest.fixture(scope="module")
def results(category_results: Path) -> Path:
    return category_results


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

"""Protocol rules of the board: "better" is read from the paired interval, contamination from
overlapping collections, and results of other budgets or dataset versions are never ranked
together."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ctbench.leaderboards import build_board
from ctbench.leaderboards.board import decide
from ctbench.leaderboards.collect import Entry, contaminated, contamination, normalise_name
from ctbench.leaderboards.paired import Difference, Draws, paired_difference
from ctbench.leaderboards.schema import read_result
from tests.test_leaderboard_fixtures import known_case, write_result_file

LUNA = ("LUNA16", "LIDC-IDRI", "TCIA", "IDC")


@pytest.mark.parametrize("value, lo, hi, direction, verdict", [
    (0.02, 0.01, 0.05, "maximize", 1),
    (-0.01, 0.002, 0.05, "maximize", 1),  # the point says B, the interval says A
    (0.01, -0.05, -0.002, "maximize", -1),  # the point says A, the interval says B
    (-0.01, 0.002, 0.05, "minimize", -1),  # a positive difference of an error: B is better
    (0.01, -0.05, -0.002, "minimize", 1),
    (0.03, -0.01, 0.05, "maximize", 0),  # covers zero
    (0.03, 0.0, 0.05, "maximize", 0),  # touches zero: not entirely above it
    (0.03, math.nan, math.nan, "maximize", 0),  # undefined: nothing decided
])
def test_better_is_decided_by_the_oriented_interval_not_the_point(value, lo, hi, direction, verdict):
    assert decide(Difference(value, lo, hi, 100), direction) == verdict


def test_skewed_draws_where_point_and_interval_disagree():
    # the point difference is negative but 98% of the paired resamples favour A
    a = Draws(0.50, np.r_[np.full(98, 0.62), np.full(2, 0.10)])
    b = Draws(0.55, np.full(100, 0.60))
    d = paired_difference(a, b)
    assert d.value < 0 < d.ci_low
    assert decide(d, "maximize") == 1


def _entry(tmp_path, name: str, pretraining: tuple[str, ...], dataset: str = "luna16",
           collections: tuple[str, ...] | None = LUNA) -> Entry:
    y, patients, scores = known_case(n_patients=20)
    path = write_result_file(tmp_path, name, y, scores["best"], patients, dataset=dataset,
                             pretraining=pretraining, collections=collections)
    return Entry(path, read_result(path))


def test_contamination_by_a_collection_that_holds_the_dataset(tmp_path):
    assert contamination(_entry(tmp_path, "ct-fm", ("IDC",))) == ["IDC"]
    assert contaminated(_entry(tmp_path, "tcia-model", ("The Cancer Imaging Archive",)))
    assert contaminated(_entry(tmp_path, "lidc-model", ("lidc idri",)))
    assert not contaminated(_entry(tmp_path, "ct-clip", ("CT-RATE",)))
    assert not contaminated(_entry(tmp_path, "none", ()))


def test_older_results_without_collections_keep_the_name_match(tmp_path):
    assert not contaminated(_entry(tmp_path, "ct-fm", ("IDC",), collections=None))
    assert contaminated(_entry(tmp_path, "luna-model", ("LUNA-16",), collections=None))


def test_normalised_names():
    assert normalise_name("NSCLC-Radiomics") == normalise_name("nsclc radiomics") == normalise_name("Lung1")
    assert normalise_name("Imaging Data Commons") == normalise_name("IDC") == "idc"
    assert normalise_name("LIDC") != normalise_name("LIDC-IDRI")


def test_board_rows_say_which_pretraining_names_overlap(tmp_path):
    y, patients, scores = known_case()
    write_result_file(tmp_path, "ct-fm", y, scores["twin-a"], patients, dataset="nsclc-radiomics",
                      collections=("NSCLC-Radiomics", "TCIA", "IDC"), pretraining=("IDC",))
    write_result_file(tmp_path, "ct-clip", y, scores["twin-b"], patients, dataset="nsclc-radiomics",
                      collections=("NSCLC-Radiomics", "TCIA", "IDC"), pretraining=("CT-RATE",))
    rows = {r.label: r for r in build_board(tmp_path, n_boot=20).tables[0].rows}
    assert rows["ct-fm"].contaminated and rows["ct-fm"].contaminated_by == ["IDC"]
    assert not rows["ct-clip"].contaminated and rows["ct-clip"].contaminated_by == []


def test_other_budgets_and_dataset_versions_get_their_own_tables(tmp_path):
    y, patients, scores = known_case()
    for name in ("best", "twin-a"):
        write_result_file(tmp_path, name, y, scores[name], patients, trials=20)
    write_result_file(tmp_path, "noise", y, scores["noise"], patients, trials=50, folder=tmp_path / "t50")
    write_result_file(tmp_path, "twin-b", y, scores["twin-b"], patients, trials=20, dataset_version="2",
                      folder=tmp_path / "v2")
    board = build_board(tmp_path, n_boot=20)
    assert len(board.tables) == 3
    main = next(t for t in board.tables if t.primary)
    assert [r.label for r in main.rows] == ["best", "twin-a"] and main.trials == 20
    assert main.dataset_version == "1" and main.slug == "phantom--nodule"
    budget = next(t for t in board.tables if t.trials == 50)
    version = next(t for t in board.tables if t.dataset_version == "2")
    assert not budget.primary and not version.primary
    assert budget.slug.endswith("-t50-d1") and version.slug.endswith("-t20-d2")
    assert "trial budget 50 trials here, 20 trials in the main table" in budget.notes[0]
    assert "dataset version 2 here, 1 in the main table" in version.notes[0]
    assert "trial budget" not in version.notes[0].split(".")[0]  # only what differs is named
    assert {r["model"] for r in board.mean_ranks} == {"best", "twin-a"}
    assert len({t.slug for t in board.tables}) == 3
    from ctbench.leaderboards.format import heading

    assert len({heading(t) for t in board.tables}) == 3  # published pages are linked by heading
    assert "50 trials" in heading(budget) and "dataset v2" in heading(version)


def test_results_without_a_probe_have_no_budget(tmp_path):
    y, patients, scores = known_case()
    write_result_file(tmp_path, "m", y, scores["best"], patients, trials=None)
    (table,) = build_board(tmp_path, n_boot=20).tables
    assert table.trials is None


def test_markdown_and_html_show_the_budget(tmp_path):
    from ctbench.leaderboards.render_html import board_html
    from ctbench.leaderboards.render_md import markdown

    y, patients, scores = known_case()
    write_result_file(tmp_path, "best", y, scores["best"], patients, trials=20)
    write_result_file(tmp_path, "noise", y, scores["noise"], patients, trials=50, folder=tmp_path / "t50")
    board = build_board(tmp_path, n_boot=20)
    md = markdown(board, {})
    assert "probe budget 20 Optuna trials per model" in md and "probe budget 50 Optuna trials" in md
    html = board_html(board, figs={})
    assert "probe budget 50 Optuna trials per model" in html

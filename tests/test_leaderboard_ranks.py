"""Ranks and tie groups from the paired bootstrap, on result files with a known outcome."""

import numpy as np
import pytest

from ctbench.errors import CTBenchError
from ctbench.leaderboards import build_board
from ctbench.leaderboards.paired import Draws, paired_difference
from ctbench.leaderboards.ranking import display_order, mean_ranks, point_ranks, significance_ranks
from tests.test_leaderboard_fixtures import OTHER_SPLIT, known_case, write_result_file


@pytest.fixture(scope="module")
def known_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("known")
    y, patients, scores = known_case()
    for name, p in scores.items():
        write_result_file(root, name, y, p, patients, random_init=name == "noise")
    return root


@pytest.fixture(scope="module")
def known_board(known_root):
    return build_board(known_root, n_boot=400, seed=0)


def test_clear_winner_rank_one_and_indistinguishable_pair_tied(known_board):
    (table,) = known_board.tables
    ranks = {r.label: r.rank for r in table.rows}
    assert ranks == {"best": 1, "twin-a": 2, "twin-b": 2, "noise (random)": 4}
    assert [r.label for r in table.rows][:1] == ["best"]
    assert {r.label: r.tie_size for r in table.rows} == {"best": 1, "twin-a": 2, "twin-b": 2, "noise (random)": 1}
    assert table.tested and table.n_cases == 150 and table.n_patients == 100
    best = next(r for r in table.rows if r.label == "best")
    assert sorted(best.better_than) == ["noise (random)", "twin-a", "twin-b"]
    assert best.main.value == 1.0


def test_paired_intervals_behind_the_ranks(known_board):
    comps = {(c["a"], c["b"]): c for c in known_board.tables[0].comparisons}
    twins = comps[("twin-a", "twin-b")]
    assert twins["value"] == 0.0  # identical AUROC on the full test set by construction
    assert twins["ci_low"] < 0.0 < twins["ci_high"] and twins["covers_zero"]
    best_vs_twin = comps[("best", "twin-a")]
    assert best_vs_twin["ci_low"] > 0.1 and not best_vs_twin["covers_zero"]
    assert comps[("noise (random)", "twin-b")]["ci_high"] < 0.0


def test_board_is_reproducible_with_the_same_seed(known_root):
    first, again = (build_board(known_root, n_boot=25, seed=3).tables[0].comparisons for _ in range(2))
    assert first == again
    assert build_board(known_root, n_boot=25, seed=4).tables[0].comparisons != first


def test_rank_rule_does_not_chain_ties():
    # A ~ B and B ~ C but A significantly better than C: C does not inherit A's rank
    better = np.zeros((3, 3), dtype=bool)
    better[0, 2] = True
    assert significance_ranks(better) == [1, 1, 2]
    # nobody significantly better than anyone: one tie group
    assert significance_ranks(np.zeros((4, 4), dtype=bool)) == [1, 1, 1, 1]


def test_point_ranks_and_order_respect_direction():
    assert point_ranks([0.2, 0.5, 0.5, float("nan")], "maximize") == [3, 1, 1, 4]
    assert point_ranks([3.0, 1.0, 2.0], "minimize") == [3, 1, 2]
    assert display_order([2, 1, 1], [0.9, 0.7, 0.8], ["a", "b", "c"], "maximize") == [2, 1, 0]


def test_paired_difference_percentiles():
    a = Draws(0.8, np.array([0.1, 0.2, 0.3, 0.4, np.nan]))
    b = Draws(0.7, np.zeros(5))
    d = paired_difference(a, b)
    assert d.value == pytest.approx(0.1) and d.n_boot == 4
    assert d.ci_low == pytest.approx(np.quantile([0.1, 0.2, 0.3, 0.4], 0.025))
    assert not d.covers_zero


def test_mean_ranks_per_category_and_overall():
    rows = mean_ranks([("a", "classification", 1), ("a", "regression", 3), ("b", "classification", 2)])
    # equal overall mean: the model with more tasks behind its mean comes first
    assert rows[0] == {"model": "a", "overall": 2.0, "tasks": 2, "categories": {"classification": 1.0, "regression": 3.0}}
    assert rows[1] == {"model": "b", "overall": 2.0, "tasks": 1, "categories": {"classification": 2.0}}


def test_other_split_is_a_separate_table_outside_mean_ranks(tmp_path):
    y, patients, scores = known_case()
    for name in ("best", "twin-a"):
        write_result_file(tmp_path, name, y, scores[name], patients)
    write_result_file(tmp_path, "noise", y, scores["noise"], patients, split_hash=OTHER_SPLIT,
                      folder=tmp_path / "elsewhere")
    board = build_board(tmp_path, n_boot=50)
    assert len(board.tables) == 2
    main, other = sorted(board.tables, key=lambda t: not t.primary)
    assert main.primary and [r.label for r in main.rows] == ["best", "twin-a"]
    assert not other.primary and [r.label for r in other.rows] == ["noise"]
    assert "not ranked with the main" in other.notes[0] and other.slug != main.slug
    assert {r["model"] for r in board.mean_ranks} == {"best", "twin-a"}


def test_minimised_metric_without_predictions_hook_is_ranked_by_value_and_says_so(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.normal(size=30)
    patients = np.arange(30)
    for model, mae in (("a", 2.0), ("b", 1.0), ("c", 1.0)):
        write_result_file(tmp_path, model, y, y + mae, patients, task="volume", targets=("volume",),
                          category="custom-score", main_metric="mae", direction="minimize", metrics={"mae": mae})
    (table,) = build_board(tmp_path, n_boot=50).tables
    assert not table.tested and "not tested" in table.notes[-1]
    assert [(r.label, r.rank) for r in table.rows] == [("b", 1), ("c", 1), ("a", 3)]


def test_several_seeds_average_and_get_a_bootstrap_interval(tmp_path):
    y, patients, scores = known_case()
    write_result_file(tmp_path, "twin", y, scores["twin-a"], patients, seed=0)
    write_result_file(tmp_path, "twin", y, scores["twin-b"], patients, seed=1)
    write_result_file(tmp_path, "best", y, scores["best"], patients)
    (table,) = build_board(tmp_path, n_boot=100).tables
    twin = next(r for r in table.rows if r.label == "twin")
    assert twin.seeds == [0, 1]
    from sklearn.metrics import roc_auc_score

    assert twin.main.value == pytest.approx(roc_auc_score(y, scores["twin-a"]))
    assert twin.main.ci_low < twin.main.value < twin.main.ci_high


def test_contamination_and_random_flags(tmp_path):
    y, patients, scores = known_case()
    write_result_file(tmp_path, "seen", y, scores["twin-a"], patients, pretraining=("LIDC", "Phantom"))
    write_result_file(tmp_path, "unseen", y, scores["twin-b"], patients, pretraining=("LIDC",))
    write_result_file(tmp_path, "unseen", y, scores["noise"], patients, random_init=True)
    rows = {r.label: r for r in build_board(tmp_path, n_boot=50).tables[0].rows}
    assert rows["seen"].contaminated and not rows["unseen"].contaminated
    assert rows["unseen (random)"].random_init and not rows["unseen"].random_init


def test_different_targets_for_the_same_cases_are_refused(tmp_path):
    y, patients, scores = known_case()
    write_result_file(tmp_path, "a", y, scores["best"], patients)
    write_result_file(tmp_path, "b", 1 - y, scores["best"], patients)
    with pytest.raises(CTBenchError, match="other targets"):
        build_board(tmp_path, n_boot=20)


def test_label_efficiency_curve_from_train_fraction(tmp_path):
    y, patients, scores = known_case()
    write_result_file(tmp_path, "m", y, scores["best"], patients)  # old-style: no train_fraction -> 1.0
    write_result_file(tmp_path, "m", y, scores["twin-a"], patients, train_fraction=0.25)
    board = build_board(tmp_path, n_boot=20)
    assert len(board.tables[0].rows) == 1  # only full-data results are ranked
    (curve,) = board.curves
    assert [p["fraction"] for p in curve.series["m"]] == [0.25, 1.0]
    assert curve.series["m"][1]["value"] == 1.0 and curve.slug == board.tables[0].slug


def test_regression_read_back_ranks_a_minimised_metric(tmp_path):
    from sklearn.metrics import mean_absolute_error

    rng = np.random.default_rng(1)
    y = rng.normal(100, 20, 120)
    err_a = rng.normal(0, 1, 120)
    preds = {"sharp": y + err_a, "blurred": y + rng.normal(0, 15, 120), "sharp-twin": y + rng.permutation(err_a)}
    for model, p in preds.items():
        write_result_file(tmp_path, model, y, p, np.arange(120), task="volume", targets=("volume",), category="regression",
                          main_metric="mae", direction="minimize", metrics={"mae": mean_absolute_error(y, p)})
    (table,) = build_board(tmp_path, n_boot=200).tables
    assert table.tested  # read back from y_volume / p_volume and scored with the regression task's own MAE
    assert {r.label: r.rank for r in table.rows} == {"sharp": 1, "sharp-twin": 1, "blurred": 3}
    assert [r.label for r in table.rows][-1] == "blurred"


def test_survival_read_back_uses_the_c_index(tmp_path):
    rng = np.random.default_rng(2)
    time = rng.exponential(365, 80)
    event = (rng.random(80) < 0.7).astype(float)
    from ctbench.tasks.survival_metrics import c_index

    for model, risk in (("informed", -time + rng.normal(0, 30, 80)), ("blind", rng.random(80))):
        value = c_index(np.stack([time, event], axis=1), risk)
        write_result_file(tmp_path, model, None, None, np.arange(80), task="os", targets=("time", "event"),
                          category="survival", main_metric="c_index", metrics={"c_index": value},
                          columns={"y_time": time, "y_event": event, "risk": risk})
    (table,) = build_board(tmp_path, n_boot=100).tables
    assert table.tested and [(r.label, r.rank) for r in table.rows] == [("informed", 1), ("blind", 2)]
    comp = table.comparisons[0]
    assert comp["a"] == "blind" and comp["value"] < -0.3 and comp["ci_high"] < 0
    assert table.rows[0].main.value == pytest.approx(comp["value"] * -1 + table.rows[1].main.value)

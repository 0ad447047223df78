"""``ctbench leaderboard show``: the ranked table in the terminal, with tie groups and CIs,
filtered by task and dataset, read from result files laid out as the runner writes them."""

from __future__ import annotations

from tests.cli_helpers import run_cli
from tests.test_leaderboard_fixtures import known_case, write_result_file


def _results(root):
    """Four models of known order on one task (best 1, the twins tied at 2, noise 4), plus a
    random-init control on another task and one on another dataset."""
    y, patients, scores = known_case()
    for model, p in scores.items():
        write_result_file(root, model, y, p, patients)
    write_result_file(root, "best", y, scores["noise"], patients, task="other", random_init=True)
    write_result_file(root, "noise", y, scores["best"], patients, dataset="elsewhere")
    return root


def test_show_prints_ranks_ties_and_intervals(tmp_path, monkeypatch, capsys) -> None:
    root = _results(tmp_path / "results")
    code, out, err = run_cli(monkeypatch, capsys, "leaderboard", "show", "--results", str(root),
                             "--tasks", "nodule", "--dataset", "phantom", "--bootstrap", "200")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "phantom / nodule"
    rows = [line.split() for line in lines[2:6]]
    assert [(r[0], r[1]) for r in rows] == [("1", "best"), ("=2", "twin-a"), ("=2", "twin-b"), ("4", "noise")]
    better = lines[2].split("]", 1)[1].split()  # the columns after the interval
    assert {"noise,", "twin-a,", "twin-b"} <= set(better) or {"noise,", "twin-a", "twin-b,"} <= set(better)
    for r in rows:  # value [low, high]
        value, low, high = float(r[2]), float(r[3].strip("[,")), float(r[4].strip("]"))
        assert low <= value <= high
    assert "tie groups: {twin-a, twin-b} share rank 2." in out
    assert "other" not in out and "elsewhere" not in out  # filtered out


def test_show_without_matching_results_says_how_to_get_them(tmp_path, monkeypatch, capsys) -> None:
    root = _results(tmp_path / "results")
    code, _, err = run_cli(monkeypatch, capsys, "leaderboard", "show", "--results", str(root), "--tasks", "survival")
    assert code == 2
    assert "no result under" in " ".join(err.split()) and "ctbench bench" in " ".join(err.split())

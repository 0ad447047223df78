"""Probe families and feature views on a board: one ranked table per (family, view), never ranked
together, and a summary whose per-model choice is made on validation values only; tuning curves
and per-trial fit times shown per family; every output format (board, markdown, CSV, terminal)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctbench.leaderboards import build_board, write_board
from tests.cli_helpers import run_cli
from tests.test_leaderboard_fixtures import known_case, write_result_file


def write_probe_result(root: Path, model: str, family: str | None, view: str | None, y, scores, patients, *,
                       validation: float, fit_s: float = 0.1, budget: int = 5, **kwargs) -> Path:
    """A result as a family-aware runner writes it (``probe.family``/``view``, best validation
    value, tuning curve, per-trial fit seconds); ``family`` None: an older file naming none."""
    folder = (root / model / (family or "default") / (view or "cls").replace("+", "-")
              / f"seed{kwargs.get('seed', 0)}-frac{kwargs.get('train_fraction') or 1}")
    path = write_result_file(root, model, y, scores, patients, folder=folder, trials=budget, **kwargs)
    data = json.loads(path.read_text())  # patched after writing: the schema may not declare family/view yet
    climb = validation - 0.02 * np.arange(budget)[::-1]
    data["probe"].update(best_validation_value=validation,
                         tuning_curve={"best_so_far": climb.tolist(), "expected_max": (climb - 0.01).tolist()},
                         trial_fit_s={"per_trial": [fit_s] * budget, "median": fit_s})
    if family is not None:
        data["probe"].update(family=family, view=view)
    path.write_text(json.dumps(data))
    return path


def two_family_results(root: Path, n_patients: int = 60) -> Path:
    """Models a and b, each with a linear and a knn probe on cls. a's knn probe is the better on
    test but the worse on validation, so a validation-only choice keeps a's linear probe."""
    y, patients, s = known_case(n_patients=n_patients)
    rows = [("a", "linear", "twin-a", 0.90, 0.05), ("a", "knn", "best", 0.80, 0.5),
            ("b", "linear", "noise", 0.70, 0.04), ("b", "knn", "twin-b", 0.85, 0.6)]
    for model, family, scores, validation, fit in rows:
        write_probe_result(root, model, family, "cls", y, s[scores], patients, validation=validation, fit_s=fit)
    return root


@pytest.fixture(scope="module")
def families_board(tmp_path_factory):
    root = two_family_results(tmp_path_factory.mktemp("families"))
    return root, build_board(root, n_boot=40)


def test_each_probe_is_ranked_on_its_own_and_the_summary_chooses_on_validation(families_board):
    _, board = families_board
    (table,) = board.tables
    assert table.is_summary and table.family is None
    assert [(t.family, t.view) for t in table.probes] == [("linear", "cls"), ("knn", "cls")]  # display order
    linear, knn = table.probes
    assert [r.label for r in linear.rows] == ["a", "b"] and {r.family for r in linear.rows} == {"linear"}
    assert [r.label for r in knn.rows] == ["a", "b"] and {r.family for r in knn.rows} == {"knn"}
    assert linear.rows[0].rank == 1 and linear.rows[1].rank == 2  # twin-a beats noise
    assert knn.rows[0].main.value == 1.0  # a's knn probe is perfect on test ...
    chosen = {r.label: (r.family, r.validation) for r in table.rows}
    assert chosen == {"a": ("linear", 0.90), "b": ("knn", 0.85)}  # ... but validation chose linear
    summary_a = next(r for r in table.rows if r.label == "a")
    assert summary_a.main.value == linear.rows[0].main.value  # the chosen probe's test value
    assert {r.rank for r in table.rows} == {1}  # twin-a and twin-b: tied
    assert {t.slug for t in [table, *table.probes]} == {
        "phantom--nodule", "phantom--nodule--linear--cls", "phantom--nodule--knn--cls"}
    assert [m["model"] for m in board.mean_ranks] == ["a", "b"]  # the summary's ranks count, once per model
    assert all(m["tasks"] == 1 for m in board.mean_ranks)
    assert linear.rows[0].fit_s == 0.05 and knn.rows[1].fit_s == 0.6 and summary_a.fit_s == 0.05


def test_minimised_metric_chooses_the_lowest_validation_value(tmp_path):
    y, patients, s = known_case(n_patients=30)
    for family, validation in (("linear", 3.0), ("mlp", 2.0)):
        write_probe_result(tmp_path, "m", family, "mean", y, s["best"], patients, validation=validation,
                           direction="minimize")
    write_probe_result(tmp_path, "n", "linear", "mean", y, s["noise"], patients, validation=1.0, direction="minimize")
    (table,) = build_board(tmp_path, n_boot=20).tables
    assert {r.label: r.probe.short for r in table.rows} == {"m": "mlp on mean", "n": "linear on mean"}
    assert [t.probe.title for t in table.probes] == ["linear probe on mean", "mlp probe on mean"]


def test_older_files_read_as_the_default_family_in_one_table(tmp_path):
    y, patients, s = known_case(n_patients=30)
    write_probe_result(tmp_path, "a", None, None, y, s["best"], patients, validation=0.9)
    write_probe_result(tmp_path, "b", None, None, y, s["noise"], patients, validation=0.6)
    (table,) = build_board(tmp_path, n_boot=20).tables
    assert not table.is_summary and (table.family, table.view) == ("default", "cls") and table.slug == "phantom--nodule"


def test_views_of_one_family_are_separate_tables(tmp_path):
    y, patients, s = known_case(n_patients=30)
    for view, validation in (("cls", 0.7), ("cls+mean", 0.8)):
        write_probe_result(tmp_path, "a", "linear", view, y, s["best"], patients, validation=validation)
    (table,) = build_board(tmp_path, n_boot=20).tables
    assert [t.view for t in table.probes] == ["cls", "cls+mean"] and table.rows[0].view == "cls+mean"
    assert len({t.slug for t in table.probes}) == 2 and all("+" not in t.slug for t in table.probes)


def test_markdown_and_csv_carry_every_probe_table(families_board, tmp_path):
    _, board = families_board
    write_board(board, "md", tmp_path)
    write_board(board, "csv", tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    heads = [line for line in md.splitlines() if line.startswith("### ")]
    assert heads == ["### best probe per model (chosen on validation)", "### linear probe on cls",
                     "### knn probe on cls"]
    assert "| probe | validation auroc | fit per trial (median) |" in md and "| linear on cls | 0.900 | 0.05 s |" in md
    assert "](plots/tuning_phantom--nodule.png)" in md and (tmp_path / "plots" / "tuning_phantom--nodule.png").is_file()
    rows = pd.read_csv(tmp_path / "leaderboard.csv")
    assert rows["table"].tolist() == ["summary"] * 2 + ["probe"] * 4
    assert rows[rows.table == "summary"].set_index("model")["family"].to_dict() == {"a": "linear", "b": "knn"}
    assert rows[rows.table == "probe"].groupby("family")["fit_s_median"].median().to_dict() == {"knn": 0.55,
                                                                                                 "linear": 0.045}


def test_tuning_figure_has_a_panel_per_model_and_a_line_per_probe(families_board):
    from ctbench.leaderboards.plots import tuning, tuning_series

    _, board = families_board
    (table,) = board.tables
    series = tuning_series(table)
    assert list(series) == [r.label for r in table.rows]
    assert {label: [p for p, _ in s] for label, s in series.items()} == {
        "a": ["linear on cls", "knn on cls"], "b": ["linear on cls", "knn on cls"]}
    assert series["a"][0][1]["best_so_far"][-1] == pytest.approx(0.90)
    png = tuning(table)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_leaderboard_show_prints_the_summary_with_the_chosen_probe(families_board, monkeypatch, capsys):
    root, _ = families_board
    code, out, err = run_cli(monkeypatch, capsys, "leaderboard", "show", "--results", str(root), "--bootstrap", "20")
    assert code == 0, err
    assert "probe (chosen on validation)" in out
    lines = {line.split()[1]: line for line in out.splitlines() if line.split()[:1] == ["=1"]}
    assert "linear on cls" in lines["a"] and "knn on cls" in lines["b"]
    assert "linear probe on cls (2 models, ranked on its own): winner(s) a" in out
    assert "knn probe on cls (2 models, ranked on its own): winner(s) a" in out


def test_published_site_names_no_local_path_in_probe_tables(tmp_path):
    """Survival-style files beside the results (``km.csv``) of every probe table are published
    relative to the results folder, as the summary's are."""
    from ctbench.leaderboards import collect
    from ctbench.leaderboards.publish import publish

    root = two_family_results(tmp_path / "results", n_patients=30)
    for km in root.rglob("result.json"):
        (km.parent / "km.csv").write_text("time,survival\n0,1\n1,0.5\n")
    entries = collect(root)
    board = build_board(entries, n_boot=20)
    for t in [board.tables[0], *board.tables[0].probes]:  # as a survival table records them
        t.km = [(r.label, str(root / r.provenance["results"][0]).replace("result.json", "km.csv")) for r in t.rows]
    publish(board, entries, tmp_path / "site")
    text = (tmp_path / "site" / "results.json").read_text()
    assert str(tmp_path) not in text
    kms = [km for t in json.loads(text)["board"]["tables"] for sub in [t, *t["probes"]] for km in sub["km"]]
    assert len(kms) == 6 and all(path.endswith("/km.csv") and not path.startswith("/") for _, path in kms)


def test_label_efficiency_keeps_one_line_per_model_and_probe(tmp_path):
    y, patients, s = known_case(n_patients=30)
    for family in ("linear", "knn"):
        for frac in (1.0, 0.5):
            write_probe_result(tmp_path, "a", family, "cls", y, s["best" if family == "knn" else "noise"], patients,
                               validation=0.8, train_fraction=frac)
    (curve,) = build_board(tmp_path, n_boot=20).curves
    assert sorted(curve.series) == ["a (knn on cls)", "a (linear on cls)"]
    assert [p["value"] for p in curve.series["a (knn on cls)"]] == [1.0, 1.0]  # never pooled with linear

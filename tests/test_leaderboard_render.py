"""A 3-model x 3-task phantom-like board rendered as md, html, csv and json, plus publish and CLI."""

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from ctbench.errors import CTBenchError
from ctbench.leaderboards import build_board, write_board
from ctbench.leaderboards.cli import app
from ctbench.leaderboards.chance import chance_level
from ctbench.leaderboards.plots import kaplan_meier, rank_matrix
from tests.test_leaderboard_fixtures import known_case, phantom_board, phantom_results, write_result_file  # noqa: F401

N_BOOT = 40  # as in the phantom_board fixture


@pytest.fixture
def results(phantom_results):  # noqa: F811
    return phantom_results


@pytest.fixture
def board(phantom_board):  # noqa: F811
    return phantom_board


def test_board_has_one_table_per_task_with_flags(board):
    assert [t.task for t in board.tables] == ["findings", "grade", "nodule"]
    for t in board.tables:
        assert {r.label for r in t.rows} == {"voxelfm", "merlin", "ct-fm", "voxelfm (random)"}
        assert t.rows[0].label == "voxelfm" and t.rows[0].rank == 1 and t.tested
        rows = {r.label: r for r in t.rows}
        assert rows["merlin"].contaminated and not rows["voxelfm"].contaminated
        assert rows["voxelfm (random)"].random_init and rows["voxelfm (random)"].rank == 4
        assert t.metric_names == ["auroc", "auprc", "balanced_accuracy", "f1"]
    grade = board.tables[1]
    assert grade.n_cases == 80 and grade.n_patients == 60
    assert [r["model"] for r in board.mean_ranks][0] == "voxelfm" and board.mean_ranks[-1]["model"] == "voxelfm (random)"
    assert board.mean_ranks[0]["categories"] == {"classification": 1.0}


def test_heatmap_encodes_ranks_not_values(board):
    """Tied models share a rank (and so a colour), whatever their point values."""
    ranks = rank_matrix(board)
    assert ranks.shape == (4, 3) and list(ranks.index)[0] == "voxelfm"
    assert (ranks.loc["voxelfm (random)"] == 4).all()
    for t in board.tables:
        assert ranks[t.title].to_dict() == {r.label: r.rank for r in t.rows}
    nodule = {r.label: r for r in board.tables[2].rows}
    assert nodule["voxelfm"].main.value != nodule["merlin"].main.value
    assert ranks.loc["voxelfm", "phantom / nodule"] == ranks.loc["merlin", "phantom / nodule"] == 1


def test_markdown_has_tables_ranks_flags_figures_and_footer(board, tmp_path):
    files = write_board(board, "md", tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert md.count("| rank | model | auroc (95% CI) |") == 3
    assert "| =1 | voxelfm |" in md and "random init" in md and "contaminated" in md
    assert "| phantom / nodule | classification | auroc (higher is better) | voxelfm, merlin (tied) |" in md
    assert md.count("chance level of auroc: 0.500") == 3
    assert re.search(r"\| 4 \| voxelfm \(random\) \| 0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]", md)
    for ref in re.findall(r"\]\((plots/[^)]+\.png)\)", md):
        assert (tmp_path / ref).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len([f for f in files if f.suffix == ".png"]) == 4  # rank heatmap + 3 bar charts
    assert "Built " in md and "protocol 1" in md and "Rank = 1 + the number of models significantly better" in md
    assert md.count("2e70bd804c4d7b461b238a2c53f51e288c23d5d6c581bcfa74bb016b39f6a3da") == 3  # voxelfm sha per task


def test_csv_and_json_keep_full_precision(board, results, tmp_path):
    write_board(board, "csv", tmp_path)
    write_board(board, "json", tmp_path)
    rows = pd.read_csv(tmp_path / "leaderboard.csv", float_precision="round_trip")
    assert len(rows) == 12 and {"rank", "tie_size", "ci_low", "weights_sha256", "split_hash", "contaminated"} <= set(rows.columns)
    nodule = rows[(rows.task == "nodule") & (rows.model == "merlin")].iloc[0]
    on_disk = json.loads(next(results.rglob("nodule/merlin/*/seed0/result.json")).read_text())
    assert nodule.value == on_disk["metrics"]["auroc"]["value"]  # no rounding in data outputs
    assert nodule.f1_ci_high == on_disk["metrics"]["f1"]["ci_high"]
    means = pd.read_csv(tmp_path / "mean_ranks.csv")
    assert list(means.columns) == ["model", "overall", "tasks", "classification"]
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert [t["slug"] for t in data["tables"]] == ["phantom--findings", "phantom--grade", "phantom--nodule"]
    assert data["provenance"]["paired_bootstrap"]["resamples"] == N_BOOT and len(data["tables"][0]["comparisons"]) == 6


def test_html_is_self_contained(board, tmp_path):
    (path,) = write_board(board, "html", tmp_path)
    html = path.read_text()
    assert html.count("<table") == 3 + 3  # overview, tasks, mean ranks per category, 3 boards
    assert html.count("data:image/png;base64,") == 3  # bar charts (the overview's cells are the heatmap)
    assert "<style>" in html and "<script>" in html and not re.search(r'(src|href)="(http|//|/|file:)', html)
    assert "contaminated" in html and "random init" in html and html.count("<details>") == 12  # provenance per row
    assert path.stat().st_mode & 0o044  # readable by others (umask permitting): hostable


def test_unknown_format_is_a_user_error(board, tmp_path):
    with pytest.raises(CTBenchError, match="use one of md, html, csv, json"):
        write_board(board, "pdf", tmp_path)


@pytest.fixture
def small_results(tmp_path):
    """Two tasks x three models, enough for the command line (the big board is tested above)."""
    y, patients, scores = known_case(n_patients=40)
    for task in ("nodule", "mass"):
        for name in ("best", "twin-a", "noise"):
            write_result_file(tmp_path / "results", name, y, scores[name], patients, task=task)
    return tmp_path / "results"


def test_cli_build_and_publish(small_results, tmp_path):
    runner = CliRunner()
    out = tmp_path / "board"
    res = runner.invoke(app, ["build", "--results", str(small_results), "--format", "md,html,csv", "--out", str(out),
                              "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    assert {p.name for p in out.iterdir()} >= {"leaderboard.md", "leaderboard.html", "leaderboard.csv", "plots"}
    assert "2 task table(s) from 6 result file(s)" in res.output
    site = tmp_path / "site"
    res = runner.invoke(app, ["publish", "--out", str(site), "--results", str(small_results), "--bootstrap", "20"])
    assert res.exit_code == 0, res.output
    index = (site / "index.html").read_text()
    links = re.findall(r'href="(tasks/[^"]+\.html)"', index)
    assert links == ["tasks/phantom--mass.html", "tasks/phantom--nodule.html"] * 2  # overview header, task list
    assert all((site / link).is_file() for link in links)
    page = (site / links[0]).read_text()
    assert 'href="../index.html"' in page and 'src="../plots/bars_phantom--mass.png"' in page
    assert (site / "plots" / "bars_phantom--mass.png").read_bytes()[:4] == b"\x89PNG"
    assert 'href="../static/ctbench.css"' in page and (site / "static" / "ctbench.js").is_file()
    assert (site / ".nojekyll").is_file()
    payload = json.loads((site / "results.json").read_text())
    assert len(payload["results"]) == 6 and len(payload["board"]["tables"]) == 2
    assert payload["results"][0]["task"]["main_metric"] == "auroc"
    assert (site / "leaderboard.csv").is_file() and (site / "mean_ranks.csv").is_file()


def test_cli_build_reports_a_foreign_file(small_results, tmp_path):
    copy = small_results
    (copy / "other" / "result.json").parent.mkdir()
    (copy / "other" / "result.json").write_text(json.dumps({"model": "x", "accuracy": 0.9}))
    res = CliRunner().invoke(app, ["build", "--results", str(copy), "--out", str(tmp_path / "o")])
    assert isinstance(res.exception, CTBenchError) and "not a ctbench result file" in str(res.exception)


def test_kaplan_meier_beside_survival_results_is_included(tmp_path, monkeypatch):
    import ctbench.leaderboards.board as board_module

    monkeypatch.setattr(board_module, "make_scorer", lambda info, frame: None)  # survival read-back is not under test
    rng = np.random.default_rng(0)
    for model in ("a", "b"):
        path = write_result_file(tmp_path, model, rng.random(20), rng.random(20), np.arange(20), task="os",
                                 targets=("time",), category="survival", main_metric="c_index",
                                 metrics={"c_index": 0.6 if model == "a" else 0.7})
        if model == "a":
            pd.DataFrame({"time": [0, 1, 2, 0, 1, 2], "survival": [1, .8, .5, 1, .9, .7],
                          "group": ["high", "high", "high", "low", "low", "low"]}).to_csv(path.parent / "km.csv", index=False)
    (table,) = build_board(tmp_path, n_boot=20).tables
    assert [r.label for r in table.rows] == ["b", "a"] and len(table.km) == 1 and table.km[0][0] == "a"
    png = kaplan_meier(*table.km[0])
    from PIL import Image

    assert Image.open(io.BytesIO(png)).size[0] > 300
    files = write_board(build_board(tmp_path, n_boot=20), "md", tmp_path / "md")
    assert any(f.name.startswith("km_") for f in files)


def test_kaplan_meier_data_without_columns_is_a_user_error(tmp_path):
    bad = tmp_path / "km.csv"
    bad.write_text("t,s\n0,1\n")
    with pytest.raises(CTBenchError, match="lacks column"):
        kaplan_meier("a", bad)


def test_label_efficiency_figure_is_rendered(tmp_path):
    y, patients, scores = known_case()
    for frac, name in ((1.0, "best"), (0.5, "twin-a"), (0.1, "noise")):
        write_result_file(tmp_path, "m", y, scores[name], patients, train_fraction=frac)
    (path,) = write_board(build_board(tmp_path, n_boot=20), "html", tmp_path / "h")
    html = path.read_text()
    assert html.count("data:image/png;base64,") == 2  # bars, curve
    assert "Label efficiency" in html


def test_chance_levels_follow_the_metric():
    """Hand-computed: 0.5 for rank metrics, the prevalence for AUPRC (mean over labels or one-vs-rest
    classes), 1/k for balanced accuracy, 0 for R^2; a recorded chance wins; none for F1 or Dice."""
    for metric in ("auroc", "c_index", "td_auc@365"):
        assert chance_level(metric).value == 0.5
    assert chance_level("r2").value == 0.0 and chance_level("pearson_r").value == 0.0
    assert chance_level("auprc", np.array([1, 0, 0, 0])).value == 0.25
    assert chance_level("auprc", np.array([[1, 0], [1, 1], [0, 0], [0, 0]])).value == pytest.approx(0.375)
    assert chance_level("auprc", np.array([0, 1, 2, 2]), n_classes=3).value == pytest.approx(1 / 3)
    assert chance_level("auprc") is None  # the prevalence needs the test targets
    assert chance_level("balanced_accuracy", np.array([0, 1, 2]), n_classes=3).value == pytest.approx(1 / 3)
    assert chance_level("balanced_accuracy", np.array([0, 1, 1])).value == 0.5
    assert chance_level("label_recall@5", recorded={"label_recall@5": 0.05}).value == 0.05
    assert chance_level("f1") is None and chance_level("dice_macro") is None and chance_level("mae") is None


def test_a_seed_conditioned_model_is_flagged_in_every_format(tmp_path):
    """A model told where to look (card.seed_conditioned, e.g. FMCIB's seed point) carries a
    "seed given" flag in the table, the Markdown board and an HTML badge; other rows do not."""
    y, patients, s = known_case(n_patients=40)
    write_result_file(tmp_path / "r", "plain", y, s["noise"], patients)
    path = write_result_file(tmp_path / "r", "seeded", y, s["best"], patients)
    data = json.loads(path.read_text())
    data["model"]["card"]["seed_conditioned"] = True
    path.write_text(json.dumps(data))
    board = build_board(tmp_path / "r", n_boot=20)
    rows = {r.label: r for r in board.tables[0].rows}
    assert rows["seeded"].seed_given and not rows["plain"].seed_given
    md = next(p for p in write_board(board, "md", tmp_path / "md") if p.suffix == ".md").read_text()
    assert next(ln for ln in md.splitlines() if ln.startswith("| 1 | seeded |")).endswith("| reference, seed given |")
    assert next(ln for ln in md.splitlines() if ln.startswith("| 2 | plain |")).endswith("| reference |")
    html = "\n".join(p.read_text() for p in write_board(board, "html", tmp_path / "html") if p.suffix == ".html")
    assert html.count('class="badge seed"') == 1

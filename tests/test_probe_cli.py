"""``ctbench run --probe/--view`` as users type it: one result per probe family and view, each in
its own folder and study, recorded in ``probe.family`` / ``probe.view``; what cannot be served
is one clear error, or under ``all`` a skipped line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ctbench.engine as engine
from ctbench.errors import CTBenchError
from ctbench.probe_choice import ProbeChoice, resolve
from ctbench.registry import MODELS, TASKS
from tests.cli_helpers import run_cli

BASE = ("--model", "test-histogram", "--weights", "random", "--trials", "1", "--bootstrap", "20", "--device", "cpu")


def _run(monkeypatch, capsys, phantom, *args):
    monkeypatch.setattr(engine, "N_PROBE_SEEDS", 1)
    return run_cli(monkeypatch, capsys, "run", *BASE, "--dataset", str(phantom), *args)


def test_run_probe_knn_then_all(small_phantom, monkeypatch, capsys, ctbench_home, tmp_path):
    """``--probe knn`` writes its own result beside the default's folder; ``--probe all`` then fits
    every family on its natural view from the same cached extraction."""
    code, out, err = _run(monkeypatch, capsys, small_phantom, "--task", "classification", "--probe", "knn")
    assert code == 0, err[-2000:]
    (path,) = (ctbench_home / "results").rglob("result.json")
    assert path.parent.name == "seed0-knn-cls"  # beside, never over, the default linear result
    result = json.loads(path.read_text())
    probe = result["probe"]
    assert (probe["family"], probe["view"]) == ("knn", "cls") == (result["config"]["probe"], result["config"]["view"])
    assert set(probe["best_params"]) == {"probe", "k", "weights"} and probe["best_params"]["probe"] == "knn"
    assert "probe knn on cls" in out

    code, out, err = _run(monkeypatch, capsys, small_phantom, "--task", "classification", "--probe", "all",
                          "--out", str(tmp_path / "all"))
    assert code == 0, err[-2000:]
    results = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "all").rglob("result.json")}
    assert set(results) == {"linear-cls", "knn-cls", "mlp-cls", "attentive-tokens"}
    pairs = {(r["probe"]["family"], r["probe"]["view"]) for r in results.values()}
    assert pairs == {("linear", "cls"), ("knn", "cls"), ("mlp", "cls"), ("attentive", "tokens")}
    assert len({r["probe"]["study"] for r in results.values()} | {probe["study"]}) == 4  # knn resumed its study
    assert results["knn-cls"]["probe"]["study"] == probe["study"]
    assert all(0 <= r["metrics"]["auroc"]["value"] <= 1 for r in results.values())
    # the embeddings and the token grids all came from the first run's cache entries
    assert all(r["timings"]["cases_extracted"] == 0 for r in results.values())
    assert set(results["attentive-tokens"]["probe"]["best_params"]) == {"probe", "width", "heads", "lr",
                                                                          "weight_decay", "epochs"}


def test_survival_refuses_knn_naming_the_choices(small_phantom, monkeypatch, capsys):
    code, _, err = _run(monkeypatch, capsys, small_phantom, "--task", "survival", "--probe", "knn")
    assert code == 2 and "does not offer the 'knn' probe" in err and "linear, mlp, attentive" in err
    assert "Traceback" not in err


def _card(name):
    return MODELS.get(name).card


def test_views_a_model_cannot_give_are_errors_or_skipped_under_all():
    classification = TASKS.get("classification")
    with pytest.raises(CTBenchError, match="'hu-histogram' has no token grid.*'mean' view.*its views: cls"):
        resolve(classification, _card("hu-histogram"), "linear", "mean", "hu-histogram", "nodule")
    with pytest.raises(CTBenchError, match="'attentive' probe reads the tokens view, not 'cls'"):
        resolve(classification, _card("test-histogram"), "attentive", "cls", "test-histogram", "nodule")
    with pytest.raises(CTBenchError, match="unknown feature view 'patch'"):
        resolve(classification, _card("test-histogram"), None, "patch", "test-histogram", "nodule")
    choices, skipped = resolve(classification, _card("hu-histogram"), "all", None, "hu-histogram", "nodule")
    assert choices == [ProbeChoice(f, "cls") for f in ("linear", "knn", "mlp")]
    assert skipped == ["attentive on tokens: model 'hu-histogram' declares no token grid"]
    choices, skipped = resolve(TASKS.get("survival"), _card("test-histogram"), "all", "all", "m", "os")
    assert [(c.family, c.view) for c in choices] == [("linear", "cls"), ("linear", "mean"), ("linear", "cls+mean"),
                                                     ("mlp", "cls"), ("mlp", "mean"), ("mlp", "cls+mean"),
                                                     ("attentive", "tokens")]
    assert any(s.startswith("knn:") for s in skipped)
    default = resolve(classification, _card("test-histogram"), None, None, "m", "t")
    assert default == ([ProbeChoice("linear", "cls")], [])
    assert ProbeChoice("linear", "cls").tag is None and ProbeChoice("linear", "cls+mean").tag == "linear-cls-mean"
    with pytest.raises(CTBenchError, match="has its own probe"):
        resolve(TASKS.get("segmentation"), _card("test-histogram"), "knn", None, "m", "seg")
    assert resolve(TASKS.get("segmentation"), _card("test-histogram"), "all", None, "m", "seg")[0] == [
        ProbeChoice(None, None)]


def test_bench_probe_all_makes_a_cell_per_family_and_view(small_phantom, tmp_path):
    """The grid expands ``--probe all`` per model: each pair in its own folder; pairs a model
    cannot serve are named in the report's notes (runner stubbed: only the grid is under test)."""
    from ctbench.bench import bench

    seen = []

    def runner(cfg, progress=None):
        seen.append(cfg)
        return tmp_path / "r.json", {"task": {"main_metric": "auroc"}, "metrics": {"auroc": {"value": 0.5}}}

    report = bench(["test-histogram", "hu-histogram"], ["classification"], str(small_phantom), weights="random",
                   out=tmp_path / "res", runner=runner, probe="all")
    assert [(c.model, c.probe, c.view) for c in report.cells] == [
        ("test-histogram", "linear", "cls"), ("test-histogram", "knn", "cls"), ("test-histogram", "mlp", "cls"),
        ("test-histogram", "attentive", "tokens"),
        ("hu-histogram", "linear", "cls"), ("hu-histogram", "knn", "cls"), ("hu-histogram", "mlp", "cls")]
    assert [Path(c.out).name for c in seen[:4]] == [
        "seed0", "seed0-knn-cls", "seed0-mlp-cls", "seed0-attentive-tokens"]
    assert report.notes == ["hu-histogram on classification: skipped attentive on tokens: model 'hu-histogram' "
                            "declares no token grid"]

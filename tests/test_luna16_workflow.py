"""The README's LUNA16 workflow, through the command line in-process, on a small fake download:
``datasets prepare luna16``, ``run --task nodule-localisation`` for two models (one that sees the
nodules, one that cannot), then ``leaderboard build --format html``: a ranked, paired-tested
localisation table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import ctbench.engine as engine
from ctbench.registry import MODELS
from ctbench.tasks.localisation import LocalisationTask
from tests.cli_helpers import run_cli
from tests.fakes import ConstantEncoder
from tests.recipes.recipe_fakes import write_csv, write_mhd

SHAPE = (24, 24, 16)
SPACING = (1.5, 1.5, 2.5)
ORIGIN = (-20.0, -30.0, -40.0)  # LPS, as LUNA16 headers
SCANS_PER_FOLD = {**{f: 3 for f in range(8)}, 8: 4, 9: 12}  # subset0-7 train, 8 val, 9 test
SEEING, BLIND = "test-histogram", "test-constant"  # 4^3-voxel block means vs one constant grid


def _uid(fold: int, k: int) -> str:
    return f"1.3.6.1.4.1.14519.5.2.1.6279.6001.{fold:02d}{k:02d}"


def _fake_luna16(root: Path) -> Path:
    """subsetK/<uid>.mhd + .raw scans of soft tissue holding one bright nodule each, at a seeded
    voxel, and annotations.csv with its LPS centre (every scan has a nodule)."""
    rng = np.random.default_rng(0)
    rows = []
    for fold, n in SCANS_PER_FOLD.items():
        for k in range(n):
            arr = np.full(SHAPE, 40.0) + rng.normal(0, 10, SHAPE)
            c = rng.integers(3, np.array(SHAPE) - 3)
            arr[c[0] - 1:c[0] + 2, c[1] - 1:c[1] + 2, c[2] - 1:c[2] + 2] = 600.0
            write_mhd(root / f"subset{fold}" / f"{_uid(fold, k)}.mhd", arr.astype(np.int16), SPACING, ORIGIN)
            lps = np.array(ORIGIN) + np.array(SPACING) * c
            rows.append({"seriesuid": _uid(fold, k), "coordX": lps[0], "coordY": lps[1], "coordZ": lps[2],
                         "diameter_mm": 4.5})
    write_csv(root / "annotations.csv", rows)
    return root


def _quick(self, trial, seed):
    """A one-point search space: the workflow is under test here, not the head's tuning."""
    return {"probe": "attention-pool", "lr": trial.suggest_float("lr", 2e-2, 2e-2),
            "weight_decay": trial.suggest_float("weight_decay", 1e-4, 1e-4),
            "width": trial.suggest_categorical("width", [16]), "epochs": trial.suggest_int("epochs", 20, 20)}


def test_readme_luna16_workflow_ends_in_a_ranked_localisation_table(tmp_path, monkeypatch, capsys):
    if BLIND not in MODELS:
        MODELS.register(BLIND)(ConstantEncoder)
    monkeypatch.setattr(engine, "N_PROBE_SEEDS", 1)  # quick: one refit seed
    monkeypatch.setattr(LocalisationTask, "suggest", _quick)
    src, data = _fake_luna16(tmp_path / "LUNA16"), tmp_path / "ctbench" / "luna16"

    code, _, err = run_cli(monkeypatch, capsys, "datasets", "prepare", "luna16", "--source", str(src),
                           "--out", str(data))
    assert code == 0, err
    for model in (SEEING, BLIND):
        code, _, err = run_cli(monkeypatch, capsys, "run", "--model", model, "--task", "nodule-localisation",
                               "--dataset", str(data), "--weights", "random", "--trials", "1", "--device", "cpu",
                               "--bootstrap", "100", "--out", str(tmp_path / "results" / model))
        assert code == 0, err
    code, out, err = run_cli(monkeypatch, capsys, "leaderboard", "build", "--results", str(tmp_path / "results"),
                             "--format", "html,json", "--out", str(tmp_path / "board"), "--bootstrap", "200")
    assert code == 0, err
    assert "1 task table(s) from 2 result file(s)" in out

    (table,) = json.loads(next((tmp_path / "board").rglob("*.json")).read_text())["tables"]
    assert table["category"] == "localisation" and table["task"] == "nodule-localisation"
    assert table["tested"] and table["direction"] == "minimize" and table["n_cases"] == SCANS_PER_FOLD[9]
    rows = [(r["label"], r["rank"], r["tie_size"]) for r in table["rows"]]
    assert rows == [(f"{SEEING} (random)", 1, 1), (f"{BLIND} (random)", 2, 1)]
    (c,) = table["comparisons"]
    assert not c["covers_zero"] and c["verdict"] != 0
    seeing, blind = (r["main"]["value"] for r in table["rows"])
    assert seeing < blind  # centre error in mm: lower is better
    html = "\n".join(p.read_text() for p in (tmp_path / "board").rglob("*.html"))
    assert "nodule-localisation" in html and "ranks follow point values" not in html

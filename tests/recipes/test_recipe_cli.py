"""`ctbench datasets` sub-app: listing recipes with their tasks, and `prepare` from the CLI."""

from __future__ import annotations

import importlib
import json

from recipe_fakes import volume, write_csv, write_nifti
from rich.console import Console
from typer.testing import CliRunner

from ctbench import datasets_cli
from ctbench.datasets import open_dataset
from ctbench.datasets_cli import app
from ctbench.errors import CTBenchError
from ctbench.recipes import get_recipe, recipe_names

EXPECTED_TASKS = {
    "ct-rate": ["abnormality", "label-retrieval", "report-generation"],
    "nsclc-radiomics": ["survival"],
    "luna16": ["nodule-localisation"],
    "totalsegmentator": ["segmentation"],
    "ictcf": ["covid", "severity", "lab-crp", "lab-ldh", "lab-lymphocyte-count", "lab-d-dimer"],
    "osic": ["fvc"],
    "rsna-pe": ["pe"],
    "mycobacterial": ["ntm-vs-tb"],
}


def test_every_recipe_documents_source_licence_and_tasks():
    assert recipe_names() == sorted(EXPECTED_TASKS)
    for name in recipe_names():
        r = get_recipe(name)
        doc = importlib.import_module(r.build.__module__).__doc__
        assert "Source:" in doc and "Licence:" in doc and "Expected layout" in doc, name
        assert r.source and r.licence and r.split_rule and r.layout
        assert [t.name for t in r.tasks] == EXPECTED_TASKS[name]


def test_datasets_lists_builtins_and_recipes_with_tasks(monkeypatch):
    out = CliRunner().invoke(app, ["--json"])
    assert out.exit_code == 0
    rows = {r["name"]: r for r in json.loads(out.output)}
    assert rows["phantom"]["kind"] == "built-in" and len(rows["phantom"]["tasks"]) == 7
    for name, tasks in EXPECTED_TASKS.items():
        assert rows[name]["kind"] == "recipe"
        assert [t["name"] for t in rows[name]["tasks"]] == tasks
    assert rows["luna16"]["tasks"][0] == {"name": "nodule-localisation", "category": "localisation",
                                          "main_metric": "centre_error_mm",
                                          "targets": ["nodule_x", "nodule_y", "nodule_z"]}
    monkeypatch.setattr(datasets_cli, "console", Console(width=200))
    table = CliRunner().invoke(app, ["list"])
    assert table.exit_code == 0 and "totalsegmentator" in table.output
    assert "nodule-localisation (localisation)" in table.output


def test_prepare_command_writes_a_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets_cli, "console", Console(width=200))
    rows = []
    for p in range(9):
        write_nifti(tmp_path / "src" / f"{p}.nii.gz", volume(p))
        rows.append({"case_id": f"c{p}", "patient_id": f"p{p}", "image": f"{p}.nii.gz",
                     "diagnosis": "NTM" if p % 2 else "TB"})
    rows.append({"case_id": "c9", "patient_id": "p9", "image": "gone.nii.gz", "diagnosis": "TB"})
    write_csv(tmp_path / "src" / "labels.csv", rows)
    out = CliRunner().invoke(app, ["prepare", "Mycobacterial", "--source", str(tmp_path / "src"),
                                   "--out", str(tmp_path / "ds")])
    assert out.exit_code == 0, out.output
    assert "mycobacterial: 9 cases" in out.output and "1 listed case(s) left out" in out.output
    assert "--task ntm-vs-tb" in out.output
    assert len(open_dataset(str(tmp_path / "ds")).manifest) == 9
    provenance = json.loads((tmp_path / "ds" / "prepare.json").read_text())
    assert provenance["skipped"] == 1 and provenance["cases"] == 9
    assert provenance["split_hash"] == open_dataset(str(tmp_path / "ds")).split_hash()
    bad = CliRunner().invoke(app, ["prepare", "luna-16", "--source", str(tmp_path / "src")])
    assert isinstance(bad.exception, CTBenchError) and "Did you mean 'luna16'" in str(bad.exception)
    other = CliRunner().invoke(app, ["prepare", "ct-rate", "--source", str(tmp_path / "src"),
                                     "--out", str(tmp_path / "ds")])
    assert "already holds dataset 'mycobacterial'" in str(other.exception)

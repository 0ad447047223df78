"""One result model in the core: what the runner writes is what ``ResultFile`` accepts, its JSON
Schema is committed and current, and the core never imports ``ctbench.leaderboards``."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ctbench.card import InputSpec, ModelCard, WeightsSpec
from ctbench.result_schema import (PREDICTIONS_FILE, CardInfo, CardInput, CardWeights, ConfigInfo, ResultFile,
                                   json_schema, read_result)
from ctbench.results import ResultSchemaError, validate_result, write_result
from ctbench.results_cli import schema_text
from ctbench.run_config import RunConfig
from tests.cli_helpers import run_cli
from tests.test_leaderboard_fixtures import known_case, write_result_file

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "docs" / "result.schema.json"


@pytest.fixture
def fixture_result(tmp_path) -> Path:
    y, patients, scores = known_case(n_patients=20)
    return write_result_file(tmp_path / "results", "best", y, scores["best"], patients)


def _body(path: Path) -> dict:
    """A written result without the fields ``write_result`` adds itself."""
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if k not in ("schema_version", "predictions_file")}


# the JSON Schema ---------------------------------------------------------------------------------


def test_committed_json_schema_is_current():
    assert SCHEMA_FILE.is_file(), "run `ctbench results schema --out docs/result.schema.json`"
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), (
        "docs/result.schema.json is stale: regenerate it with `ctbench results schema --out docs/result.schema.json`")
    assert SCHEMA_FILE.read_text() == schema_text()
    schema = json_schema()
    assert schema["properties"]["schema_version"]["const"] == 1
    assert set(schema["required"]) >= {"schema_version", "ctbench_version", "model", "task", "split", "metrics"}


def test_results_schema_command_prints_or_writes_it(monkeypatch, capsys, tmp_path):
    code, out, _ = run_cli(monkeypatch, capsys, "results", "schema")
    assert code == 0 and json.loads(out) == json_schema()
    target = tmp_path / "schema.json"
    code, _, err = run_cli(monkeypatch, capsys, "results", "schema", "--out", str(target))
    assert code == 0 and json.loads(target.read_text()) == json_schema() and str(target) in err
    code, _, err = run_cli(monkeypatch, capsys, "results", "schema", "--out", str(tmp_path / "no" / "s.json"))
    assert code != 0 and "does not exist" in err


def test_results_validate_command(monkeypatch, capsys, fixture_result):
    code, out, _ = run_cli(monkeypatch, capsys, "results", "validate", str(fixture_result.parents[5]))
    assert code == 0 and "1 valid result file(s)" in out
    fixture_result.write_text(json.dumps({**json.loads(fixture_result.read_text()), "metrics": {}}))
    code, _, err = run_cli(monkeypatch, capsys, "results", "validate", str(fixture_result))
    assert code != 0 and "metrics" in err and str(fixture_result) in err.replace("\n", "")


def _check_against_json_schema(document: dict) -> None:
    """Validate with ``jsonschema`` when it is installed (it is not a ctbench dependency)."""
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.validate(document, json_schema())


# a real result -----------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "retrieval"])
def test_a_real_run_writes_what_the_schema_accepts(small_phantom, tmp_path, task):
    from ctbench.runner import run

    cfg = RunConfig(model="test-histogram", task=task, dataset=str(small_phantom), weights="random", trials=2,
                    device="cpu", out=str(tmp_path / "r"), n_boot=20)
    path, _ = run(cfg)
    on_disk = json.loads(path.read_text())
    assert list(on_disk)[0] == "schema_version" and list(on_disk)[-1] == "predictions_file"
    r = read_result(path)
    assert r.migrated_from_schema is None and (r.probe is None) == (task == "retrieval")
    assert validate_result(_body(path)) == on_disk  # strict: no undeclared field; written = model dump
    assert r.config.model_dump(exclude_unset=True).keys() == {f.name for f in dataclasses.fields(RunConfig)}
    _check_against_json_schema(on_disk)


# write_result validates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda d: d["probe"].update(trails=3), "probe: Value error, undeclared field(s) 'trails'"),
        (lambda d: d.update(wrnings=[]), "(top level)"),
        (lambda d: d["timings"].update(tune_s="fast"), "timings.tune_s"),
        (lambda d: d["metrics"]["auroc"].update(value=[1]), "metrics.auroc.value"),
        (lambda d: d["task"].pop("direction"), "task.direction"),
        (lambda d: d.update(failures=[{"case": "c1"}]), "failures.0.case_id"),
    ],
)
def test_write_result_refuses_what_the_schema_does_not_accept(fixture_result, tmp_path, change, field):
    body = _body(fixture_result)
    change(body)
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(ResultSchemaError) as info:
        write_result(folder, body, pd.DataFrame({"case_id": ["a"], "patient_id": ["p"]}))
    assert field in str(info.value) and str(folder) in str(info.value)
    assert list(folder.iterdir()) == []  # nothing written, not even the predictions


def test_write_result_writes_plain_strict_json(fixture_result, tmp_path):
    body = _body(fixture_result)
    body["metrics"]["auroc"].update(value=np.float32(0.5), ci_low=float("nan"), n_boot=np.int64(7))
    body["split"]["counts"] = {"test": np.int64(3)}
    body["probe"]["convergence_warnings"] = {"tuning": 1, "per_trial": {4: 1}, "refit": 0}
    body["created"] = datetime(2026, 5, 1, 12, 0)  # naive: read as UTC
    path = write_result(tmp_path / "out", body, pd.DataFrame({"case_id": ["a"], "patient_id": ["p"]}))
    text = path.read_text()
    assert "NaN" not in text
    data = json.loads(text)
    assert data["metrics"]["auroc"] == {**data["metrics"]["auroc"], "value": 0.5, "ci_low": None, "n_boot": 7}
    assert data["split"]["counts"] == {"test": 3} and data["probe"]["convergence_warnings"]["per_trial"] == {"4": 1}
    assert data["created"] == "2026-05-01T12:00:00+00:00"
    assert data["predictions_file"] == PREDICTIONS_FILE and (path.parent / PREDICTIONS_FILE).is_file()
    assert read_result(path).created == datetime(2026, 5, 1, 12, tzinfo=timezone.utc)


def test_reading_stays_forward_compatible(fixture_result):
    """A newer runner's extra field is kept when read (only the writer refuses undeclared fields)."""
    data = json.loads(fixture_result.read_text())
    data["probe"]["new_knob"] = 1
    data["later"] = {"x": 1}
    fixture_result.write_text(json.dumps(data))
    r = read_result(fixture_result)
    assert r.probe.model_extra == {"new_knob": 1} and r.model_extra == {"later": {"x": 1}}


def test_the_model_declares_the_card_and_the_run_config():
    """The card and RunConfig written into results are described field by field."""
    assert set(ModelCard.model_fields) <= set(CardInfo.model_fields)
    assert set(InputSpec.model_fields) <= set(CardInput.model_fields)
    assert set(WeightsSpec.model_fields) <= set(CardWeights.model_fields)
    assert {f.name for f in dataclasses.fields(RunConfig)} <= set(ConfigInfo.model_fields)
    assert ResultFile.model_config["extra"] == "allow"


# the core does not depend on the leaderboards -----------------------------------------------------


def test_core_modules_do_not_import_leaderboards(fixture_result):
    code = ("import sys, ctbench.runner, ctbench.bench, ctbench.load, ctbench.results, ctbench.result_schema\n"
            f"frame = ctbench.load.load_results({str(fixture_result.parents[5])!r})\n"
            "assert len(frame) == 4, frame\n"
            "print(sorted(m for m in sys.modules if m.startswith('ctbench.leaderboards')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_only_the_cli_composition_root_names_leaderboards():
    """Statically: no core module imports ``ctbench.leaderboards`` except ``cli.py``, which adds
    the ``ctbench leaderboard`` sub-command."""
    offenders = []
    for path in sorted((REPO / "harness").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any("leaderboards" in n for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert [o for o in offenders if not o.startswith("harness/cli.py:")] == []

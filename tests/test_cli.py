"""The command line: listings with --json, and user errors as one message without traceback."""

import json

import pytest

from tests.cli_helpers import run_cli as _cli


def test_models_json_lists_cards(monkeypatch, capsys):
    code, out, _ = _cli(monkeypatch, capsys, "models", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["voxelfm"]["embedding_dim"] == 864
    assert rows["voxelfm"]["licence"] == "Apache-2.0"
    assert rows["test-histogram"]["embedding_dim"] == 24


def test_tasks_and_datasets_json(monkeypatch, capsys):
    code, out, _ = _cli(monkeypatch, capsys, "tasks", "--json")
    assert code == 0 and "classification" in {r["name"] for r in json.loads(out)}
    code, out, _ = _cli(monkeypatch, capsys, "datasets", "--json")
    assert code == 0 and "phantom" in {r["name"] for r in json.loads(out)}


@pytest.mark.parametrize(
    "args, expected",
    [
        (["run", "--model", "voxelfn", "--task", "classification"], "Did you mean 'voxelfm'"),
        (["run", "--model", "voxelfm", "--task", "x", "--dataset", "phantomm"], "Did you mean 'phantom'"),
        (["run", "--model", "voxelfm", "--task", "x", "--weights", "/no/such.pth", "--dataset", "."], "not a ctbench dataset"),
    ],
)
def test_user_errors_are_one_line_without_traceback(monkeypatch, capsys, args, expected):
    code, out, err = _cli(monkeypatch, capsys, *args)
    assert code == 2
    assert expected in " ".join(err.split())
    assert "Traceback" not in err + out


def test_run_prints_metrics_with_ci(monkeypatch, capsys, small_phantom, tmp_path):
    code, out, _ = _cli(
        monkeypatch, capsys, "run", "--model", "test-histogram", "--task", "classification",
        "--dataset", str(small_phantom), "--weights", "random", "--trials", "3", "--bootstrap", "50",
        "--out", str(tmp_path / "res"),
    )
    assert code == 0
    assert "auroc *" in out and "95% CI" in out and "random-init control" in out
    assert (tmp_path / "res" / "result.json").is_file()


def test_datasets_phantom_writes_a_sized_phantom(monkeypatch, capsys, tmp_path):
    code, out, _ = _cli(monkeypatch, capsys, "datasets", "phantom", "--out", str(tmp_path / "p"),
                        "--patients", "5", "--seed", "3")
    assert code == 0 and "phantom-n5-seed3: 5 patients, 6 scans" in " ".join(out.split())
    manifest = (tmp_path / "p" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 1 + 6 and "seed=3" in (tmp_path / "p" / "dataset.json").read_text()
    code, _, err = _cli(monkeypatch, capsys, "datasets", "phantom", "--out", str(tmp_path / "p"))
    assert code == 2 and "exists and is not empty" in " ".join(err.split())

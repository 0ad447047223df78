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


# ------------------------------------------------------------- usage errors, exit codes, --debug

# Usage errors, failed bench cells and failed checks: through the console script in
# tests/fuzz/test_fuzz_cli.py.


def test_an_internal_error_is_one_line_unless_debug(monkeypatch, capsys):
    from ctbench.registry import MODELS

    def boom() -> list[str]:
        raise ValueError("bad\nthing")

    monkeypatch.setattr(MODELS, "names", boom)
    code, out, err = _cli(monkeypatch, capsys, "models")
    assert code == 1 and "Traceback" not in out + err
    assert err.strip() == ("internal error: ValueError: bad thing (rerun with --debug or CTBENCH_DEBUG=1 for the "
                           "traceback; please report it)")
    code, _, err = _cli(monkeypatch, capsys, "--debug", "models")
    assert code == 1 and "Traceback" in err and "internal error: ValueError: bad thing" in err
    code, _, err = _cli(monkeypatch, capsys, "models")  # --debug lasts one command line
    assert code == 1 and "Traceback" not in err


@pytest.mark.parametrize("how", ["flag-first", "flag-last", "env"])
def test_debug_shows_the_traceback_of_a_user_error(monkeypatch, capsys, how):
    args = ["run", "--model", "voxelfn", "--task", "classification"]
    if how == "env":
        monkeypatch.setenv("CTBENCH_DEBUG", "1")
    args = ["--debug", *args] if how == "flag-first" else [*args, "--debug"] if how == "flag-last" else args
    code, _, err = _cli(monkeypatch, capsys, *args)
    assert code == 2 and "Traceback" in err and "Did you mean 'voxelfm'" in err


def test_unwritable_out_fails_before_any_work(monkeypatch, capsys, small_phantom, tmp_path):
    import ctbench.runner as runner

    def no_encoder(*a, **k):
        raise AssertionError("the encoder was built before the output folder was checked")

    monkeypatch.setattr(runner, "build_encoder", no_encoder)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    base = ["run", "--model", "test-histogram", "--task", "classification", "--dataset", str(small_phantom),
            "--weights", "random"]
    code, _, err = _cli(monkeypatch, capsys, *base, "--out", str(blocker / "out"))
    flat = " ".join(err.split())
    assert code == 2 and f"result folder (--out) {blocker / 'out'}" in flat and "pass --out" in flat
    monkeypatch.setenv("CTBENCH_HOME", str(blocker / "home"))
    code, _, err = _cli(monkeypatch, capsys, *base, "--out", str(tmp_path / "res"))
    flat = " ".join(err.split())
    assert code == 2 and f"feature cache {blocker / 'home' / 'features'}" in flat and "$CTBENCH_HOME" in flat
    code, _, err = _cli(monkeypatch, capsys, "bench", "--models", "test-histogram", "--tasks", "classification",
                        "--dataset", str(small_phantom), "--weights", "random")
    assert code == 2 and "results folder" in err and not (tmp_path / "res").exists()


def test_a_refused_file_operation_is_a_user_error(monkeypatch, capsys):
    from ctbench.registry import MODELS

    def refused() -> list[str]:
        raise PermissionError(13, "Permission denied", "/data/ctbench/x.lock")

    monkeypatch.setattr(MODELS, "names", refused)
    code, out, err = _cli(monkeypatch, capsys, "models")
    flat = " ".join(err.split())
    assert code == 2 and "Traceback" not in out + err
    assert flat.startswith("error: Permission denied: /data/ctbench/x.lock; check that this path")


def test_ctrl_c_says_how_to_resume(monkeypatch, capsys):
    from ctbench.registry import MODELS

    def interrupted() -> list[str]:
        raise KeyboardInterrupt

    monkeypatch.setattr(MODELS, "names", interrupted)
    code, _, err = _cli(monkeypatch, capsys, "models")
    assert code == 130 and "run the same command again to resume" in err


def test_extract_with_failed_cases_exits_1(monkeypatch, capsys, small_phantom):
    from types import SimpleNamespace

    import ctbench.extract

    def partly(*args, **kwargs):
        return SimpleNamespace(extracted=3, cached=0, failures={"p001-s0": "unreadable image"}, seconds=0.1)

    monkeypatch.setattr(ctbench.extract, "extract", partly)
    code, out, _ = _cli(monkeypatch, capsys, "extract", "--model", "test-histogram", "--weights", "random",
                        "--dataset", str(small_phantom), "--device", "cpu")
    assert code == 1 and "1 failed" in out and "p001-s0: unreadable image" in out


def test_paths_and_commands_are_printed_whole_when_piped(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("COLUMNS", "80")
    folder = tmp_path / ("a-long-folder-name-" * 5) / "phantom"
    code, out, _ = _cli(monkeypatch, capsys, "datasets", "phantom", "--out", str(folder), "--patients", "3")
    assert code == 0
    assert f"next: ctbench run --model MODEL --task classification --dataset {folder}" in out.splitlines()


def test_a_piped_bench_logs_cells_and_lists_whole_result_paths(monkeypatch, capsys, small_phantom, tmp_path):
    from pathlib import Path

    import ctbench.runner

    def fake_run(cfg, progress=None):
        for done in range(3):
            progress("extract", done, 2)
        return Path(cfg.out) / "result.json", {"task": {"main_metric": "auroc"}, "metrics": {"auroc": {"value": 0.5}}}

    monkeypatch.setattr(ctbench.runner, "run", fake_run)
    monkeypatch.setenv("COLUMNS", "80")
    out_root = tmp_path / ("results-under-a-long-folder-name-" * 3)
    code, out, err = _cli(monkeypatch, capsys, "bench", "--models", "test-histogram", "--tasks", "classification",
                          "--dataset", str(small_phantom), "--weights", "random", "--out", str(out_root))
    assert code == 0
    assert "[ctbench] cell 1/1: test-histogram on classification" in err.splitlines()
    assert "[ctbench] cell 1/1 extract 0/2 (0:00:00)" in err.splitlines()
    written = [line for line in out.splitlines() if line.startswith("test-histogram")]
    assert len(written) == 1 and written[0].split()[-1].startswith(str(out_root)), out
    assert written[0].endswith("/seed0/result.json")

"""``ctbench bench``: the grid, skipping existing results, --overwrite, per-cell failures."""

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from ctbench.bench import BenchEvent, bench, bench_command, parse_list
from ctbench.datasets import DatasetCard, TaskSpec, open_dataset, write_card
from ctbench.errors import CTBenchError
from ctbench.provenance import PROTOCOL_VERSION
from ctbench.results import result_dir
from tests.test_leaderboard_fixtures import known_case, write_result_file


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    """A dataset folder with two tasks (the grid never reads images: the runner is faked)."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    card = DatasetCard(name="tiny", version="1", licence="CC0-1.0", tasks=(
        TaskSpec(name="nodule", category="classification", targets=("nodule",), main_metric="auroc"),
        TaskSpec(name="mass", category="classification", targets=("mass",), main_metric="auroc"),
    ))
    write_card(card, folder)
    (folder / "manifest.csv").write_text("case_id,patient_id,image,split,nodule,mass\nc1,p1,a.nii.gz,test,0,1\n")
    return folder


class FakeRunner:
    """Stands in for ``ctbench.runner.run``: writes a valid result where the config says."""

    def __init__(self, fail_for: str | None = None) -> None:
        self.configs = []
        self.fail_for = fail_for

    def __call__(self, cfg, progress=None):
        self.configs.append(cfg)
        if cfg.model == self.fail_for:
            raise CTBenchError(f"model {cfg.model!r} broke on case 'c1'")
        progress("tune", 1, 2)
        y, patients, scores = known_case(n_patients=20)
        path = write_result_file(Path(cfg.out).parent, cfg.model, y, scores["best"], patients, task=cfg.task,
                                 dataset="tiny", random_init=True, folder=Path(cfg.out),
                                 train_fraction=cfg.train_fraction, trials=cfg.trials, protocol=PROTOCOL_VERSION,
                                 split_hash=open_dataset(cfg.dataset).split_hash())  # as the runner
        return path, json.loads(path.read_text())


def test_grid_runs_every_cell_where_the_runner_would_write(tiny_dataset, tmp_path):
    runner, events = FakeRunner(), []
    report = bench(["m1", "m2"], "all", str(tiny_dataset), weights="random", out=tmp_path / "res",
                   runner=runner, progress=events.append)
    assert [(c.model, c.task, c.status) for c in report.cells] == [
        ("m1", "nodule", "done"), ("m1", "mass", "done"), ("m2", "nodule", "done"), ("m2", "mass", "done")]
    expected = result_dir(tmp_path / "res", "tiny", "nodule", "m1", "random", 0)
    assert runner.configs[0].out == str(expected) and report.cells[0].path == expected / "result.json"
    assert report.cells[0].value == 1.0 and report.cells[0].main_metric == "auroc"
    assert {c.dataset for c in runner.configs} == {str(tiny_dataset)}
    kinds = [(e.kind, e.index) for e in events]
    assert kinds[:3] == [("start", 0), ("stage", 0), ("end", 0)] and len(events) == 12
    assert events[1] == BenchEvent("stage", 0, 4, "m1", "nodule", "tune", 1, 2)


def test_existing_results_are_skipped_unless_overwrite(tiny_dataset, tmp_path):
    out = tmp_path / "res"
    bench(["m1"], ["nodule", "mass"], str(tiny_dataset), weights="random", out=out, runner=FakeRunner())
    again = FakeRunner()
    report = bench(["m1"], ["nodule", "mass"], str(tiny_dataset), weights="random", out=out, runner=again)
    assert [c.status for c in report.cells] == ["skipped", "skipped"] and again.configs == []
    forced = FakeRunner()
    report = bench(["m1"], ["nodule"], str(tiny_dataset), weights="random", out=out, overwrite=True, runner=forced)
    assert [c.status for c in report.cells] == ["done"] and len(forced.configs) == 1


def test_train_fraction_cells_have_their_own_results(tiny_dataset, tmp_path):
    out = tmp_path / "res"
    bench(["m1"], ["nodule"], str(tiny_dataset), weights="random", out=out, runner=FakeRunner())
    runner = FakeRunner()
    report = bench(["m1"], ["nodule"], str(tiny_dataset), weights="random", out=out, train_fraction=0.5, runner=runner)
    assert report.cells[0].status == "done" and runner.configs[0].train_fraction == 0.5
    assert report.cells[0].path == result_dir(out, "tiny", "nodule", "m1", "random", 0, 0.5) / "result.json"
    assert report.cells[0].path.parent.name == "seed0-frac0.5"
    again = bench(["m1"], ["nodule"], str(tiny_dataset), weights="random", out=out, train_fraction=0.5, runner=FakeRunner())
    assert again.cells[0].status == "skipped"


def test_a_corrupt_existing_result_is_run_again(tiny_dataset, tmp_path):
    out = tmp_path / "res"
    bench(["m1"], ["nodule"], str(tiny_dataset), weights="random", out=out, runner=FakeRunner())
    path = result_dir(out, "tiny", "nodule", "m1", "random", 0) / "result.json"
    path.write_text("{truncated")
    report = bench(["m1"], ["nodule"], str(tiny_dataset), weights="random", out=out, runner=FakeRunner())
    assert report.cells[0].status == "done" and json.loads(path.read_text())["schema_version"] == 1


def test_failing_cells_are_recorded_and_the_grid_goes_on(tiny_dataset, tmp_path):
    report = bench(["bad", "m1"], ["nodule"], str(tiny_dataset), weights="random", out=tmp_path,
                   runner=FakeRunner(fail_for="bad"))
    assert [c.status for c in report.cells] == ["failed", "done"]
    assert "broke on case 'c1'" in report.failed[0].error and report.count("done") == 1


def test_missing_weights_fail_that_models_cells_only(tiny_dataset, tmp_path):
    # the test encoder's card names no hub file, so --weights auto cannot be resolved
    runner = FakeRunner()
    report = bench(["test-histogram"], "all", str(tiny_dataset), weights="auto", out=tmp_path, runner=runner)
    assert [c.status for c in report.cells] == ["failed", "failed"] and runner.configs == []
    assert "no weights found for 'test-histogram'" in report.cells[1].error


def test_unknown_task_stops_before_any_cell(tiny_dataset, tmp_path):
    runner = FakeRunner()
    with pytest.raises(CTBenchError, match="Did you mean nodule"):
        bench(["m1"], ["nodule", "nodle"], str(tiny_dataset), weights="random", out=tmp_path, runner=runner)
    assert runner.configs == []


def test_parse_list():
    assert parse_list(" a, b,,a ", "models") == ["a", "b"]
    with pytest.raises(CTBenchError, match="--models is empty"):
        parse_list(" , ", "models")


def test_bench_command_prints_the_grid_and_exits_nonzero_on_failure(tiny_dataset, tmp_path, monkeypatch):
    import ctbench.runner

    monkeypatch.setattr(ctbench.runner, "run", FakeRunner(fail_for="bad"))
    app = typer.Typer()
    app.command("bench")(bench_command)
    app.command("noop")(lambda: None)  # keep "bench" a sub-command, as in ctbench's app
    args = ["bench", "--models", "m1,bad", "--tasks", "nodule", "--dataset", str(tiny_dataset),
            "--weights", "random", "--out", str(tmp_path / "res")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1
    assert "1 run, 0 skipped, 1 failed" in res.output and "broke on case" in " ".join(res.output.split())
    monkeypatch.setattr(ctbench.runner, "run", FakeRunner())
    res = CliRunner().invoke(app, args[:2] + ["m1"] + args[3:])
    assert res.exit_code == 0 and "0 run, 1 skipped, 0 failed" in res.output
    assert np.isfinite(json.loads(next((tmp_path / "res").rglob("result.json")).read_text())["metrics"]["auroc"]["value"])


@pytest.fixture
def report_env(monkeypatch):
    """No report-generation option leaks in from the developer's shell."""
    from ctbench.tasks import report_generation as rg

    for name in (rg.ENV_LLM, rg.ENV_BEAM, rg.ENV_DEVICE):
        monkeypatch.delenv(name, raising=False)
    return rg


@pytest.fixture
def report_dataset(tmp_path) -> Path:
    """A dataset folder with a classification and a report-generation task (runner faked)."""
    folder = tmp_path / "reports"
    folder.mkdir()
    card = DatasetCard(name="tiny", version="1", licence="CC0-1.0", tasks=(
        TaskSpec(name="nodule", category="classification", targets=("nodule",), main_metric="auroc"),
        TaskSpec(name="report-generation", category="report-generation", targets=("report",),
                 main_metric="finding_f1"),
    ))
    write_card(card, folder)
    (folder / "manifest.csv").write_text("case_id,patient_id,image,split,nodule,report,lung_nodule\n"
                                         "c1,p1,a.nii.gz,test,1,Nodule.,1\n")
    return folder


def test_report_options_from_the_environment_get_the_runners_opts_folder(report_dataset, report_env, monkeypatch,
                                                                           tmp_path):
    from ctbench.datasets import open_dataset
    from ctbench.task_options import options_tag

    out, tasks = tmp_path / "res", ["nodule", "report-generation"]
    nodule = result_dir(out, "tiny", "nodule", "m1", "random", 0) / "result.json"
    default = result_dir(out, "tiny", "report-generation", "m1", "random", 0) / "result.json"
    first = bench(["m1"], tasks, str(report_dataset), weights="random", out=out, runner=FakeRunner())
    assert [c.path for c in first.cells] == [nodule, default]  # default options: today's folders
    before = default.read_bytes()

    monkeypatch.setenv(report_env.ENV_BEAM, "2")
    ds = open_dataset(str(report_dataset))
    tag = options_tag(report_env.ReportGenerationTask(ds.card.task("report-generation"), ds))
    assert tag.startswith("opts") and len(tag) == len("opts") + 8
    runner = FakeRunner()
    report = bench(["m1"], tasks, str(report_dataset), weights="random", out=out, runner=runner)
    assert [c.status for c in report.cells] == ["skipped", "done"]  # not skipped against the default result
    assert report.cells[0].path == nodule  # classification takes no option: unchanged
    assert report.cells[1].path == default.parent.with_name(f"seed0-{tag}") / "result.json" != default
    assert [c.task for c in runner.configs] == ["report-generation"]
    assert runner.configs[0].out == str(default.parent.with_name(f"seed0-{tag}"))
    assert default.read_bytes() == before  # the default-options result is not overwritten
    again = bench(["m1"], tasks, str(report_dataset), weights="random", out=out, runner=FakeRunner())
    assert [c.status for c in again.cells] == ["skipped", "skipped"]

    monkeypatch.setenv(report_env.ENV_BEAM, "zero")  # a bad option fails that task's cells only
    bad = bench(["m1"], tasks, str(report_dataset), weights="random", out=out, runner=FakeRunner())
    assert [c.status for c in bad.cells] == ["skipped", "failed"] and "CTBENCH_REPORT_BEAM" in bad.cells[1].error


def test_bench_looks_where_the_real_runner_writes_non_default_options(small_phantom, report_env, monkeypatch,
                                                                       ctbench_home):
    import torch

    from ctbench.runner import RunConfig, run

    def tiny(self, trial, seed):
        return {"probe": "perceiver-decoder", "lr": trial.suggest_float("lr", 3e-3, 3e-3),
                "width": 64, "depth": 1, "epochs": trial.suggest_int("epochs", 3, 3)}

    monkeypatch.setattr(report_env.ReportGenerationTask, "suggest", tiny)
    monkeypatch.setenv(report_env.ENV_BEAM, "2")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        written, result = run(RunConfig(model="test-histogram", task="report-generation", dataset=str(small_phantom),
                                        weights="random", trials=1, device="cpu", n_boot=10))
    finally:
        torch.set_num_threads(threads)
    tag = result["task"]["options_tag"]
    assert tag.startswith("opts") and written.parent.name == f"seed0-{tag}"
    runner = FakeRunner()
    report = bench(["test-histogram"], ["report-generation", "classification"], str(small_phantom),
                   weights="random", trials=1, runner=runner)  # default root: $CTBENCH_HOME/results, as the runner
    assert [c.status for c in report.cells] == ["skipped", "done"] and report.cells[0].path == written
    from ctbench.datasets import load_dataset_folder

    name = load_dataset_folder(small_phantom).card.name
    assert report.cells[1].path == result_dir(ctbench_home / "results", name, "classification",
                                              "test-histogram", "random", 0) / "result.json"

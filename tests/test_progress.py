"""Progress: every stage of a run reports from its start, extraction per case, refit per seed;
piped output gets plain log lines, and paths are never wrapped."""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ctbench.datasets import open_dataset
from ctbench.engine import ReportedSeeds
from ctbench.extract import extract
from ctbench.progress import StageLog
from ctbench.runner import RunConfig, run
from tests.cli_helpers import run_cli
from tests.fakes import HistogramEncoder

REPO = Path(__file__).resolve().parents[1]
LAUNCH = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from ctbench.registry import MODELS
    from tests.fakes import HistogramEncoder
    MODELS.register("test-histogram")(HistogramEncoder)
    from ctbench.cli import main
    sys.argv = ["ctbench", *sys.argv[1:]]
    main()
    """
)
ORDER = ["model", "read", "extract", "features", "tune", "refit", "bootstrap", "write"]


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One $CTBENCH_HOME for this module's full runs: the second finds the features cached."""
    return tmp_path_factory.mktemp("progress-home")


def _by_stage(events: list[tuple[str, int, int]]) -> dict[str, list[tuple[int, int]]]:
    stages: dict[str, list[tuple[int, int]]] = {}
    for stage, done, total in events:
        stages.setdefault(stage, []).append((done, total))
    return stages


def test_a_run_reports_every_stage_from_its_start(small_phantom: Path, tmp_path: Path, shared_home: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTBENCH_HOME", str(shared_home))
    events: list[tuple[str, int, int]] = []
    cfg = RunConfig(model="test-histogram", task="classification", dataset=str(small_phantom), weights="random",
                    trials=3, n_boot=50, device="cpu", out=str(tmp_path / "res"))
    run(cfg, progress=lambda stage, done, total: events.append((stage, done, total)))
    stages = _by_stage(events)
    first_seen = list(dict.fromkeys(stage for stage, _, _ in events))
    assert first_seen == ORDER  # stages start in this order (read and extract then interleave)
    for stage, reports in stages.items():
        total = reports[0][1]
        assert reports[0][0] == 0, f"{stage} did not report its start: {reports[:3]}"
        assert reports[-1] == (total, total), f"{stage} did not report its end: {reports[-3:]}"
        assert all(t == total for _, t in reports)
    cases = len(open_dataset(str(small_phantom)).manifest)
    for stage in ("read", "extract", "features"):  # one event per case, plus the start
        assert [d for d, _ in stages[stage]] == list(range(cases + 1)), stage
    assert [d for d, _ in stages["tune"]] == [0, 1, 2, 3]
    seeds = stages["refit"][0][1]
    assert seeds in (1, 3) and [d for d, _ in stages["refit"]] == list(range(seeds + 1))  # per seed
    assert stages["write"] == [(0, 1), (1, 1)]


class BatchedHistogram(HistogramEncoder):
    """The histogram encoder with a batch entry point: extraction fills batches of cases."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[int] = []

    def encode_batch(self, volumes: list) -> list:
        self.batches.append(len(volumes))
        return [self.encode(v) for v in volumes]


def test_extraction_ticks_per_case_inside_a_batch(small_phantom: Path) -> None:
    ds = open_dataset(str(small_phantom))
    cases = ds.manifest.head(6)
    enc = BatchedHistogram()
    done: list[tuple[int, int]] = []
    read: list[tuple[int, int]] = []
    extract(enc, "test-histogram-batched", ds, cases, batch_size=4, workers=0, load=False,
            progress=lambda d, t: done.append((d, t)), on_read=lambda d, t: read.append((d, t)))
    assert enc.batches == [4, 2]
    assert done == [(i, 6) for i in range(7)] and read == [(i, 6) for i in range(7)]


def test_an_unbatched_encoder_is_encoded_and_cached_case_by_case(small_phantom: Path) -> None:
    ds = open_dataset(str(small_phantom))
    cases = ds.manifest.head(3)
    order: list[str] = []
    enc = HistogramEncoder()
    encode = enc.encode
    enc.encode = lambda volume: (order.append("encode"), encode(volume))[1]  # type: ignore[method-assign]
    extract(enc, "test-histogram", ds, cases, batch_size=4, workers=0, load=False,
            progress=lambda d, t: order.append(f"done {d}"), on_read=lambda d, t: order.append(f"read {d}"))
    assert order == ["read 0", "done 0", "read 1", "encode", "done 1", "read 2", "encode", "done 2",
                     "read 3", "encode", "done 3"]


def test_refit_seeds_report_as_the_task_iterates_them() -> None:
    calls: list[tuple[int, int]] = []
    seeds = ReportedSeeds([5, 6, 7], lambda d, t: calls.append((d, t)))
    seen = [(s, list(calls)) for s in seeds]  # what was reported when each seed's fit began
    assert seen == [(5, []), (6, [(1, 3)]), (7, [(1, 3), (2, 3)])]
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert list(seeds) == [5, 6, 7] and calls[-1] == (3, 3) and len(calls) == 3  # again: nothing new
    assert seeds == [5, 6, 7] and len(seeds) == 3 and seeds[0] == 5 and np.asarray(seeds).tolist() == [5, 6, 7]
    for clone in (pickle.loads(pickle.dumps(seeds)), copy.deepcopy(seeds), copy.copy(seeds)):
        assert type(clone) is list and clone == [5, 6, 7]


def test_stage_log_lines_at_start_end_and_every_interval() -> None:
    lines: list[str] = []
    now = [0.0]
    log = StageLog(lines.append, interval=10, clock=lambda: now[0])
    for done in range(101):  # one unit per second
        now[0] = float(done)
        log("extract", done, 100)
    log("extract", 100, 100)  # a repeated end is not logged twice
    assert lines[0] == "[ctbench] extract 0/100 (0:00:00)"
    assert lines[1] == "[ctbench] extract 10/100 (0:00:10)"
    assert lines[-1] == "[ctbench] extract 100/100 (0:01:40)"
    assert len(lines) == 11
    log.reset(prefix="cell 2/3 ")
    log("tune", 0, 5)
    assert lines[-1] == "[ctbench] cell 2/3 tune 0/5 (0:00:00)"


def test_a_long_unit_repeats_the_running_stage_every_heartbeat() -> None:
    lines: list[str] = []
    now = [0.0]
    log = StageLog(lines.append, interval=10, clock=lambda: now[0], heartbeat=60)
    log("read", 0, 2)
    log("extract", 0, 2)
    log("read", 2, 2)  # read done; extract's batch is still encoding
    now[0] = 59.0
    log.beat()
    assert lines[-1] == "[ctbench] read 2/2 (0:00:00)"
    now[0] = 61.0
    log.beat()
    log.beat()
    assert lines[-2:] == ["[ctbench] read 2/2 (0:00:00)", "[ctbench] extract 0/2 (0:01:01)"]
    log("extract", 2, 2)
    now[0] = 200.0
    log.beat()  # nothing runs: nothing to repeat
    assert lines[-1] == "[ctbench] extract 2/2 (0:01:01)"


def test_a_piped_run_logs_plain_progress_and_prints_the_whole_result_path(
        small_phantom: Path, tmp_path: Path, shared_home: Path) -> None:
    out = tmp_path / ("a-folder-name-long-enough-that-the-result-path-is-wider-than-eighty-columns" * 2) / "res"
    env = {k: v for k, v in os.environ.items()
           if k not in ("CTBENCH_DEBUG", "PYTEST_XDIST_WORKER", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env.update({"CTBENCH_HOME": str(shared_home), "COLUMNS": "80", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    cmd = [sys.executable, "-c", LAUNCH.format(repo=str(REPO)), "run", "--model", "test-histogram",
           "--task", "classification", "--dataset", str(small_phantom), "--weights", "random", "--trials", "2",
           "--seed", "1", "--bootstrap", "20", "--device", "cpu", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = out / "result.json"
    assert result.is_file()
    assert any(line.endswith(f"result: {result}") for line in proc.stdout.splitlines()), proc.stdout
    logged = [line for line in proc.stderr.splitlines() if line.startswith("[ctbench] ")]
    for stage in ORDER:
        assert any(line.startswith(f"[ctbench] {stage} 0/") for line in logged), (stage, logged)
    assert "[ctbench] write 1/1" in "\n".join(logged)
    assert "━" not in proc.stderr  # no bar drawn into a log


def test_piped_listings_are_plain_and_whole(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_cli(monkeypatch, capsys, "models")
    assert code == 0
    lines = out.splitlines()
    assert "test-histogram: 0.0M parameters, embedding 24, tokens 1, supervision none" in lines
    assert "  weights: rmaguado/VoxelFM/vitb_3d/checkpoints/99999.pth" in lines
    assert "…" not in out and "┃" not in out
    code, out, _ = run_cli(monkeypatch, capsys, "tasks")
    assert code == 0
    assert any(line.startswith("classification: ") for line in out.splitlines())
    assert "┃" not in out

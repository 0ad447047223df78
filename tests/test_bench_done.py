"""``ctbench bench`` skips a cell only for a result of this very dataset and protocol: same
training fraction, split hash, dataset version, trial budget and protocol version (a result of
another folder with the same name, of another budget or of an older protocol is run again)."""

import json
from pathlib import Path

import pytest

from ctbench.bench import _already_done, bench
from ctbench.datasets import DatasetCard, TaskSpec, open_dataset, write_card
from ctbench.provenance import PROTOCOL_VERSION
from ctbench.results import result_dir
from tests.test_leaderboard_fixtures import OTHER_SPLIT, SPLIT, known_case, write_result_file

NODULE = TaskSpec(name="nodule", category="classification", targets=("nodule",), main_metric="auroc")


def _dataset(folder: Path, version: str = "1") -> Path:
    """A one-task dataset named ``tiny`` (the grid never reads images: the runner is faked)."""
    folder.mkdir(exist_ok=True)
    write_card(DatasetCard(name="tiny", version=version, licence="CC0-1.0", tasks=(NODULE,)), folder)
    (folder / "manifest.csv").write_text("case_id,patient_id,image,split,nodule\nc1,p1,a.nii.gz,test,0\n")
    return folder


def _write(out: Path, split_hash: str, folder: Path | None = None, trials: int | None = 20,
           protocol: str = PROTOCOL_VERSION) -> Path:
    """A result as the current runner writes it (default budget 20 trials, as ``bench``)."""
    y, patients, scores = known_case(n_patients=20)
    return write_result_file(out, "m1", y, scores["best"], patients, dataset="tiny", random_init=True,
                             split_hash=split_hash, folder=folder, trials=trials, protocol=protocol)


class Runner:
    """Stands in for ``ctbench.runner.run``: writes a result of the dataset's splits."""

    def __init__(self, split_hash: str) -> None:
        self.split_hash, self.configs = split_hash, []

    def __call__(self, cfg, progress=None):
        self.configs.append(cfg)
        path = _write(Path(cfg.out).parent, self.split_hash, folder=Path(cfg.out), trials=cfg.trials)
        return path, json.loads(path.read_text())


def test_a_result_of_another_dataset_with_the_same_name_is_run_again(tmp_path):
    tiny = _dataset(tmp_path / "tiny")
    split = open_dataset(str(tiny)).split_hash()
    out = tmp_path / "res"
    existing = _write(out, OTHER_SPLIT)  # e.g. from another folder whose card is also named "tiny"
    assert existing == result_dir(out, "tiny", "nodule", "m1", "random", 0) / "result.json"
    runner = Runner(split)
    report = bench(["m1"], ["nodule"], str(tiny), weights="random", out=out, runner=runner)
    assert [c.status for c in report.cells] == ["done"] and len(runner.configs) == 1
    assert json.loads(existing.read_text())["split"]["hash"] == split  # replaced by this dataset's result
    again = Runner(split)
    report = bench(["m1"], ["nodule"], str(tiny), weights="random", out=out, runner=again)
    assert [c.status for c in report.cells] == ["skipped"] and again.configs == []

    _dataset(tiny, version="2")  # same splits, a newer dataset version: not the same result
    newer = Runner(split)
    report = bench(["m1"], ["nodule"], str(tiny), weights="random", out=out, runner=newer)
    assert [c.status for c in report.cells] == ["done"] and len(newer.configs) == 1


@pytest.mark.parametrize("fraction, split_hash, version, trials, done", [
    (1.0, SPLIT, "1", 20, True),
    (0.5, SPLIT, "1", 20, False),  # another training fraction
    (1.0, OTHER_SPLIT, "1", 20, False),  # other splits
    (1.0, SPLIT, "2", 20, False),  # another dataset version
    (1.0, SPLIT, "1", 50, False),  # another trial budget
])
def test_already_done_needs_the_same_fraction_split_version_and_budget(tmp_path, fraction, split_hash, version,
                                                                       trials, done):
    path = _write(tmp_path, SPLIT)  # train fraction 1, dataset version "1", 20 trials, this protocol
    assert _already_done(path, fraction, split_hash, version, trials) is done
    assert _already_done(tmp_path / "missing" / "result.json", 1.0, SPLIT, "1", 20) is False


def test_already_done_needs_the_current_protocol(tmp_path):
    old = _write(tmp_path / "old", SPLIT, protocol="1")
    assert PROTOCOL_VERSION != "1"
    assert _already_done(old, 1.0, SPLIT, "1", 20) is False
    assert _already_done(old, 1.0, SPLIT, "1", 20, protocol_version="1") is True


def test_a_result_without_a_probe_has_no_budget_to_match(tmp_path):
    """Evaluation-only results (retrieval: ``probe`` null) are done whatever ``--trials`` says."""
    path = _write(tmp_path, SPLIT, trials=None)
    assert _already_done(path, 1.0, SPLIT, "1", 20) and _already_done(path, 1.0, SPLIT, "1", 7)


def test_bench_reruns_a_cell_of_another_budget_or_protocol(tmp_path):
    tiny = _dataset(tmp_path / "tiny")
    split = open_dataset(str(tiny)).split_hash()
    out = tmp_path / "res"
    existing = _write(out, split, trials=5)  # an earlier grid with --trials 5
    runner = Runner(split)
    report = bench(["m1"], ["nodule"], str(tiny), weights="random", trials=20, out=out, runner=runner)
    assert [c.status for c in report.cells] == ["done"] and [c.trials for c in runner.configs] == [20]
    assert json.loads(existing.read_text())["probe"]["trials_requested"] == 20
    again = Runner(split)
    assert [c.status for c in bench(["m1"], ["nodule"], str(tiny), weights="random", trials=20, out=out,
                                    runner=again).cells] == ["skipped"]
    _write(out, split, protocol="1")  # an older protocol's result at the same place
    older = Runner(split)
    report = bench(["m1"], ["nodule"], str(tiny), weights="random", trials=20, out=out, runner=older)
    assert [c.status for c in report.cells] == ["done"] and len(older.configs) == 1


def test_the_options_tag_suffixes_the_result_folder_for_runner_and_grid_alike(tmp_path):
    from ctbench.bench import result_file
    from ctbench.runner import RunConfig

    assert result_dir(tmp_path, "d", "t", "m", "random", 0, 0.5, "opts1a2b3c4d").name == "seed0-frac0.5-opts1a2b3c4d"
    assert result_dir(tmp_path, "d", "t", "m", "random", 3, 1.0, None).name == "seed3"
    cfg = RunConfig(model="m", task="t", variant="tiny", seed=1)
    assert result_file(cfg, tmp_path, "d", "random", "opts1a2b3c4d") == (
        tmp_path / "d" / "t" / "m-tiny" / "random" / "seed1-opts1a2b3c4d" / "result.json")

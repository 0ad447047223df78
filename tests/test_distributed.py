"""Scale-out: torchrun-sharded extraction equals a single process, and concurrent `run`
workers share one Optuna study on one SQLite storage."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from ctbench.extract import shard

REPO = Path(__file__).resolve().parents[1]


def test_shards_are_disjoint_and_cover_all():
    cases = pd.DataFrame({"case_id": [f"c{i}" for i in range(7)]})
    parts = [shard(cases, r, 3)["case_id"].tolist() for r in range(3)]
    assert sorted(sum(parts, [])) == cases["case_id"].tolist()
    assert parts[0] == ["c0", "c3", "c6"]


def _few_cases(src: Path, dst: Path, n: int) -> Path:
    import shutil

    shutil.copytree(src, dst)
    pd.read_csv(dst / "manifest.csv").head(n).to_csv(dst / "manifest.csv", index=False)
    return dst


def _feature_files(home: Path) -> dict[str, bytes]:
    root = home / "features"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.safetensors"))}


def test_torchrun_two_ranks_leave_the_single_process_cache(small_phantom, tmp_path):
    data = _few_cases(small_phantom, tmp_path / "data", 6)
    args = ["extract", "--model", "voxelfm", "--variant", "tiny", "--weights", "random",
            "--dataset", str(data), "--batch-size", "1", "--workers", "0", "--device", "cpu"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    single = subprocess.run([sys.executable, "-m", "ctbench", *args], capture_output=True, text=True,
                            env={**env, "CTBENCH_HOME": str(tmp_path / "one")}, timeout=300)
    assert single.returncode == 0, single.stderr
    multi = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "ctbench", *args],
        capture_output=True, text=True, env={**env, "CTBENCH_HOME": str(tmp_path / "two")}, timeout=300,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    assert "rank 0/2: 3 extracted" in multi.stdout and "rank 1/2: 3 extracted" in multi.stdout
    one, two = _feature_files(tmp_path / "one"), _feature_files(tmp_path / "two")
    assert len(one) == 6 and one == two  # same names, byte-identical contents


WORKER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {repo!r})
    from ctbench.registry import MODELS
    from ctbench.runner import RunConfig, run
    from tests.fakes import HistogramEncoder
    MODELS.register("test-histogram")(HistogramEncoder)
    _, r = run(RunConfig(model="test-histogram", task="classification", dataset={data!r},
                         weights="random", trials={trials}, storage={storage!r}, n_boot=20,
                         out={out!r}))
    print(r["probe"]["trials"])
    """
)


def test_two_run_workers_share_one_study(small_phantom, tmp_path):
    """Started together, the workers also extract the same cases at once: atomic cache writes
    keep that safe."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    env = {**os.environ, "CTBENCH_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER.format(repo=str(REPO), data=str(small_phantom), trials=12,
                                                               storage=storage, out=str(tmp_path / f"r{i}"))],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    # one budget for both workers: 12 trials (at most one extra per worker from the race)
    assert 12 <= len(study.trials) <= 14
    results = [json.loads((tmp_path / f"r{i}" / "result.json").read_text()) for i in range(2)]
    assert results[0]["probe"]["best_params"] == results[1]["probe"]["best_params"]
    assert results[0]["metrics"] == results[1]["metrics"]

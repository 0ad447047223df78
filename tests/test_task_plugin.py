"""A third-party package adds a task *category* through the ``ctbench.tasks`` entry point, with
no change to ctbench: ``ctbench tasks`` lists it with its option, a dataset card may use it,
``ctbench run`` (its own ``--clip`` flag included) and ``ctbench bench`` run it, and
``ctbench leaderboard build`` ranks it with paired intervals."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]

# The whole category, as a third party would write it (docs/adding-a-task.md shows the same).
MODULE = '''
import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ctbench.task import Metric, ProbeTask, TaskOption


def exact(y, p):
    return float(np.mean(np.asarray(y) == np.asarray(p)))


def mae(y, p):
    return float(np.mean(np.abs(np.asarray(y, float) - np.asarray(p, float))))


class CountTask(ProbeTask):
    """How many findings a scan holds (whole numbers, ridge probe, rounded)."""

    category = "count"
    options = (TaskOption("clip", int, 9, "largest count predicted"),)

    def __init__(self, spec, dataset, clip=None):
        self.clip = 9 if clip is None else int(clip)
        super().__init__(spec, dataset)

    def metric_table(self):
        return {"exact": Metric("exact", exact, "maximize", "counts"),
                "count_mae": Metric("count_mae", mae, "minimize", "counts")}

    def probe_settings(self):
        return {"clip": self.clip}

    def default_probe_settings(self):
        return {"clip": 9}

    def targets(self, rows):
        return rows[self.spec.targets[0]].to_numpy(dtype=float)

    def suggest(self, trial, seed):
        return {"probe": "ridge", "alpha": trial.suggest_float("alpha", 1e-2, 1e2, log=True)}

    def is_stochastic(self, params):
        return False

    def fit_predict(self, params, X_train, y_train, X_eval, seeds):
        model = make_pipeline(StandardScaler(), Ridge(alpha=params["alpha"])).fit(X_train, y_train)
        return np.clip(np.rint(model.predict(X_eval)), 0, self.clip)

    def prediction_columns(self, y, pred):
        return {"y_count": y, "p_count": pred}

    def from_prediction_frame(self, frame):
        return (self._columns(frame, ["y_count"])[:, 0].astype(float),
                self._columns(frame, ["p_count"])[:, 0].astype(float))
'''

LAUNCH = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from ctbench.registry import MODELS
from tests.fakes import ConstantEncoder, HistogramEncoder
MODELS.register("test-histogram")(HistogramEncoder)
MODELS.register("test-constant")(ConstantEncoder)
from ctbench.cli import main
sys.argv = ["ctbench", *sys.argv[1:]]
main()
"""


def _plugin(site: Path) -> None:
    info = site / "ctbench_count-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ctbench-count\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ctbench.tasks]\ncount = count_task:CountTask\n")
    (site / "count_task.py").write_text(textwrap.dedent(MODULE))


def _dataset(src: Path, dst: Path) -> Path:
    """The phantom with a finding count and a ``finding-count`` task of the new category."""
    import shutil

    shutil.copytree(src, dst)
    m = pd.read_csv(dst / "manifest.csv", dtype={"case_id": str, "patient_id": str})
    m["n_findings"] = m[["lung_nodule", "liver_lesion", "kidney_cyst", "pleural_effusion"]].sum(axis=1)
    m.to_csv(dst / "manifest.csv", index=False)
    card = json.loads((dst / "dataset.json").read_text())
    card["tasks"].append({"name": "finding-count", "category": "count", "targets": ["n_findings"],
                          "main_metric": "count_mae"})
    (dst / "dataset.json").write_text(json.dumps(card))
    return dst


def test_a_task_category_from_a_package_runs_benches_and_ranks(tmp_path, small_phantom):
    site = tmp_path / "site"
    _plugin(site)
    data = _dataset(small_phantom, tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": str(site), "CTBENCH_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}

    def ctbench(*args):
        proc = subprocess.run([sys.executable, "-c", LAUNCH, *args], env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    listed = {r["name"]: r for r in json.loads(ctbench("tasks", "--json"))}
    assert listed["count"]["options"][0]["flag"] == "--clip"
    results = tmp_path / "results"
    ctbench("bench", "--models", "test-histogram,test-constant", "--tasks", "finding-count", "--dataset", str(data),
            "--weights", "random", "--trials", "3", "--bootstrap", "50", "--out", str(results))
    ctbench("run", "--model", "test-histogram", "--task", "finding-count", "--dataset", str(data), "--weights",
            "random", "--trials", "3", "--bootstrap", "50", "--clip", "2", "--out", str(tmp_path / "clipped"))
    clipped = json.loads((tmp_path / "clipped" / "result.json").read_text())
    assert clipped["task"]["options"] == {"clip": 2} and clipped["task"]["options_tag"].startswith("opts")
    assert pd.read_csv(tmp_path / "clipped" / "predictions.csv")["p_count"].max() <= 2
    ctbench("leaderboard", "build", "--results", str(results), "--format", "json", "--out", str(tmp_path / "board"))
    board = json.loads(next((tmp_path / "board").rglob("*.json")).read_text())
    (table,) = [t for t in board["tables"] if t["task"] == "finding-count"]
    assert table["category"] == "count" and table["direction"] == "minimize" and table["tested"]
    assert {r["model"] for r in table["rows"]} == {"test-histogram", "test-constant"}
    assert all(r["main"]["ci_low"] <= r["main"]["value"] <= r["main"]["ci_high"] for r in table["rows"])

"""A third-party package adds a model through the ``ctbench.adapters`` entry point, no fork."""

import json
import os
import subprocess
import sys
import textwrap

PYPROJECT = """
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "ctbench-mini-adapter"
version = "0.0.1"

[project.entry-points."ctbench.adapters"]
mini = "mini_adapter:MiniEncoder"
"""

MODULE = '''
import numpy as np
from ctbench.card import InputSpec, ModelCard
from ctbench.types import Features
from ctbench.weights import WeightsRef

class MiniEncoder:
    card = ModelCard(
        name="mini", title="Mini third-party encoder", citation="-", licence="MIT",
        architecture="mean/std of HU", parameters=0, embedding_dim=2, supervision="none",
        input=InputSpec(orientation="native", spacing_mm="native", intensity="raw HU",
                        spatial_size="native", axis_order="(X, Y, Z)"),
    )

    def __init__(self, weights="auto", device="cpu"):
        self.weights_ref = WeightsRef(None, "random")
        self.preprocessing_id = "mini-v1"

    def encode(self, volume):
        a = np.asarray(volume, dtype=np.float64)
        return Features(np.array([a.mean(), a.std()]))
'''


def test_entry_point_adapter_is_listed_and_runs(tmp_path, small_phantom):
    src = tmp_path / "src"
    src.mkdir()
    (src / "pyproject.toml").write_text(PYPROJECT)
    (src / "mini_adapter.py").write_text(textwrap.dedent(MODULE))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(src)],
        check=True, capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target), "CTBENCH_HOME": str(tmp_path / "home")}
    listed = subprocess.run([sys.executable, "-m", "ctbench", "models", "--json"], env=env,
                            capture_output=True, text=True, check=True)
    names = {r["name"]: r for r in json.loads(listed.stdout)}
    assert names["mini"]["licence"] == "MIT" and "voxelfm" in names
    ran = subprocess.run(
        [sys.executable, "-m", "ctbench", "run", "--model", "mini", "--task", "classification",
         "--dataset", str(small_phantom), "--trials", "2", "--bootstrap", "20",
         "--out", str(tmp_path / "res")],
        env=env, capture_output=True, text=True,
    )
    assert ran.returncode == 0, ran.stderr
    result = json.loads((tmp_path / "res" / "result.json").read_text())
    assert result["model"]["name"] == "mini" and result["model"]["card"]["embedding_dim"] == 2


def test_a_broken_plugin_does_not_break_the_listing(tmp_path):
    """An installed plugin whose import fails, and one whose card is named unlike its entry point:
    ``ctbench models`` lists everything else (exit 0); running a broken one is one error (exit 2)."""
    site = tmp_path / "site"
    info = site / "ctbench_broken-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ctbench-broken\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[ctbench.adapters]\nexploding = exploding_adapter:Enc\nmini-renamed = mini_adapter:MiniEncoder\n")
    (site / "exploding_adapter.py").write_text("import no_such_dependency_xyz\n")
    (site / "mini_adapter.py").write_text(textwrap.dedent(MODULE))  # its card says "mini"
    env = {**os.environ, "PYTHONPATH": str(site), "CTBENCH_HOME": str(tmp_path / "home")}
    listed = subprocess.run([sys.executable, "-m", "ctbench", "models", "--json"], env=env,
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["voxelfm"]["embedding_dim"] == 864
    assert "no_such_dependency_xyz" in rows["exploding"]["error"] and "ctbench-broken" in rows["exploding"]["error"]
    assert "card is named 'mini' but its entry point 'mini-renamed'" in rows["mini-renamed"]["error"]
    ran = subprocess.run([sys.executable, "-m", "ctbench", "run", "--model", "exploding", "--task", "classification"],
                         env=env, capture_output=True, text=True)
    assert ran.returncode == 2 and "Traceback" not in ran.stderr
    assert "entry point 'exploding = exploding_adapter:Enc' (package ctbench-broken 1.0)" in " ".join(ran.stderr.split())

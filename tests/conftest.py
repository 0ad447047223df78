"""Shared fixtures: an isolated $CTBENCH_HOME per test and one small phantom per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ctbench.registry import MODELS
from tests.fakes import HistogramEncoder

if "test-histogram" not in MODELS:
    MODELS.register("test-histogram")(HistogramEncoder)

SMALL_PHANTOM_PATIENTS = 40

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)  # two workers on two cores: no oversubscription


@pytest.fixture(autouse=True)
def ctbench_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "ctbench-home"
    monkeypatch.setenv("CTBENCH_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def small_phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-patient phantom dataset folder, generated once per test session (read-only); its card
    is named ``phantom-n40`` (see :func:`ctbench.phantom.phantom_name`), not ``phantom``."""
    from ctbench.phantom import generate_phantom

    folder = tmp_path_factory.mktemp("phantom") / "phantom"
    return generate_phantom(folder, n_patients=SMALL_PHANTOM_PATIENTS, seed=0)


@pytest.fixture(scope="session")
def category_results(small_phantom: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """Results of every built-in category (oracle vs constant encoder), built once per test
    session: under xdist the first worker builds them in the session's shared folder while the
    others wait on a file lock, then every worker reads the same folder."""
    from filelock import FileLock

    from tests.category_results import build_category_results

    if worker_id == "master":
        return build_category_results(small_phantom, tmp_path_factory.mktemp("categories"))
    shared = tmp_path_factory.getbasetemp().parent  # this session's folder, common to its workers
    root = shared / "categories"
    with FileLock(str(shared / "categories.lock")):
        if not (root / "complete").exists():
            runs = build_category_results(small_phantom, root)
            (root / "complete").write_text(str(runs.relative_to(root)))
    return root / (root / "complete").read_text()

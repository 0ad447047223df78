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
def category_results(small_phantom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Results of every built-in category (oracle vs constant encoder), built once per worker;
    tests using it are grouped on one worker (``xdist_group("categories")``)."""
    from tests.category_results import build_category_results

    return build_category_results(small_phantom, tmp_path_factory.mktemp("categories"))

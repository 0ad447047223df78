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

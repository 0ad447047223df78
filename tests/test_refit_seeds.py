"""Which probes the engine refits with several seeds: every task declares it for each of its
probe families (``ProbeTask.is_stochastic``); nothing is guessed from a family's name."""

import inspect

import pytest

from ctbench.engine import refit_seeds
from ctbench.registry import TASKS
from ctbench.task import ProbeTask
from ctbench.tasks.classification import ClassificationTask
from ctbench.tasks.localisation import LocalisationTask
from ctbench.tasks.regression import RegressionTask
from ctbench.tasks.report_generation import ReportGenerationTask
from ctbench.tasks.segmentation import SegmentationTask
from ctbench.tasks.survival import SurvivalTask


def _bare(cls):
    return cls.__new__(cls)  # no dataset needed to ask


@pytest.mark.parametrize("task, params, seeds", [
    (_bare(ClassificationTask), {"probe": "linear", "c_per_dim": 1.0}, [7]),
    (_bare(ClassificationTask), {"probe": "mlp", "hidden": 64}, [7, 8, 9]),
    (_bare(RegressionTask), {"probe": "linear", "alpha_per_dim": 1.0}, [7]),
    (_bare(RegressionTask), {"probe": "mlp", "hidden": 64}, [7, 8, 9]),
    (_bare(SurvivalTask), {"probe": "coxph", "var_ratio": 0.9}, [7]),
    (_bare(SurvivalTask), {"probe": "deepcox", "hidden": 64}, [7, 8, 9]),  # an MLP head too
    (_bare(LocalisationTask), {"probe": "attention-pool", "lr": 0.01}, [7, 8, 9]),
    (_bare(SegmentationTask), {"probe": "linear", "lr": 0.01}, [7, 8, 9]),  # a trained conv, not the
    (_bare(SegmentationTask), {"probe": "decoder", "width": 16}, [7, 8, 9]),  # shared linear family
    (_bare(ReportGenerationTask), {"probe": "perceiver-decoder", "lr": 1e-3}, [7, 8, 9]),
])
def test_refit_seeds_follow_each_tasks_declaration(task, params, seeds):
    assert refit_seeds(task, params, 7) == seeds


def test_every_probe_task_must_declare_stochasticity():
    assert "is_stochastic" in ProbeTask.__abstractmethods__
    for name in TASKS.names():
        cls = TASKS.get(name)
        if issubclass(cls, ProbeTask):
            assert not inspect.isabstract(cls), name

"""Which probes the engine refits with several seeds: the task decides for its own heads, the
shared probe families otherwise."""

import pytest

from ctbench.engine import refit_seeds
from ctbench.tasks.localisation import LocalisationTask
from ctbench.tasks.report_generation import ReportGenerationTask
from ctbench.tasks.segmentation import SegmentationTask


class _SharedFamilies:
    """A task that leaves the decision to the shared families (like the global-embedding tasks)."""


class _Deterministic:
    """A task whose own heads are deterministic whatever the family name."""

    def is_stochastic(self, params: dict) -> bool:
        return False


def _bare(cls):
    return cls.__new__(cls)  # no dataset needed to ask


def test_consecutive_seeds_when_stochastic():
    assert refit_seeds(_SharedFamilies(), {"probe": "mlp", "hidden": 64}, 7) == [7, 8, 9]


@pytest.mark.parametrize("task, params, seeds", [
    (_SharedFamilies(), {"probe": "linear", "C": 1.0}, [7]),
    (_Deterministic(), {"probe": "mlp"}, [7]),  # the task's own answer wins over the family's
    (_bare(LocalisationTask), {"probe": "attention-pool", "lr": 0.01}, [7, 8, 9]),
    (_bare(SegmentationTask), {"probe": "linear", "lr": 0.01}, [7, 8, 9]),  # a trained conv, not the
    (_bare(SegmentationTask), {"probe": "decoder", "width": 16}, [7, 8, 9]),  # shared linear family
    (_bare(ReportGenerationTask), {"probe": "perceiver-decoder", "lr": 1e-3}, [7]),  # unchanged
])
def test_refit_seeds_follow_the_task_then_the_family(task, params, seeds):
    assert refit_seeds(task, params, 7) == seeds

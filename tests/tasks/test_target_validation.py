"""Targets are validated per category when a task is built, before any extraction: one message
naming the dataset, column, case, split and value, the rule and the fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctbench.datasets import Dataset, DatasetCard, TaskSpec
from ctbench.errors import CTBenchError
from ctbench.tasks.classification import ClassificationTask
from ctbench.tasks.localisation import LocalisationTask
from ctbench.tasks.regression import RegressionTask
from ctbench.tasks.report_generation import ReportGenerationTask
from ctbench.tasks.retrieval import RetrievalTask
from ctbench.tasks.segmentation import SegmentationTask
from ctbench.tasks.survival import SurvivalTask

N = 8
SPLITS = ["train"] * 6 + ["val", "test"]


def _dataset(**columns) -> Dataset:
    m = pd.DataFrame({"case_id": [f"c{i}" for i in range(N)], "patient_id": [f"p{i}" for i in range(N)],
                      "image": "x.nii.gz", "split": SPLITS, **columns})
    return Dataset(DatasetCard(name="toy", version="1", licence="-", tasks=()), m, root=None)


def _spec(category: str, targets, main_metric: str, kind: str | None = None) -> TaskSpec:
    return TaskSpec(name="t", category=category, targets=tuple(targets), main_metric=main_metric, kind=kind)


def _with(values: list, i: int, value) -> list:
    out = list(values)
    out[i] = value
    return out


BINARY = [0, 1] * 4


def _refused(build, *needles: str) -> str:
    with pytest.raises(CTBenchError) as err:
        build()
    msg = str(err.value)
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    assert "manifest.csv" in msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("kind, targets", [("binary", ["a"]), ("multilabel", ["a", "b"])])
@pytest.mark.parametrize("case, split", [(3, "train"), (7, "test")])
def test_binary_and_multilabel_targets_must_be_0_or_1(kind, targets, case, split):
    cols = {t: BINARY for t in targets} | {targets[-1]: _with(BINARY, case, 2)}
    _refused(lambda: ClassificationTask(_spec("classification", targets, "auroc", kind), _dataset(**cols)),
             f"dataset 'toy': column {targets[-1]!r} holds 2 for case 'c{case}' ({split} split)",
             "must be 0 or 1")


def test_text_labels_are_refused_naming_the_word_not_the_first_row():
    ds = _dataset(a=_with(BINARY, 4, "yes"))
    _refused(lambda: ClassificationTask(_spec("classification", ["a"], "auroc"), ds),
             "column 'a' holds 'yes' for case 'c4'", "not text")


@pytest.mark.parametrize("value", [1.5, -1, "two"])
def test_multiclass_labels_must_be_class_indices(value):
    ds = _dataset(k=_with([0, 1, 2, 0, 1, 2, 0, 1], 2, value))
    _refused(lambda: ClassificationTask(_spec("classification", ["k"], "auroc", "multiclass"), ds),
             "column 'k'", "case 'c2'", "whole numbers 0, 1, 2")


def test_regression_text_and_infinite_values_are_refused():
    values = list(np.linspace(1, 2, N))
    _refused(lambda: RegressionTask(_spec("regression", ["v"], "r2"), _dataset(v=_with(values, 1, "n/a?"))),
             "column 'v' holds 'n/a?' for case 'c1'", "regression targets must be numbers")
    _refused(lambda: RegressionTask(_spec("regression", ["v"], "r2"), _dataset(v=_with(values, 1, np.inf))),
             "case 'c1'", "finite")


SURV = {"time": [10.0, 20, 30, 40, 50, 60, 70, 80], "event": [1, 1, 1, 1, 1, 1, 0, 1]}


@pytest.mark.parametrize("column, value, needle", [
    ("event", 2, "survival events must be 0 or 1"),
    ("event", "dead", "not text"),
    ("time", -5, "negative times"),
    ("time", "soon", "survival times must be numbers"),
])
def test_survival_times_and_events_are_checked(column, value, needle):
    cols = dict(SURV) | {column: _with(SURV[column], 2, value)}
    _refused(lambda: SurvivalTask(_spec("survival", ["time", "event"], "c_index"), _dataset(**cols)),
             f"column {column!r}", "case 'c2' (train split)", needle)


def test_retrieval_labels_must_be_0_or_1():
    ds = _dataset(a=_with(BINARY, 5, 3))
    _refused(lambda: RetrievalTask(_spec("retrieval", ["patient_id", "a"], "label_recall@5"), ds),
             "column 'a' holds 3 for case 'c5'", "retrieval labels must be 0 or 1")


def test_a_localisation_centre_needs_all_three_numbers():
    xyz = {c: list(np.linspace(-10, 10, N)) for c in ("x", "y", "z")}
    spec = _spec("localisation", ["x", "y", "z"], "centre_error_mm")
    _refused(lambda: LocalisationTask(spec, _dataset(**(xyz | {"y": _with(xyz["y"], 6, None)}))),
             "column 'y' is empty for case 'c6' (val split)", "all three coordinates")
    _refused(lambda: LocalisationTask(spec, _dataset(**(xyz | {"z": _with(xyz["z"], 0, "here")}))),
             "column 'z' holds 'here'", "numbers")


def test_valid_targets_with_empty_cells_build_and_keep_their_layout():
    ds = _dataset(a=_with(BINARY, 3, None), b=BINARY, v=list(np.linspace(0, 1, N)),
                  x=[None] * N, y=[None] * N, z=[None] * N, **SURV)
    task = ClassificationTask(_spec("classification", ["a", "b"], "auroc", "multilabel"), ds)
    rows = ds.manifest[task.usable(ds.manifest)]
    assert len(rows) == N - 1 and task.targets(rows).dtype.kind == "i"
    assert RegressionTask(_spec("regression", ["v"], "r2"), ds).targets(ds.manifest).shape == (N,)
    SurvivalTask(_spec("survival", ["time", "event"], "c_index"), ds)
    LocalisationTask(_spec("localisation", ["x", "y", "z"], "centre_error_mm"), ds)  # no target: fine


def test_text_and_path_targets_are_not_checked_as_numbers():
    ds = _dataset(report=["no findings"] * N, mask=["m.nii.gz"] * N)
    ReportGenerationTask(_spec("report-generation", ["report"], "bleu4"), ds)
    SegmentationTask(_spec("segmentation", ["mask"], "dice_macro"), ds)

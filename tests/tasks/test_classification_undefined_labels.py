"""Macro metrics skip labels with one class in the scored set instead of turning NaN."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from ctbench.bootstrap import bootstrap_metrics
from ctbench.datasets import Dataset, DatasetCard, TaskSpec
from ctbench.tasks.classification import UNDEFINED_LABELS_FILE, ClassificationTask

# label a: positives 0.8, 0.4 vs negatives 0.1, 0.3 -> AUROC 4/4, AP 1
# label b: positives 0.9, 0.2 vs negatives 0.3, 0.1 -> AUROC 3/4, AP (1 + 2/3) / 2
# label c: all 0 on this set -> undefined, left out
Y = np.array([[0, 1, 0], [1, 0, 0], [1, 1, 0], [0, 0, 0]])
P = np.array([[0.1, 0.9, 0.7], [0.8, 0.3, 0.2], [0.4, 0.2, 0.6], [0.3, 0.1, 0.1]])


def _task(targets, kind) -> ClassificationTask:
    m = pd.DataFrame({"case_id": ["a"], "patient_id": ["a"], "image": ["x"], "split": ["train"],
                      **{t: [0] for t in targets}})
    spec = TaskSpec(name="c", category="classification", targets=tuple(targets), main_metric="auroc", kind=kind)
    return ClassificationTask(spec, Dataset(DatasetCard(name="d", version="1", licence="-", tasks=()), m, root=None))


def test_a_constant_label_is_left_out_of_the_macro_averages():
    task = _task(["a", "b", "c"], "multilabel")
    with pytest.warns(UserWarning, match=r"labels \[2\] hold one class only"):
        m = {k: f(Y, P) for k, f in task.metrics().items()}
    assert m["auroc"] == pytest.approx((1.0 + 0.75) / 2)
    assert m["auprc"] == pytest.approx((1.0 + (1 + 2 / 3) / 2) / 2)
    # at 0.5: label a preds [0,1,0,0] -> (1/2 + 1)/2; label b preds [1,0,0,0] -> (1/2 + 1)/2
    assert m["balanced_accuracy"] == pytest.approx(0.75)


def test_the_bootstrap_point_value_is_finite_and_nan_only_when_no_label_is_defined():
    task = _task(["a", "b", "c"], "multilabel")
    est = bootstrap_metrics(task.metrics(), Y, P, np.array(["p1", "p2", "p3", "p4"]), n_boot=50, seed=0)
    assert est["auroc"].value == pytest.approx(0.875) and est["balanced_accuracy"].value == pytest.approx(0.75)
    assert 0 < est["auroc"].n_boot <= 50 and est["auroc"].ci_low <= est["auroc"].ci_high
    constant = np.zeros_like(Y)
    assert np.isnan(task.metrics()["auroc"](constant, P)) and np.isnan(task.metrics()["auprc"](constant, P))
    assert np.isnan(bootstrap_metrics(task.metrics(), constant, P, np.arange(4), n_boot=10)["auroc"].value)


def test_multiclass_skips_an_absent_class_and_binary_is_unchanged():
    task = _task(["t"], "multiclass")
    y = np.array([0, 1, 0, 1])  # class 2 absent
    p = np.array([[0.45, 0.45, 0.1], [0.2, 0.5, 0.3], [0.5, 0.1, 0.4], [0.3, 0.4, 0.3]])
    # class 0: pos 0.45, 0.5 vs neg 0.2, 0.3 -> 1; class 1: pos 0.5, 0.4 vs neg 0.45, 0.1 -> 3/4
    with pytest.warns(UserWarning):
        assert task.metrics()["auroc"](y, p) == pytest.approx(0.875)
    full = np.array([0, 1, 2, 1])
    assert task.metrics()["auroc"](full, p) == pytest.approx(
        roc_auc_score(full, p, multi_class="ovr", average="macro", labels=np.arange(3)))
    binary = _task(["t"], "binary")
    assert binary.metrics()["auroc"](Y[:, 1], P[:, 1]) == pytest.approx(0.75)
    est = bootstrap_metrics(binary.metrics(), Y[:, 2], P[:, 2], np.arange(4), n_boot=10)
    assert np.isnan(est["auroc"].value) and est["auroc"].n_boot == 0


def test_labels_undefined_on_the_test_set_are_recorded_next_to_the_result(tmp_path):
    task = _task(["a", "b", "c"], "multilabel")
    assert task.write_artifacts(tmp_path, Y, P) == [UNDEFINED_LABELS_FILE]
    record = json.loads((tmp_path / UNDEFINED_LABELS_FILE).read_text())
    assert record["undefined_on_test"] == ["c"] and record["metrics"] == ["auroc", "auprc", "balanced_accuracy"]
    other = tmp_path / "other"
    assert task.write_artifacts(other, Y[:, [0, 1, 0]], P) == [] and not other.exists()
    multiclass = _task(["t"], "multiclass")
    assert multiclass.write_artifacts(other, np.array([0, 1, 0, 1]), np.full((4, 3), 1 / 3)) == [UNDEFINED_LABELS_FILE]
    assert json.loads((other / UNDEFINED_LABELS_FILE).read_text())["undefined_on_test"] == ["class2"]
    assert _task(["t"], "binary").write_artifacts(tmp_path / "b", Y[:, 2], P[:, 2]) == []


def test_a_rerun_without_undefined_labels_removes_the_stale_list(tmp_path):
    task = _task(["a", "b", "c"], "multilabel")
    assert task.write_artifacts(tmp_path, Y, P) == [UNDEFINED_LABELS_FILE]
    (tmp_path / "predictions.csv").write_text("kept")
    assert task.write_artifacts(tmp_path, Y[:, [0, 1, 0]], P) == []  # every label defined now
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]
    multiclass = _task(["t"], "multiclass")
    assert multiclass.write_artifacts(tmp_path, np.array([0, 1, 0, 1]), np.full((4, 2), 0.5)) == []
    assert multiclass.write_artifacts(tmp_path, np.array([0, 1, 0, 1]), np.full((4, 3), 1 / 3)) == [UNDEFINED_LABELS_FILE]
    assert multiclass.write_artifacts(tmp_path, np.array([0, 1, 2, 1]), np.full((4, 3), 1 / 3)) == []
    assert not (tmp_path / UNDEFINED_LABELS_FILE).exists()
    (tmp_path / UNDEFINED_LABELS_FILE).write_text("{}")  # left by an earlier run
    assert _task(["t"], "binary").write_artifacts(tmp_path, Y[:, 1], P[:, 1]) == []
    assert not (tmp_path / UNDEFINED_LABELS_FILE).exists()

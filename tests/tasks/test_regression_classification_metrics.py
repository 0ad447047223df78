import numpy as np
import pytest
from scipy.stats import pearsonr

from ctbench.datasets import Dataset, DatasetCard, TaskSpec
from ctbench.tasks.classification import ClassificationTask
from ctbench.tasks.regression import RegressionTask, pearson


def _dataset(columns):
    import pandas as pd

    m = pd.DataFrame({"case_id": ["a"], "patient_id": ["a"], "image": ["x"], "split": ["train"],
                      **{c: [0] for c in columns}})
    card = DatasetCard(name="d", version="1", licence="-", tasks=())
    return Dataset(card, m, root=None)


def test_regression_metrics_hand_computed():
    spec = TaskSpec(name="r", category="regression", targets=("v",), main_metric="r2")
    task = RegressionTask(spec, _dataset(["v"]))
    y = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.5, 2.0, 2.5, 5.0])
    m = {k: f(y, p) for k, f in task.metrics().items()}
    assert m["mae"] == pytest.approx((0.5 + 0 + 0.5 + 1) / 4)
    assert m["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 0.25 + 1) / 4))
    assert m["r2"] == pytest.approx(1 - 1.5 / 5.0)  # SSres 1.5, SStot 5
    assert m["pearson_r"] == pytest.approx(pearsonr(y, p).statistic)
    assert task.direction == "maximize"
    with pytest.raises(ValueError):
        pearson(y, np.ones(4))


def test_regression_probe_standardises_targets_on_train_only():
    spec = TaskSpec(name="r", category="regression", targets=("v",), main_metric="mae")
    task = RegressionTask(spec, _dataset(["v"]))
    assert task.direction == "minimize"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5))
    y = 1000 + 50 * X[:, 0]  # large offset and scale: the probe must undo standardisation
    pred = task.fit_predict({"probe": "linear", "alpha_per_dim": 1e-3}, X[:60], y[:60], X[60:], [0])
    assert np.abs(pred - y[60:]).max() < 1.0


def test_multilabel_auroc_is_macro_mean():
    from sklearn.metrics import roc_auc_score

    spec = TaskSpec(name="c", category="classification", targets=("a", "b"), main_metric="auroc",
                    kind="multilabel")
    task = ClassificationTask(spec, _dataset(["a", "b"]))
    y = np.array([[0, 1], [1, 0], [1, 1], [0, 0]])
    p = np.array([[0.1, 0.9], [0.8, 0.3], [0.4, 0.2], [0.3, 0.1]])
    # label a: pos 0.8, 0.4 vs neg 0.1, 0.3 -> 4/4; label b: pos 0.9, 0.2 vs neg 0.3, 0.1 -> 3/4
    assert task.metrics()["auroc"](y, p) == pytest.approx((1.0 + 0.75) / 2)
    assert task.metrics()["auroc"](y, p) == pytest.approx(roc_auc_score(y, p, average="macro"))
    # balanced accuracy at 0.5: label a preds [0,1,0,0] -> (1/2 + 1)/2; label b [1,0,0,0] -> (1/2+1)/2
    assert task.metrics()["balanced_accuracy"](y, p) == pytest.approx(0.75)

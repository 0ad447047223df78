import numpy as np
from sklearn.metrics import roc_auc_score

from ctbench.bootstrap import bootstrap_metrics, patient_resamples


def test_resamples_keep_patients_whole():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    for idx in patient_resamples(groups, 50, seed=1):
        counts = {g: int((groups[idx] == g).sum()) for g in "abc"}
        # every drawn patient arrives with all of its scans: a:2k, b:1k, c:3k
        assert counts["a"] % 2 == 0 and counts["c"] % 3 == 0
        assert len(idx) == sum(counts.values())


def test_point_value_and_interval():
    # hand-computed AUROC: positives 0.35, 0.8 vs negatives 0.1, 0.4 -> 3 of 4 pairs ordered
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    est = bootstrap_metrics({"auroc": roc_auc_score}, y, p, np.array(["p1", "p2", "p3", "p4"]), n_boot=200, seed=0)
    e = est["auroc"]
    assert e.value == 0.75
    assert 0.0 <= e.ci_low <= e.value <= e.ci_high <= 1.0
    # resamples with one class are undefined and dropped, not counted as zero
    assert e.n_boot < 200 and e.n_boot_requested == 200


def test_same_seed_same_interval():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    p = y * 0.3 + rng.random(60)
    g = np.repeat(np.arange(30), 2)
    a = bootstrap_metrics({"auroc": roc_auc_score}, y, p, g, n_boot=100, seed=3)["auroc"]
    b = bootstrap_metrics({"auroc": roc_auc_score}, y, p, g, n_boot=100, seed=3)["auroc"]
    assert a == b
    assert a.ci_low < a.value < a.ci_high

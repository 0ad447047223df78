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


# --- the vectorised bootstrap against the per-resample loop ------------------------------

import pytest  # noqa: E402

from ctbench import metrics_batch  # noqa: E402
from ctbench.bootstrap import _safe, bootstrap_draws, resample_counts  # noqa: E402
from ctbench.leaderboards.paired import model_draws  # noqa: E402
from ctbench.metrics_batch import Batched, ResampledMetric  # noqa: E402
from ctbench.tasks.classification import classification_metrics  # noqa: E402
from ctbench.tasks.regression import regression_metrics  # noqa: E402

N_PATIENTS = 24
GROUPS = np.sort(np.concatenate([np.arange(N_PATIENTS), [0, 3, 3, 7, 11, 20]]))  # some with 2-3 scans
N = len(GROUPS)


def _reference(metrics, y, p, groups, n_boot, seed):
    """The old bootstrap: every metric's plain (scikit-learn) call on every row-index resample."""
    samples = patient_resamples(groups, n_boot, seed)
    return {k: np.array([_safe(fn, y[idx], p[idx]) for idx in samples]) for k, fn in metrics.items()}


def _assert_same(new, ref):
    for k, vals in ref.items():
        got = new[k][1]
        assert np.array_equal(np.isnan(got), np.isnan(vals)), k
        assert np.allclose(got, vals, rtol=0, atol=1e-12, equal_nan=True), (k, np.nanmax(np.abs(got - vals)))


def _case(kind, rng):
    tied = lambda shape: rng.integers(0, 6, shape) / 5  # noqa: E731  (ties in the scores)
    if kind == "binary":
        y = (rng.random(N) < 0.3).astype(int)
        return classification_metrics(kind), y, tied(N)
    if kind == "multiclass":
        y = rng.integers(0, 3, N)
        y[:2] = 3  # class 3 only in patient 0: missing from the resamples that skip it
        return classification_metrics(kind), y, tied((N, 4))
    if kind == "multilabel":
        y = (rng.random((N, 3)) < [0.5, 0.3, 0.0]).astype(int)
        y[[5, 6], 2] = 1  # label 2 positive in one patient only: constant on many resamples
        return classification_metrics(kind), y, tied((N, 3))
    y = rng.normal(size=N if kind == "regression" else (N, 3))
    return regression_metrics(), y, np.round(y + rng.normal(size=y.shape), 1)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel", "regression", "regression-3"])
def test_vectorised_draws_equal_the_per_resample_loop(kind):
    metrics, y, p = _case(kind, np.random.default_rng(7))
    assert all(isinstance(m, ResampledMetric) for m in metrics.values())
    new = bootstrap_draws(metrics, y, p, GROUPS, n_boot=40, seed=4)
    ref = _reference(metrics, y, p, GROUPS, 40, 4)
    _assert_same(new, ref)
    for k, fn in metrics.items():
        assert new[k][0] == _safe(fn, y, p)  # point values are the plain call, unchanged
    est = bootstrap_metrics(metrics, y, p, GROUPS, n_boot=40, seed=4)
    for k, vals in ref.items():
        ok = vals[np.isfinite(vals)]
        assert est[k].n_boot == len(ok)
        assert np.allclose([est[k].ci_low, est[k].ci_high], np.quantile(ok, [0.025, 0.975]), rtol=0, atol=1e-12)


def test_the_edge_resamples_are_exercised():
    counts = np.concatenate(list(resample_counts(GROUPS, 40, 4)))
    assert (counts[:, 0] == 0).any() and (counts[:, 0] > 0).any()  # patient 0 (class 3) missing at times
    assert (counts[:, 5] == 0).any()  # the only positive of multilabel label 2 missing at times
    rows = patient_resamples(GROUPS, 40, 4)
    assert np.array_equal(counts, np.stack([np.bincount(r, minlength=N) for r in rows]))


def test_undefined_resamples_are_nan_exactly_where_the_loop_says():
    groups = np.array(["a", "b", "b", "c"])
    y = np.array([[1, 0], [0, 0], [0, 1], [1, 0]])
    p = np.array([[0.9, 0.2], [0.5, 0.5], [0.5, 0.7], [0.1, 0.1]])
    for kind, yy, pp in (("multilabel", y, p), ("binary", y[:, 0], p[:, 0])):
        metrics = classification_metrics(kind)
        new = bootstrap_draws(metrics, yy, pp, groups, n_boot=40, seed=0)
        ref = _reference(metrics, yy, pp, groups, 40, 0)
        assert np.isnan(ref["auroc"]).any() and np.isfinite(ref["auroc"]).any()
        _assert_same(new, ref)
    # regression: a resample of one row is NaN for R^2; a constant target follows the 0/1 rule
    yr, pr = np.array([1.0, 2.0, 2.0, 4.0]), np.array([1.5, 2.0, 2.5, 3.0])
    new = bootstrap_draws(regression_metrics(), yr, pr, np.array(["a", "b", "b", "c"]), n_boot=40, seed=1)
    ref = _reference(regression_metrics(), yr, pr, np.array(["a", "b", "b", "c"]), 40, 1)
    assert np.isnan(ref["pearson_r"]).any() and set(ref["r2"][np.isnan(ref["pearson_r"])]) <= {0.0}
    _assert_same(new, ref)
    one = bootstrap_draws(regression_metrics(), yr[:1], pr[:1], np.array(["a"]), n_boot=3, seed=0)
    assert np.isnan(one["r2"][1]).all() and np.isnan(one["pearson_r"][1]).all() and (one["mae"][1] == 0.5).all()


def test_plain_functions_and_declined_inputs_fall_back_to_the_loop():
    metrics, y, p = _case("binary", np.random.default_rng(3))
    p = p.astype(float)
    p[4] = np.nan  # scikit-learn refuses NaN scores: the kernel declines, the loop gives NaN
    mixed = {"auroc": metrics["auroc"], "acc": lambda yy, pp: float(np.mean(yy == (pp >= 0.5)))}
    new = bootstrap_draws(mixed, y, p, GROUPS, n_boot=30, seed=2)
    _assert_same(new, _reference(mixed, y, p, GROUPS, 30, 2))
    assert np.isnan(new["auroc"][1]).sum() > 0 and np.isfinite(new["acc"][1]).all()


def test_chunked_counts_give_the_same_draws(monkeypatch):
    metrics, y, p = _case("multilabel", np.random.default_rng(5))
    whole = bootstrap_draws(metrics, y, p, GROUPS, n_boot=50, seed=9)
    monkeypatch.setattr(metrics_batch, "CHUNK_CELLS", 7 * N)  # 7 resamples per chunk
    assert len(list(resample_counts(GROUPS, 50, 9))) == 8
    chunked = bootstrap_draws(metrics, y, p, GROUPS, n_boot=50, seed=9)
    for k in metrics:
        assert np.array_equal(whole[k][1], chunked[k][1], equal_nan=True)


def test_progress_is_reported_per_metric():
    calls = []
    metrics = {**classification_metrics("binary"), "plain": roc_auc_score}
    y, p = (np.arange(N) % 2), np.linspace(0, 1, N)
    bootstrap_metrics(metrics, y, p, GROUPS, n_boot=10, seed=0,
                      progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_paired_draws_use_the_batch_and_match_the_loop():
    metrics, y, p = _case("multiclass", np.random.default_rng(11))
    preds = [p, np.roll(p, 1, axis=0)]
    samples = patient_resamples(GROUPS, 40, 6)
    metric = metrics["auroc"]
    got = model_draws(metric, y, preds, samples)
    plain = model_draws(lambda yy, pp: metric(yy, pp), y, preds, samples)  # no batch: the loop
    assert got.point == plain.point
    assert np.allclose(got.draws, plain.draws, rtol=0, atol=1e-12, equal_nan=True)
    assert np.array_equal(np.isnan(got.draws), np.isnan(plain.draws))


def test_batched_is_still_a_plain_metric():
    m = Batched(roc_auc_score, lambda y, p, c: np.zeros(len(c)))
    assert m(np.array([0, 1]), np.array([0.2, 0.8])) == 1.0 and isinstance(m, ResampledMetric)

"""The vectorised survival metrics equal the per-resample lifelines computation (1e-12) on
patient resamples with repeat scans, tied times, tied risks and censoring at event times."""

from functools import partial

import numpy as np
import pytest

from ctbench.bootstrap import loop_draws, patient_resamples, resample_counts
from ctbench.tasks.survival_batch import c_index_batch, td_auc_batch
from ctbench.tasks.survival_metrics import c_index, time_dependent_auc


def _case(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    time = rng.choice(np.arange(50.0, 1500.0, 50.0), size=n)  # coarse: many tied times
    event = rng.random(n) < 0.7
    time[::7] = time[1::7][: len(time[::7])]  # censored and event cases at the same time
    risk = np.round(rng.normal(size=n) - time / 800, 1)  # rounded: tied risks
    patients = np.array([f"p{i // 2 if i < 20 else i}" for i in range(n)])  # ten patients with two scans
    return np.stack([time, event.astype(float)], axis=1), risk, patients


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batched_c_index_and_td_auc_equal_the_loop(seed):
    y, risk, patients = _case(seed)
    samples = patient_resamples(patients, 300, seed)
    counts = np.concatenate(list(resample_counts(patients, 300, seed)))
    cases = [(c_index, c_index_batch)]
    for h in np.quantile(y[y[:, 1] == 1, 0], [0.25, 0.5, 0.75]):
        cases.append((partial(time_dependent_auc, horizon=h), partial(td_auc_batch, horizon=h)))
    for plain, batch in cases:
        want = loop_draws(plain, y, risk, samples)
        got = batch(y, risk, counts)
        assert np.array_equal(np.isnan(want), np.isnan(got))
        np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=0, atol=1e-12)


def test_undefined_resamples_are_nan_and_bad_inputs_decline():
    y = np.array([[100.0, 0], [200.0, 0], [300.0, 1]])
    counts = np.array([[1, 1, 0], [0, 1, 1]], dtype=float)  # no event / no comparable later case
    assert np.isnan(c_index_batch(y, np.array([1.0, 2.0, 3.0]), counts)).all()
    with pytest.raises(ValueError):
        c_index_batch(y, np.array([1.0, np.nan, 3.0]), counts)

import math

import numpy as np
import pytest
import torch
from lifelines.utils import concordance_index
from sklearn.metrics import roc_auc_score

from ctbench.tasks.survival_metrics import c_index, time_dependent_auc
from ctbench.tasks.survival_probes import cox_partial_nll


def test_c_index_hand_computed():
    # times 1,2,3,4 all events; risks order 3 of the 6 comparable pairs correctly... by hand:
    y = np.array([[1, 1], [2, 1], [3, 1], [4, 1]], float)
    risk = np.array([4.0, 2.0, 3.0, 1.0])
    # pairs (i<j in time): (1,2) 4>2 ok, (1,3) ok, (1,4) ok, (2,3) 2<3 wrong, (2,4) ok, (3,4) ok -> 5/6
    assert c_index(y, risk) == pytest.approx(5 / 6)
    assert c_index(y, risk) == pytest.approx(concordance_index(y[:, 0], -risk, y[:, 1]))


def test_c_index_without_events_is_undefined():
    with pytest.raises(ValueError, match="without events"):
        c_index(np.array([[1, 0], [2, 0]], float), np.array([1.0, 2.0]))


def test_td_auc_without_censoring_is_plain_auc():
    rng = np.random.default_rng(0)
    t = rng.exponential(10, 50)
    y = np.stack([t, np.ones(50)], axis=1)
    risk = -t + rng.normal(0, 5, 50)
    h = 8.0
    sub = (t <= h) | (t > h)
    expected = roc_auc_score((t <= h)[sub].astype(int), risk[sub])
    assert time_dependent_auc(y, risk, h) == pytest.approx(expected)


def test_td_auc_ipcw_hand_computed():
    # times 1(event) 2(censored) 3(event) 5(event); horizon 3.5; risks 4,3,2,1
    y = np.array([[1, 1], [2, 0], [3, 1], [5, 1]], float)
    risk = np.array([4.0, 3.0, 2.0, 1.0])
    # censoring KM: G(t)=1 before 2, then 1 - 1/3 = 2/3 after t=2 (3 at risk at t=2)
    # cases: t=1 (w=1/G(1-)=1), t=3 (w=1/G(3-)=1.5); control: t=5 (risk 1); both cases outrank it
    assert time_dependent_auc(y, risk, 3.5) == pytest.approx(1.0)
    risk2 = np.array([4.0, 3.0, 0.5, 1.0])  # the t=3 case now ranks below the control
    assert time_dependent_auc(y, risk2, 3.5) == pytest.approx(1.0 / 2.5)


def test_partial_likelihood_breslow_ties_hand_computed():
    time = torch.tensor([1.0, 2.0, 2.0, 3.0])
    event = torch.tensor([1.0, 1.0, 1.0, 0.0])
    risk = torch.tensor([0.5, -0.2, 0.3, 0.1])
    e = np.exp(risk.numpy())
    # Breslow: both tied events at t=2 share the risk set {t>=2} = {2,2,3}
    ll = (0.5 - math.log(e.sum())) + (-0.2 - math.log(e[1:].sum())) + (0.3 - math.log(e[1:].sum()))
    assert cox_partial_nll(risk, time, event).item() == pytest.approx(-ll / 3, rel=1e-6)

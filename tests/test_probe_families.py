"""Probe families on feature views (issue 21): each family learns from an oracle view of the
phantom's labels and stays at chance on shuffled labels; the attentive probe finds a signal that
sits in a few tokens and not in their mean; every family samples the same parameters whatever
the feature dimension."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest

import ctbench.engine as engine
from ctbench.datasets import TaskSpec
from ctbench.engine import Split, run_probe
from ctbench.tasks.classification import ClassificationTask
from ctbench.tasks.regression import RegressionTask
from ctbench.tasks.survival import SurvivalTask

CLASSIFICATION = TaskSpec(name="nodule", category="classification", targets=("lung_nodule",), main_metric="auroc")
REGRESSION = TaskSpec(name="liver", category="regression", targets=("liver_volume_ml",), main_metric="r2")
SURVIVAL = TaskSpec(name="os", category="survival", targets=("time", "event"), main_metric="c_index",
                    horizons=(0.5,))
SPECS = {"classification": (ClassificationTask, CLASSIFICATION), "regression": (RegressionTask, REGRESSION),
         "survival": (SurvivalTask, SURVIVAL)}
CASES = [(cat, fam) for cat, (cls, _) in SPECS.items() for fam in cls.families]
POSITIONS = 8  # token positions per case in the synthetic token view


def _task(category: str, family: str):
    cls, spec = SPECS[category]
    task = cls.for_scoring(spec)
    task.use_probe(family, "tokens" if family == "attentive" else "cls")
    return task


def _as_view(X: np.ndarray, family: str, rng: np.random.Generator) -> np.ndarray:
    """Vector features as they are, or (attentive) as token sets: every position holds the case's
    vector with noise of its own (as a grid of ground-truth label fractions would)."""
    if family != "attentive":
        return X
    sets = np.empty(len(X), dtype=object)
    for i, x in enumerate(X):
        sets[i] = (x[None, :] + rng.normal(0, 0.5, (POSITIONS, len(x)))).astype(np.float16)
    return sets


FINDINGS = ("lung_nodule", "liver_lesion", "kidney_cyst", "pleural_effusion")


def _targets(category: str, m: pd.DataFrame) -> np.ndarray:
    if category == "classification":  # a finding present and absent in every split of this phantom
        both = [f for f in FINDINGS if "split" not in m or m.groupby("split")[f].nunique().min() == 2]
        return m[both[0]].to_numpy(int)
    if category == "regression":
        return m["liver_volume_ml"].to_numpy(float)
    z = m["lesion_burden_ml"] / m["lesion_burden_ml"].std() + m["pleural_effusion"]  # risk, as strong_survival
    censored = np.arange(len(m)) % 4 == 0
    return np.stack([np.exp(-z) * np.where(censored, 0.5, 1.0), (~censored).astype(float)], axis=1)


def _oracle(category: str, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The target itself (a risk for survival, standardised) in three noisy copies, beside two
    noise features: the signal is the leading principal component (survival's PCA keeps it)."""
    signal = -np.log(y[:, 0]) if category == "survival" else np.asarray(y, float)
    signal = (signal - signal.mean()) / signal.std()
    copies = signal[:, None] + rng.normal(0, 0.1, (len(y), 3))
    return np.column_stack([copies, rng.normal(0, 1, (len(y), 2))])


def _score(task, X, y, groups, split, trials=3) -> dict:
    parts = {s: Split(X[split == s], y[split == s], groups[split == s], list(np.flatnonzero(split == s).astype(str)))
             for s in ("train", "val", "test")}
    out = run_probe(task, parts["train"], parts["val"], parts["test"], trials=trials, seed=0,
                    study_name="probe-families", n_boot=100)
    return {k: v for k, v in out.estimates.items()}


@pytest.fixture
def one_seed(monkeypatch):
    monkeypatch.setattr(engine, "N_PROBE_SEEDS", 1)  # quick: one refit seed per stochastic head


@pytest.mark.parametrize("category, family", CASES)
def test_an_oracle_view_of_the_phantom_scores_high(small_phantom, one_seed, category, family):
    m = pd.read_csv(small_phantom / "manifest.csv")
    rng = np.random.default_rng(0)
    y = _targets(category, m)
    X = _as_view(_oracle(category, y, rng), family, rng)
    est = _score(_task(category, family), X, y, m["patient_id"].to_numpy(), m["split"].to_numpy())
    main = SPECS[category][1].main_metric
    assert est[main].value > (0.6 if category == "regression" else 0.85), (family, est[main])


@pytest.mark.parametrize("category, family", CASES)
def test_shuffled_labels_stay_at_chance(one_seed, monkeypatch, category, family):
    """Features that carry the labels, but labels shuffled: the test metric sits at chance."""
    from ctbench import probe_attentive

    monkeypatch.setattr(probe_attentive, "BATCH", 64)  # quick: fewer steps per epoch
    rng = np.random.default_rng(1)
    n = 240
    m = pd.DataFrame({"lung_nodule": rng.integers(0, 2, n), "liver_volume_ml": rng.normal(1500, 200, n),
                      "lesion_burden_ml": rng.gamma(2, 5, n), "pleural_effusion": rng.integers(0, 2, n)})
    y = _targets(category, m)
    X = _as_view(_oracle(category, y, rng), family, rng)
    y = y[rng.permutation(n)]
    split = np.array(["train"] * 100 + ["val"] * 40 + ["test"] * 100)
    est = _score(_task(category, family), X, y, np.arange(n).astype(str), split, trials=2)
    if category == "regression":
        assert est["r2"].value < 0.05 and abs(est["pearson_r"].value) < 0.2, (family, est["pearson_r"])
    else:
        main = est[SPECS[category][1].main_metric]
        assert abs(main.value - 0.5) < 0.12, (family, main)


def _few_token_signal(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Token sets whose label is in which sign pairs with which in two tokens, never in the mean:
    positive cases hold tokens (+s, +s) and (-s, -s), negative ones (+s, -s) and (-s, +s) in
    channels 0-1, so every case's token mean is the same in distribution."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sets = np.empty(n, dtype=object)
    for i in range(n):
        t = rng.normal(0, 1, (16, 8))
        a, b = rng.choice(16, 2, replace=False)
        sign = 1.0 if y[i] else -1.0
        t[a, :2] = 3.0, 3.0 * sign
        t[b, :2] = -3.0, -3.0 * sign
        sets[i] = t.astype(np.float16)
    return sets, y


def test_the_attentive_probe_finds_what_a_linear_probe_on_the_mean_cannot():
    from sklearn.metrics import roc_auc_score

    from ctbench.views import view_inputs
    from ctbench.types import Features

    X_train, y_train = _few_token_signal(240, 0)
    X_test, y_test = _few_token_signal(200, 1)
    task = _task("classification", "attentive")
    params = {"probe": "attentive", "width": 32, "heads": 2, "lr": 3e-3, "weight_decay": 1e-3, "epochs": 30}
    attentive = roc_auc_score(y_test, task.fit_predict(params, X_train, y_train, X_test, [0]))

    def mean_view(sets):  # the views module's mean of the same grids (C, positions, 1, 1)
        feats = [Features(np.zeros(2), s.T.reshape(8, 16, 1, 1), np.eye(4)) for s in sets]
        return view_inputs(feats, "cls+mean")

    task.use_probe("linear", "cls+mean")
    linear = roc_auc_score(y_test, task.fit_predict({"probe": "linear", "c_per_dim": 1.0}, mean_view(X_train),
                                                    y_train, mean_view(X_test), [0]))
    assert attentive > 0.9 and abs(linear - 0.5) < 0.12, (attentive, linear)


@pytest.mark.parametrize("category, family", CASES)
def test_models_of_different_dimension_draw_the_same_parameters(monkeypatch, category, family):
    """Through the engine's tuning loop: a 16-d and a 512-d feature set get the identical sequence
    of the sampler's startup trials (fits stubbed: only the search space is under test)."""
    cls, spec = SPECS[category]
    rng = np.random.default_rng(0)
    y = _targets(category, pd.DataFrame({"lung_nodule": np.arange(40) % 2, "liver_volume_ml": rng.normal(0, 1, 40),
                                         "lesion_burden_ml": rng.gamma(2, 5, 40),
                                         "pleural_effusion": np.arange(40) % 3 == 0}))
    monkeypatch.setattr(cls, "fit_predict", lambda self, p, Xt, yt, Xe, s: rng.random(len(Xe)))
    drawn = []
    for dim in (16, 512):
        task = _task(category, family)
        X = _as_view(rng.normal(0, 1, (40, dim)), family, rng)
        split = Split(X[:20], y[:20], np.arange(20), [str(i) for i in range(20)])
        val = Split(X[20:], y[20:], np.arange(20, 40), [str(i) for i in range(20, 40)])
        study = engine.tune(task, split, val, trials=10, seed=3, study_name=f"d{dim}")
        drawn.append([t.params for t in sorted(study.trials, key=lambda t: t.number)])
    assert drawn[0] == drawn[1] and len(drawn[0]) == 10
    assert len({tuple(sorted(p.items())) for p in drawn[0]}) > 1  # the space was sampled, not fixed
    assert {p["probe"] for p in drawn[0]} == {cls.HEADS[family] if category == "survival" else family}


def test_each_family_declares_a_dimension_free_space():
    """No family's sampled parameters depend on the dimension, and the penalties that do are
    converted per dimension at fit time."""
    from ctbench.probes import FAMILIES, effective, suggest

    for family in FAMILIES:
        params = suggest(optuna.trial.FixedTrial({"c_per_dim": 10.0, "alpha_per_dim": 1.0, "l2_per_dim": 1e-4,
                                                  "hidden": 64, "lr": 1e-3, "epochs": 100, "k": 5,
                                                  "weights": "uniform", "width": 16, "heads": 1,
                                                  "weight_decay": 1e-3, "probe": family}), family, "classifier")
        assert params["probe"] == family
    assert effective({"c_per_dim": 10.0}, 512) == {"C": 10.0 / 512}

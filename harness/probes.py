"""The probe families and their search spaces, shared by every task so no task re-implements
a head and every model gets exactly the same search space.

``linear``: logistic regression (classification) or ridge (regression) on standardised features.
``mlp``: a one-hidden-layer MLP (scikit-learn) on standardised features.
"""

from __future__ import annotations

from typing import Literal

import optuna
from sklearn.base import BaseEstimator
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

Head = Literal["classifier", "regressor"]
FAMILIES = ("linear", "mlp")


def suggest(trial: optuna.Trial, families: tuple[str, ...], head: Head) -> dict:
    """Draw one configuration from the shared search space."""
    family = trial.suggest_categorical("probe", list(families))
    if family == "linear":
        name = "C" if head == "classifier" else "alpha"
        low, high = (1e-4, 1e2) if head == "classifier" else (1e-3, 1e4)
        return {"probe": family, name: trial.suggest_float(name, low, high, log=True)}
    return {
        "probe": family,
        "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "epochs": trial.suggest_int("epochs", 50, 300, step=50),
    }


def build(params: dict, head: Head, seed: int, multilabel: bool = False) -> BaseEstimator:
    """A fresh, unfitted scikit-learn pipeline for ``params`` (as returned by ``suggest``)."""
    family = params["probe"]
    if family == "linear":
        if head == "classifier":
            est = LogisticRegression(C=params["C"], max_iter=5000)
            if multilabel:
                est = OneVsRestClassifier(est)
        else:
            est = Ridge(alpha=params["alpha"])
    elif family == "mlp":
        cls = MLPClassifier if head == "classifier" else MLPRegressor
        est = cls(
            hidden_layer_sizes=(params["hidden"],),
            alpha=params["weight_decay"],
            learning_rate_init=params["lr"],
            max_iter=params["epochs"],
            random_state=seed,
        )
    else:
        raise ValueError(f"unknown probe family {family!r}; choose from {FAMILIES}")
    pipe = make_pipeline(StandardScaler(), est)
    if head == "regressor":  # targets standardised with train statistics only
        return TransformedTargetRegressor(regressor=pipe, transformer=StandardScaler())
    return pipe


def is_stochastic(params: dict) -> bool:
    """Whether refitting with another seed can change the probe (then several seeds are used)."""
    return params["probe"] == "mlp"

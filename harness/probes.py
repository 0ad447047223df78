"""The probe families and their search spaces, shared by every task so no task re-implements
a head and every model gets exactly the same search space.

``linear``: logistic regression (classification) or ridge (regression) on standardised features.
``mlp``: a one-hidden-layer MLP (scikit-learn) on standardised features.

Scale-free penalties: Optuna samples a penalty *per embedding dimension* and :func:`build`
turns it into the estimator's penalty for the ``d`` features it is fitted on. On standardised
features ``trace(X^T X) / n = d``, so ridge's ``alpha = alpha_per_dim * d`` (and logistic's
``C = c_per_dim / d``, its inverse) shrink a 2048-d and a 512-d embedding equally hard: a
Gaussian prior spreading the same total signal variance over ``d`` weights. The MLP's L2 penalty
scales the same way. Two models with different embedding sizes therefore see the identical
sequence of sampled parameters (``params`` are dimension-free); the effective values are recorded
by :func:`effective`.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Family:
    """A probe family and whether refitting it with another seed can change its predictions."""

    name: str
    stochastic: bool


FAMILY = {f.name: f for f in (Family("linear", stochastic=False), Family("mlp", stochastic=True))}
FAMILIES = tuple(FAMILY)

# Per-dimension ranges; at d = 100 they equal the fixed ranges of protocol 2 (C 1e-4..1e2,
# ridge alpha 1e-3..1e4, MLP L2 1e-5..1e-1).
C_PER_DIM = (1e-2, 1e4)
ALPHA_PER_DIM = (1e-5, 1e2)
L2_PER_DIM = (1e-7, 1e-3)


def suggest(trial: optuna.Trial, families: tuple[str, ...], head: Head) -> dict:
    """Draw one configuration from the shared, dimension-free search space."""
    family = trial.suggest_categorical("probe", list(families))
    if family == "linear":
        if head == "classifier":
            return {"probe": family, "c_per_dim": trial.suggest_float("c_per_dim", *C_PER_DIM, log=True)}
        return {"probe": family, "alpha_per_dim": trial.suggest_float("alpha_per_dim", *ALPHA_PER_DIM, log=True)}
    return {
        "probe": family,
        "hidden": trial.suggest_categorical("hidden", [64, 128, 256]),
        "l2_per_dim": trial.suggest_float("l2_per_dim", *L2_PER_DIM, log=True),
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "epochs": trial.suggest_int("epochs", 50, 300, step=50),
    }


def effective(params: dict, n_features: int) -> dict:
    """The estimator's own penalty for ``params`` on ``n_features`` dimensions (C, alpha)."""
    d = max(1, int(n_features))
    if "c_per_dim" in params:
        return {"C": params["c_per_dim"] / d}
    if "alpha_per_dim" in params:
        return {"alpha": params["alpha_per_dim"] * d}
    if "l2_per_dim" in params:
        return {"alpha": params["l2_per_dim"] * d}
    return {}


def build(params: dict, head: Head, seed: int, n_features: int, multilabel: bool = False) -> BaseEstimator:
    """A fresh, unfitted scikit-learn pipeline for ``params`` (as returned by ``suggest``) on
    ``n_features``-dimensional inputs."""
    family = params["probe"]
    penalty = effective(params, n_features)
    if family == "linear":
        if head == "classifier":
            est = LogisticRegression(C=penalty["C"], max_iter=5000)
            if multilabel:
                est = OneVsRestClassifier(est)
        else:
            est = Ridge(alpha=penalty["alpha"])
    elif family == "mlp":
        cls = MLPClassifier if head == "classifier" else MLPRegressor
        est = cls(
            hidden_layer_sizes=(params["hidden"],),
            alpha=penalty["alpha"],
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
    """Whether refitting ``params``' family with another seed can change the probe, as the
    family declares it (then the engine refits with several seeds)."""
    return FAMILY[params["probe"]].stochastic

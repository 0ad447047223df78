"""The probe families and their search spaces, shared by every global task so no task
re-implements a head and every model gets exactly the same search space.

``linear``: logistic regression (classification) or ridge (regression) on standardised features
(survival's penalised Cox lives with the survival task). ``knn``: k nearest neighbours by cosine
similarity of standardised features (scikit-learn). ``mlp``: a one-hidden-layer MLP
(scikit-learn). ``attentive``: one learned query cross-attending over the token set, then a
linear head (torch, :mod:`ctbench.probe_attentive`).

Each family has its own search space and is tuned in its own study: families are never mixed
in one search and never ranked together.

Scale-free spaces: no sampled parameter depends on the feature dimension. Optuna samples a
penalty *per dimension* and :func:`build` turns it into the estimator's penalty for the ``d``
features it is fitted on. On standardised features ``trace(X^T X) / n = d``, so ridge's
``alpha = alpha_per_dim * d`` (and logistic's ``C = c_per_dim / d``, its inverse) shrink a
2048-d and a 512-d embedding equally hard: a Gaussian prior spreading the same total signal
variance over ``d`` weights. The MLP's L2 penalty scales the same way. kNN's ``k`` and weighting
and the attentive probe's width, heads, learning rate, decay and epochs are absolute. Two models
with different embedding sizes therefore see the identical sequence of sampled parameters; the
effective penalties are recorded by :func:`effective`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import optuna
from sklearn.base import BaseEstimator
from sklearn.compose import TransformedTargetRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.multiclass import OneVsRestClassifier
from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .views import VECTOR_VIEWS

Head = Literal["classifier", "regressor", "survival"]


@dataclass(frozen=True)
class Family:
    """A probe family: whether refitting it with another seed can change its predictions, the
    views it reads (the first is its natural one) and whether it trains on the run's device."""

    name: str
    stochastic: bool
    views: tuple[str, ...] = VECTOR_VIEWS
    on_device: bool = False

    @property
    def natural_view(self) -> str:
        return self.views[0]


FAMILY = {f.name: f for f in (
    Family("linear", stochastic=False),
    Family("knn", stochastic=False),
    Family("mlp", stochastic=True),
    Family("attentive", stochastic=True, views=("tokens",), on_device=True),
)}
FAMILIES = tuple(FAMILY)
DEFAULT_FAMILY = "linear"

# Per-dimension ranges; at d = 100 they equal the fixed ranges of protocol 2 (C 1e-4..1e2,
# ridge alpha 1e-3..1e4, MLP L2 1e-5..1e-1).
C_PER_DIM = (1e-2, 1e4)
ALPHA_PER_DIM = (1e-5, 1e2)
L2_PER_DIM = (1e-7, 1e-3)
K_RANGE = (1, 50)  # kNN neighbours, capped at the training cases at fit time
KNN_WEIGHTS = ("uniform", "distance")


def suggest(trial: optuna.Trial, family: str, head: Head) -> dict:
    """Draw one configuration of ``family`` from its shared, dimension-free search space. The
    family is recorded as the one-choice parameter ``probe``, so a study's trials name it."""
    if family not in FAMILY:
        raise ValueError(f"unknown probe family {family!r}; choose from {FAMILIES}")
    probe = trial.suggest_categorical("probe", [family])
    if family == "linear":
        if head == "classifier":
            return {"probe": probe, "c_per_dim": trial.suggest_float("c_per_dim", *C_PER_DIM, log=True)}
        return {"probe": probe, "alpha_per_dim": trial.suggest_float("alpha_per_dim", *ALPHA_PER_DIM, log=True)}
    if family == "knn":
        return {"probe": probe, "k": trial.suggest_int("k", *K_RANGE),
                "weights": trial.suggest_categorical("weights", list(KNN_WEIGHTS))}
    if family == "attentive":
        from .probe_attentive import suggest_attentive

        return {"probe": probe, **suggest_attentive(trial)}
    return {
        "probe": probe,
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


def build(params: dict, head: Head, seed: int, n_features: int, multilabel: bool = False,
          n_train: int | None = None) -> BaseEstimator:
    """A fresh, unfitted scikit-learn pipeline for ``params`` (as returned by ``suggest``) on
    ``n_features``-dimensional inputs; ``n_train`` caps kNN's ``k``."""
    family = params["probe"]
    penalty = effective(params, n_features)
    if family == "linear":
        if head == "classifier":
            est = LogisticRegression(C=penalty["C"], max_iter=5000)
            if multilabel:
                est = OneVsRestClassifier(est)
        else:
            est = Ridge(alpha=penalty["alpha"])
    elif family == "knn":
        cls = KNeighborsClassifier if head == "classifier" else KNeighborsRegressor
        k = min(int(params["k"]), n_train) if n_train else int(params["k"])
        est = cls(n_neighbors=max(1, k), weights=params["weights"], metric="cosine", algorithm="brute")
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
        raise ValueError(f"probe family {family!r} is not a scikit-learn head; choose from linear, knn, mlp")
    pipe = make_pipeline(StandardScaler(), est)
    if head == "regressor":  # targets standardised with train statistics only
        return TransformedTargetRegressor(regressor=pipe, transformer=StandardScaler())
    return pipe


def is_stochastic(params: dict) -> bool:
    """Whether refitting ``params``' family with another seed can change the probe, as the
    family declares it (then the engine refits with several seeds)."""
    return FAMILY[params["probe"]].stochastic

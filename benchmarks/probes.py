"""How long does one tuning trial of each probe family take on CPU?

    python benchmarks/probes.py                 # a table
    python benchmarks/probes.py --json          # the same as JSON
    python benchmarks/probes.py --positions 512 # a larger token grid for the attentive probe

Fits each family of the classification task once, as the engine fits a tuning trial
(``fit_quietly``: single-threaded, fit on train and predict the evaluation cases), on synthetic
features of 1,000 cases (800 fitted, 200 predicted) at 512-d and 2048-d: a binary label carried
by a few dimensions. ``linear``, ``knn`` and ``mlp`` read one vector per case; ``attentive``
reads a set of ``--positions`` tokens per case (default 64, a 4x4x4 grid) of the same width.
Stochastic families are timed at the middle and at the top of their epoch range (the cost of
a trial grows with the epochs Optuna draws). Prints seconds per fit and the validation AUROC
(a sanity check that each fit learned).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from ctbench.datasets import TaskSpec
from ctbench.probe_fit import fit_quietly
from ctbench.tasks.classification import ClassificationTask

N_CASES, N_FIT = 1000, 800
DIMS = (512, 2048)
CONFIGS = [  # (family, label, params): the middle of each space, and the top of the epoch ranges
    ("linear", "c_per_dim=1", {"c_per_dim": 1.0}),
    ("knn", "k=10, distance", {"k": 10, "weights": "distance"}),
    ("mlp", "hidden 128, 150 epochs", {"hidden": 128, "l2_per_dim": 1e-5, "lr": 1e-3, "epochs": 150}),
    ("mlp", "hidden 256, 300 epochs", {"hidden": 256, "l2_per_dim": 1e-5, "lr": 1e-3, "epochs": 300}),
    ("attentive", "width 32, 2 heads, 50 epochs",
     {"width": 32, "heads": 2, "lr": 5e-3, "weight_decay": 1e-3, "epochs": 50}),
    ("attentive", "width 64, 4 heads, 100 epochs",
     {"width": 64, "heads": 4, "lr": 5e-3, "weight_decay": 1e-3, "epochs": 100}),
]


def vectors(dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features; the label is the sign of a noisy sum of the first 8 dimensions."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (N_CASES, dim)).astype(np.float32)
    y = (X[:, :8].sum(axis=1) + rng.normal(0, 1.5, N_CASES) > 0).astype(int)
    return X, y


def token_sets(X: np.ndarray, positions: int, seed: int) -> np.ndarray:
    """Each case's vector at every position, with noise: float16 ``(positions, dim)`` per case."""
    rng = np.random.default_rng(seed + 1)
    sets = np.empty(len(X), dtype=object)
    for i, x in enumerate(X):
        sets[i] = (x[None, :] + rng.normal(0, 1, (positions, len(x)))).astype(np.float16)
    return sets


def run(positions: int, seed: int = 0) -> list[dict]:
    spec = TaskSpec(name="bench", category="classification", targets=("y",), main_metric="auroc")
    task = ClassificationTask.for_scoring(spec)
    rows = []
    for dim in DIMS:
        X, y = vectors(dim, seed)
        sets = token_sets(X, positions, seed)
        for family, label, params in CONFIGS:
            inputs = sets if family == "attentive" else X
            task.use_probe(family, "tokens" if family == "attentive" else "cls")
            started = time.perf_counter()
            fit = fit_quietly(task, {"probe": family, **params}, inputs[:N_FIT], y[:N_FIT], inputs[N_FIT:], [seed])
            seconds = time.perf_counter() - started
            rows.append({"family": family, "config": label, "dim": dim,
                         "positions": positions if family == "attentive" else None, "fit_s": round(seconds, 3),
                         "auroc": round(float(roc_auc_score(y[N_FIT:], fit.predictions)), 3)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, default=64, help="tokens per case for the attentive probe")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    rows = run(args.positions)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{N_CASES} cases ({N_FIT} fitted, {N_CASES - N_FIT} predicted), one thread; attentive: "
          f"{args.positions} tokens per case")
    print(f"{'family':<10} {'configuration':<32} {'dim':>5} {'fit s':>8} {'AUROC':>6}")
    for r in rows:
        print(f"{r['family']:<10} {r['config']:<32} {r['dim']:>5} {r['fit_s']:>8.2f} {r['auroc']:>6.3f}")


if __name__ == "__main__":
    main()

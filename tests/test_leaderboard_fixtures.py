"""Hand-built result files for the leaderboard tests (no model is run), and checks of them.

``write_result_file`` writes exactly what ``ctbench.runner.run`` writes (result.json through
``ctbench.results.write_result`` plus predictions.csv) from given targets and scores, so tests
can construct cases whose bootstrap outcome is known.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ctbench.bootstrap import bootstrap_metrics
from ctbench.datasets import TaskSpec
from ctbench.results import result_dir, write_result
from ctbench.tasks.classification import ClassificationTask
from tests.fakes import CARD

SPLIT = hashlib.sha256(b"phantom split").hexdigest()
OTHER_SPLIT = hashlib.sha256(b"another split").hexdigest()


def sha_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def classification_columns(spec: TaskSpec, y: np.ndarray, p: np.ndarray) -> tuple[dict, dict]:
    # a dataset stand-in: no manifest rows, so the task's target checks have nothing to refuse
    dataset = SimpleNamespace(require_columns=lambda cols: None, manifest=pd.DataFrame(columns=list(spec.targets)))
    task = ClassificationTask(spec, dataset)
    return task.prediction_columns(y, p), task.metrics()


def write_result_file(
    root: Path, model: str, y: np.ndarray, p: np.ndarray, patients: np.ndarray, *, task: str = "nodule",
    targets: tuple[str, ...] = ("nodule",), kind: str | None = None, dataset: str = "phantom",
    random_init: bool = False, seed: int = 0, split_hash: str = SPLIT, task_version: str = "1",
    protocol: str = "1", pretraining: tuple[str, ...] = (), train_fraction: float | None = None,
    category: str = "classification", main_metric: str = "auroc", direction: str = "maximize",
    metrics: dict | None = None, n_boot: int = 10, created: str | None = None, folder: Path | None = None,
    sha: str | None = None, columns: dict | None = None, options: dict | None = None,
    options_tag: str | None = None, trials: int | None = 5, dataset_version: str = "1",
    collections: tuple[str, ...] | None = None,
) -> Path:
    """One result folder as the runner lays it out; metrics computed from ``y``/``p`` when the
    category is classification, else taken from ``metrics`` (name -> value) with the prediction
    columns ``columns`` (default ``y_<target>``, ``p_<target>``). ``options``/``options_tag``
    record task options as the runner does (the tag also suffixes the folder, ``seed0-opts...``).
    ``trials``: the probe's trial budget (None: no probe, as evaluation-only tasks write);
    ``collections``: the dataset card's collections (None: left out, as older runners did)."""
    patients = np.asarray(patients).astype(str)
    case_ids = [f"case{i:04d}" for i in range(len(patients))]
    preds = pd.DataFrame({"case_id": case_ids, "patient_id": patients})
    if category == "classification":
        spec = TaskSpec(name=task, category="classification", targets=targets, main_metric=main_metric, kind=kind)
        cols, fns = classification_columns(spec, y, p)
        estimates = {k: v.as_dict() for k, v in bootstrap_metrics(fns, y, p, patients, n_boot=n_boot, seed=0).items()}
    else:
        cols = columns or {f"y_{targets[0]}": y, f"p_{targets[0]}": p}
        estimates = {k: {"value": v, "ci_low": v - 0.1, "ci_high": v + 0.1, "n_boot": n_boot,
                         "n_boot_requested": n_boot} for k, v in (metrics or {}).items()}
    for c, v in cols.items():
        preds[c] = v
    wsha = "random" if random_init else (sha or sha_of(model))
    card = CARD.model_dump(mode="json") | {"name": model, "pretraining_datasets": list(pretraining)}
    config = {"model": model, "task": task, "dataset": dataset, "weights": "random" if random_init else "auto",
              "trials": 5 if trials is None else trials, "seed": seed, "device": "cpu", "out": None,
              "strict": False, "variant": None, "storage": None, "n_boot": n_boot}
    if train_fraction is not None:
        config["train_fraction"] = train_fraction
    result = {
        "ctbench_version": "0.1.0", "git_sha": "0123456789abcdef", "protocol_version": protocol,
        "created": created or datetime(2026, 1, 2, tzinfo=timezone.utc).isoformat(), "config": config,
        "model": {"name": model, "variant": None, "card": card,
                  "weights": {"choice": config["weights"], "sha256": wsha, "random_init": random_init, "path": None},
                  "preprocessing_id": "abc"},
        "task": {"name": task, "category": category, "version": task_version, "targets": list(targets),
                 "main_metric": main_metric, "direction": direction, "dataset": dataset,
                 "dataset_version": dataset_version,
                 **({"options": options, "options_tag": options_tag} if options is not None else {}),
                 **({"dataset_collections": list(collections)} if collections is not None else {})},
        "split": {"hash": split_hash, "counts": {"test": len(case_ids)}, "patients": {"test": len(set(patients))}},
        "probe": None if trials is None else {"best_params": {}, "trials": trials, "trials_requested": trials},
        "metrics": estimates,
        "bootstrap": {"resamples": n_boot, "level": 0.95, "unit": "patient"},
        "timings": {}, "environment": {"python": "3"}, "failures": [], "excluded_without_target": 0,
    }
    if folder is None:
        tag = "random" if random_init else wsha[:12]
        folder = result_dir(root, dataset, task, model, tag, seed, train_fraction or 1.0, options_tag)
    return write_result(folder, result, preds)


def known_case(n_patients: int = 100, seed: int = 0):
    """Binary targets of 1.5 scans per patient (half scanned twice) and four score vectors.

    best: near-perfect; twin_a: informative but noisy; twin_b: twin_a's scores shuffled within
    each class (identical AUROC on the full set, so their paired difference is centred on 0);
    noise: uninformative. Expected ranks: best 1, twins tied at 2, noise 4.
    """
    rng = np.random.default_rng(seed)
    patients = np.concatenate([np.arange(n_patients), np.arange(n_patients // 2)])
    label_of = rng.integers(0, 2, n_patients)
    y = label_of[patients]
    best = 0.8 * y + 0.2 * rng.random(len(y))
    twin_a = 0.35 * y + rng.random(len(y))
    twin_b = twin_a.copy()
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        twin_b[idx] = twin_a[rng.permutation(idx)]
    noise = rng.random(len(y))
    return y, patients.astype(str), {"best": best, "twin-a": twin_a, "twin-b": twin_b, "noise": noise}


def phantom_board_results(root: Path, seed: int = 0) -> Path:
    """3 models (+ a random-init control) x 3 classification tasks of phantom-like results.

    merlin's card lists 'phantom' among its pre-training data (a contamination flag).
    """
    rng = np.random.default_rng(seed)
    n_pat = 60
    patients = np.concatenate([np.arange(n_pat), np.arange(0, n_pat, 3)]).astype(str)
    n = len(patients)
    strength = {"voxelfm": 1.2, "merlin": 0.7, "ct-fm": 0.7, "voxelfm (random)": 0.0}
    y_bin = rng.integers(0, 2, n)
    y_ml = rng.integers(0, 2, (n, 2))
    y_mc = rng.integers(0, 3, n)
    for label, s in strength.items():
        model, random_init = label.split(" ")[0], label.endswith("(random)")
        common = dict(random_init=random_init, pretraining=("phantom",) if model == "merlin" else ())
        p_bin = 1 / (1 + np.exp(-(s * (2 * y_bin - 1) * 1.5 + rng.normal(size=n))))
        write_result_file(root, model, y_bin, p_bin, patients, task="nodule", targets=("nodule",), **common)
        p_ml = 1 / (1 + np.exp(-(s * (2 * y_ml - 1) * 1.5 + rng.normal(size=(n, 2)))))
        write_result_file(root, model, y_ml, p_ml, patients, task="findings", targets=("emphysema", "effusion"), **common)
        logits = s * 2.0 * np.eye(3)[y_mc] + rng.normal(size=(n, 3))
        p_mc = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        write_result_file(root, model, y_mc, p_mc, patients, task="grade", targets=("grade",), kind="multiclass", **common)
    return root


@pytest.fixture(scope="session")
def phantom_results(tmp_path_factory) -> Path:
    """The 3-model x 3-task board's result files, written once per test session (read-only)."""
    return phantom_board_results(tmp_path_factory.mktemp("phantom-results"))


@pytest.fixture(scope="session")
def phantom_board(phantom_results):
    """The board built from ``phantom_results`` (40 paired resamples, seed 0)."""
    from ctbench.leaderboards import build_board

    return build_board(phantom_results, n_boot=40)


def test_constructed_files_match_the_runner_layout(tmp_path):
    y, patients, scores = known_case()
    path = write_result_file(tmp_path, "best", y, scores["best"], patients)
    assert path == tmp_path / "phantom" / "nodule" / "best" / sha_of("best")[:12] / "seed0" / "result.json"
    preds = pd.read_csv(path.parent / "predictions.csv")
    assert list(preds.columns) == ["case_id", "patient_id", "y_nodule", "p_nodule"]


def test_known_case_twins_have_identical_auroc():
    from sklearn.metrics import roc_auc_score

    y, _, scores = known_case()
    assert roc_auc_score(y, scores["twin-a"]) == roc_auc_score(y, scores["twin-b"])
    assert roc_auc_score(y, scores["best"]) == 1.0
    assert 0.6 < roc_auc_score(y, scores["twin-a"]) < 0.85
    assert abs(roc_auc_score(y, scores["noise"]) - 0.5) < 0.1

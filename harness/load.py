"""``ctbench.load_results``: every result under a folder as one tidy pandas DataFrame.

Long format, one row per (result file, metric): metric sets differ between task categories,
so a long table holds any mix of tasks without sparse columns, and pivots into a wide one with
``frame.pivot_table(index=[...], columns="metric", values="value")``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

COLUMNS = [
    "dataset", "task", "task_version", "category", "model", "variant", "weights", "weights_sha256",
    "random_init", "seed", "train_fraction", "split_hash", "protocol_version", "metric", "is_main",
    "direction", "value", "ci_low", "ci_high", "n_boot", "ctbench_version", "git_sha", "created", "path",
]


def load_results(path: str | Path) -> pd.DataFrame:
    """Validate every ``result.json`` under ``path`` (or that one file) and return them long.

    Columns: ``COLUMNS``. ``model`` includes the variant suffix (``voxelfm-tiny``); ``weights``
    is ``random`` or the first 12 hex digits of the weights sha256; ``train_fraction`` is 1.0 for
    files written before label-efficiency runs existed. Older result schemas are migrated; a
    malformed or foreign file raises ``CTBenchError`` naming the file and the field.
    """
    from .result_files import read_results

    rows = []
    for file, r in read_results(path):
        for name, m in r.metrics.items():
            rows.append({
                "dataset": r.task.dataset, "task": r.task.name, "task_version": r.task.version,
                "category": r.task.category, "model": r.model.tag, "variant": r.model.variant,
                "weights": r.model.weights.tag, "weights_sha256": r.model.weights.sha256,
                "random_init": r.model.weights.random_init, "seed": int(r.config.seed),
                "train_fraction": float(r.config.train_fraction), "split_hash": r.split.hash,
                "protocol_version": r.protocol_version, "metric": name, "is_main": name == r.task.main_metric,
                "direction": r.task.direction, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high,
                "n_boot": m.n_boot, "ctbench_version": r.ctbench_version, "git_sha": r.git_sha,
                "created": r.created, "path": str(file),
            })
    frame = pd.DataFrame.from_records(rows, columns=COLUMNS)
    for col in ("value", "ci_low", "ci_high"):
        frame[col] = frame[col].astype(float)
    return frame

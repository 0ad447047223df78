"""Self-describing result files: ``result.json`` plus ``predictions.csv`` beside it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .atomic import atomic_path, atomic_write_text

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
PREDICTIONS_FILE = "predictions.csv"


def result_dir(
    root: Path, dataset: str, task: str, model: str, weights_tag: str, seed: int, train_fraction: float = 1.0,
    opts: str | None = None,
) -> Path:
    """``<root>/<dataset>/<task>/<model>/<weights>/seed<S>[-frac<F>][-<opts>]``: one folder per
    result; ``opts`` is the run's options tag (``opts<8 hex>``, ``None`` for default options)."""
    leaf = f"seed{seed}" + (f"-frac{train_fraction:g}" if train_fraction != 1 else "") + (f"-{opts}" if opts else "")
    return Path(root) / dataset / task / model / weights_tag / leaf


def write_result(folder: Path, result: dict, predictions: pd.DataFrame) -> Path:
    """Write predictions first, then the result, each atomically: a result file always has its
    predictions beside it."""
    folder = Path(folder)
    with atomic_path(folder / PREDICTIONS_FILE) as tmp:
        predictions.to_csv(tmp, index=False)
    result = {"schema_version": SCHEMA_VERSION, **result, "predictions_file": PREDICTIONS_FILE}
    path = folder / RESULT_FILE
    atomic_write_text(path, json.dumps(_finite(result), indent=2, default=_jsonable, allow_nan=False))
    return path


def _finite(o):
    """NaN/Inf become null so result files are strict JSON."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")

"""Self-describing result files: ``result.json`` plus ``predictions.csv`` beside it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .atomic import atomic_path, atomic_write_text
from .errors import CTBenchError
from .safe_paths import inside

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
PREDICTIONS_FILE = "predictions.csv"


#: what each part of a result folder is, for error messages
_PARTS = ("dataset name", "task name", "model name", "weights tag", "seed folder")


def result_dir(
    root: Path, dataset: str, task: str, model: str, weights_tag: str, seed: int, train_fraction: float = 1.0,
    opts: str | None = None,
) -> Path:
    """``<root>/<dataset>/<task>/<model>/<weights>/seed<S>[-frac<F>][-<opts>]``: one folder per
    result; ``opts`` is the run's options tag (``opts<8 hex>``, ``None`` for default options).

    The names come from dataset cards, task files and the command line, so each must be one
    plain folder name and the folder must stay inside ``root`` (else a CTBenchError naming it)."""
    leaf = f"seed{seed}" + (f"-frac{train_fraction:g}" if train_fraction != 1 else "") + (f"-{opts}" if opts else "")
    parts = (dataset, task, model, weights_tag, leaf)
    for what, part in zip(_PARTS, parts, strict=True):
        _check_part(what, str(part), root)
    inside(root, *parts)  # defence in depth: no symlink under root leads elsewhere
    return Path(root).joinpath(*parts)


def _check_part(what: str, part: str, root: Path | str) -> None:
    """Refuse a result-folder part that is not one plain folder name (separators, ``..``, empty)."""
    if part in ("", ".", "..") or any(c in part for c in "/\\\0") or Path(part).is_absolute():
        raise CTBenchError(
            f"{what} {part!r} cannot name a results folder under {root}: it must be one plain name "
            f"(letters, digits, '.', '_', '-'; no '/', '\\' or '..'); rename it in its dataset card, "
            f"task file or on the command line"
        )


def write_result(folder: Path, result: dict, predictions: pd.DataFrame) -> Path:
    """Write predictions first, then the result, each atomically: a result file always has its
    predictions beside it. Both must resolve inside ``folder`` (a planted symlink is refused)."""
    folder = Path(folder)
    predictions_path, path = inside(folder, PREDICTIONS_FILE), inside(folder, RESULT_FILE)
    with atomic_path(predictions_path) as tmp:
        predictions.to_csv(tmp, index=False)
    result = {"schema_version": SCHEMA_VERSION, **result, "predictions_file": PREDICTIONS_FILE}
    atomic_write_text(path, json.dumps(_finite(result), indent=2, default=_jsonable, allow_nan=False))
    return folder / RESULT_FILE


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

"""Self-describing result files: ``result.json`` plus ``predictions.csv`` beside it.

What is written is what :class:`ctbench.result_schema.ResultFile` accepts: every result is
validated (strictly: no undeclared field) before anything is written.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from .atomic import atomic_path, atomic_write_text
from .errors import CTBenchError
from .result_schema import PREDICTIONS_FILE, RESULT_FILE, SCHEMA_VERSION, WRITING, ResultFile, error_location
from .safe_paths import inside

__all__ = ["PREDICTIONS_FILE", "RESULT_FILE", "SCHEMA_VERSION", "ResultSchemaError", "result_dir",
           "validate_result", "write_result"]


class ResultSchemaError(ValueError):
    """A result the runner built does not match the result schema: a ctbench bug (or a new field
    not yet declared in :mod:`ctbench.result_schema`), not a user error, so it keeps its traceback."""


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
    """Validate ``result`` (:func:`validate_result`), then write predictions, then the result,
    each atomically: a result file always has its predictions beside it. Both must resolve
    inside ``folder`` (a planted symlink is refused)."""
    folder = Path(folder)
    predictions_path, path = inside(folder, PREDICTIONS_FILE), inside(folder, RESULT_FILE)
    document = validate_result(result, where=folder)
    with atomic_path(predictions_path) as tmp:
        predictions.to_csv(tmp, index=False)
    atomic_write_text(path, json.dumps(document, indent=2, allow_nan=False))
    return folder / RESULT_FILE


def validate_result(result: dict, where: Path | str = "result") -> dict[str, Any]:
    """The JSON document of ``result`` as written: ``schema_version`` first, ``predictions_file``
    set, NaN/Inf as null, numpy values as plain numbers, then validated by ``ResultFile`` with no
    undeclared field and dumped from the model (the fields given, coerced to their types).
    A mismatch raises :class:`ResultSchemaError` listing every bad field."""
    raw = {"schema_version": SCHEMA_VERSION, **result, "predictions_file": PREDICTIONS_FILE}
    try:
        model = ResultFile.model_validate(_plain(raw), context={WRITING: True})
    except ValidationError as e:
        problems = "; ".join(f"{error_location(err)}: {err['msg']}" for err in e.errors())
        raise ResultSchemaError(f"the result for {where} does not match the result schema: {problems}") from None
    return model.model_dump(mode="json", exclude_unset=True)


def _plain(o: Any) -> Any:
    """Plain JSON values: NaN/Inf become null (result files are strict JSON), numpy scalars and
    arrays become numbers and lists, paths and datetimes strings; dict keys strings as in JSON."""
    if isinstance(o, (np.generic, np.ndarray)):
        o = o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {_key(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, datetime):
        return o.isoformat()
    if o is None or isinstance(o, (str, int, float)):
        return o
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _key(k: Any) -> str:
    """A dict key as ``json.dumps`` writes it (``1`` -> ``"1"``, ``True`` -> ``"true"``)."""
    return k if isinstance(k, str) else json.dumps(_plain(k))

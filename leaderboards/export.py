"""Machine-readable boards: CSV (one row per task x model, full precision) and JSON.

Published data name no local path of the machine that built them: a result file (and a file
beside it, a Kaplan-Meier figure) by its path relative to the results folder, any other path
as :mod:`ctbench.portable` records it (``$CTBENCH_HOME/...`` or a bare name), also for result
files written before ctbench recorded paths portably.
"""

from __future__ import annotations

import json
import math
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from ctbench.portable import portable_result, portable_text, portable_values

from .board import Board, Table
from .collect import Entry
from .files import write_frame, write_text

CSV_FILE = "leaderboard.csv"
MEAN_RANKS_FILE = "mean_ranks.csv"
JSON_FILE = "leaderboard.json"


def rows_frame(board: Board) -> pd.DataFrame:
    """One row per (table, model): rank, tie size, flags, every metric with its CI, provenance.
    A task with several probe families or views gives its summary rows (``table`` ``summary``:
    each model's validation-chosen probe) and then each probe's own ranked rows (``probe``);
    a task with one probe gives ``ranked`` rows."""
    records = []
    tables = [(t, kind) for top in board.tables
              for t, kind in [(top, "summary" if top.is_summary else "ranked"), *((s, "probe") for s in top.probes)]]
    for t, kind in tables:
        for r in t.rows:
            rec = {
                "dataset": t.dataset, "task": t.task, "task_version": t.version, "category": t.category,
                "split_hash": t.split_hash, "protocol_version": t.protocol_version,
                "options_tag": t.options_tag, "primary": t.primary, "table": kind, "slug": t.slug,
                "family": r.family, "view": r.view, "validation_value": r.validation, "fit_s_median": r.fit_s,
                "model": r.label, "model_tag": r.model, "weights_sha256": r.weights_sha256,
                "random_init": r.random_init, "contaminated": r.contaminated, "seeds": " ".join(map(str, r.seeds)),
                "rank": r.rank, "tie_size": r.tie_size, "tested": t.tested, "main_metric": t.main_metric,
                "direction": t.direction, "value": r.main.value, "ci_low": r.main.ci_low, "ci_high": r.main.ci_high,
            }
            for m in t.metric_names:
                c = r.metrics[m]
                rec[f"{m}"], rec[f"{m}_ci_low"], rec[f"{m}_ci_high"] = c.value, c.ci_low, c.ci_high
            rec["ctbench_version"] = " ".join(r.provenance["ctbench_version"])
            rec["git_sha"] = " ".join(r.provenance["git_sha"])
            rec["created"] = r.provenance["created"]
            rec["results"] = " ".join(r.provenance["results"])
            records.append(rec)
    return pd.DataFrame.from_records(records)


def mean_ranks_frame(board: Board) -> pd.DataFrame:
    """One row per model: overall mean rank, task count and per-category mean ranks."""
    return pd.DataFrame.from_records(
        [{"model": r["model"], "overall": r["overall"], "tasks": r["tasks"], **r["categories"]}
         for r in board.mean_ranks]
    )


def _strict(o):
    """NaN/Inf to null so the JSON is strict."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    return o


def public_board(board: Board) -> dict[str, Any]:
    """The board as published (:meth:`Board.to_dict` without local paths): Kaplan-Meier files
    relative to the results folder, paths in notes, failure reasons and task options portable."""
    out = board.to_dict()
    for t, d in zip(board.tables, out["tables"], strict=True):
        for table, data in [(t, d), *zip(t.probes, d["probes"], strict=True)]:  # a summary's probe tables too
            _public_table(table, data)
    return out


def _public_table(t: Table, d: dict[str, Any]) -> None:
    first = {r.label: r.provenance["results"][0] for r in t.rows if r.provenance.get("results")}
    d["km"] = [[label, _beside(first.get(label), path)] for label, path in t.km]
    d["notes"] = [portable_text(n) for n in d["notes"]]
    d["options"] = portable_values(d["options"])
    for row in d["rows"]:
        if isinstance(row.get("failures"), list):
            row["failures"] = [portable_text(f) if isinstance(f, str) else f for f in row["failures"]]


def public_results(entries: list[Entry]) -> list[dict[str, Any]]:
    """Every result as published: its path relative to the results folder, then its fields with
    local paths recorded portably (:func:`ctbench.portable.portable_result`)."""
    return [{"path": e.relpath, **portable_result(e.result.model_dump(mode="json"))} for e in entries]


def _beside(result_path: str | None, path: str) -> str:
    """``path``'s file name in the folder of ``result_path`` (relative), or the bare name."""
    name = Path(path).name
    return str(PurePosixPath(result_path).parent / name) if result_path else name


def board_json(board: Board) -> str:
    return json.dumps(_strict(public_board(board)), indent=2, default=str, allow_nan=False)


def write_csv(board: Board, out: Path | str) -> list[Path]:
    """``leaderboard.csv`` and ``mean_ranks.csv`` under ``out``."""
    out = Path(out)
    return [write_frame(out, CSV_FILE, rows_frame(board)), write_frame(out, MEAN_RANKS_FILE, mean_ranks_frame(board))]


def write_json(board: Board, out: Path | str) -> list[Path]:
    """``leaderboard.json``: the full board (tables, comparisons, mean ranks, curves, provenance)."""
    return [write_text(out, JSON_FILE, board_json(board))]

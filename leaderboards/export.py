"""Machine-readable boards: CSV (one row per task x model, full precision) and JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from .board import Board
from .files import write_frame, write_text

CSV_FILE = "leaderboard.csv"
MEAN_RANKS_FILE = "mean_ranks.csv"
JSON_FILE = "leaderboard.json"


def rows_frame(board: Board) -> pd.DataFrame:
    """One row per (table, model): rank, tie size, flags, every metric with its CI, provenance."""
    records = []
    for t in board.tables:
        for r in t.rows:
            rec = {
                "dataset": t.dataset, "task": t.task, "task_version": t.version, "category": t.category,
                "split_hash": t.split_hash, "protocol_version": t.protocol_version,
                "options_tag": t.options_tag, "primary": t.primary,
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


def board_json(board: Board) -> str:
    return json.dumps(_strict(board.to_dict()), indent=2, default=str, allow_nan=False)


def write_csv(board: Board, out: Path | str) -> list[Path]:
    """``leaderboard.csv`` and ``mean_ranks.csv`` under ``out``."""
    out = Path(out)
    return [write_frame(out, CSV_FILE, rows_frame(board)), write_frame(out, MEAN_RANKS_FILE, mean_ranks_frame(board))]


def write_json(board: Board, out: Path | str) -> list[Path]:
    """``leaderboard.json``: the full board (tables, comparisons, mean ranks, curves, provenance)."""
    return [write_text(out, JSON_FILE, board_json(board))]

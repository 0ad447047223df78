"""The index's one table: every model against every ranked task, with its card facts.

Rows are models in mean-rank order; a column per primary table (the ones counted in mean
ranks) holds the main metric with its interval, the rank and whether the model is in that
task's winning tie group. Where a task has several probe families or views, the column is its
summary: each model's validation-chosen probe (named in the cell's tooltip). Shading by rank,
not by value: two tied models look alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .board import Board, Cell, Row, Table
from .format import row_kind


@dataclass(frozen=True)
class Entry:
    """One model on one task."""

    cell: Cell
    rank: int
    tie_size: int
    n_models: int
    probe: str | None = None  # ``linear on cls``: the validation-chosen probe of a summary row

    @property
    def winner(self) -> bool:
        return self.rank == 1

    @property
    def shade(self) -> int:
        """0 (winners) to 4 (last): the rank's place among the task's models, for colour."""
        if self.rank == 1 or self.n_models <= 1:
            return 0
        place = (self.rank - 1) / (self.n_models - 1)  # (0, 1]: 1 = no model below
        return 1 if place <= 1 / 3 else 2 if place <= 2 / 3 else 3 if place < 1 else 4


@dataclass
class ModelRow:
    label: str
    kind: str  # model | random | reference
    mean_rank: float
    tasks: int
    categories: dict[str, float]
    card: dict[str, Any]
    entries: dict[str, Entry] = field(default_factory=dict)  # table slug -> entry


@dataclass
class Overview:
    tables: list[Table]
    rows: list[ModelRow]
    categories: list[str]



def overview(board: Board) -> Overview:
    """Models x primary tables, models in mean-rank order."""
    tables = [t for t in board.tables if t.primary]
    first: dict[str, Row] = {}
    for t in tables:
        for r in t.rows:
            first.setdefault(r.label, r)
    rows = []
    for m in board.mean_ranks:
        r = first[m["model"]]
        row = ModelRow(m["model"], row_kind(r), m["overall"], m["tasks"], m["categories"], r.card)
        for t in tables:
            for tr in t.rows:
                if tr.label == row.label:
                    row.entries[t.slug] = Entry(tr.main, tr.rank, tr.tie_size, len(t.rows),
                                                tr.probe.short if t.is_summary else None)
        rows.append(row)
    cats = sorted({c for m in board.mean_ranks for c in m["categories"]})
    return Overview(tables, rows, cats)

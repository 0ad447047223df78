"""The ranked board in the terminal (``ctbench leaderboard show``): per task, the rows in rank
order with their tie groups, the main metric with its 95% interval, and the flags.

On a terminal each task is a rich table; piped, plain aligned lines that are never cut. Values
come from :mod:`.format`, so they read exactly as on the published board. A task with several
probe families or views shows its summary (each model's probe chosen on validation, named in a
``probe`` column), then one line per (family, view) with its own winners; the per-probe tables
are on the built board.
"""

from __future__ import annotations

from rich.console import Console

from ctbench.plain_text import print_listing, print_whole

from . import format as fmt
from .board import Table

__all__ = ["print_board"]


def _rows(table: Table) -> tuple[list[str], list[list[str]]]:
    """Header and cells: rank, model, main metric (95% CI), better than, flags."""
    probe = ["probe (chosen on validation)"] if table.is_summary else []
    header = ["rank", "model", f"{table.main_metric} (95% CI)", *probe, "better than", "flags"]
    cells = fmt.table_cells(table)  # rank, model, main, other metrics..., flags
    rows = [[c[0], c[1], c[2], *([r.probe.short] if probe else []), ", ".join(r.better_than) or "-", c[-1]]
            for c, r in zip(cells, table.rows)]
    return header, rows


def _probe_lines(table: Table) -> list[str]:
    """``linear probe on cls (2 models, ranked on its own): winner(s) a`` per (family, view)."""
    return [f"{sub.probe.title} ({len(sub.rows)} models, ranked on its own): winner(s) "
            f"{', '.join(fmt.winners(sub))}" for sub in table.probes if sub.probe is not None]


def print_board(console: Console, tables: list[Table]) -> None:
    """Print each table: heading, what was compared, the ranked rows, tie groups and notes."""
    for table in tables:
        header, rows = _rows(table)
        lines = [fmt.caption(table), f"{fmt.tie_summary(table)}.", *table.notes, *_probe_lines(table)]
        print_listing(console, fmt.heading(table), header, rows, title_left=True)
        for line in lines:
            print_whole(console, line, markup=False)
        console.print()
